"""The periodic drop summary: one NOTICE line per interval listing only the reasons that grew,
nothing for a quiet interval, a final line at stop, and a reporter that survives bad snapshots."""
import asyncio
import logging
import re

import pytest

from katzenpost.log import NOTICE
from katzenpost.server.counters import PipelineCounters
from katzenpost.server.drop_report import DropReporter
from management_support import add_drops, run

LOGGER = "katzenpost.test.drops"


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == NOTICE]


@pytest.fixture
def make_reporter(caplog):
    """DropReporter(counters, interval) logging to a captured NOTICE logger of its own."""
    caplog.set_level(NOTICE, logger=LOGGER)
    return lambda counters, interval=60.0: DropReporter(counters, interval=interval,
                                                        logger=logging.getLogger(LOGGER))


async def first_line(caplog, timeout=5.0):
    """Wait (bounded) until the reporter logged a line."""
    for _ in range(int(timeout / 0.01)):
        if lines(caplog):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no drop report logged in time")


def test_report_lists_grown_reasons_in_pipeline_order(caplog, make_reporter):
    counters = PipelineCounters()
    add_drops(counters, "worker-0", replay=5)           # before start: the baseline, not reported
    reporter = make_reporter(counters)

    async def body():
        reporter.start()
        assert reporter.report() is None                 # nothing new yet
        add_drops(counters, "worker-0", replay=3, unwrap_failed=1)
        add_drops(counters, "worker-1", replay=2)
        add_drops(counters, "io", send_slack=4)
        line = reporter.report()
        assert reporter.report() is None                 # counted once only
        await reporter.stop()
        return line

    line = run(body())
    assert re.fullmatch(r"dropped in the last \d+\.\d s: unwrap_failed=1 replay=5 send_slack=4", line)
    assert lines(caplog) == [line]


def test_periodic_reports_only_when_something_dropped(caplog, make_reporter):
    counters = PipelineCounters()
    reporter = make_reporter(counters, 0.05)

    async def body():
        reporter.start()
        await asyncio.sleep(0.2)                         # quiet intervals: no lines
        assert lines(caplog) == []
        add_drops(counters, "scheduler", scheduler_late=2)
        await first_line(caplog)
        await asyncio.sleep(0.15)                        # further quiet intervals add nothing
        await reporter.stop()

    run(body())
    assert len(lines(caplog)) == 1
    assert lines(caplog)[0].endswith(": scheduler_late=2")


def test_stop_reports_what_is_left_and_is_idempotent(caplog, make_reporter):
    counters = PipelineCounters()
    reporter = make_reporter(counters, 3600)

    async def body():
        reporter.start()
        with pytest.raises(RuntimeError):
            reporter.start()
        add_drops(counters, "io", halt=9)
        await reporter.stop()
        await reporter.stop()

    run(body())
    assert [line.split(": ", 1)[1] for line in lines(caplog)] == ["halt=9"]


def test_a_failing_snapshot_does_not_end_the_reports(caplog, make_reporter):
    counters = PipelineCounters()
    reporter = make_reporter(counters, 0.03)
    real = counters.snapshot
    failures = []

    def flaky():
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("torn snapshot")
        return real()

    async def body():
        reporter.start()
        counters.snapshot = flaky
        add_drops(counters, "worker-0", no_mix_keys=1)
        await first_line(caplog)
        await reporter.stop()

    run(body())
    assert lines(caplog) and lines(caplog)[0].endswith(": no_mix_keys=1")
    assert sum("drop report failed" in r.getMessage() for r in caplog.records) == 2


def test_interval_must_be_positive():
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            DropReporter(PipelineCounters(), interval=bad)
