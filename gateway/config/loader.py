"""Loading a line file: YAML -> profile merge -> validation -> cross references.

Every problem is collected, not just the first, and reported one a line as
`FILE:LINE:COL: path.to.field: message (got VALUE)`, pointing into the line file or into the
profile a value came from. A device entry is its profile's `settings`, deep-merged under the
entry's own keys (mappings merge, lists and scalars replace), then validated as a whole.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gateway.config import yamlpos
from gateway.config.base import ID_PATTERN
from gateway.config.models import (
    SCANNER_KINDS,
    DeviceConfig,
    LineConfig,
    MqttConfig,
    SerialScannerConfig,
    TcpScannerConfig,
    TlsConfig,
)
from gateway.config.plc import PLC_KINDS, ModbusConfig, OpcuaConfig
from gateway.config.rfid import RFID_KINDS, LlrpConfig
from gateway.config.yamlpos import Located, Mark, PathKey, Where, YamlProblem

DEVICE_MODELS: dict[str, type[BaseModel]] = {
    "serial_scanner": SerialScannerConfig,
    "tcp_scanner": TcpScannerConfig,
    "opcua": OpcuaConfig,
    "modbus": ModbusConfig,
    "llrp": LlrpConfig,
}

# Station fields that name one PLC signal ({device, signal}), and what they need of it.
SIGNAL_FIELDS = (
    ("result", "any"),
    ("read_window", "bool"),
    ("work_order_signal", "string"),
    ("verdict", "writable int"),
)

# Fields of a handshake and of commissioning that name signals of the handshake's PLC.
HANDSHAKE_FIELDS = (("request", "bool"), ("ack", "writable bool"), ("verdict", "writable int"))
COMMISSION_FIELDS = (("write", "writable string"), ("counter", "any"))


def _named(
    at: PathKey, device: Any, spec: dict[str, Any], fields: tuple[tuple[str, str], ...]
) -> list[tuple[PathKey, Any, str | None, str]]:
    return [(at, device, spec.get(name), f"{use}@{name}") for name, use in fields if name in spec]


PROFILE_HEADER = ("vendor", "model", "description", "kind", "settings", "example", "notes")


@dataclass(frozen=True, slots=True)
class Problem:
    mark: Mark
    path: str
    message: str
    got: Any = None
    has_got: bool = False

    def __str__(self) -> str:
        tail = f" (got {render_value(self.got)})" if self.has_got else ""
        return f"{self.mark}: {self.path}: {self.message}{tail}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True)
class LoadedConfig:
    config: LineConfig
    source: Path
    config_hash: str
    profiles: dict[str, Path] = field(default_factory=dict)  # device id -> profile file


def render_value(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


_PLAIN_KEY = re.compile(r"[^\s.\[\]\"]+")


def path_text(path: Iterable[str | int]) -> str:
    """`devices[0].port`; the whole file is `(file)`. A key that is no plain name is quoted, its
    whitespace escaped (`["my\\u0020key"]`): a path is one word, so a problem stays one line of
    `FILE:LINE:COL: path: message`."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.fullmatch(p):
            out += f".{p}" if out else p
        else:
            quoted = json.dumps(p, ensure_ascii=False)
            out += "[" + re.sub(r"\s", lambda m: f"\\u{ord(m[0]):04x}", quoted) + "]"
    return out or "(file)"


# --- profiles ----------------------------------------------------------------------------------


def bundled_profiles_dir() -> Path:
    # `device_profiles/` sits beside the `gateway` package both in a source checkout and in an
    # installed wheel (it is packaged as top-level data), so no importlib.resources needed: that
    # API rejects data-only namespace directories.
    return Path(__file__).resolve().parents[2] / "device_profiles"


def profile_search_path(config_dir: Path, extra: Iterable[Any]) -> list[Path]:
    dirs = [config_dir / Path(str(d)) for d in extra]
    dirs.append(bundled_profiles_dir())
    return dirs


