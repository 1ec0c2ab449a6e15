"""Fuzzing configuration loading as `tracegate check` does it: arbitrary YAML text, and the
bundled line files and golden error cases mutated in their data (keys, values, types, ids,
nesting) and in their text (indentation, YAML syntax, anchors and aliases, alias bombs, tags,
huge numbers, deep nesting, bytes that are no UTF-8).

Contract: exit 0 with one `FILE: valid; ...` line, or exit 78 with every problem as
`FILE:LINE:COL: path: message` (tests/test_config.py's format), one a line, then the summary;
never another exception, never longer than the wall-clock limit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from tests.fuzz.harness import (
    Hang,
    Known,
    fuzz,
    mutated,
    mutated_text,
    one_input,
    time_limit,
)

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(ROOT.glob("device_profiles/lines/*.yaml")) + sorted(
    ROOT.glob("tests/config_cases/*/line.yaml")
)
SEED_TEXTS = [p.read_text(encoding="utf-8") for p in SEEDS]
LIMIT_S = 10.0  # wall clock per input; a valid line file loads in milliseconds
# The format of a problem line (tests/test_config.py: test_every_problem_line_has_the_contract_
# format), with its parts named.
CONTRACT = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+): (?P<msg>.+)$")


def _seed_data(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


SEED_DATA = [d for d in map(_seed_data, SEED_TEXTS) if isinstance(d, dict)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fuzzed line file is written, with the golden cases' local profiles beside it
    (a seed's `profile_dirs: [profiles]` then still finds them)."""
    path = tmp_path_factory.mktemp("config-fuzz")
    shutil.copytree(ROOT / "tests/config_cases/profile_value_wrong/profiles", path / "profiles")
    return path


# --- mutations of the data ---------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70_000),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(["", " ", "gw 1", "a" * 65, "x:y", "Müller", "\t", "readers/impinj-r700"]),
    st.sampled_from(["1.0", "0o17", "0x1f", "~", "null", "yes", "on", "1_000", "+.inf"]),
    st.text(max_size=16),
    st.dates(),
    st.sampled_from([dt.datetime(2026, 1, 1, 12, 0), dt.date(1, 1, 1)]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
keys = st.one_of(
    st.sampled_from(["id", "kind", "profile", "signals", "stations", "devices", "type", "port"]),
    st.sampled_from(["", " ", "my key", "a.b", "[0]", "a:b", "x\ny", "Port", "idd"]),
    st.text(max_size=8),
    st.integers(-1, 3),
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


@st.composite
def mutated_data(draw: st.DrawFn) -> Any:
    """A seed's data with a few changes in its tree."""
    import copy

    data = copy.deepcopy(draw(st.sampled_from(SEED_DATA)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        op = draw(st.sampled_from(["replace", "delete", "rename", "add", "dup", "wrap", "nest"]))
        if op == "replace":
            same = _strings(data)
            parent[last] = draw(values | st.sampled_from(same) if same else values)
        elif op == "delete":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(keys)] = draw(values)
        elif op == "dup" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}]))
        elif op == "nest":
            value = parent[last]
            for _ in range(draw(st.integers(1, 60))):
                value = [value]
            parent[last] = value
    return data


@st.composite
def dumped(draw: st.DrawFn) -> str:
    data = draw(mutated_data())
    flow = draw(st.sampled_from([None, False, True]))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=flow, allow_unicode=True)


# --- mutations of the text ---------------------------------------------------------------------

YAML_EDITS = " \t\n:-[]{},&*!|>'\"#%@`?<=~0123456789az\\\x00\x85\ufeff"
TOKENS = [
    ": ",
    "- ",
    "&a ",
    "*a",
    "*nowhere",
    "<<: *a\n",
    "!!binary ",
    "!!python/object/apply:os.system ['true'] ",
    "!!set ",
    "!!float ",
    "!!int ",
    "!!timestamp ",
    "? ",
    "{",
    "[",
    "'",
    '"',
    "|\n",
    ">-\n",
    "%YAML 1.1\n---\n",
    "---\n",
    "...\n",
    "\t",
    "2026-02-30",
    "1" * 20,
    ".nan",
    "-.inf",
    "0x" + "f" * 20,
    "\\",
]


