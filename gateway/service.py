"""`tracegate service`: install, upgrade and uninstall the gateway as a systemd service.

    tracegate service install   [--from PATH] [--prefix DIR] [--root DIR] [--start] [--dry-run]
    tracegate service upgrade   [--from PATH] [--prefix DIR] [--root DIR] [--dry-run]
    tracegate service uninstall [--purge] [--prefix DIR] [--root DIR] [--dry-run]
    tracegate service freeze    the lock file for the running environment (`make lock`)

On a fresh line PC, where no tracegate is installed yet, the same module runs from a source tree
with the standard library alone: `sudo python3 -m gateway.service install`. It therefore imports
nothing outside the standard library.

What goes where (docs/operations.md has the table and the procedure):

    PREFIX/venv -> venvs/NAME   the program: a symlink to the current virtualenv. An upgrade
                                builds the next one beside it and replaces the link in one
                                rename(2), so the unit's ExecStart never sees a half-installed
                                program; the previous virtualenv is kept for a rollback.
    /etc/systemd/system/tracegate.service, /etc/tmpfiles.d/tracegate.conf,
    /etc/sysusers.d/tracegate.conf                         from systemd/ of the source tree
    /etc/tracegate/             0750 root:tracegate; line.yaml.example, line.yaml if none
    /var/lib/tracegate/         0750 tracegate:tracegate; the journal (never touched here
                                except by `uninstall --purge`)

Every dependency is installed with the constraints of the lock file (`constraints.txt` of the
source tree, `pip install -c`), and the new virtualenv is compared with the lock afterwards: a
distribution the lock does not pin, or pins at another version, fails the install. So every line
PC runs exactly the versions the test suite ran.

`--root DIR` installs into a staging root (tests, image builds): every path is under DIR, no
service manager is contacted; the user is created in DIR's own /etc/passwd by
`systemd-sysusers --root` where it is installed (else the first boot's systemd-sysusers does it)
and the unit is enabled with `systemctl --root`. `--dry-run` prints every step and changes
nothing. Exit codes: 0 done, 64 usage, 77 not root, 78 the line file fails `tracegate check` with
the new version (upgrade refused), 1 a step failed (its output is printed).
"""

from __future__ import annotations

import argparse
import datetime
import grp
import importlib.metadata
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_NOPERM = 77
EX_CONFIG = 78

USER = "tracegate"
UNIT_NAME = "tracegate.service"
DEFAULT_PREFIX = Path("/opt/tracegate")
CONFIG_DIR = Path("/etc/tracegate")
STATE_DIR = Path("/var/lib/tracegate")
LINE_FILE = CONFIG_DIR / "line.yaml"
UNIT_PATH = Path("/etc/systemd/system") / UNIT_NAME
TMPFILES_PATH = Path("/etc/tmpfiles.d/tracegate.conf")
SYSUSERS_PATH = Path("/etc/sysusers.d/tracegate.conf")
LOCK_NAME = "constraints.txt"
EXAMPLE_LINE = Path("device_profiles/lines/example-line.yaml")
# The unit names the program by this path; another --prefix rewrites it in the installed copy.
UNIT_VENV = "/opt/tracegate/venv"
KEPT_VENVS = 2  # the current one and the one before it (rollback)
# Installed in every virtualenv by venv/pip themselves; not the project's dependencies.
NOT_LOCKED = frozenset({"pip", "setuptools", "wheel", "tracegate"})


