"""The mix's decoy loop: a loop packet unwrapped hop by hop with the real keys comes back as a
SURB reply the decoy recognises; SURB ID layout; lost-loop accounting with an injected clock;
replies that must not match; documents it must ignore; the timer; bounded path attempts."""
import asyncio
import random
import time

import numpy as np
import pytest

from _pki_fixtures import make_descriptor, make_document
from client_support import mix_private_key
from katzenpost import sphinx
from katzenpost.pki.epochtime import EpochClock
from katzenpost.server.decoy import Decoy, loop_targets
from katzenpost.server.workers import KIND_DECOY_SURB_REPLY, KIND_TO_USER, LocalBatch
from katzenpost.sphinx import NextNodeHop, NodeDelay, Recipient, SURBReply, batch, geometry

EPOCH = 300_000
L = geometry.PACKET_LENGTH
SURB_LEN = geometry.SURB_LENGTH


class FakePipeline:
    def __init__(self):
        self.sent = []

    def dispatch_now(self, node_id, packets):
        assert packets.shape == (1, L) and packets.dtype == np.uint8
        self.sent.append((bytes(node_id), packets[0].tobytes()))


class Clock(EpochClock):
    """An EpochClock whose time the test moves."""


def make_clock(t):
    now = [t]
    return Clock(clock=lambda: now[0]), now


@pytest.fixture
def world():
    clock, now = make_clock(EpochClock().epoch_start(EPOCH) + 100.0)
    doc = make_document(EPOCH, now[0], per_layer=2)
    me = doc.topology[1][1]
    pipeline = FakePipeline()
    decoy = Decoy(identity_public=me.identity_key, pipeline=pipeline, clock=clock, decoy_slack_ms=15_000,
                  rng=random.Random(5))
    decoy.on_new_document(doc)
    return decoy, pipeline, doc, me, clock, now


def node_of(doc, node_id):
    node = doc.node_by_identity(node_id)
    assert node is not None, "a hop outside the document"
    return node


def unwrap_at(doc, node_id, packet, epoch=EPOCH):
    node = node_of(doc, node_id)
    return node, sphinx.unwrap(mix_private_key(node, node.mix_keys[epoch]), packet)


def follow(doc, first_hop, packet, max_hops=5):
    """Unwrap from `first_hop` along the NextNodeHops; (nodes visited, terminal Unwrapped, the
    packet as the terminal node received it)."""
    visited, node_id = [], first_hop
    for _ in range(max_hops):
        node, result = unwrap_at(doc, node_id, packet)
        visited.append(node)
        cmds = {type(c): c for c in result.commands}
        if NextNodeHop not in cmds:
            return visited, result, packet
        assert NodeDelay in cmds
        node_id, packet = cmds[NextNodeHop].id, result.packet
    raise AssertionError("the packet never terminated")


def layer_of(doc, node):
    return next((i for i, layer in enumerate(doc.topology) if node in layer), 255)


def reply_batch(packet_at_me, me, kind=KIND_DECOY_SURB_REPLY):
    """What the crypto workers hand on for this packet: the real batch unwrap at this mix."""
    rows = np.frombuffer(packet_at_me, np.uint8).reshape(1, L).copy()
    result = batch.UnwrapBatch(1)
    assert batch.unwrap_batch(rows, 1, batch.keys_array([mix_private_key(me, me.mix_keys[EPOCH])]), result) == 1
    assert result.flags[0] & batch.FLAG_SURB_REPLY
    return LocalBatch(kind=np.array([kind], np.uint8), recv_at_ns=np.zeros(1, np.int64),
                      delay_ms=np.zeros(1, np.uint32), recipient=result.recipient[:1].copy(),
                      surb_id=result.surb_id[:1].copy(), packets=rows)


def loop_round_trip(decoy, pipeline, doc, me):
    """Send one loop; play the providers' loop service; return the reply as it reaches `me`."""
    assert decoy.send_loop()
    first_hop, packet = pipeline.sent[-1]
    visited, terminal, _ = follow(doc, first_hop, packet)
    assert [layer_of(doc, n) for n in visited] == [2, 255]      # self (layer 1) -> layer 2 -> provider
    cmds = {type(c): c for c in terminal.commands}
    assert set(cmds) == {NodeDelay, Recipient}
    assert cmds[Recipient].id == b"+loop".ljust(64, b"\x00")
    payload = terminal.payload
    assert payload[:2] == b"\x01\x00" and payload[2 + SURB_LEN:] == bytes(1490)
    reply, reply_first_hop = sphinx.new_packet_from_surb(payload[2:2 + SURB_LEN], b"\x01\x00" + bytes(2046))
    visited, terminal, at_me = follow(doc, reply_first_hop, reply)
    assert [layer_of(doc, n) for n in visited] == [0, 1] and visited[-1] is me
    assert {type(c) for c in terminal.commands} == {Recipient, SURBReply}
    return at_me


