"""The node's PKI worker: what it fetches and when, publication with retry, peer authentication,
outgoing destinations and the raw documents it serves (the reference server's PKI worker)."""
import asyncio
from dataclasses import replace

import pytest

from _pki_fixtures import (
    AUTHORITY_SEED,
    CLOCK,
    MemoryMixKeys,
    link_private_for,
    make_document,
    node_self,
    public_for,
    seed_for,
    signed_descriptor,
    signed_document_bytes,
    x25519_public,
)
from katzenpost.pki.client import (
    AuthorityUnreachableError,
    DocumentGoneError,
    DocumentNotFoundError,
    PostConflictError,
    PostRejectedError,
)
from katzenpost.pki.document import verify_and_parse_document
from katzenpost.pki.worker import CachedDocument, PKICacheError, PKIWorker
from katzenpost.wire.commands import ConsensusStatus
from katzenpost.wire.handshake import PeerCredentials

E = 5_000_000
P = CLOCK.period
EARLY = CLOCK.epoch_start(E) + 30  # 30 s into epoch E
LATE = CLOCK.epoch_start(E) + P - 100  # 100 s before the rollover (< P/8, < 3P/8)
AUTHORITY = public_for(AUTHORITY_SEED)


def parsed_document(epoch, now, **kwargs):
    return verify_and_parse_document(signed_document_bytes(make_document(epoch, now, **kwargs), now),
                                     AUTHORITY, now)


class FakeClient:
    def __init__(self):
        self.documents = {}
        self.errors = {}
        self.fetches = []
        self.posts = []
        self.post_error = None

    async def get_document(self, epoch, now=None):
        self.fetches.append(epoch)
        if epoch in self.errors:
            raise self.errors[epoch]
        if epoch not in self.documents:
            raise DocumentNotFoundError("not yet")
        return self.documents[epoch]

    async def post_descriptor(self, epoch, seed, desc, now=None):
        self.posts.append((epoch, desc))
        if self.post_error is not None:
            raise self.post_error


def make_worker(me="mix1-0", provider=False, **kwargs):
    client = FakeClient()
    worker = PKIWorker(node_self(me, provider), client, MemoryMixKeys(me), CLOCK, **kwargs)
    return worker, client


def run(coro):
    return asyncio.run(coro)


# --- fetching ---------------------------------------------------------------------------

def test_fetches_current_and_two_previous_epochs_early_in_the_epoch():
    worker, client = make_worker()
    run(worker.tick(EARLY))
    assert client.fetches == [E, E - 1, E - 2]


def test_fetches_next_epoch_once_less_than_three_eighths_remain():
    worker, client = make_worker()
    run(worker.tick(CLOCK.epoch_start(E) + P - 3 * P / 8 + 1))
    assert client.fetches[0] == E + 1


def test_stored_documents_are_not_refetched_and_new_ones_notify():
    notified = []
    worker, client = make_worker(on_new_documents=lambda: notified.append(1))
    client.documents[E] = parsed_document(E, EARLY)
    run(worker.tick(EARLY))
    assert E in worker.documents and notified == [1]
    client.fetches.clear()
    run(worker.tick(EARLY + 60))
    assert E not in client.fetches and notified == [1]


def test_gone_marks_the_epoch_failed_and_not_found_is_retried():
    worker, client = make_worker()
    client.errors[E - 1] = DocumentGoneError("gone")
    run(worker.tick(EARLY))
    client.fetches.clear()
    run(worker.tick(EARLY + 60))
    assert E - 1 not in client.fetches and E in client.fetches
    assert worker.get_raw_consensus(E - 1, EARLY)[0] == ConsensusStatus.GONE


def test_transport_errors_are_retried_next_tick():
    worker, client = make_worker()
    client.errors[E] = AuthorityUnreachableError("down")
    run(worker.tick(EARLY))
    del client.errors[E]
    client.documents[E] = parsed_document(E, EARLY)
    run(worker.tick(EARLY + 60))
    assert E in worker.documents


def test_document_without_this_node_is_marked_failed():
    worker, client = make_worker(me="stranger")
    client.documents[E] = parsed_document(E, EARLY)
    run(worker.tick(EARLY))
    assert E in worker.failed and E not in worker.documents


def test_document_with_our_wrong_link_key_or_name_is_unusable():
    doc = parsed_document(E, EARLY)
    wrong_link = replace(node_self("mix1-0"), link_public=bytes(32))
    with pytest.raises(PKICacheError, match="link key"):
        CachedDocument.build(doc, wrong_link)
    wrong_name = replace(node_self("mix1-0"), identifier="other")
    with pytest.raises(PKICacheError, match="lists this node as"):
        CachedDocument.build(doc, wrong_name)
    as_provider = replace(node_self("mix1-0"), is_provider=True)
    with pytest.raises(PKICacheError, match="wrong layer"):
        CachedDocument.build(doc, as_provider)