class StepFailed(Exception):
    """A step could not be done; the message says which and why."""

    def __init__(self, message: str, code: int = EX_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- the lock file ------------------------------------------------------------------------------


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def _requirement(req: str) -> tuple[str, set[str], str | None] | None:
    """(name, its extras, the extra that this requirement belongs to) of a Requires-Dist."""
    m = _REQ_NAME.match(req)
    if m is None:
        return None
    extras = {canonical(e) for e in (m.group(2) or "").split(",") if e.strip()}
    marker = req.split(";", 1)[1] if ";" in req else ""
    belongs = _EXTRA_MARKER.search(marker)
    return canonical(m.group(1)), extras, canonical(belongs.group(1)) if belongs else None


def installed_closure(requirements: Iterable[str]) -> dict[str, str]:
    """name -> version of every installed distribution that `requirements` need, transitively.

    Markers other than `extra ==` are not evaluated (that needs `packaging`, which is not in
    the standard library): a requirement whose marker excludes it here is simply not installed,
    and what is not installed is left out.
    """
    found: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = []
    for req in requirements:
        parsed = _requirement(req)
        if parsed is not None:
            todo.append((parsed[0], parsed[1]))
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, frozenset(wanted)) in seen:
            continue
        seen.add((name, frozenset(wanted)))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[name] = dist.version
        for req in dist.requires or []:
            parsed = _requirement(req)
            if parsed is not None and (parsed[2] is None or parsed[2] in wanted):
                todo.append((parsed[0], parsed[1]))
    return dict(sorted(found.items()))


def _installed(req: str) -> bool:
    parsed = _requirement(req)
    try:
        importlib.metadata.distribution(parsed[0] if parsed else req)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def declared_requirements(pyproject: Path, extras: Iterable[str] = ("test",)) -> list[str]:
    """The dependencies of pyproject.toml and of the given extras, as written there."""
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return [str(r) for r in reqs]


def read_lock(path: Path) -> dict[str, str]:
    """The pins of a lock file: canonical name -> exact version. Anything else is refused."""
    return read_lock_text(path.read_text(), str(path))


def read_lock_text(text: str, path: str = LOCK_NAME) -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if m is None:
            raise ValueError(f"{path}:{n}: not an exact pin NAME==VERSION: {raw!r}")
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def render_lock(pins: dict[str, str]) -> str:
    head = (
        "# The lock file: every dependency of tracegate and of its test extra, at the exact\n"
        "# version CI tests. `make` installs with it (pip install -c constraints.txt), and so\n"
        "# does `tracegate service install` on a line PC. Regenerate with `make lock`, never by\n"
        "# hand; tests/test_service.py fails when the environment drifts from it.\n"
        f"# Python {sys.version_info.major}.{sys.version_info.minor}.\n"
    )
    return head + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


# --- where things are ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    root: Path = Path("/")
    prefix: Path = DEFAULT_PREFIX

    def at(self, path: Path) -> Path:
        """Where the absolute `path` of the installed system is, under the root."""
        return self.root / path.relative_to("/")

    @property
    def staging(self) -> bool:
        return self.root.resolve() != Path("/")

    @property
    def venv_link(self) -> Path:
        return self.at(self.prefix / "venv")

    @property
    def venvs(self) -> Path:
        return self.at(self.prefix / "venvs")


@dataclass(frozen=True)
class Source:
    """What to install (`pip install` argument) and the tree with systemd/ and the lock."""

    target: str
    tree: Path
    constraints: Path


def find_source(from_: Path | None, constraints: Path | None) -> Source:
    """--from PATH (a source tree, a wheel or an sdist), by default the running source tree."""
    here = Path(__file__).resolve().parents[1]
    running_tree = here if (here / "pyproject.toml").is_file() else None
    if from_ is None:
        if running_tree is None:
            raise StepFailed(
                "this tracegate was not installed from a source tree: give the release to "
                "install with --from PATH (a source tree, a wheel or an sdist)",
                EX_USAGE,
            )
        from_ = running_tree
    from_ = from_.resolve()
    if from_.is_dir():
        if not (from_ / "pyproject.toml").is_file():
            raise StepFailed(f"{from_} is not a source tree (no pyproject.toml)", EX_USAGE)
        tree = from_
    elif from_.is_file():
        # A wheel or sdist brings no systemd/ and no lock: those come from the tree beside it
        # (a release directory) or, failing that, from the running tree.
        beside = from_.parent
        tree_or_none = beside if (beside / "systemd" / UNIT_NAME).is_file() else running_tree
        if tree_or_none is None:
            raise StepFailed(
                f"no systemd/{UNIT_NAME} beside {from_}: put the release's systemd/ and "
                f"{LOCK_NAME} next to it",
                EX_USAGE,
            )
        tree = tree_or_none
    else:
        raise StepFailed(f"--from {from_}: no such file or directory", EX_USAGE)
    if not (tree / "systemd" / UNIT_NAME).is_file():
        raise StepFailed(f"{tree} has no systemd/{UNIT_NAME}", EX_USAGE)
    lock = (constraints or tree / LOCK_NAME).resolve()
    if not lock.is_file():
        raise StepFailed(f"no lock file {lock}: give one with --constraints FILE", EX_USAGE)
    return Source(str(from_), tree, lock)


