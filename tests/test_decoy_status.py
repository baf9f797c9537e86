"""The decoy loop's counters where an operator reads them: STATUS `decoy` (only on a node that runs
the decoy) and the metrics built from it (`katzenpost_decoy_*`)."""
from types import SimpleNamespace

from katzenpost.pki.epochtime import EpochClock
from katzenpost.server.decoy import Decoy
from katzenpost.server.metrics import DECOY_DROPPED, DECOY_OUTCOMES
from katzenpost.server.node import Node
from management_support import FakeControl, scrape_once
from provider_support import provider_config

COUNTS = {"sent": 40, "delivered": 31, "lost": 6, "pending": 3, "ignored_documents": 2,
          "send_failures": 1, "unmatched_replies": 4, "undecryptable_replies": 5}


def idle_node(tmp_path):
    node = Node(provider_config(tmp_path), None, None)
    node.pipeline = SimpleNamespace(counters=SimpleNamespace(snapshot=lambda: {"events": {}, "drops": {}}),
                                    queue_depths=lambda: {})
    return node


def test_status_has_a_decoy_section_only_when_the_decoy_runs(tmp_path):
    node = idle_node(tmp_path)
    assert "decoy" not in node.status()
    node.decoy = SimpleNamespace(counters=lambda: dict(COUNTS))
    assert node.status()["decoy"] == COUNTS


def test_the_metrics_read_every_counter_a_real_decoy_reports():
    decoy = Decoy(identity_public=bytes(32), pipeline=None, clock=EpochClock(), decoy_slack_ms=15_000)
    counters = decoy.counters()
    assert set(DECOY_OUTCOMES) | set(DECOY_DROPPED) | {"pending", "ignored_documents", "send_failures"} <= set(counters)
    assert all(v == 0 for v in counters.values())


def decoy_samples(status):
    samples = scrape_once(FakeControl(status=status))
    return {key: v for key, v in samples.items() if key[0].startswith("katzenpost_decoy_")}


def test_decoy_metrics_from_status():
    got = decoy_samples({"identifier": "mix1", "is_provider": False, "decoy": dict(COUNTS)})
    assert got == {
        ("katzenpost_decoy_loops_total", (("outcome", "sent"),)): 40,
        ("katzenpost_decoy_loops_total", (("outcome", "delivered"),)): 31,
        ("katzenpost_decoy_loops_total", (("outcome", "lost"),)): 6,
        ("katzenpost_decoy_dropped_packets_total", ()): 9,        # unmatched + undecryptable replies
        ("katzenpost_decoy_documents_ignored_total", ()): 2,
        ("katzenpost_decoy_send_failures_total", ()): 1,
        ("katzenpost_decoy_pending_surbs", ()): 3,
    }


def test_no_decoy_metrics_without_a_decoy_and_bad_values_are_skipped():
    assert decoy_samples({"identifier": "mix1", "is_provider": False}) == {}
    assert decoy_samples({"identifier": "mix1", "decoy": None}) == {}
    got = decoy_samples({"identifier": "mix1", "decoy": {"sent": "x", "delivered": True, "lost": 2,
                                                         "unmatched_replies": None, "pending": 1.5}})
    assert got == {
        ("katzenpost_decoy_loops_total", (("outcome", "sent"),)): 0,
        ("katzenpost_decoy_loops_total", (("outcome", "delivered"),)): 0,
        ("katzenpost_decoy_loops_total", (("outcome", "lost"),)): 2,
        ("katzenpost_decoy_dropped_packets_total", ()): 0,
        ("katzenpost_decoy_pending_surbs", ()): 1.5,
    }