def test_a_loop_comes_back_and_is_delivered(world):
    decoy, pipeline, doc, me, clock, now = world
    at_me = loop_round_trip(decoy, pipeline, doc, me)
    rows = reply_batch(at_me, me)
    assert rows.surb_id[0, :8].tobytes() == int(now[0]).to_bytes(8, "big")   # BE64(start) || random
    decoy.on_local(rows)
    counts = decoy.counters()
    assert counts["sent"] == 1 and counts["delivered"] == 1 and counts["pending"] == 0
    decoy.on_local(reply_batch(at_me, me))                                   # the same reply again
    assert decoy.counters()["delivered"] == 1 and decoy.counters()["unmatched_replies"] == 1


def test_replies_that_must_not_match(world):
    decoy, pipeline, doc, me, clock, now = world
    at_me = loop_round_trip(decoy, pipeline, doc, me)
    good = reply_batch(at_me, me)

    def variant(**changes):
        fields = dict(kind=good.kind.copy(), recv_at_ns=good.recv_at_ns, delay_ms=good.delay_ms,
                      recipient=good.recipient.copy(), surb_id=good.surb_id.copy(), packets=good.packets.copy())
        for name, edit in changes.items():
            edit(fields[name])
        return LocalBatch(**fields)

    decoy.on_local(variant(recipient=lambda r: r.__setitem__((0, 63), r[0, 63] ^ 1)))
    decoy.on_local(variant(surb_id=lambda s: s.__setitem__((0, 0), s[0, 0] ^ 1)))      # another base
    decoy.on_local(variant(surb_id=lambda s: s.__setitem__((0, 15), s[0, 15] ^ 1)))     # unknown SURB
    decoy.on_local(variant(kind=lambda k: k.__setitem__(0, KIND_TO_USER)))              # not ours
    counts = decoy.counters()
    assert counts["unmatched_replies"] == 3 and counts["delivered"] == 0 and counts["pending"] == 1
    decoy.on_local(variant(packets=lambda p: p.__setitem__((0, 600), p[0, 600] ^ 1)))   # tampered
    counts = decoy.counters()
    assert counts["undecryptable_replies"] == 1 and counts["delivered"] == 0 and counts["pending"] == 0


def test_unanswered_loops_are_lost_after_eta_plus_slack(world):
    decoy, pipeline, doc, me, clock, now = world
    replies = [loop_round_trip(decoy, pipeline, doc, me) for _ in range(3)]
    assert decoy.sweep() == 0
    now[0] += 5.0
    decoy.on_local(reply_batch(replies[0], me))
    assert decoy.sweep() == 0                  # two still within ETA + 15 s (mean ETA ~ 4 s here)
    now[0] += 10 * 60.0
    assert decoy.sweep() == 2
    decoy.on_local(reply_batch(replies[1], me))                              # too late: forgotten
    counts = decoy.counters()
    assert (counts["sent"], counts["delivered"], counts["lost"], counts["pending"]) == (3, 1, 2, 0)
    assert counts["unmatched_replies"] == 1


def test_documents_it_must_ignore_and_one_fetched_ahead(world):
    decoy, pipeline, doc, me, clock, now = world
    decoy.on_new_document(make_document(EPOCH - 1, now[0] - 1200))            # a past epoch
    decoy.on_new_document(make_document(EPOCH, now[0], lambda_m=0.0))          # LambdaM 0 (Go panics)
    assert decoy.counters()["ignored_documents"] == 2
    assert decoy.send_loop()                                                   # the current one stays
    outsider = Decoy(identity_public=make_descriptor("outsider", EPOCH).identity_key, pipeline=pipeline,
                     clock=clock, decoy_slack_ms=15_000)
    outsider.on_new_document(doc)
    provider = Decoy(identity_public=doc.providers[0].identity_key, pipeline=pipeline, clock=clock,
                     decoy_slack_ms=15_000)
    provider.on_new_document(doc)
    assert outsider.counters()["ignored_documents"] == 1 and not outsider.send_loop()
    assert provider.counters()["ignored_documents"] == 1 and not provider.send_loop()
    assert len(pipeline.sent) == 1

    ahead = make_document(EPOCH + 1, now[0], per_layer=2)
    decoy.on_new_document(ahead)
    assert decoy.send_loop() and len(pipeline.sent) == 2                       # still epoch E's
    now[0] = clock.epoch_start(EPOCH + 1) + 1.0
    assert decoy.send_loop()
    assert pipeline.sent[-1][0] in {n.identity_key for n in ahead.topology[2]}
    now[0] = clock.epoch_start(EPOCH + 2) + 1.0                                # no document: idle
    assert not decoy.send_loop()
    assert len(pipeline.sent) == 3


def test_loop_targets_need_a_string_endpoint(world):
    decoy, pipeline, doc, me, clock, now = world
    assert [(p.name, e) for p, e in loop_targets(doc)] == [("provider1", "+loop"), ("provider2", "+loop")]
    doc.providers[0].kaetzchen = {"loop": {"endpoint": 7}}
    doc.providers[1].kaetzchen = {"echo": {"endpoint": "+echo"}}
    assert loop_targets(doc) == []
    assert not decoy.send_loop()
    assert decoy.counters()["send_failures"] == 1