# --- doing (or planning) the steps --------------------------------------------------------------


@dataclass
class Runner:
    """Does each step, or only says it would (`dry_run`); every step is reported on `out`."""

    dry_run: bool = False
    out: Callable[[str], None] = field(default=lambda s: print(s, flush=True))

    def say(self, message: str) -> None:
        self.out(f"tracegate service: {message}")

    def did(self, message: str) -> bool:
        """Report a change; True when it is to be done now (not a dry run)."""
        self.say(f"would {message}" if self.dry_run else message)
        return not self.dry_run

    def run(
        self, argv: Sequence[str], *, what: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str] | None:
        shown = shlex.join(argv)
        if not self.did(f"run: {shown}" if what is None else f"{what}: {shown}"):
            return None
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise StepFailed(
                f"`{shown}` exited {result.returncode}:\n{(result.stdout + result.stderr).strip()}"
            )
        return result


def _systemd_running(layout: Layout) -> bool:
    """sd_booted(3): the running system was booted with systemd (never for a staging root)."""
    return not layout.staging and Path("/run/systemd/system").is_dir()


def _require_root(layout: Layout, run: Runner) -> None:
    if os.geteuid() != 0 and not layout.staging and not run.dry_run:
        raise StepFailed("run as root (sudo), or give --root DIR or --dry-run", EX_NOPERM)


def _ids(layout: Layout, user: str = USER) -> tuple[int, int] | None:
    """uid and gid of `user` in the (staging) root's own account database."""
    if not layout.staging:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid
    passwd = layout.at(Path("/etc/passwd"))
    if not passwd.is_file():
        return None
    for line in passwd.read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user:
            return int(parts[2]), int(parts[3])
    return None


def _group_exists(layout: Layout, group: str) -> bool:
    if not layout.staging:
        try:
            grp.getgrnam(group)
        except KeyError:
            return False
        return True
    groups = layout.at(Path("/etc/group"))
    return groups.is_file() and any(
        line.split(":")[0] == group for line in groups.read_text().splitlines()
    )


def _install_file(run: Runner, content: bytes, dest: Path, mode: int = 0o644) -> bool:
    """Write `dest` when its content differs; True when it changed (or would)."""
    if dest.is_file() and dest.read_bytes() == content:
        run.say(f"unchanged {dest}")
        return False
    verb = "update" if dest.exists() else "install"
    if run.did(f"{verb} {dest} ({mode:04o})"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode)
        os.replace(tmp, dest)
    return True


def _ensure_dir(
    run: Runner, layout: Layout, path: Path, mode: int, owner: tuple[int, int] | None
) -> None:
    shown = f"{mode:04o}" + ("" if owner is None else f" {owner[0]}:{owner[1]}")
    if not path.is_dir():
        if run.did(f"create {path} ({shown})"):
            path.mkdir(parents=True, mode=mode)
    else:
        st = path.stat()
        if (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
            mode,
            *(owner or (st.st_uid, st.st_gid)),
        ):
            run.say(f"exists {path} ({shown})")
            return
        run.did(f"set {path} to {shown}")
    if run.dry_run:
        return
    path.chmod(mode)
    if owner is not None:
        if os.geteuid() == 0:
            os.chown(path, *owner)
        else:
            run.say(f"not root: {path} keeps its owner (wanted {owner[0]}:{owner[1]})")


