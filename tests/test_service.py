"""`tracegate service` and the lock file.

The install tests install for real, into a staging root (`--root`): a real virtualenv, a real
`pip install` of a copy of this source tree with the constraints of constraints.txt, the
installed `tracegate` run afterwards. No pip shortcut is taken: the one cost kept down is that
pip runs from this test environment (`pip --python`, which the service uses whenever the running
interpreter has pip) instead of being copied into every new virtualenv, and that the three
virtualenvs (install, refused upgrade, upgrade) are made once for the whole module. pip finds
the packages where this machine's pip configuration says (an index or a wheel cache). Without
root (a developer's shell) owners are not set and the user database is not checked.

The service user is created in the staging root's own /etc/passwd by `systemd-sysusers --root`
(Debian package systemd, installed by `make test-tools`), the same snippet a booted image
applies; where it is missing, the install says the first boot will do it, and those checks skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gateway import service
from gateway.events import EventContext, TraceEvent
from gateway.journal import Journal

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
IS_ROOT = os.geteuid() == 0


# --- the lock file ------------------------------------------------------------------------------


def _declared() -> list[Requirement]:
    return [Requirement(r) for r in service.declared_requirements(ROOT / "pyproject.toml")]


def test_lock_pins_every_declared_dependency_inside_its_range() -> None:
    pins = service.read_lock(LOCK)
    problems = []
    for req in _declared():
        pin = pins.get(service.canonical(req.name))
        if pin is None:
            problems.append(f"{req} is not in {LOCK.name}")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{LOCK.name} pins {req.name}=={pin}, outside {req}")
    assert problems == [], "run `make lock`:\n" + "\n".join(problems)


def test_this_environment_runs_exactly_the_locked_versions() -> None:
    """CI installs with the lock (Makefile); a version that drifted from it fails here."""
    pins = service.read_lock(LOCK)
    installed = service.installed_closure(str(r) for r in _declared())
    assert len(installed) > 20  # the closure was really walked (pydantic-core, anyio, ...)
    drift = {
        name: (version, pins.get(name))
        for name, version in installed.items()
        if pins.get(name) != version
    }
    assert drift == {}, "installed version, locked version; run `make lock` or `make test`"


def test_freeze_reproduces_the_lock_file() -> None:
    """`make lock` writes `tracegate service freeze`: the committed file is its output."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "service", "freeze"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert service.read_lock(LOCK) == service.read_lock_text(result.stdout)