def test_epoch_change_hands_the_document_over_once():
    seen = []
    worker, client = make_worker(on_epoch_change=seen.append)
    client.documents[E] = parsed_document(E, EARLY)
    run(worker.tick(EARLY))
    run(worker.tick(EARLY + 60))
    assert [d.epoch for d in seen] == [E]


# --- publication ------------------------------------------------------------------------

DEADLINE = CLOCK.epoch_start(E) + P - 3 * P / 8   # 3P/8 before the rollover


def posted(client):
    return [e for e, _ in client.posts]


def test_publishes_for_now_and_next_epoch_in_the_first_tick():
    worker, client = make_worker()
    run(worker.tick(EARLY))
    assert posted(client) == [E, E + 1]
    assert worker.last_published_epoch == E + 1
    run(worker.tick(EARLY + 60))
    assert posted(client) == [E, E + 1]  # both settled: nothing to do


def test_steady_state_publishes_next_epoch_at_the_first_tick_of_each_epoch():
    worker, client = make_worker()
    run(worker.tick(EARLY))
    run(worker.tick(CLOCK.epoch_start(E + 1) + 1))
    assert posted(client) == [E, E + 1, E + 2]
    run(worker.tick(CLOCK.epoch_start(E + 1) + 60))
    assert posted(client) == [E, E + 1, E + 2]


def test_descriptor_carries_three_mix_keys_and_the_right_layer():
    worker, client = make_worker()
    run(worker.tick(EARLY))
    desc = client.posts[0][1]
    assert sorted(desc.mix_keys) == [E, E + 1, E + 2] and desc.layer == 0 and desc.kaetzchen is None
    assert sorted(client.posts[1][1].mix_keys) == [E + 1, E + 2, E + 3]
    pworker, pclient = make_worker(me="provider1", provider=True)
    run(pworker.tick(EARLY))
    pdesc = pclient.posts[0][1]
    assert pdesc.layer == 255 and pdesc.kaetzchen == {"loop": {"endpoint": "+loop"}}


def test_transport_errors_are_retried_until_the_deadline():
    worker, client = make_worker()
    client.post_error = AuthorityUnreachableError("down")
    run(worker.tick(EARLY))
    run(worker.tick(EARLY + 60))
    assert posted(client) == [E, E + 1, E, E + 1]
    client.post_error = None
    run(worker.tick(DEADLINE - 1))  # still more than 3P/8 left
    assert posted(client)[-2:] == [E, E + 1] and worker.published == {E, E + 1}


def test_after_the_deadline_the_next_epoch_is_given_up_once_and_the_one_after_follows(caplog):
    worker, client = make_worker()
    client.post_error = AuthorityUnreachableError("down")
    run(worker.tick(EARLY))
    client.post_error = None
    caplog.set_level("WARNING", logger="katzenpost.pki")
    run(worker.tick(DEADLINE + 1))
    run(worker.tick(DEADLINE + 60))
    assert posted(client) == [E, E + 1, E]  # the current epoch is retried, E+1 is not
    missed = [r for r in caplog.records if "missed publication deadline" in r.getMessage()]
    assert [r.getMessage() for r in missed] == [f"missed publication deadline for epoch: {E + 1}"]
    run(worker.tick(CLOCK.epoch_start(E + 1) + 1))
    assert posted(client) == [E, E + 1, E, E + 2]


def test_rejected_post_ends_the_attempts_for_that_epoch():
    worker, client = make_worker()
    client.post_error = PostRejectedError("Forbidden")
    run(worker.tick(EARLY))
    run(worker.tick(EARLY + 60))
    assert posted(client) == [E, E + 1]


def test_conflict_counts_as_published():
    worker, client = make_worker()
    client.post_error = PostConflictError("already there")
    run(worker.tick(EARLY))
    assert worker.published == {E, E + 1} and worker.last_published_epoch == E + 1
    run(worker.tick(EARLY + 60))
    assert posted(client) == [E, E + 1]


def test_start_after_the_deadline_still_publishes_both_epochs_once(caplog):
    """At start a node posts for E and E+1 whatever time is left (the authority answers Conflict
    if E+1's document exists); a late start must not leave E+1 without any document. Later
    ticks past the deadline do not retry E+1."""
    worker, client = make_worker()
    client.post_error = AuthorityUnreachableError("down")
    run(worker.tick(LATE))
    assert posted(client) == [E, E + 1]
    client.post_error = None
    caplog.set_level("WARNING", logger="katzenpost.pki")
    run(worker.tick(LATE + 30))
    assert posted(client) == [E, E + 1, E]      # only the current epoch is retried
    assert any(f"missed publication deadline for epoch: {E + 1}" in r.getMessage()
               for r in caplog.records)
    late, late_client = make_worker()
    run(late.tick(DEADLINE + 1))
    assert posted(late_client) == [E, E + 1] and late.published == {E, E + 1}