# --- the steps ----------------------------------------------------------------------------------


def _unit_text(source: Source, layout: Layout) -> bytes:
    text = (source.tree / "systemd" / UNIT_NAME).read_text()
    venv = str(layout.prefix / "venv")
    if venv != UNIT_VENV:
        text = text.replace(UNIT_VENV, venv)
    return text.encode()


def _systemd_files(run: Runner, source: Source, layout: Layout) -> bool:
    """The unit and the tmpfiles/sysusers snippets; True when one changed."""
    systemd = source.tree / "systemd"
    changed = _install_file(run, _unit_text(source, layout), layout.at(UNIT_PATH))
    changed |= _install_file(
        run, (systemd / "tracegate.tmpfiles.conf").read_bytes(), layout.at(TMPFILES_PATH)
    )
    changed |= _install_file(
        run, (systemd / "tracegate.sysusers.conf").read_bytes(), layout.at(SYSUSERS_PATH)
    )
    return changed


def _nologin() -> str:
    return next(
        (p for p in ("/usr/sbin/nologin", "/sbin/nologin") if Path(p).exists()), "/bin/false"
    )


def _ensure_user(run: Runner, layout: Layout) -> None:
    """The system user and group `tracegate` (no login shell, no home), member of dialout."""
    if _ids(layout) is not None:
        run.say(f"user {USER} exists")
        return
    sysusers = shutil.which("systemd-sysusers")
    snippet = layout.at(SYSUSERS_PATH)
    if sysusers is not None:
        # The snippet is what the first boot of an image would apply anyway; --root applies it
        # to the staging root's own /etc/passwd and /etc/group.
        argv = [sysusers, *([f"--root={layout.root}"] if layout.staging else []), str(snippet)]
        if run.dry_run and not snippet.exists():
            argv[-1] = str(SYSUSERS_PATH)
        run.run(argv, what=f"create user {USER}")
        return
    if layout.staging:
        run.say(
            f"systemd-sysusers is missing: user {USER} is created at the first boot "
            f"of {layout.root} (by {SYSUSERS_PATH})"
        )
        return
    run.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            str(STATE_DIR),
            "--shell",
            _nologin(),
            "--comment",
            "Tracegate edge gateway",
            USER,
        ],
        what=f"create user {USER}",
    )
    if _group_exists(layout, "dialout"):
        run.run(["usermod", "--append", "--groups", "dialout", USER], what="serial ports")


def _directories(run: Runner, source: Source, layout: Layout) -> None:
    ids = _ids(layout)
    if ids is None and not run.dry_run:
        run.say(f"user {USER} does not exist (yet): directories are left owned by root")
    gid = ids[1] if ids is not None else None
    _ensure_dir(run, layout, layout.at(CONFIG_DIR), 0o750, None if gid is None else (0, gid))
    example = source.tree / EXAMPLE_LINE
    if example.is_file():
        content = example.read_bytes()
        _install_file(run, content, layout.at(CONFIG_DIR / "line.yaml.example"), 0o644)
        line = layout.at(LINE_FILE)
        if line.exists():
            run.say(f"exists {line}: kept")
        elif run.did(f"create {line} from the example: edit it, then `tracegate check` it"):
            line.write_bytes(content)
            line.chmod(0o640)
            if gid is not None and os.geteuid() == 0:
                os.chown(line, 0, gid)
    _ensure_dir(run, layout, layout.at(STATE_DIR), 0o750, ids)


def _pip_for(python: Path) -> list[str]:
    """pip for the new virtualenv: the running interpreter's own (`pip --python`, pip >= 22.3)
    when it has one, which spares the new virtualenv a copy of pip; else the venv's own."""
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return [str(python), "-m", "pip"]
    major, minor = (int(x) for x in re.findall(r"\d+", version)[:2])
    if (major, minor) >= (22, 3):
        return [sys.executable, "-m", "pip", "--python", str(python)]
    return [str(python), "-m", "pip"]