def test_a_lock_file_holds_exact_pins_only(tmp_path: Path) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text("# comment\nPyYAML==6.0.4  # why\n\nPydantic_Core==2.50.5\n")
    assert service.read_lock(lock) == {"pyyaml": "6.0.4", "pydantic-core": "2.50.5"}
    lock.write_text("pyyaml>=6\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        service.read_lock(lock)


def test_a_virtualenv_that_differs_from_the_lock_is_refused() -> None:
    pins = {"pyyaml": "6.0.4", "anyio": "4.16.0"}
    service._matches_lock(
        {"PyYAML": "6.0.4", "anyio": "4.16.0", "pip": "1", "tracegate": "0"}, pins
    )
    with pytest.raises(service.StepFailed) as exc:
        service._matches_lock({"PyYAML": "6.0.3", "anyio": "4.16.0", "idna": "3.20"}, pins)
    assert "PyYAML 6.0.3 installed, the lock pins 6.0.4" in str(exc.value)
    assert "idna 3.20 is not in the lock" in str(exc.value)


def test_the_makefile_installs_with_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [ln for ln in makefile.splitlines() if "pip install" in ln and "-e " in ln]
    assert installs and all("-c constraints.txt" in ln or "--upgrade" in ln for ln in installs)
    assert "\nlock:" in makefile
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"] == "tracegate"


# --- install, upgrade, uninstall into a staging root --------------------------------------------


@dataclass
class Staged:
    stage: Path
    tree: Path  # the copy of this source tree that was installed
    output: str
    seconds: float

    def at(self, path: str) -> Path:
        return self.stage / path.lstrip("/")

    @property
    def link(self) -> Path:
        return self.at("/opt/tracegate/venv")

    def venvs(self) -> list[str]:
        return sorted(p.name for p in self.at("/opt/tracegate/venvs").iterdir())


def _copy_tree(dest: Path) -> Path:
    """This source tree without its virtualenv, caches and build products."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _service(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m gateway.service` of the copied tree, as on a line PC before any install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.service", *args],
        capture_output=True,
        text=True,
        cwd=tree,
        env=env,
        timeout=300,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _snapshot(stage: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path under the stage: mode, owner, group, content hash (or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(stage):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = "dir"
            out[str(p.relative_to(stage))] = (st.st_mode, st.st_uid, st.st_gid, what)
    return out


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    base = tmp_path_factory.mktemp("service")
    tree = _copy_tree(base / "tracegate-src")
    stage = base / "stage"
    started = time.monotonic()
    result = _service(tree, "install", "--root", str(stage))
    return Staged(stage, tree, result.stdout, time.monotonic() - started)


def test_install_creates_the_virtualenv_unit_and_directories(staged: Staged) -> None:
    s = staged
    assert s.link.is_symlink() and os.readlink(s.link).startswith("venvs/venv-")
    assert s.venvs() == [Path(os.readlink(s.link)).name]
    for name in ("tracegate.service", "tracegate.tmpfiles.conf", "tracegate.sysusers.conf"):
        dest = {
            "tracegate.service": "/etc/systemd/system/tracegate.service",
            "tracegate.tmpfiles.conf": "/etc/tmpfiles.d/tracegate.conf",
            "tracegate.sysusers.conf": "/etc/sysusers.d/tracegate.conf",
        }[name]
        assert s.at(dest).read_bytes() == (ROOT / "systemd" / name).read_bytes(), dest
        assert stat.S_IMODE(s.at(dest).stat().st_mode) == 0o644
    conf, state = s.at("/etc/tracegate"), s.at("/var/lib/tracegate")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o750
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    example = (ROOT / "device_profiles/lines/example-line.yaml").read_bytes()
    assert s.at("/etc/tracegate/line.yaml").read_bytes() == example
    assert stat.S_IMODE(s.at("/etc/tracegate/line.yaml").stat().st_mode) == 0o640
    assert s.at("/etc/tracegate/line.yaml.example").read_bytes() == example
    # Every step says what it did.
    for words in ("install", "create the virtualenv", "with the lock", "switch", "line.yaml"):
        assert words in s.output, words
    print(f"install into a staging root: {s.seconds:.1f} s")


def test_the_installed_program_is_its_own_and_checks_the_example_line(staged: Staged) -> None:
    venv = staged.link
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import gateway, paho; print(gateway.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=staged.stage,  # not this tree, whose gateway/ `python -c` would import first
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(staged.link.resolve()), where
    line = staged.at("/etc/tracegate/line.yaml")
    check = subprocess.run(
        [str(venv / "bin/tracegate"), "check", "-c", str(line)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "valid; gateway gw-line-3" in check.stdout


def test_the_installed_virtualenv_holds_exactly_the_locked_versions(staged: Staged) -> None:
    listed = subprocess.run(
        [str(staged.link / "bin/python"), "-c", service._LIST_DISTS],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {service.canonical(k): v for k, v in json.loads(listed.stdout).items()}
    pins = service.read_lock(LOCK)
    assert {k: v for k, v in installed.items() if k not in service.NOT_LOCKED} == {
        k: pins[k] for k in installed if k not in service.NOT_LOCKED
    }
    assert "pytest" not in installed and "paho-mqtt" in installed  # runtime only


def test_install_creates_the_service_user_and_enables_the_unit(staged: Staged) -> None:
    if shutil.which("systemd-sysusers") is None:
        assert "first boot" in staged.output
        pytest.skip("systemd-sysusers is not installed (Debian package systemd)")
    users = {ln.split(":")[0]: ln.split(":") for ln in staged.at("/etc/passwd").open()}
    user = users["tracegate"]
    assert int(user[2]) < 1000 and user[6].strip().endswith("nologin")
    groups = {ln.split(":")[0]: ln.strip().split(":") for ln in staged.at("/etc/group").open()}
    assert "tracegate" in groups["dialout"][3].split(",")
    if IS_ROOT:
        uid, gid = int(user[2]), int(user[3])
        conf, state = staged.at("/etc/tracegate").stat(), staged.at("/var/lib/tracegate").stat()
        assert (conf.st_uid, conf.st_gid) == (0, gid)
        assert (state.st_uid, state.st_gid) == (uid, gid)
    if shutil.which("systemctl") is not None:
        wants = staged.at("/etc/systemd/system/multi-user.target.wants/tracegate.service")
        assert wants.is_symlink()


def test_installing_again_changes_nothing(staged: Staged) -> None:
    before = _snapshot(staged.stage)
    result = _service(staged.tree, "install", "--root", str(staged.stage))
    assert "exists" in result.stdout and "kept" in result.stdout
    assert _snapshot(staged.stage) == before


def test_dry_runs_change_nothing(staged: Staged) -> None:
    before = _snapshot(staged.stage)
    root = ["--root", str(staged.stage), "--dry-run"]
    outputs = [
        _service(staged.tree, "install", *root).stdout,
        _service(staged.tree, "upgrade", *root).stdout,
        _service(staged.tree, "uninstall", "--purge", *root).stdout,
    ]
    assert _snapshot(staged.stage) == before
    assert all("would " in out for out in outputs)
    assert "would install" in outputs[1] or "would run" in outputs[1]
    assert "(--purge)" in outputs[2]


def test_install_refuses_without_root_or_stage(tmp_path: Path) -> None:
    if IS_ROOT:
        pytest.skip("needs a user other than root")
    result = _service(ROOT, "install", check=False)
    assert result.returncode == service.EX_NOPERM


# --- upgrade ------------------------------------------------------------------------------------


async def _make_journal(path: Path) -> None:
    """A journal with events waiting, written by the gateway's own Journal."""
    j = await Journal.open(
        path, EventContext("gw-line-3", "line-3", "cafe"), max_rows=1000, max_bytes=1 << 24
    )
    task = asyncio.create_task(j.run())
    try:
        events = [
            TraceEvent("identified", 1.7e9 + i, station="st10", step="assembly", detail={"i": i})
            for i in range(5)
        ]
        await j.commit(events)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await j.close()


def _state_bytes(staged: Staged) -> dict[str, bytes]:
    state = staged.at("/var/lib/tracegate")
    return {p.name: p.read_bytes() for p in sorted(state.iterdir())}


@dataclass
class Upgraded:
    refused: subprocess.CompletedProcess[str]
    venvs_after_refusal: list[str]
    link_after_refusal: str
    result: subprocess.CompletedProcess[str]
    state_before: dict[str, bytes]
    line_before: bytes
    old_target: str
    seconds: float


@pytest.fixture(scope="module")
def upgraded(staged: Staged) -> Upgraded:
    state = staged.at("/var/lib/tracegate")
    asyncio.run(_make_journal(state / "journal.db"))
    line = staged.at("/etc/tracegate/line.yaml")
    # The line file points at the staged journal, so the new version can read it afterwards.
    good = line.read_text().replace(
        "path: /var/lib/tracegate/journal.db", f"path: {state / 'journal.db'}"
    )
    assert good != line.read_text()
    old_target = os.readlink(staged.link)
    venvs = staged.venvs()

    # A line file the new version refuses: nothing switched, the new virtualenv removed.
    line.write_text(good.replace("port: 8883", "port: 99999"))
    refused = _service(staged.tree, "upgrade", "--root", str(staged.stage), check=False)
    venvs_after_refusal, link_after_refusal = staged.venvs(), os.readlink(staged.link)
    assert venvs_after_refusal == venvs

    line.write_text(good + "# edited on site\n")
    state_before, line_before = _state_bytes(staged), line.read_bytes()
    started = time.monotonic()
    result = _service(staged.tree, "upgrade", "--root", str(staged.stage), check=False)
    return Upgraded(
        refused,
        venvs_after_refusal,
        link_after_refusal,
        result,
        state_before,
        line_before,
        old_target,
        time.monotonic() - started,
    )


def test_upgrade_refuses_a_line_file_the_new_version_rejects(
    staged: Staged, upgraded: Upgraded
) -> None:
    r = upgraded.refused
    assert r.returncode == service.EX_CONFIG, r.stdout + r.stderr
    assert "mqtt.port" in r.stderr and "nothing was switched" in r.stderr
    assert upgraded.link_after_refusal == upgraded.old_target


def test_upgrade_switches_to_a_new_virtualenv_and_keeps_journal_and_line_file(
    staged: Staged, upgraded: Upgraded
) -> None:
    r = upgraded.result
    assert r.returncode == 0, r.stdout + r.stderr
    new_target = os.readlink(staged.link)
    assert new_target != upgraded.old_target
    assert staged.venvs() == sorted([Path(upgraded.old_target).name, Path(new_target).name])
    assert "valid; gateway gw-line-3" in r.stdout  # checked with the new version first
    assert _state_bytes(staged) == upgraded.state_before  # byte for byte
    assert staged.at("/etc/tracegate/line.yaml").read_bytes() == upgraded.line_before
    # The new version reads the journal the old one left.
    line = staged.at("/etc/tracegate/line.yaml")
    stats = subprocess.run(
        [str(staged.link / "bin/tracegate"), "outbox", "stats", "--json", "-c", str(line)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert stats.returncode == 0, stats.stdout + stats.stderr
    assert json.loads(stats.stdout)["waiting"] == 5
    print(f"upgrade: {upgraded.seconds:.1f} s")


# --- uninstall ----------------------------------------------------------------------------------


def test_uninstall_keeps_data_and_purge_removes_it(staged: Staged, upgraded: Upgraded) -> None:
    assert upgraded.result.returncode == 0
    state = _state_bytes(staged)
    line = staged.at("/etc/tracegate/line.yaml").read_bytes()
    result = _service(staged.tree, "uninstall", "--root", str(staged.stage))
    assert "kept" in result.stdout
    assert not staged.link.exists() and not staged.link.is_symlink()
    assert not staged.at("/opt/tracegate").exists()
    assert not staged.at("/etc/systemd/system/tracegate.service").exists()
    assert not staged.at("/etc/systemd/system/multi-user.target.wants/tracegate.service").exists()
    assert _state_bytes(staged) == state
    assert staged.at("/etc/tracegate/line.yaml").read_bytes() == line

    _service(staged.tree, "uninstall", "--root", str(staged.stage))  # again: nothing to do
    result = _service(staged.tree, "uninstall", "--purge", "--root", str(staged.stage))
    assert not staged.at("/etc/tracegate").exists()
    assert not staged.at("/var/lib/tracegate").exists()
    assert "(--purge)" in result.stdout
