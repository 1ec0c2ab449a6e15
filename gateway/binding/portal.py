"""RFID portal semantics: raw tag reads become tag passes. Pure: reads and the time in, passes
out.

A reader at a portal reads every tag in its field many times a second, on several antennas.
What the trace wants is one observation per tag *pass*: the tag, first and last seen, how many
reads, the antennas in the order they first saw it, the peak RSSI per antenna, how long it stayed
(dwell), and which way it went.

- A pass starts with the first read of a tag (that survives the filters) and ends once the tag
  has not been read for `quiet_time_ms`; a tag parked in the field is closed after `max_pass_s`
  and a new pass begins. Those decisions use the gateway's clock (when reads arrived), so a
  reader whose clock is off cannot keep passes open or close them early; the times reported
  and the direction use the reader's own timestamps when it sends them (finer, and consistent
  across its antennas).
- Filters: the portal's antennas only (a neighbouring portal's antennas of the same reader are
  not this portal), `min_rssi_dbm`, `epc_prefixes`; a pass with fewer than `min_reads` reads is a
  stray (a tag glimpsed from next door) and is dropped, counted.
- Direction (`antenna_order`): the portal's antennas are listed outside to inside. The tag's
  signal peaks on each antenna as it passes; if the first antenna's peak comes before the last
  antenna's, the tag went `in`, else `out`. A peak's time is the top of a parabola fitted to the
  antenna's RSSI over time (so missed reads around the top do not move it), or the RSSI-weighted
  mean time of its reads where the RSSI shows no clear top. The confidence grows with the time
  between the two peaks relative to the dwell, and with the reads on each antenna (full from
  `FULL_EVIDENCE_READS`); a tag seen by one antenna only has no direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config.rfid import PortalConfig
from gateway.events import TagRead

# A fitted RSSI parabola whose fall over the reads' span is less than this is taken as flat:
# readers report RSSI in steps of 0.5 to 1 dB, and fading moves it by as much.
MIN_CURVATURE_DB = 0.5
# Reads on each of the two antennas for a direction to be given full confidence.
FULL_EVIDENCE_READS = 5


@dataclass
class AntennaStats:
    """The reads of one tag on one antenna during a pass, kept as running sums (constant memory
    whatever the dwell): counts, peak RSSI, and what the time of the signal's peak is estimated
    from (see `peak_time`)."""

    first_seen: float
    last_seen: float
    reads: int = 0
    peak_rssi: float | None = None
    weight: float = 0.0  # sum of the weights of the reads (RSSI -> linear power)
    weighted_time: float = 0.0  # sum of weight x time: weighted_time / weight is a peak time
    # Least-squares sums of RSSI (dB) against time since first_seen: s[k] = sum of t^k for
    # k = 0..4, sy[k] = sum of rssi x t^k for k = 0..2 (each read weighted by its seen count).
    s: list[float] = field(default_factory=lambda: [0.0] * 5)
    sy: list[float] = field(default_factory=lambda: [0.0] * 3)
    # The time the sums count from: the first read's (any fixed origin works; a near one keeps
    # the fourth powers small).
    origin: float = field(init=False)

    def __post_init__(self) -> None:
        self.origin = self.first_seen

    def add(self, t: float, rssi: float | None, count: int) -> None:
        self.last_seen = max(self.last_seen, t)
        self.first_seen = min(self.first_seen, t)
        self.reads += count
        if rssi is not None and (self.peak_rssi is None or rssi > self.peak_rssi):
            self.peak_rssi = rssi
        w = count * (10 ** (rssi / 10) if rssi is not None else 1.0)
        self.weight += w
        self.weighted_time += w * t
        if rssi is not None:
            x = t - self.origin
            s, sy = self.s, self.sy
            p = float(count)
            for k in range(5):
                s[k] += p
                if k < 3:
                    sy[k] += p * rssi
                p *= x

    @property
    def peak_time(self) -> float:
        """When the tag was nearest this antenna: the vertex of a parabola fitted to RSSI (dB)
        over time (a tag's RSSI rises and falls as it passes an antenna; the fit finds the top
        even when the reads around it were missed), kept within the reads' span; where no
        downward parabola fits (too few reads, flat or noisy RSSI), the RSSI-weighted mean time
        of the reads."""
        vertex = self._vertex()
        if vertex is not None:
            return vertex
        return self.weighted_time / self.weight if self.weight else self.first_seen

    def _vertex(self) -> float | None:
        s, sy = self.s, self.sy
        if s[0] < 3:
            return None
        # Normal equations of rssi = a t^2 + b t + c, solved by Cramer's rule.
        m = ((s[4], s[3], s[2]), (s[3], s[2], s[1]), (s[2], s[1], s[0]))
        det = _det3(m)
        span = self.last_seen - self.first_seen
        if span <= 0 or abs(det) < 1e-12 * max(1.0, span) ** 12:
            return None
        a = _det3(((sy[2], s[3], s[2]), (sy[1], s[2], s[1]), (sy[0], s[1], s[0]))) / det
        b = _det3(((s[4], sy[2], s[2]), (s[3], sy[1], s[1]), (s[2], sy[0], s[0]))) / det
        if a >= 0 or -a * span * span < MIN_CURVATURE_DB:
            return None  # no maximum, or too flat to tell from the RSSI's own jitter
        t = self.origin - b / (2 * a)
        if not self.first_seen - span <= t <= self.last_seen + span:
            return None  # far outside the reads: an extrapolation, not evidence
        return t


def _det3(m: tuple[tuple[float, float, float], ...]) -> float:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


@dataclass
class TagPass:
    epc: str
    first_seen: float
    last_seen: float
    reads: int = 0
    antennas: list[int] = field(default_factory=list)  # in the order they first saw the tag
    per_antenna: dict[int, AntennaStats] = field(default_factory=dict)
    direction: str | None = None  # "in", "out", or None
    confidence: float = 0.0
    closed_by: str = "quiet"  # or "max_pass"
    opened_rx: float = 0.0  # gateway clock: when the first read arrived
    last_rx: float = 0.0  # gateway clock: when the latest read arrived

    @property
    def dwell_s(self) -> float:
        return self.last_seen - self.first_seen

    @property
    def peak_rssi(self) -> float | None:
        peaks = [a.peak_rssi for a in self.per_antenna.values() if a.peak_rssi is not None]
        return max(peaks) if peaks else None

    def summary(self) -> dict[str, object]:
        """The pass as recorded with its event."""
        return {
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "dwell_s": round(self.dwell_s, 3),
            "reads": self.reads,
            "antennas": self.antennas,
            "peak_rssi": {str(a): s.peak_rssi for a, s in self.per_antenna.items()},
            "reads_per_antenna": {str(a): s.reads for a, s in self.per_antenna.items()},
            "direction": self.direction,
            "confidence": round(self.confidence, 2),
            "closed_by": self.closed_by,
        }


class PassBuilder:
    """The open passes of one portal. `read()` and `tick()` return the passes they close."""

    def __init__(self, cfg: PortalConfig, reader_antennas: list[int]) -> None:
        self.cfg = cfg
        self.antennas = list(cfg.antennas or reader_antennas)
        self._accept = set(self.antennas)
        self._quiet_s = cfg.quiet_time_ms / 1000
        self._prefixes = tuple(p.lower() for p in cfg.epc_prefixes)
        self.open: dict[str, TagPass] = {}
        self.strays = 0  # passes dropped for too few reads
        self.filtered = 0  # reads dropped by the filters

    def accepts(self, read: TagRead) -> bool:
        """Whether a read is this portal's at all (its antennas)."""
        return read.antenna is None or read.antenna in self._accept

    def read(self, r: TagRead) -> list[TagPass]:
        cfg = self.cfg
        if (cfg.min_rssi_dbm is not None and r.rssi is not None and r.rssi < cfg.min_rssi_dbm) or (
            self._prefixes and not r.epc.startswith(self._prefixes)
        ):
            self.filtered += 1
            return []
        t = r.last_seen if r.last_seen is not None else r.time  # reader clock when given
        rx = r.time  # gateway clock: what quiet time and max_pass are measured with
        closed: list[TagPass] = []
        p = self.open.get(r.epc)
        if p is not None and (
            rx - p.last_rx >= self._quiet_s or rx - p.opened_rx >= cfg.max_pass_s
        ):
            p.closed_by = "quiet" if rx - p.last_rx >= self._quiet_s else "max_pass"
            closed += self._close(r.epc)
            p = None
        if p is None:
            first = r.first_seen if r.first_seen is not None else t
            p = self.open[r.epc] = TagPass(r.epc, min(first, t), t, opened_rx=rx, last_rx=rx)
        p.last_rx = max(p.last_rx, rx)
        ant = r.antenna if r.antenna is not None else 0
        stats = p.per_antenna.get(ant)
        if stats is None:
            stats = p.per_antenna[ant] = AntennaStats(t, t)
            p.antennas.append(ant)
        stats.add(t, r.rssi, max(r.seen_count, 1))
        p.reads += max(r.seen_count, 1)
        p.last_seen = max(p.last_seen, t)
        return closed

    def tick(self, now: float) -> list[TagPass]:
        """Close the passes that have been quiet long enough (or lasted too long)."""
        due = [
            epc
            for epc, p in self.open.items()
            if now - p.last_rx >= self._quiet_s or now - p.opened_rx >= self.cfg.max_pass_s
        ]
        closed: list[TagPass] = []
        for epc in due:
            p = self.open[epc]
            if now - p.last_rx < self._quiet_s:
                p.closed_by = "max_pass"
            closed += self._close(epc)
        return closed

    def close_all(self, why: str) -> list[TagPass]:
        """Close every open pass (the gateway stops), `closed_by` set to `why`."""
        closed: list[TagPass] = []
        for epc in list(self.open):
            self.open[epc].closed_by = why
            closed += self._close(epc)
        return closed

    def _close(self, epc: str) -> list[TagPass]:
        p = self.open.pop(epc)
        if p.reads < self.cfg.min_reads:
            self.strays += 1
            return []
        if self.cfg.direction == "antenna_order":
            p.direction, p.confidence = self._direction(p)
        return [p]

    def _direction(self, p: TagPass) -> tuple[str | None, float]:
        outer, inner = self.antennas[0], self.antennas[-1]
        a, b = p.per_antenna.get(outer), p.per_antenna.get(inner)
        if a is None or b is None or outer == inner:
            return None, 0.0
        gap = b.peak_time - a.peak_time
        if gap == 0:
            return None, 0.0
        spread = max(p.dwell_s, 1e-3)
        separation = min(1.0, abs(gap) / (0.25 * spread))
        evidence = min(1.0, min(a.reads, b.reads) / FULL_EVIDENCE_READS)
        return ("in" if gap > 0 else "out"), separation * evidence