_LIST_DISTS = (
    "import importlib.metadata as m, json;"
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def _new_venv(run: Runner, source: Source, layout: Layout, python: str) -> Path:
    """A new virtualenv beside the current one, with the release and its locked dependencies."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    venv = layout.venvs / f"venv-{stamp}"
    new_python = venv / "bin" / "python"
    pip = _pip_for(new_python)
    own_pip = pip[0] == str(new_python)
    run.run(
        [python, "-m", "venv", *([] if own_pip else ["--without-pip"]), str(venv)],
        what="create the virtualenv",
    )
    try:
        run.run(
            [*pip, "install", "--no-input", "--constraint", str(source.constraints), source.target],
            what=f"install {source.target} with the lock {source.constraints}",
        )
        if run.dry_run:
            return venv
        listed = run.run([str(new_python), "-c", _LIST_DISTS], what="compare with the lock")
        assert listed is not None
        _matches_lock(json.loads(listed.stdout), read_lock(source.constraints))
    except BaseException:
        if not run.dry_run and venv.exists():
            run.say(f"remove the unfinished {venv}")
            shutil.rmtree(venv)
        raise
    run.say(f"installed tracegate {_version(venv)} into {venv}")
    return venv


def _matches_lock(installed: dict[str, str], pins: dict[str, str]) -> None:
    drift = []
    for name, version in sorted(installed.items()):
        key = canonical(name)
        if key in NOT_LOCKED:
            continue
        if key not in pins:
            drift.append(f"{name} {version} is not in the lock")
        elif pins[key] != version:
            drift.append(f"{name} {version} installed, the lock pins {pins[key]}")
    if drift:
        raise StepFailed("the new virtualenv differs from the lock file:\n  " + "\n  ".join(drift))


def _version(venv: Path) -> str:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gateway; print(gateway.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "?"


def _switch(run: Runner, layout: Layout, venv: Path) -> None:
    """Point PREFIX/venv at `venv` with one rename(2) of a symlink over the old one."""
    link = layout.venv_link
    target = venv.relative_to(link.parent)  # relative: valid inside a staging root too
    if link.is_symlink() and Path(os.readlink(link)) == target:
        run.say(f"{link} already points to {target}")
        return
    if link.exists() and not link.is_symlink():
        # A virtualenv made by hand (the manual procedure of earlier releases): moved aside,
        # kept as the previous one. The unit finds no program only between these two renames.
        aside = layout.venvs / f"venv-manual-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}"
        if run.did(f"move the hand-made {link} to {aside}"):
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(link, aside)
    if run.did(f"switch {link} -> {target}"):
        tmp = link.with_name(".venv.new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)


def _prune(run: Runner, layout: Layout) -> None:
    if not layout.venvs.is_dir() or not layout.venv_link.is_symlink():
        return
    current = layout.venv_link.resolve()
    others = sorted(
        (p for p in layout.venvs.iterdir() if p.is_dir() and p.resolve() != current),
        key=lambda p: p.stat().st_mtime,
    )
    for old in others[: max(0, len(others) - (KEPT_VENVS - 1))]:
        if run.did(f"remove the old virtualenv {old}"):
            shutil.rmtree(old)


def _check_line(run: Runner, layout: Layout, venv: Path) -> None:
    """The existing line file must pass `tracegate check` of the new version."""
    line = layout.at(LINE_FILE)
    if not line.is_file():
        run.say(f"no {line} yet: nothing to check")
        return
    argv = [str(venv / "bin" / "tracegate"), "check", "-c", str(line)]
    result = run.run(argv, what="check the line file with the new version", check=False)
    if result is None:
        return
    if result.returncode != 0:
        raise StepFailed(
            f"the new version refuses {line} (exit {result.returncode}); nothing was switched:\n"
            + (result.stdout + result.stderr).strip(),
            EX_CONFIG,
        )
    run.say(result.stdout.strip())


def _enable(run: Runner, layout: Layout, *, start: bool, reload: bool) -> None:
    systemctl = shutil.which("systemctl")
    if layout.staging:
        if systemctl is None:
            run.say("systemctl is missing: enable the unit in the image with systemctl enable")
        else:
            run.run([systemctl, f"--root={layout.root}", "enable", UNIT_NAME])
        return
    if not _systemd_running(layout) or systemctl is None:
        run.say(
            "systemd is not running here: not enabled; once it is: "
            f"systemctl daemon-reload && systemctl enable {UNIT_NAME}"
        )
        return
    if reload:
        run.run([systemctl, "daemon-reload"])
    run.run([systemctl, "enable", UNIT_NAME])
    if start:
        run.run([systemctl, "start", UNIT_NAME])
    else:
        run.say(f"enabled, not started: edit {LINE_FILE}, then systemctl start tracegate")


# --- the actions --------------------------------------------------------------------------------


def install(
    source: Source, layout: Layout, run: Runner, *, python: str, start: bool = False
) -> int:
    _require_root(layout, run)
    changed = _systemd_files(run, source, layout)
    _ensure_user(run, layout)
    _directories(run, source, layout)
    if layout.venv_link.exists():
        run.say(
            f"exists {layout.venv_link} (tracegate {_version(layout.venv_link)}): kept; "
            "`tracegate service upgrade` replaces it"
        )
    else:
        venv = _new_venv(run, source, layout, python)
        _switch(run, layout, venv)
    _enable(run, layout, start=start, reload=changed)
    return EX_OK


def upgrade(source: Source, layout: Layout, run: Runner, *, python: str) -> int:
    _require_root(layout, run)
    if not layout.venv_link.exists():
        raise StepFailed(f"{layout.venv_link} does not exist: use `tracegate service install`")
    old = _version(layout.venv_link)
    venv = _new_venv(run, source, layout, python)
    try:
        _check_line(run, layout, venv)
    except StepFailed:
        if not run.dry_run:
            run.say(f"remove {venv}; tracegate {old} stays")
            shutil.rmtree(venv)
        raise
    changed = _systemd_files(run, source, layout)
    _switch(run, layout, venv)
    systemctl = shutil.which("systemctl")
    if _systemd_running(layout) and systemctl is not None:
        if changed:
            run.run([systemctl, "daemon-reload"])
        # Restarts the gateway only if it was running; the journal carries on where it was.
        run.run([systemctl, "try-restart", UNIT_NAME])
    else:
        run.say("systemd is not running here: nothing restarted")
    _prune(run, layout)
    run.say(f"upgraded from tracegate {old}; {layout.at(STATE_DIR)} and {LINE_FILE} untouched")
    return EX_OK


def uninstall(layout: Layout, run: Runner, *, purge: bool = False) -> int:
    _require_root(layout, run)
    systemctl = shutil.which("systemctl")
    unit = layout.at(UNIT_PATH)
    if systemctl is not None and unit.exists():
        if layout.staging:
            run.run([systemctl, f"--root={layout.root}", "disable", UNIT_NAME])
        elif _systemd_running(layout):
            run.run([systemctl, "disable", "--now", UNIT_NAME])
    for path in (unit, layout.at(TMPFILES_PATH), layout.at(SYSUSERS_PATH)):
        if path.exists() and run.did(f"remove {path}"):
            path.unlink()
    if systemctl is not None and _systemd_running(layout):
        run.run([systemctl, "daemon-reload"])
    _remove_program(run, layout)
    data = [layout.at(CONFIG_DIR), layout.at(STATE_DIR)]
    if not purge:
        kept = [str(p) for p in data if p.exists()]
        if kept:
            run.say(f"kept {', '.join(kept)} and user {USER}; --purge removes them")
        return EX_OK
    for path in data:
        if path.exists() and run.did(f"remove {path} (--purge)"):
            shutil.rmtree(path)
    _remove_user(run, layout)
    return EX_OK


def _remove_user(run: Runner, layout: Layout) -> None:
    if _ids(layout) is None:
        return
    if layout.staging:
        run.say(f"user {USER} stays in {layout.root}/etc/passwd (remove it with userdel -R)")
    else:
        run.run(["userdel", USER], what=f"remove user {USER}")


def _remove_program(run: Runner, layout: Layout) -> None:
    link = layout.venv_link
    if (link.is_symlink() or link.exists()) and run.did(f"remove {link}"):
        if link.is_symlink():
            link.unlink()
        else:
            shutil.rmtree(link)
    if layout.venvs.exists() and run.did(f"remove {layout.venvs}"):
        shutil.rmtree(layout.venvs)
    prefix = layout.at(layout.prefix)
    if prefix.is_dir() and not any(prefix.iterdir()) and run.did(f"remove the empty {prefix}"):
        prefix.rmdir()


# --- command line -------------------------------------------------------------------------------


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--prefix",
        type=Path,
        default=DEFAULT_PREFIX,
        help=f"where the virtualenvs go (default {DEFAULT_PREFIX}; the unit is rewritten)",
    )
    sp.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install into this staging root (tests, image builds); no service manager is used",
    )
    sp.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")


def _program(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--from",
        dest="from_",
        type=Path,
        metavar="PATH",
        help="source tree, wheel or sdist to install (default: this tracegate's source tree)",
    )
    sp.add_argument(
        "--constraints",
        type=Path,
        metavar="FILE",
        help=f"the lock file (default: {LOCK_NAME} of the source tree)",
    )
    sp.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter the virtualenv is made from (default: the running one)",
    )


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], None] | None = None
) -> None:
    p = sub.add_parser(
        "service", help="install, upgrade or uninstall the gateway as a systemd service"
    )
    fill_parser(p)


def fill_parser(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    sp = actions.add_parser("install", help="user, virtualenv, unit, directories; enable")
    _common(sp)
    _program(sp)
    sp.add_argument("--start", action="store_true", help="also start the service")
    sp = actions.add_parser("upgrade", help="new virtualenv beside the old one, checked, switched")
    _common(sp)
    _program(sp)
    sp = actions.add_parser("uninstall", help="stop, disable, remove unit and virtualenvs")
    _common(sp)
    sp.add_argument(
        "--purge", action="store_true", help="also remove /etc/tracegate, /var/lib/tracegate"
    )
    actions.add_parser("freeze", help=f"print the lock file ({LOCK_NAME}) of this environment")


def main(args: argparse.Namespace) -> int:
    if args.service_command == "freeze":
        # From pyproject.toml, not from the installed metadata, which is as old as the last
        # `pip install -e`.
        tree = Path(__file__).resolve().parents[1]
        pins = installed_closure(declared_requirements(tree / "pyproject.toml"))
        missing = [r for r in declared_requirements(tree / "pyproject.toml") if not _installed(r)]
        if missing:
            print(f"tracegate service: not installed: {', '.join(missing)}", file=sys.stderr)
            return EX_FAILED
        sys.stdout.write(render_lock(pins))
        return EX_OK
    if not args.prefix.is_absolute():
        print("tracegate service: --prefix must be an absolute path", file=sys.stderr)
        return EX_USAGE
    layout = Layout(args.root.resolve(), args.prefix)
    run = Runner(dry_run=args.dry_run)
    try:
        if args.service_command == "uninstall":
            return uninstall(layout, run, purge=args.purge)
        source = find_source(args.from_, args.constraints)
        if args.service_command == "install":
            return install(source, layout, run, python=args.python, start=args.start)
        return upgrade(source, layout, run, python=args.python)
    except StepFailed as exc:
        print(f"tracegate service: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":  # `python3 -m gateway.service ...` from a source tree, stdlib only
    parser = argparse.ArgumentParser(prog="python3 -m gateway.service")
    fill_parser(parser)
    raise SystemExit(main(parser.parse_args()))