def test_pruned_key_aborts_the_post_and_it_is_retried():
    worker, client = make_worker()
    worker.mix_keys.public_key = lambda epoch: None
    run(worker.tick(EARLY))
    assert client.posts == [] and worker.last_published_epoch == 0
    del worker.mix_keys.public_key
    run(worker.tick(EARLY + 60))
    assert posted(client) == [E, E + 1]


# --- peer authentication ----------------------------------------------------------------

def creds_of(name, link=None):
    return PeerCredentials(additional_data=public_for(seed_for(name)),
                           public_key=link if link is not None else x25519_public(link_private_for(name)))


def with_documents(*epochs, me="mix1-0", provider=False, **doc_kwargs):
    worker, _ = make_worker(me=me, provider=provider)
    for epoch in epochs:
        doc = parsed_document(epoch, EARLY, **doc_kwargs)
        worker.documents[epoch] = CachedDocument.build(doc, worker.node)
    return worker


def test_previous_layer_may_connect_in_and_send():
    worker = with_documents(E)
    assert worker.authenticate_connection(creds_of("mix0-0"), False, EARLY) == (True, True)


def test_next_layer_is_an_outgoing_peer_not_an_incoming_one():
    worker = with_documents(E)
    assert worker.authenticate_connection(creds_of("mix2-0"), True, EARLY) == (True, True)
    assert worker.authenticate_connection(creds_of("mix2-0"), False, EARLY) == (False, False)


def test_layer_adjacency_wraps_through_the_providers():
    first = with_documents(E, me="mix0-0")
    assert first.authenticate_connection(creds_of("provider1"), False, EARLY) == (True, True)
    last = with_documents(E, me="mix2-0")
    assert last.authenticate_connection(creds_of("provider2"), True, EARLY) == (True, True)
    provider = with_documents(E, me="provider1", provider=True)
    assert provider.authenticate_connection(creds_of("mix2-0"), False, EARLY) == (True, True)
    assert provider.authenticate_connection(creds_of("mix0-0"), True, EARLY) == (True, True)


def test_wrong_link_key_or_ad_length_is_refused():
    worker = with_documents(E)
    assert worker.authenticate_connection(creds_of("mix0-0", link=bytes(32)), False, EARLY) == (False, False)
    bad_ad = PeerCredentials(additional_data=b"short", public_key=bytes(32))
    assert worker.authenticate_connection(bad_ad, False, EARLY) == (False, False)


def test_peer_only_in_next_document_is_accepted_early_and_may_send_late():
    worker = with_documents(E + 1)
    late_but_not_send = CLOCK.epoch_start(E) + P - 130  # < P/8 (150 s), > 2 min
    assert worker.authenticate_connection(creds_of("mix0-0"), False, late_but_not_send) == (True, False)
    assert worker.authenticate_connection(creds_of("mix0-0"), False, LATE) == (True, True)
    assert worker.authenticate_connection(creds_of("mix2-0"), True, LATE) == (True, False)
    assert worker.authenticate_connection(creds_of("mix0-0"), False, EARLY) == (False, False)


def test_peer_only_in_past_documents_is_refused_without_a_current_one():
    worker = with_documents(E - 1)
    assert worker.authenticate_connection(creds_of("mix0-0"), False, EARLY) == (False, False)


def test_outgoing_destinations_follow_the_current_document():
    worker = with_documents(E, E + 1)
    assert set(worker.outgoing_destinations(EARLY)) == {public_for(seed_for("mix2-0"))}
    assert worker.outgoing_destinations(CLOCK.epoch_start(E + 3)) == {}


def test_raw_consensus_for_clients():
    worker = with_documents(E)
    status, raw = worker.get_raw_consensus(E, EARLY)
    assert status == ConsensusStatus.OK and raw == worker.documents[E].doc.raw
    assert worker.get_raw_consensus(E + 1, EARLY)[0] == ConsensusStatus.NOT_FOUND
    assert worker.get_raw_consensus(E - 2, EARLY)[0] == ConsensusStatus.GONE
    assert worker.current_document(EARLY).epoch == E