def test_paths_longer_than_two_epochs_are_abandoned_after_three_attempts(world):
    decoy, pipeline, doc, me, clock, now = world
    slow = make_document(EPOCH, now[0], per_layer=2, mu=1e-9, mu_max_delay=0)
    decoy.on_new_document(slow)
    assert not decoy.send_loop()
    assert decoy.counters()["send_failures"] == 1 and pipeline.sent == []


def test_the_timer_sends_at_the_lambda_m_rate_and_stops(world):
    decoy, pipeline, doc, me, clock, now = world
    fast = make_document(EPOCH, now[0], per_layer=2, lambda_m=0.5, lambda_m_max_delay=5)

    async def scenario():
        decoy.on_new_document(fast)
        decoy.start()
        for _ in range(200):
            if len(pipeline.sent) >= 5:
                break
            await asyncio.sleep(0.01)
        await decoy.stop()
        sent = len(pipeline.sent)
        await asyncio.sleep(0.05)
        return sent

    sent = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert sent >= 5 and len(pipeline.sent) == sent
    assert {hop for hop, _ in pipeline.sent} <= {n.identity_key for n in fast.topology[2]} | {
        p.identity_key for p in fast.providers}


def test_through_a_real_pipeline(world, tmp_path):
    """dispatch_now on a real Pipeline, the rest of the network in-process, and the reply
    unwrapped and classified by the real crypto workers (DECOY_SURB_REPLY -> on_local)."""
    _, _, doc, me, clock, now = world
    from katzenpost.server.pipeline import Pipeline, PipelineSettings
    from katzenpost.server.counters import Event
    from katzenpost.server.workers import MixKeySet, SphinxUnwrapEngine
    from pipeline_support import RecordingSender, replay_filter, wheel_factory

    async def scenario():
        holder = {}
        pipeline = Pipeline(PipelineSettings(NumSphinxWorkers=1, UnwrapDelay=5_000), engine=SphinxUnwrapEngine(),
                            wheel_factory=wheel_factory(), on_local=lambda b: holder["decoy"].on_local(b))
        await pipeline.start()
        try:
            senders = {n.identity_key: RecordingSender() for n in doc.topology[2]}
            pipeline.set_destinations(senders)
            key = np.frombuffer(mix_private_key(me, me.mix_keys[EPOCH]), np.uint8).reshape(1, 32)
            pipeline.set_mix_keys(MixKeySet(key, (replay_filter(tmp_path),)))
            decoy = holder["decoy"] = Decoy(identity_public=me.identity_key, pipeline=pipeline, clock=clock,
                                            decoy_slack_ms=15_000, rng=random.Random(9))
            decoy.on_new_document(doc)
            assert decoy.send_loop()
            (first_hop, sender), = [(k, s) for k, s in senders.items() if s.packets]
            packet = sender.packets[0]
            _, terminal, _ = follow(doc, first_hop, packet)
            surb = terminal.payload[2:2 + SURB_LEN]
            reply, reply_first_hop = sphinx.new_packet_from_surb(surb, b"\x01\x00" + bytes(2046))
            _, _, at_me = follow(doc, reply_first_hop, reply)
            for _ in range(50):         # resubmitted only while the worker has no mix keys yet
                dropped = pipeline.counters.total_dropped()
                pipeline.submit(at_me, time.monotonic_ns())
                for _ in range(20):
                    if decoy.counters()["delivered"] or pipeline.counters.total_dropped() > dropped:
                        break
                    await asyncio.sleep(0.01)
                if decoy.counters()["delivered"] or pipeline.counters.total_dropped() == dropped:
                    break
            assert decoy.counters()["delivered"] == 1
            assert pipeline.counters.event_total(Event.DECOY_SURB_REPLY) == 1
        finally:
            await pipeline.halt()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_the_timer_wakes_when_a_document_fetched_ahead_becomes_current():
    period_start = EpochClock().epoch_start(EPOCH + 1)
    t0 = time.monotonic()
    clock = EpochClock(clock=lambda: period_start - 0.1 + (time.monotonic() - t0))
    doc = make_document(EPOCH + 1, period_start, per_layer=1, lambda_m=0.5, lambda_m_max_delay=5)
    pipeline = FakePipeline()
    decoy = Decoy(identity_public=doc.topology[0][0].identity_key, pipeline=pipeline, clock=clock,
                  decoy_slack_ms=15_000, rng=random.Random(3))

    async def scenario():
        decoy.start()
        decoy.on_new_document(doc)
        assert not decoy.send_loop()                     # epoch E+1 has not begun
        for _ in range(300):
            if pipeline.sent:
                break
            await asyncio.sleep(0.01)
        await decoy.stop()

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert pipeline.sent and clock.current() == EPOCH + 1
