"""The coordinator's memory, split as the kernel counts it: anonymous (its own heap, which must stay flat in N) and
file-backed (pages of the memory-mapped results and ledger, which the kernel may drop and write back at will).

``ru_maxrss`` lumps both together: at 100M parameters the 800 MB results file alone made the peak look like a leak.
Read from the kernel's per-process counters in ``/proc/self/status`` (RssAnon, RssFile, RssShmem; Linux 4.5+), which
cost nothing to read: ``smaps_rollup`` would walk every mapped page, the whole results file, at each sample. Elsewhere
nothing is recorded.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")


def rss_split() -> tuple[float, float] | None:
    """(anonymous MB, file-backed MB) resident now, or None where the kernel does not say."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.startswith("Rss"):
            kb[name] = int(rest.split()[0])
    if "RssAnon" not in kb or "RssFile" not in kb:
        return None
    return kb["RssAnon"] / 1024, (kb["RssFile"] + kb.get("RssShmem", 0)) / 1024


class MemoryPeaks:
    """The highest anonymous and file-backed residency seen over the calls to :meth:`sample`."""

    def __init__(self) -> None:
        self.anonymous_mb = 0.0
        self.file_mb = 0.0

    def sample(self) -> None:
        split = rss_split()
        if split is not None:
            self.anonymous_mb = max(self.anonymous_mb, split[0])
            self.file_mb = max(self.file_mb, split[1])

    def to_dict(self) -> dict[str, float]:
        """{} when nothing could be read."""
        if not (self.anonymous_mb or self.file_mb):
            return {}
        return {"anonymous_peak_mb": round(self.anonymous_mb, 1), "file_peak_mb": round(self.file_mb, 1)}
