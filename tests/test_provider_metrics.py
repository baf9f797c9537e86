"""The provider role's drops in the metrics: every provider reason (zeros included) under
`katzenpost_dropped_packets_total{reason}` and in the reference's provider total, read from
STATUS `provider.drops` at scrape time; a mix exports none of them; the reason list covers every
drop the provider package counts."""
import ast
from pathlib import Path

import pytest

from katzenpost.server.metrics import PROVIDER_DROP_REASONS
from management_support import FakeControl, add_drops, scrape_once, value

PROVIDER_PACKAGE = Path(__file__).resolve().parent.parent / "katzenpost" / "provider"
DROPS = "katzenpost_dropped_packets_total"


def provider_control(drops):
    control = FakeControl(is_provider=True)
    control._status = {**control._status, "provider": {"stored": 5, "surb_acks": 4, "clients": 1, "drops": drops}}
    return control


def test_provider_drops_are_exported_by_reason_and_in_the_provider_total():
    control = provider_control({"unknown_recipient": 3, "rate_limited": 7, "kaetzchen_failed": 1})
    add_drops(control.counters, "worker-0", kaetzchen_surb_reply=2, replay=4)
    s = scrape_once(control)
    assert value(s, DROPS, reason="unknown_recipient") == 3
    assert value(s, DROPS, reason="rate_limited") == 7
    assert value(s, DROPS, reason="kaetzchen_failed") == 1
    assert value(s, DROPS, reason="spool_write_failed") == 0          # not in STATUS: still a series
    assert all((DROPS, (("reason", r),)) in s for r in PROVIDER_DROP_REASONS)
    assert value(s, DROPS, reason="replay") == 4                      # the pipeline's, unchanged
    # The reference's provider counter: the pipeline's provider-stage drops and the role's.
    assert value(s, "katzenpost_provider_dropped_packets_total") == 2 + 3 + 7 + 1
    assert value(s, "katzenpost_crypto_worker_dropped_packets_total") == 4


def test_an_unexpected_reason_is_exported_and_bad_values_are_skipped():
    s = scrape_once(provider_control({"new_reason": 2, "rate_limited": "many", "spool_backlog": True}))
    assert value(s, DROPS, reason="new_reason") == 2
    assert value(s, DROPS, reason="rate_limited") == 0
    assert value(s, DROPS, reason="spool_backlog") == 0
    assert value(s, "katzenpost_provider_dropped_packets_total") == 2


@pytest.mark.parametrize("provider_status", [None, {"stored": 1}, {"drops": "none"}])
def test_a_mix_or_a_provider_without_drop_counts(provider_status):
    control = FakeControl(is_provider=provider_status is not None)
    control._status = {**control._status, "provider": provider_status}
    s = scrape_once(control)
    reasons = {labels[0][1] for (name, labels) in s if name == DROPS}
    if provider_status is None:
        assert not reasons & set(PROVIDER_DROP_REASONS)               # a mix has no provider reasons
    else:
        assert set(PROVIDER_DROP_REASONS) <= reasons
    assert value(s, "katzenpost_provider_dropped_packets_total") == 0


def counted_reasons() -> set[str]:
    """Every literal key the provider package adds to a `drops` counter (drops["x"] += n)."""
    found = set()
    for path in PROVIDER_PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript)
                    and isinstance(node.target.slice, ast.Constant)):
                target = node.target.value
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name == "drops":
                    found.add(node.target.slice.value)
    return found


def test_every_reason_the_provider_counts_is_exported():
    counted = counted_reasons()
    assert len(counted) >= 10                                          # the scan finds them
    assert counted == set(PROVIDER_DROP_REASONS), counted ^ set(PROVIDER_DROP_REASONS)


def test_the_drop_summary_lists_the_provider_drops_after_the_pipelines(caplog):
    import collections
    import logging

    from katzenpost.log import NOTICE
    from katzenpost.server.counters import PipelineCounters
    from katzenpost.server.drop_report import DropReporter

    caplog.set_level(NOTICE, logger="katzenpost.test.provider-drops")
    counters, provider_drops = PipelineCounters(), collections.Counter(rate_limited=2)
    reporter = DropReporter(counters, logger=logging.getLogger("katzenpost.test.provider-drops"),
                            extra=lambda: provider_drops)
    reporter._last, reporter._last_at = reporter._read(), 0.0          # the baseline, as start() takes it
    add_drops(counters, "worker-0", replay=1)
    provider_drops.update(unknown_recipient=3, rate_limited=1, replay=99)   # a clash keeps the pipeline's
    line = reporter.report()
    assert line.endswith("replay=1 rate_limited=1 unknown_recipient=3"), line
    assert reporter.report() is None                                   # nothing grew since
    provider_drops["spool_write_failed"] += 4
    assert reporter.report().endswith(": spool_write_failed=4")