def test_peer_in_an_older_document_is_accepted_while_still_listed_now():
    # mix0-0 sends to us by the E-1 document; in E it moved to another layer but is still listed.
    worker, _ = make_worker()
    worker.documents[E - 1] = CachedDocument.build(parsed_document(E - 1, EARLY), worker.node)
    moved = make_document(E, EARLY)
    moved.topology[0], moved.topology[2] = moved.topology[2], moved.topology[0]
    doc = verify_and_parse_document(signed_document_bytes(moved, EARLY), AUTHORITY, EARLY)
    worker.documents[E] = CachedDocument.build(doc, worker.node)
    assert public_for(seed_for("mix0-0")) not in worker.documents[E].incoming
    assert worker.authenticate_connection(creds_of("mix0-0"), False, EARLY) == (True, True)
    assert public_for(seed_for("mix2-0")) in worker.outgoing_destinations(EARLY)


def test_peer_delisted_from_the_current_document_is_dropped():
    worker, _ = make_worker()
    worker.documents[E - 1] = CachedDocument.build(parsed_document(E - 1, EARLY), worker.node)
    current = make_document(E, EARLY)
    current.topology[0] = [signed_descriptor("mix0-9", E, EARLY)]  # mix0-0 is gone
    doc = verify_and_parse_document(signed_document_bytes(current, EARLY), AUTHORITY, EARLY)
    worker.documents[E] = CachedDocument.build(doc, worker.node)
    assert public_for(seed_for("mix0-0")) not in worker.documents[E].listed
    assert worker.authenticate_connection(creds_of("mix0-0"), False, EARLY) == (False, False)
    assert worker.outgoing_destinations(EARLY) == {public_for(seed_for("mix2-0")):
                                                   worker.documents[E].outgoing[public_for(seed_for("mix2-0"))]}


def test_link_key_of_the_most_recent_descriptor_is_accepted_for_older_documents():
    new_link = x25519_public(b"\x07" * 32)
    worker, _ = make_worker()
    worker.documents[E] = CachedDocument.build(parsed_document(E, EARLY), worker.node)
    upcoming = make_document(E + 1, EARLY)
    upcoming.topology[0] = [signed_descriptor("mix0-0", E + 1, EARLY, link_key=new_link)]
    doc = verify_and_parse_document(signed_document_bytes(upcoming, EARLY), AUTHORITY, EARLY)
    worker.documents[E + 1] = CachedDocument.build(doc, worker.node)
    connect_window = CLOCK.epoch_start(E) + P - 130  # < P/8 before the rollover, > 2 min
    rotated = creds_of("mix0-0", link=new_link)
    assert worker.authenticate_connection(rotated, False, connect_window) == (True, True)
    # Without the next document, the new key is unknown.
    del worker.documents[E + 1]
    assert worker.authenticate_connection(rotated, False, connect_window) == (False, False)


def test_mix_key_changes_ask_the_node_to_reshadow():
    changes = []
    worker, client = make_worker(on_mix_keys_changed=lambda: changes.append(1))
    run(worker.tick(EARLY))  # keys E..E+2 created, then E+3 for the post of E+1
    assert changes == [1, 1]
    run(worker.tick(EARLY + 60))  # nothing to publish, nothing changes
    assert changes == [1, 1]
    run(worker.tick(CLOCK.epoch_start(E + 1) + 1))  # E+2 published: E+4 created
    assert changes == [1, 1, 1]


def test_mix_key_store_failure_skips_the_post_but_not_the_rest_of_the_tick():
    seen = []
    worker, client = make_worker(on_epoch_change=seen.append)
    client.documents[E] = parsed_document(E, EARLY)

    def broken(epoch):
        raise OSError("disk full")
    worker.mix_keys.generate = broken
    run(worker.tick(EARLY))
    assert client.posts == [] and worker.last_published_epoch == 0
    assert [d.epoch for d in seen] == [E]  # the document still reached the node
    del worker.mix_keys.generate  # the store recovers: the next tick posts
    run(worker.tick(EARLY + 60))
    assert [e for e, _ in client.posts] == [E, E + 1]


def test_node_self_repr_never_shows_the_identity_seed():
    node = node_self("mix1")
    text = repr(node)
    assert node.identity_seed.hex() not in text and "identity_seed" not in text
    assert node.identity_public.hex() in text or repr(node.identity_public) in text


# --- stopping ---------------------------------------------------------------------------

def test_stop_ends_a_worker_that_swallowed_the_cancellation(monkeypatch):
    """Python 3.11's wait_for can return an authority reply and drop the cancellation that
    arrived with it; the worker then goes on to sleep a whole tick. stop() must still end it,
    promptly, or the node's halt hangs."""
    monkeypatch.setattr("katzenpost.pki.worker.FIRST_RUN_DELAY", 0)
    worker, _ = make_worker()

    async def scenario():
        entered = asyncio.Event()

        async def reply_wins_over_cancel(now=None):
            entered.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                return                   # what wait_for did with a reply in the same step
        worker.tick = reply_wins_over_cancel
        worker.start()
        task = worker._task
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.wait_for(worker.stop(), 5)
        assert task.done() and worker._task is None
    run(scenario())