@st.composite
def text_edits(draw: st.DrawFn) -> str:
    """A seed (or a dumped mutation) with its text edited: lines moved, indented, tokens put in,
    characters changed."""
    text = draw(st.sampled_from(SEED_TEXTS) | dumped())
    for _ in range(draw(st.integers(1, 3))):
        lines = text.split("\n")
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "dup", "indent", "dedent", "swap", "token", "chars"]))
        if op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = draw(st.sampled_from([" ", "  ", "\t", "    "])) + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][draw(st.integers(1, 2)) :]
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "token":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.sampled_from(TOKENS)) + lines[i][pos:]
        text = "\n".join(lines)
        if op == "chars":
            text = draw(mutated_text(text, YAML_EDITS))
    return text


@st.composite
def aliased(draw: st.DrawFn) -> str:
    """A seed with anchors and aliases: a value shared, a merge key, or a small alias bomb (the
    expansion of a few thousand nodes, which a loader must either refuse or build quickly)."""
    base = draw(st.sampled_from(SEED_TEXTS))
    kind = draw(st.sampled_from(["shared", "merge", "bomb"]))
    if kind == "shared":
        head = "x-shared: &s {host: 127.0.0.1, port: 9004, kind: tcp_scanner, id: s1}\n"
        spot = draw(st.sampled_from(["devices: [*s, *s]\n", "extra: *s\n", "gateway: *s\n"]))
        return head + base + "\n" + spot
    if kind == "merge":
        anchor = draw(st.sampled_from(["{site: plant}", "[1, 2]", "3", "{id: m}"]))
        return f"x-m: &m {anchor}\ngateway:\n  <<: *m\n  id: gw-1\n  line: l\n" + base.replace(
            "gateway:", "x-old-gateway:", 1
        )
    depth, width = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for d in range(1, depth + 1):
        lines.append(f"l{d}: &l{d} [" + ", ".join([f"*l{d - 1}"] * width) + "]")
    return "\n".join(lines) + "\n" + base


line_files = st.one_of(
    st.sampled_from(SEED_TEXTS),
    dumped(),
    dumped(),
    text_edits(),
    text_edits(),
    aliased(),
    st.text(max_size=200),
    st.text(alphabet=YAML_EDITS, max_size=80),
)
encoded = line_files.map(lambda t: t.encode("utf-8", "surrogatepass"))
line_bytes = st.one_of(
    encoded,
    encoded,
    encoded,
    line_files.map(lambda t: t.encode("utf-8", "surrogatepass")).flatmap(
        lambda b: mutated(b, max_ops=2)
    ),
)


# --- the contract ------------------------------------------------------------------------------


