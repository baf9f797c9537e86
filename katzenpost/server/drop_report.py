"""Periodic NOTICE summary of dropped packets: one line at most per interval, listing the drop
reasons whose counts grew since the last line, e.g.

    dropped in the last 60 s: replay=3 unwrap_failed=1

Nothing is logged for an interval without drops. Single drops are not logged one by one (that
would cost the packet path and flood the log); the reasons are explained in docs/operations.md.
"""
import asyncio
import logging
import time

from katzenpost import log as kplog
from katzenpost.server.counters import DropReason
from katzenpost.tasks import cancel_and_wait

DEFAULT_LOGGER = logging.getLogger("katzenpost.server.drops")


class DropReporter:
    """Reads `counters.snapshot()["drops"]` every `interval` seconds on the running loop, and
    `extra()` when given: a mapping of more drop counts read as cheaply (a provider's own drops,
    `Provider.drops`), listed after the pipeline's reasons."""

    def __init__(self, counters, *, interval: float = 60.0, logger=None, extra=None):
        if not interval > 0:
            raise ValueError(f"drop report: interval must be > 0, got {interval!r}")
        self._counters = counters
        self._extra = extra
        self._interval = interval
        self._log = logger or DEFAULT_LOGGER
        self._task = None
        self._last = None
        self._last_at = None

    def start(self) -> None:
        """Take the baseline now and report every interval from here (needs a running loop)."""
        if self._task is not None:
            raise RuntimeError("drop report: already started")
        self._last = self._read()
        self._last_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="drop-report")

    async def stop(self) -> None:
        """Stop reporting; drops since the last line (those of the halt, say) get a final line."""
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait([task], "drop report")
        self.report()

    async def _run(self):
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.report()
            except Exception:
                # A bad snapshot must not end the reports for the rest of the node's life.
                self._log.exception("drop report failed")

    def report(self) -> str | None:
        """Log (and return) the summary of drops since the previous one; None if there were none."""
        now_counts, now = self._read(), time.monotonic()
        grown = [(reason, now_counts[reason] - self._last.get(reason, 0)) for reason in now_counts]
        grown = [(reason, n) for reason, n in grown if n > 0]
        elapsed = now - self._last_at
        self._last, self._last_at = now_counts, now
        if not grown:
            return None
        line = f"dropped in the last {_seconds(elapsed)} s: " + " ".join(f"{r}={n}" for r, n in grown)
        kplog.notice(self._log, "%s", line)
        return line

    def _read(self):
        drops = self._counters.snapshot()["drops"]
        # Pipeline order (DropReason), then any name a newer counters module adds.
        order = [r.name.lower() for r in DropReason]
        names = order + sorted(set(drops) - set(order))
        counts = {name: int(drops[name]) for name in names if name in drops}
        if self._extra is not None:
            # dict() copies in one C call: the provider's storage threads may be counting.
            for name, count in dict(self._extra()).items():
                if name not in counts:          # a pipeline reason keeps the pipeline's count
                    counts[name] = int(count)
        return counts


def _seconds(elapsed):
    return f"{elapsed:.0f}" if elapsed >= 10 else f"{elapsed:.1f}"