def available_profiles(dirs: Iterable[Path]) -> list[str]:
    names: set[str] = set()
    for d in dirs:
        if d.is_dir():
            names.update(
                p.relative_to(d).with_suffix("").as_posix()
                for p in d.rglob("*.yaml")
                if not p.relative_to(d).as_posix().startswith("lines/")
            )
    return sorted(names)


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # a name too long for the file system (ENAMETOOLONG) is no profile either
        return False


def find_profile(name: str, config_dir: Path, dirs: list[Path]) -> Path | None:
    if name.endswith((".yaml", ".yml")):
        p = config_dir / name
        return p if _is_file(p) else None
    for d in dirs:
        p = d / f"{name}.yaml"
        if _is_file(p):
            return p
    return None


def display_path(p: Path, config_dir: Path) -> str:
    """How a file is named in messages: relative to the line file when below it."""
    try:
        return (
            os.path.relpath(p, Path.cwd())
            if not p.is_relative_to(bundled_profiles_dir())
            else "device_profiles/" + p.relative_to(bundled_profiles_dir()).as_posix()
        )
    except ValueError:
        return str(p)


# --- loading -----------------------------------------------------------------------------------


def load_or_report(path: Path) -> LoadedConfig | None:
    """Load a line file for a command; on error print every problem to stderr, one a line
    (then a summary line), and return None (the caller exits 78)."""
    try:
        return load_line(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}; not valid", file=sys.stderr)
        return None


