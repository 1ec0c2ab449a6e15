"""The fault layer under the gateway's journal (shim.c): built here, switched from here, and the
power cut applied from here.

    layer = FaultLayer(journal_dir, work_dir)
    env = layer.env()                 # for the gateway process: LD_PRELOAD and the layer's files
    layer.set(write="enospc")         # its writes to the journal fail with ENOSPC from now on
    layer.set(clock=3600)             # its wall clock is one hour ahead
    ... SIGKILL the gateway ...
    cut = layer.power_cut()           # the unsynced writes undone: the files as after a power cut

The shim is compiled with the system's C compiler into the work directory (once per source
version). `power_cut()` must only run while no process of the layer has the files open.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("shim.c")


class LayerError(Exception):
    """The layer cannot be built or its undo log is not what the shim writes."""


def build(out_dir: Path) -> Path:
    """The shim as a shared library (compiled when its source changed)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise LayerError("no C compiler (cc or gcc): install gcc to run the fault layer")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    lib = out_dir / f"tracegate-faults-{digest}.so"
    if not lib.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(".tmp")
        flags = ["-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-ldl", "-lpthread"]
        proc = subprocess.run(
            [cc, *flags, "-o", str(tmp), str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise LayerError(f"building {SOURCE.name} failed:\n{proc.stderr}")
        os.replace(tmp, lib)
    return lib


@dataclass
class PowerCut:
    files: int  # files with writes undone
    writes: int  # writes undone
    bytes: int  # bytes restored


@dataclass
class _Undo:
    offset: int
    size: int  # the file's size before the write
    old: bytes  # what the write replaced


def read_undo(data: bytes) -> dict[str, list[_Undo]]:
    """The writes not synced yet, per file, oldest first."""
    pending: dict[str, list[_Undo]] = defaultdict(list)
    i, n = 0, len(data)
    while i < n:
        kind = data[i : i + 1]
        (plen,) = struct.unpack_from("<I", data, i + 1)
        path = data[i + 5 : i + 5 + plen].decode("utf-8", "surrogateescape")
        i += 5 + plen
        if kind == b"S":
            pending.pop(path, None)
        elif kind == b"W":
            if i + 20 > n:
                raise LayerError(f"undo log cut short at byte {i}")
            offset, size, keep = struct.unpack_from("<qqI", data, i)
            i += 20
            old = data[i : i + keep]
            if len(old) != keep:
                raise LayerError(f"undo log cut short at byte {i}")
            i += keep
            pending[path].append(_Undo(offset, size, old))
        else:
            raise LayerError(f"undo log: record type {kind!r} at byte {i - 5 - plen}")
    return pending


class FaultLayer:
    def __init__(self, journal_dir: Path, work_dir: Path, build_dir: Path | None = None) -> None:
        self.journal_dir = journal_dir.resolve()
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.lib = build(build_dir or work_dir)
        self.undo = work_dir / "undo.log"
        self.ctl = work_dir / "faults.ctl"
        self.settings: dict[str, str] = {}
        self.cuts: list[PowerCut] = []

    def env(self) -> dict[str, str]:
        preload = os.environ.get("LD_PRELOAD")
        return {
            "LD_PRELOAD": f"{self.lib}:{preload}" if preload else str(self.lib),
            "TG_FAULT_DIR": str(self.journal_dir),
            "TG_FAULT_UNDO": str(self.undo),
            "TG_FAULT_CTL": str(self.ctl),
        }

    def set(self, **settings: str | float) -> None:
        """write=ok|enospc|eio, fsync=ok|eio, clock=SECONDS: in force from the next call."""
        self.settings.update({k: str(v) for k, v in settings.items()})
        tmp = self.ctl.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))
        os.replace(tmp, self.ctl)

    def clear(self) -> None:
        self.settings.clear()
        self.ctl.unlink(missing_ok=True)

    def power_cut(self) -> PowerCut:
        """Undo every write not synced since the last sync of its file, newest first; then
        start a new undo log (for the next process)."""
        data = self.undo.read_bytes() if self.undo.exists() else b""
        pending = read_undo(data)
        cut = PowerCut(0, 0, 0)
        for path, undos in pending.items():
            p = Path(path)
            if not p.exists():
                continue
            cut.files += 1
            with p.open("r+b") as f:
                for u in reversed(undos):
                    if u.old:
                        f.seek(u.offset)
                        f.write(u.old)
                    f.truncate(u.size)
                    cut.writes += 1
                    cut.bytes += len(u.old)
                f.flush()
                os.fsync(f.fileno())
        self.undo.unlink(missing_ok=True)
        self.cuts.append(cut)
        return cut

    def forget(self) -> None:
        """A clean start: what the killed process left needs no undoing (a SIGKILL, not a cut)."""
        self.undo.unlink(missing_ok=True)