def _check(path: Path, text: bytes) -> tuple[int, list[str]]:
    """Run `tracegate check` on the file; return its exit code and problem lines, after checking
    the output's form (an AssertionError says `contract: ...` and what is wrong)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", "-c", str(path)])
    stdout, stderr = out.getvalue(), err.getvalue()
    if code == 0:
        assert stderr == "" and stdout.startswith(f"{path}: valid; gateway ")
        assert stdout.count("\n") == 1
        return code, []
    assert code == 78 and stdout == "", (code, stdout)
    *problems, summary = stderr.split("\n")[:-1]
    n = len(problems)
    if summary != f"{path}: {n} problem{'s' if n != 1 else ''}; not valid":
        raise AssertionError(f"contract: a problem over several lines: {stderr!r}")
    assert problems, stderr
    lines = _lines(text)
    for problem in problems:
        match = CONTRACT.match(problem)
        if match is None:
            if re.match(r"^[^:\s]+:\d+:\d+: \(top level\): ", problem):
                raise AssertionError(f"contract: the top-level path has a space: {problem!r}")
            if re.match(r"^[^:\s]+:\d+:\d+: .+: ", problem):
                raise AssertionError(f"contract: whitespace in the path: {problem!r}")
            raise AssertionError(f"contract: not FILE:LINE:COL: path: message: {problem!r}")
        if match["file"] == str(path):
            assert 1 <= int(match["line"]) <= lines and int(match["col"]) >= 1, problem
    return code, problems


def _lines(text: bytes) -> int:
    """Lines as YAML counts them (CR, LF, CRLF, NEL, LS and PS end a line)."""
    decoded = text.decode("utf-8", "replace")
    return len(re.findall("\r\n|[\r\n\x85\u2028\u2029]", decoded)) + 1


def _reason(problem: str) -> str:
    match = CONTRACT.match(problem)
    assert match is not None
    message = match["msg"].split(" (got ")[0].split("; did you mean")[0]
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "#", message)[:56]


# Findings fixed so far: every one of docs/fuzzing.md's `config-*` rows and the alias bomb. A new
# one goes here with its reproduction.
KNOWN: list[Known] = []


@fuzz(weight=2, deadline_ms=5000)
@given(text=line_bytes)
def test_fuzz_config_check(workdir: Path, text: bytes) -> None:
    """Any line file: a valid config, or ConfigError whose problems all have the contract
    format; never another exception, never a hang."""
    path = workdir / "line.yaml"
    path.write_bytes(text)
    with one_input("config.check", KNOWN, limit_s=LIMIT_S) as outcome:
        code, problems = _check(path, text)
        if code == 0:
            outcome.reason = "ok:valid"
        else:
            outcome.reason = "rejected:" + _reason(problems[0])
            for problem in problems[1:]:
                outcome.also("rejected:" + _reason(problem))


# --- what the fuzzers found --------------------------------------------------------------------

VALID = SEED_TEXTS[[p.name for p in SEEDS].index("example-line.yaml")]


def _refused(workdir: Path, text: str | bytes, limit_s: float = LIMIT_S) -> list[str]:
    path = workdir / "repro.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with time_limit(limit_s):
        code, problems = _check(path, path.read_bytes())
    assert code == 78
    return problems


def _problem(workdir: Path, text: str | bytes) -> str:
    """The only problem, without the file name."""
    [problem] = _refused(workdir, text)
    return problem.split(":", 1)[1]


def test_bug_a_date_that_is_no_date_is_a_problem(workdir: Path) -> None:
    assert _problem(workdir, "gateway: 2001-13-45\n") == (
        "1:10: gateway: invalid YAML value: not a timestamp (month must be in 1..12) "
        "(got '2001-13-45')"
    )


def test_bug_an_integer_of_thousands_of_digits_is_a_problem(workdir: Path) -> None:
    problem = _problem(workdir, "gateway: " + "1" * 5000 + "\n")
    assert problem.startswith(
        "1:10: gateway: invalid YAML value: not an int of at most 4300 digits"
    )


@pytest.mark.parametrize("value", ["!!timestamp x", "!!int x", "!!float x", "!!int ''", "!!float"])
def test_bug_a_tag_that_does_not_fit_its_value_is_a_problem(workdir: Path, value: str) -> None:
    tag = value.split(maxsplit=1)[0][2:]
    assert _problem(workdir, f"gateway: {value}\n").startswith(
        f"1:10: gateway: invalid YAML value: not a{'n' if tag == 'int' else ''} {tag}"
    )


def test_bug_a_merge_key_of_a_non_mapping_is_a_problem(workdir: Path) -> None:
    assert _problem(workdir, "x: &x 3\ngateway:\n  <<: *x\n") == (
        "3:3: (file): invalid YAML: expected a mapping or list of mappings for merging, but "
        "found scalar"
    )


def test_bug_deep_nesting_is_a_problem(workdir: Path) -> None:
    assert _problem(workdir, "gateway: " + "[" * 3000 + "]" * 3000 + "\n") == (
        "1:109: (file): invalid YAML: nested more than 100 deep"
    )


def test_bug_a_recursive_alias_is_a_problem(workdir: Path) -> None:
    assert _problem(workdir, "gateway: &a [*a]\n") == "1:10: (file): a recursive alias"
    assert _problem(workdir, "gateway: &a {<<: *a}\n") == "1:10: (file): a recursive alias"


def test_bug_an_alias_bomb_is_refused_quickly(workdir: Path) -> None:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with _memory_cap(1 << 30):
        try:
            problems = _refused(workdir, "\n".join(lines) + "\n" + VALID, limit_s=3.0)
        except Hang:
            pytest.fail("the loader was still expanding aliases after 3 s")
        except MemoryError:
            pytest.fail("the loader took 1 GiB expanding aliases")
    assert [p.split(":", 1)[1] for p in problems] == [
        "6:5: (file): aliases expand this to more than 200000 values"
    ]


@contextlib.contextmanager
def _memory_cap(extra_bytes: int) -> Iterator[None]:
    """Limit this process's address space to what it uses now plus `extra_bytes`: a safety net
    should the time limit not stop a runaway expansion before the machine runs out."""
    status = Path("/proc/self/status").read_text()
    used = int(re.search(r"VmSize:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_bug_a_file_that_is_no_utf8_is_a_problem(workdir: Path) -> None:
    assert _problem(workdir, "gateway:\n  id: M\xfcller\n".encode("latin-1")) == (
        "2:8: (file): the file is not UTF-8 (byte 0xfc); save it as UTF-8"
    )


def test_bug_a_very_long_profile_name_is_a_problem(workdir: Path) -> None:
    text = VALID.replace("profile: readers/impinj-r700", "profile: " + "r" * 300, 1)
    assert any(": no such device profile" in p for p in _refused(workdir, text))


def test_bug_a_top_level_problem_has_the_contract_format(workdir: Path) -> None:
    assert _problem(workdir, "- just\n- a list\n") == (
        "1:1: (file): the line file must be a mapping (got a list)"
    )


def test_bug_a_key_with_a_space_or_a_newline_keeps_the_contract_format(workdir: Path) -> None:
    problems = _refused(workdir, VALID + '"my key": 1\n"x\\ny": 2\n')
    paths = [p.split(": ")[1] for p in problems]
    assert '["my\\u0020key"]' in paths and '["x\\ny"]' in paths, problems


def test_bug_an_integer_key_does_not_break_the_suggestions(workdir: Path) -> None:
    text = (
        "gateway: {id: g, site: s, line: l}\n"
        "devices:\n  - id: plc\n    kind: opcua\n    endpoint: opc.tcp://h:4840\n"
        "    signals:\n      go: {node: ns=2;s=go, type: bool}\n      0: null\n"
        "stations:\n  - {id: st1, trigger: {device: plc, signal: og}}\n"
    )
    assert any("signal" in p for p in _refused(workdir, text))


def test_bug_a_device_kind_that_is_a_list_is_a_problem(workdir: Path) -> None:
    text = (
        "gateway: {id: g, site: s, line: l}\n"
        "devices:\n  - {id: plc, kind: [opcua]}\n"
        "stations:\n  - {id: st1, trigger: {device: plc, signal: go}}\n"
    )
    problems = [p.split(":", 1)[1] for p in _refused(workdir, text)]
    assert problems == [
        "3:21: devices[0].kind: unknown device kind; expected one of llrp, modbus, opcua, "
        "serial_scanner, tcp_scanner (got a list)"
    ]


def test_bug_a_control_character_is_a_problem_on_one_line(workdir: Path) -> None:
    """Found once the whitespace finding's `Known` no longer hid it: PyYAML's reader error for a
    control character spans two lines."""
    assert _problem(workdir, "gateway:\n  id: a\x08b\n") == (
        "2:8: (file): invalid YAML: unacceptable character #x0008"
    )


def test_bug_an_escape_beyond_unicode_is_a_problem(workdir: Path) -> None:
    """Found by the rerun of the campaign: PyYAML's scanner raises ValueError from chr()."""
    assert _problem(workdir, 'gateway: {"\\U10010000": 1}\n') == (
        "1:14: (file): invalid YAML: a character escape beyond U+10FFFF"
    )


def test_bug_profile_dirs_that_is_no_list_is_a_problem(workdir: Path) -> None:
    """Found by the rerun of the campaign: the profile search iterated `profile_dirs: 1`."""
    text = "profile_dirs: 1\n" + VALID
    assert any(": profile_dirs: " in p for p in _refused(workdir, text))


def test_bug_a_list_field_of_a_station_that_is_no_list_is_a_problem(workdir: Path) -> None:
    """Found by the campaign of 2026-12-03 (seed 543686287, input 54,712): `parameters: 1` made
    the cross references iterate an int (TypeError); `outputs` and `identity.sources` too."""
    text = (
        "gateway: {id: g, site: s, line: l}\n"
        "devices:\n"
        "  - {id: plc, kind: modbus, host: h, signals: {cnt: {table: coil, address: 1}}}\n"
        "stations:\n"
        "  - {id: st1, trigger: {device: plc, signal: cnt, edge: change}, parameters: 1,\n"
        "     outputs: 2, identity: {sources: 3}, aggregation: {kind: packing}}\n"
    )
    problems = [p.split(":", 1)[1] for p in _refused(workdir, text)]
    wanted = "stations[0].parameters: input should be a valid list (got 1)"
    assert any(wanted in p for p in problems)
    assert any("stations[0].outputs" in p for p in problems)
    assert any("stations[0].identity.sources" in p for p in problems)