def load_line(path: Path) -> LoadedConfig:
    """Load and validate a line file. Raises ConfigError with every problem found."""
    display = str(path)
    try:
        located = yamlpos.load(path, display)
    except YamlProblem as exc:
        raise ConfigError(
            [
                Problem(
                    exc.mark, _yaml_path(exc, "(file)"), exc.problem, exc.got, exc.got is not None
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [Problem(Mark(display, 1, 1), "(file)", f"cannot read: {exc.strerror}")]
        ) from None
    return _Loader(path, located).run()


class _Loader:
    def __init__(self, path: Path, located: Located) -> None:
        self.path = path
        self.config_dir = path.resolve().parent
        self.doc = located
        self.problems: list[Problem] = []
        self.profiles: dict[str, Path] = {}
        self.bad_profiles: set[PathKey] = set()

    def problem(
        self,
        path: PathKey,
        message: str,
        *,
        key: bool = False,
        got: Any = None,
        has_got: bool = False,
    ) -> None:
        self.problems.append(
            Problem(self.doc.where(path, key=key), path_text(path), message, got, has_got)
        )

    def run(self) -> LoadedConfig:
        data = self.doc.data
        if not isinstance(data, dict):
            raise ConfigError(
                [
                    Problem(
                        self.doc.where(()),
                        path_text(()),
                        "the line file must be a mapping",
                        data,
                        True,
                    )
                ]
            )
        self._merge_profiles(data)
        config: LineConfig | None = None
        try:
            config = LineConfig.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                self._validation_problem(data, err)
        self._cross_references(data)
        if self.problems:
            self.problems.sort(
                key=lambda p: (p.mark.file != str(self.path), p.mark.file, p.mark.line, p.mark.col)
            )
            raise ConfigError(self.problems)
        assert config is not None
        config = self._resolve_paths(config)
        digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
        return LoadedConfig(config, self.path, digest, self.profiles)

    # profiles

    def _merge_profiles(self, data: dict[str, Any]) -> None:
        devices = data.get("devices")
        if not isinstance(devices, list):
            return
        extra = data.get("profile_dirs")
        # Not a list (`profile_dirs: 1`): the schema check reports it; the bundled dirs still serve.
        dirs = profile_search_path(self.config_dir, extra if isinstance(extra, list) else [])
        for i, entry in enumerate(devices):
            if not isinstance(entry, dict) or not isinstance(entry.get("profile"), str):
                continue
            name = entry["profile"]
            found = find_profile(name, self.config_dir, dirs)
            if found is None:
                hint = _suggest(name, available_profiles(dirs))
                self.problem(
                    ("devices", i, "profile"),
                    f"no such device profile{hint}",
                    got=name,
                    has_got=True,
                )
                self.bad_profiles.add(("devices", i))
                continue
            merged = self._apply_profile(("devices", i), entry, found)
            if merged is not None:
                devices[i] = merged
                if isinstance(entry.get("id"), str):
                    self.profiles[entry["id"]] = found

    def _apply_profile(
        self, at: PathKey, entry: dict[str, Any], profile_path: Path
    ) -> dict[str, Any] | None:
        shown = display_path(profile_path, self.config_dir)
        try:
            prof = yamlpos.load(profile_path, shown)
        except YamlProblem as exc:
            self.problems.append(
                Problem(
                    exc.mark,
                    _yaml_path(exc, "(profile)"),
                    exc.problem,
                    exc.got,
                    exc.got is not None,
                )
            )
            return None
        pdata = prof.data
        if not isinstance(pdata, dict) or not isinstance(pdata.get("settings", {}), dict):
            self.problems.append(
                Problem(
                    prof.where(()), "(profile)", "a profile is a mapping with a `settings` mapping"
                )
            )
            return None
        for key in pdata:
            if key not in PROFILE_HEADER:
                self.problems.append(
                    Problem(
                        prof.where((key,), key=True),
                        str(key),
                        "unknown profile key" + _suggest(str(key), PROFILE_HEADER),
                    )
                )
        raw_settings = pdata.get("settings")
        settings: dict[str, Any] = dict(raw_settings) if isinstance(raw_settings, dict) else {}
        if "kind" in pdata:
            settings["kind"] = pdata["kind"]
            if "kind" in entry and entry["kind"] != pdata["kind"]:
                self.problem(
                    (*at, "kind"),
                    f"contradicts the profile's kind {pdata['kind']!r}",
                    got=entry["kind"],
                    has_got=True,
                )
        # Marks of profile values, re-rooted under the device entry, unless the entry has them.
        for ppath, where in prof.marks.items():
            if ppath[:1] == ("settings",) and len(ppath) > 1:
                target = (*at, *ppath[1:])
            elif ppath == ("kind",):
                target = (*at, "kind")
            else:
                continue
            if target not in self.doc.marks:
                self.doc.marks[target] = where
        return _deep_merge(settings, entry)

    # validation errors

    def _validation_problem(self, data: Any, err: Any) -> None:
        path = _data_path(data, tuple(err["loc"]))
        etype, msg = err["type"], err["msg"]
        if etype == "extra_forbidden":
            allowed = _fields_at(data, path[:-1])
            hint = _suggest(str(path[-1]), allowed)
            self.problem(path, "unknown field" + hint, key=True, got=err["input"], has_got=True)
            return
        if etype == "missing":
            self.problems.append(
                Problem(
                    self.doc.where(path[:-1], key=True),
                    path_text(path),
                    "required field is missing",
                )
            )
            return
        if etype == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == ID_PATTERN:
            self.problem(
                path,
                "ids are 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
                got=err["input"],
                has_got=True,
            )
            return
        if etype == "union_tag_invalid":
            kinds = ", ".join(sorted(DEVICE_MODELS))
            self.problem(
                (*path, "kind"),
                f"unknown device kind; expected one of {kinds}",
                got=err["input"].get("kind") if isinstance(err["input"], dict) else None,
                has_got=True,
            )
            return
        if etype == "union_tag_not_found":
            if path[:2] not in self.bad_profiles:  # already reported: the profile is missing
                self.problem(
                    path, "device has no `kind` (give `kind`, or a `profile` that sets it)"
                )
            return
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, ") :]
        msg = msg[:1].lower() + msg[1:]
        value = err.get("input")
        self.problem(path, msg, got=value, has_got=not isinstance(value, dict))

    # cross references

    def _cross_references(self, data: dict[str, Any]) -> None:
        """Ids and references, checked on the raw data so that they are reported together with
        the schema problems (entries too broken to have an id are skipped here)."""
        devices = _entries(data.get("devices"))
        kinds: dict[str, Any] = {}
        marks: dict[str, Mark] = {}
        for i, dev in devices:
            self._unique("devices", i, dev, marks, "device")
            if isinstance(dev.get("id"), str):
                kinds.setdefault(dev["id"], _kind(dev))
        device_ids = [k for k in kinds if isinstance(k, str)]
        signals: dict[str, Any] = {
            dev["id"]: dev.get("signals") if isinstance(dev.get("signals"), dict) else {}
            for _, dev in devices
            if isinstance(dev.get("id"), str)
        }
        stations: dict[str, Mark] = {}
        used_by: dict[str, str] = {}
        readers = {d["id"]: d for _, d in devices if isinstance(d.get("id"), str)}
        for s, st in _entries(data.get("stations")):
            self._unique("stations", s, st, stations, "station")
            self._signal_refs(s, st, kinds, signals)
            self._portal_ref(s, st, readers)
            self._output_refs(s, st, readers, (kinds, signals))
            identity = st.get("identity")
            sources = identity.get("sources") if isinstance(identity, dict) else None
            for j, src in enumerate(sources if isinstance(sources, list) else []):
                at = ("stations", s, "identity", "sources", j)
                if not isinstance(src, str):
                    continue
                if src not in kinds:
                    self.problem(
                        at,
                        "no device with this id" + _suggest(src, device_ids),
                        got=src,
                        has_got=True,
                    )
                elif kinds[src] in DEVICE_MODELS and kinds[src] not in SCANNER_KINDS:
                    self.problem(
                        at, f"a {kinds[src]} device cannot identify units", got=src, has_got=True
                    )
                elif src in used_by and used_by[src] != st.get("id"):
                    self.problem(
                        at,
                        f"device already identifies units at station "
                        f"{used_by[src]!r}; a device serves one station",
                        got=src,
                        has_got=True,
                    )
                else:
                    used_by[src] = str(st.get("id"))
        self._serialization_refs(data)

    def _serialization_refs(self, data: dict[str, Any]) -> None:
        """Steps a rule requires are some station's; pools are declared once and exist where a
        station takes from one; an aggregation's sides name this station's own devices."""
        pools: dict[str, Mark] = {}
        for i, entry in _entries(data.get("pools")):
            self._unique("pools", i, entry, pools, "pool")
        steps = {str(st.get("step") or st.get("id")) for _, st in _entries(data.get("stations"))}
        for s, st in _entries(data.get("stations")):
            rules = st.get("rules")
            requires = rules.get("requires") if isinstance(rules, dict) else None
            for k, step in enumerate(requires if isinstance(requires, list) else []):
                if isinstance(step, str) and step not in steps:
                    self.problem(
                        ("stations", s, "rules", "requires", k),
                        "no station records this step" + _suggest(step, sorted(steps)),
                        got=step,
                        has_got=True,
                    )
            spec = st.get("commission")
            name = spec.get("pool") if isinstance(spec, dict) else None
            if isinstance(name, str) and name not in pools:
                self.problem(
                    ("stations", s, "commission", "pool"),
                    "no pool with this id in `pools`" + _suggest(name, list(pools)),
                    got=name,
                    has_got=True,
                )
            self._aggregation_sides(s, st)

    def _aggregation_sides(self, s: int, st: dict[str, Any]) -> None:
        agg = st.get("aggregation")
        if not isinstance(agg, dict):
            return
        identity = st.get("identity")
        own = list(_items(identity.get("sources"))) if isinstance(identity, dict) else []
        portal = st.get("portal")
        if isinstance(portal, dict) and isinstance(portal.get("device"), str):
            own.append(portal["device"])
        for side in ("parent", "children"):
            spec = agg.get(side)
            sources = spec.get("sources") if isinstance(spec, dict) else None
            for k, src in enumerate(sources if isinstance(sources, list) else []):
                if isinstance(src, str) and src not in own:
                    self.problem(
                        ("stations", s, "aggregation", side, "sources", k),
                        "not one of this station's identity sources or its portal"
                        + _suggest(src, own),
                        got=src,
                        has_got=True,
                    )

    def _portal_ref(self, s: int, st: dict[str, Any], devices: dict[str, Any]) -> None:
        """A portal names an LLRP reader of the line, with antennas it inventories; a read window
        needs a reader whose inventory the gateway commands."""
        portal = st.get("portal")
        if not isinstance(portal, dict) or not isinstance(portal.get("device"), str):
            return
        at = ("stations", s, "portal")
        dev = devices.get(portal["device"])
        if dev is None:
            self.problem(
                (*at, "device"),
                "no device with this id" + _suggest(portal["device"], devices),
                got=portal["device"],
                has_got=True,
            )
            return
        if _kind(dev) not in RFID_KINDS:
            self.problem(
                (*at, "device"),
                f"a {dev.get('kind')} device is not an RFID reader",
                got=portal["device"],
                has_got=True,
            )
            return
        reader_ants = dev.get("antennas") if isinstance(dev.get("antennas"), list) else [1]
        ants = portal.get("antennas")
        for k, a in enumerate(ants if isinstance(ants, list) else []):
            if a not in reader_ants:
                self.problem(
                    (*at, "antennas", k),
                    f"the reader {portal['device']!r} does not "
                    f"inventory antenna {a} (its antennas: {reader_ants})",
                    got=a,
                    has_got=True,
                )
        if st.get("read_window") is not None and dev.get("inventory") != "commanded":
            self.problem(
                ("stations", s, "read_window"),
                f"the reader {portal['device']!r} "
                "must have `inventory: commanded` for a read window to open it",
            )

    def _output_refs(
        self,
        s: int,
        st: dict[str, Any],
        devices: dict[str, Any],
        known: tuple[dict[str, Any], dict[str, Any]],
    ) -> None:
        """An output is a reader's GPO port or a writable PLC signal."""
        for k, rule in enumerate(_items(st.get("outputs"))):
            if not isinstance(rule, dict):
                continue
            at = ("stations", s, "outputs", k)
            device, signal = rule.get("device"), rule.get("signal")
            dev = devices.get(device) if isinstance(device, str) else None
            if dev is None or _kind(dev) not in RFID_KINDS:
                self._signal_ref(at, device, signal, "writable any", known)
                continue
            ports = dev.get("gpo_ports", 4)
            m = re.fullmatch(r"gpo(\d+)", signal) if isinstance(signal, str) else None
            if isinstance(signal, str) and (m is None or not 1 <= int(m[1]) <= ports):
                self.problem(
                    (*at, "signal"),
                    f"the reader {device!r} has outputs gpo1 .. gpo{ports}",
                    got=signal,
                    has_got=True,
                )

    def _signal_refs(
        self, s: int, st: dict[str, Any], kinds: dict[str, Any], signals: dict[str, Any]
    ) -> None:
        """Every PLC signal a station names exists, and suits what the station does with it."""
        refs: list[tuple[PathKey, Any, str | None, str]] = []  # (path, device, signal, use)
        identity = st.get("identity")
        if isinstance(identity, dict) and isinstance(identity.get("signal"), dict):
            ref = identity["signal"]
            refs.append((("identity", "signal"), ref.get("device"), ref.get("signal"), "string"))
        trigger = st.get("trigger")
        if isinstance(trigger, dict):
            use = "any" if trigger.get("edge") == "change" else "bool"
            refs.append((("trigger",), trigger.get("device"), trigger.get("signal"), use))
        hs = st.get("handshake")
        if isinstance(hs, dict):
            refs += _named(("handshake",), hs.get("device"), hs, HANDSHAKE_FIELDS)
        for k, prm in enumerate(_items(st.get("parameters"))):
            if isinstance(prm, dict):
                refs.append((("parameters", k), prm.get("device"), prm.get("signal"), "any"))
        for key, use in SIGNAL_FIELDS:  # fields that are one {device, signal}
            ref = st.get(key)
            if isinstance(ref, dict):
                refs.append(((key,), ref.get("device"), ref.get("signal"), use))
        commission = st.get("commission")
        if isinstance(commission, dict) and isinstance(hs, dict):
            refs += _named(("commission",), hs.get("device"), commission, COMMISSION_FIELDS)
        for sub, device, signal, use in refs:
            self._signal_ref(("stations", s, *sub), device, signal, use, (kinds, signals))

    def _signal_ref(
        self,
        at: PathKey,
        device: Any,
        signal: Any,
        use: str,
        known: tuple[dict[str, Any], dict[str, Any]],
    ) -> None:
        kinds, signals = known  # device id -> kind; device id -> its signals
        if not isinstance(device, str) or not isinstance(signal, str):
            return  # the schema check reports the missing or mistyped field
        field_name = use.split("@")[1] if "@" in use else "signal"
        if device not in kinds:
            self.problem(
                (*at, "device"),
                "no device with this id" + _suggest(device, kinds),
                got=device,
                has_got=True,
            )
            return
        if kinds[device] is None:
            return  # the schema check reports a missing or mistyped kind
        if kinds[device] not in PLC_KINDS:
            self.problem(
                (*at, "device"),
                f"a {kinds[device]} device has no signals",
                got=device,
                has_got=True,
            )
            return
        sig = signals[device].get(signal)
        if not isinstance(sig, dict):
            self.problem(
                (*at, field_name),
                f"device {device!r} has no signal of this name" + _suggest(signal, signals[device]),
                got=signal,
                has_got=True,
            )
            return
        kind = use.split("@", maxsplit=1)[0]
        if kind.startswith("writable") and sig.get("writable") is not True:
            self.problem(
                (*at, field_name),
                f"signal {signal!r} of {device!r} is not writable (set `writable: true` on it)",
                got=signal,
                has_got=True,
            )
        wanted = kind.removeprefix("writable ")
        typ = sig.get("type")
        ok = {
            "bool": typ == "bool",
            "int": isinstance(typ, str) and "int" in typ,
            "string": typ == "string",
            "any": True,
        }[wanted]
        if not ok:
            what = {"bool": "a bool", "int": "an integer", "string": "a string"}[wanted]
            self.problem(
                (*at, field_name),
                f"this needs {what} signal; {signal!r} is {typ}",
                got=signal,
                has_got=True,
            )

    def _unique(
        self, section: str, i: int, entry: dict[str, Any], seen: dict[str, Mark], what: str
    ) -> None:
        ident = entry.get("id")
        if not isinstance(ident, str):
            return
        if ident in seen:
            first = seen[ident]
            self.problem(
                (section, i, "id"),
                f"duplicate {what} id (first at line {first.line})",
                got=ident,
                has_got=True,
            )
        else:
            seen[ident] = self.doc.where((section, i, "id"))

    # paths relative to the line file

    def _resolve_paths(self, config: LineConfig) -> LineConfig:
        base = self.config_dir

        def rel(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else base / p)

        journal = config.journal.model_copy(update={"path": rel(config.journal.path)})
        mqtt: MqttConfig = config.mqtt
        tls: TlsConfig | None = mqtt.tls
        if tls is not None:
            tls = tls.model_copy(
                update={
                    "ca_file": rel(tls.ca_file),
                    "cert_file": rel(tls.cert_file),
                    "key_file": rel(tls.key_file),
                }
            )

        def secret(p: Path | None) -> Path | None:
            if p is None or p.is_absolute():
                return p
            # systemd LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY.
            cred = os.environ.get("CREDENTIALS_DIRECTORY")
            return Path(cred) / p if cred else base / p

        mqtt = mqtt.model_copy(update={"tls": tls, "password_file": secret(mqtt.password_file)})
        devices = [
            d.model_copy(
                update={
                    "certificate_file": rel(d.certificate_file),
                    "private_key_file": rel(d.private_key_file),
                    "server_certificate_file": rel(d.server_certificate_file),
                    "password_file": secret(d.password_file),
                }
            )
            if isinstance(d, OpcuaConfig)
            else d
            for d in config.devices
        ]
        return config.model_copy(update={"journal": journal, "mqtt": mqtt, "devices": devices})


# --- helpers -----------------------------------------------------------------------------------


def _entries(section: Any) -> list[tuple[int, dict[str, Any]]]:
    return (
        [(i, e) for i, e in enumerate(section) if isinstance(e, dict)]
        if isinstance(section, list)
        else []
    )


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _yaml_path(exc: YamlProblem, whole: str) -> str:
    """The path of the value a YAML problem is about, or `whole` (the file, the profile)."""
    return path_text(exc.path) if exc.path else whole


def _kind(device: dict[str, Any]) -> str | None:
    """A device entry's `kind` when it is text; a list or mapping (which the schema check
    reports) is no kind, and cannot be looked up in the sets of kinds."""
    kind = device.get("kind")
    return kind if isinstance(kind, str) else None


def _items(value: Any) -> list[Any]:
    """A list field's items for the cross references, or none when it is no list (a mistyped
    field is the schema check's problem to report, not a TypeError here: found by the fuzzer)."""
    return value if isinstance(value, list) else []


def _suggest(word: str, options: Iterable[Any]) -> str:
    # YAML keys may be integers (`0: null` among signals): only names are suggested.
    names = [o for o in options if isinstance(o, str)]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _data_path(data: Any, loc: tuple[Any, ...]) -> PathKey:
    """Pydantic's error location, minus the union tags it inserts (`devices.0.tcp_scanner.port`
    is `devices[0].port` in the file)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _fields_at(data: Any, path: PathKey) -> list[str]:
    """Field names of the model that validates the mapping at `path` (for suggestions)."""
    model: Any = LineConfig
    keyed: Any = None  # the annotation of a dict's values when the next part is a dict key
    node = data
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        node = node.get(part) if isinstance(node, dict) else None
        if keyed is not None:
            ann, keyed = keyed, None
        elif model is not None and part in model.model_fields:
            ann = model.model_fields[part].annotation
            if get_origin(ann) is dict:
                keyed = get_args(ann)[1]
                continue
        else:
            return []
        model = _model_of(ann, node)
    if model is None:
        return []
    return list(model.model_fields)


def _model_of(annotation: Any, node: Any) -> type[BaseModel] | None:
    for t in _flatten(annotation):
        if t is DeviceConfig or (isinstance(t, type) and t.__name__ == "DeviceConfig"):
            continue
        if isinstance(t, type) and issubclass(t, BaseModel):
            kind_field = t.model_fields.get("kind")
            if kind_field is None:
                return t
            if isinstance(node, dict) and t is DEVICE_MODELS.get(_kind(node) or ""):
                return t
    return None


def _flatten(annotation: Any) -> Iterator[Any]:
    args = getattr(annotation, "__args__", None)
    meta = getattr(annotation, "__metadata__", None)
    if meta is not None:  # Annotated[...]
        yield from _flatten(annotation.__origin__)
    elif args:
        for a in args:
            yield from _flatten(a)
    else:
        yield annotation


def validate_profile(path: Path) -> list[Problem]:
    """Check a profile file on its own, the way a line would use it: a line with one device
    entry made of the profile's `example` (the settings a line file adds, e.g. host and port)."""
    try:
        prof = yamlpos.load(path, display_path(path, path.parent))
    except YamlProblem as exc:
        return [Problem(exc.mark, "(profile)", exc.problem)]
    data = prof.data
    problems: list[Problem] = []
    for key in ("vendor", "model", "description", "kind"):
        if not isinstance(data, dict) or not isinstance(data.get(key), str) or not data[key]:
            problems.append(Problem(prof.where(()), key, "required text field is missing"))
    example = data.get("example", {}) if isinstance(data, dict) else {}
    if not isinstance(example, dict):
        return [*problems, Problem(prof.where(("example",)), "example", "must be a mapping")]
    line = {
        "gateway": {"id": "probe", "site": "probe", "line": "probe"},
        "devices": [{"id": "probe", "profile": str(path.resolve()), **example}],
    }
    loader = _Loader(path, Located(line, {(): Where(None, Mark(str(path), 1, 1))}))
    try:
        loader.run()
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems
