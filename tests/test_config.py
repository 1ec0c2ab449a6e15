"""Configuration: golden error cases, profiles, example lines, docs and schema in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_line
from gateway.config.docs import render
from gateway.config.loader import bundled_profiles_dir, validate_profile
from gateway.config.models import LineConfig

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(p for p in (Path(__file__).parent / "config_cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_error_case(
    case: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each case: a bad line file and the exact text `tracegate check` must print."""
    monkeypatch.chdir(case)
    assert main(["check", "-c", "line.yaml"]) == 78
    out = capsys.readouterr()
    assert out.err == (case / "expected.txt").read_text()
    assert out.out == ""


def test_every_problem_line_has_the_contract_format() -> None:
    import re

    line = re.compile(r"^[^:\s]+:\d+:\d+: \S+: .+$")
    for case in CASES:
        problems = (case / "expected.txt").read_text().splitlines()[:-1]
        assert problems, case
        for p in problems:
            assert line.match(p), f"{case.name}: {p!r}"


def test_run_refuses_a_bad_config_with_exit_78(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", "line.yaml"],
        cwd=CASES[0],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert proc.stderr == (CASES[0] / "expected.txt").read_text()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_line(tmp_path / "nope.yaml")
    assert "cannot read" in str(exc.value)


PROFILES = sorted(bundled_profiles_dir().rglob("*.yaml"))
LINES = [p for p in PROFILES if p.parent.name == "lines"]
DEVICE_PROFILES = [p for p in PROFILES if p.parent.name != "lines"]


@pytest.mark.parametrize("profile", DEVICE_PROFILES, ids=lambda p: p.stem)
def test_bundled_profile_validates(profile: Path) -> None:
    assert validate_profile(profile) == []


@pytest.mark.parametrize("line", LINES, ids=lambda p: p.stem)
def test_example_line_validates(line: Path) -> None:
    loaded = load_line(line)
    assert loaded.config.devices
    assert len(loaded.config_hash) == 12


def test_at_least_three_scanner_profiles_one_serial_two_tcp() -> None:
    import yaml

    kinds = [yaml.safe_load(p.read_text())["kind"] for p in DEVICE_PROFILES]
    assert kinds.count("serial_scanner") >= 1 and kinds.count("tcp_scanner") >= 2


def test_profile_values_are_merged_and_entry_wins(tmp_path: Path) -> None:
    line = tmp_path / "line.yaml"
    line.write_text(
        "gateway: {id: g, site: s, line: l}\n"
        "devices:\n"
        "  - id: cam\n"
        "    profile: scanners/cognex-dataman-370\n"
        "    host: 192.0.2.1\n"
        "    framing: {noread: [NO-READ]}\n"
    )
    dev = load_line(line).config.devices[0]
    assert dev.kind == "tcp_scanner" and dev.port == 23
    assert dev.framing.terminator == "crlf"  # from the profile
    assert dev.framing.noread == ["NO-READ"]  # the entry replaces lists


def test_paths_are_relative_to_the_line_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = tmp_path / "sub" / "line.yaml"
    line.parent.mkdir()
    line.write_text(
        "gateway: {id: g, site: s, line: l}\njournal: {path: j.db}\n"
        "mqtt: {username: u, password_file: pw}\n"
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load_line(line).config
    assert cfg.journal.path == line.parent / "j.db"
    assert cfg.mqtt.password_file == line.parent / "pw"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tracegate.service")
    assert load_line(line).config.mqtt.password_file == Path(
        "/run/credentials/tracegate.service/pw"
    )


def test_config_hash_changes_with_effective_config(tmp_path: Path) -> None:
    line = tmp_path / "line.yaml"
    line.write_text("gateway: {id: g, site: s, line: l}\n")
    h1 = load_line(line).config_hash
    line.write_text("# a comment changes nothing\ngateway: {id: g, site: s, line: l}\n")
    assert load_line(line).config_hash == h1
    line.write_text("gateway: {id: g, site: s, line: l2}\n")
    assert load_line(line).config_hash != h1


def test_docs_configuration_md_is_generated_from_the_models() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == render(), (
        "docs/configuration.md is stale: run "
        "`python -m gateway.config.docs > docs/configuration.md`"
    )


def test_every_field_has_a_description() -> None:
    from pydantic import BaseModel

    from gateway.config.loader import DEVICE_MODELS

    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [LineConfig, *DEVICE_MODELS.values()]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            for t in (*getattr(info.annotation, "__args__", ()), info.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
    assert len(seen) >= 8


def test_schema_command_prints_a_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Tracegate line file"
    assert "gateway" in schema["required"]
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_check_prints_a_summary_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(LINES[0])]) == 0
    assert "valid" in capsys.readouterr().out


def test_cli_runs_as_module() -> None:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("tracegate ")


def test_opcua_file_paths_are_resolved_like_mqtt_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = tmp_path / "line.yaml"
    line.write_text(
        "gateway: {id: g, site: s, line: l}\n"
        "devices:\n"
        "  - {id: plc, kind: opcua, endpoint: 'opc.tcp://h:4840', username: u,\n"
        "     password_file: plc-pw, certificate_file: certs/c.der, private_key_file: k.pem}\n"
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tracegate.service")
    dev = load_line(line).config.devices[0]
    assert dev.password_file == Path("/run/credentials/tracegate.service/plc-pw")  # type: ignore[union-attr]
    assert dev.certificate_file == tmp_path / "certs/c.der"  # type: ignore[union-attr]
