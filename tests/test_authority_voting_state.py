"""The voting authority's state machine on an injected clock with in-process peers: three
authorities publish one byte-identical consensus, one down still gives a 2-signature document,
a restarted authority serves the same documents and resumes its round, a round without enough
descriptors or votes fails cleanly, GetConsensus answers by the schedule."""
import logging

import pytest

from authority_voting_support import make_network, open_state
from katzenpost.authority.voting.schedule import Phase
from katzenpost.pki import cert
from katzenpost.pki.epochtime import EPOCH_ZERO
from katzenpost.wire.commands import ConsensusStatus

P = 1200
X = 200_000  # an epoch in the simulated future (the clock is injected)


def at(epoch, offset):
    return EPOCH_ZERO + epoch * P + offset


def signers(raw):
    return sorted(sig.identity for sig in cert.decode(raw).signatures)


def test_three_authorities_publish_one_byte_identical_consensus_signed_by_all(tmp_path):
    net = make_network(tmp_path, start=at(X, 10))
    for state in net.states.values():
        assert state.phase is Phase.ACCEPT_DESC and state.voting_epoch == X + 1
        assert state.wake_at == at(X, P / 2)
    net.post_all(X + 1)
    net.run_until(at(X, 7 * P / 8 + 1))
    docs = {name: s.documents[X + 1].raw for name, s in net.states.items()}
    assert len(set(docs.values())) == 1  # all signatures on every copy, sorted: same bytes
    raw = next(iter(docs.values()))
    assert signers(raw) == sorted(k.identity for k in net.keys.values())
    # Every Vote #1, reveal and signature was accepted: 3 kinds x 3 senders x 2 receivers.
    assert sorted({(kind, code) for kind, _, _, code in net.replies}) == [
        ("reveal", 8), ("signature", 0), ("vote", 0)]
    assert len(net.replies) == 18
    expiration = cert.decode(raw).expiration
    assert expiration == at(X, 3 * P / 4) + 3 * P + 600  # from the schedule, not the clock
    doc = net.states["a1"].documents[X + 1]
    assert doc.genesis_epoch == X + 1 and doc.prior_shared_random == [doc.shared_random_value] * 2
    assert sorted(d.name for layer in doc.topology for d in layer) == ["mix0", "mix1", "mix2"]
    for state in net.states.values():
        assert state.phase is Phase.ACCEPT_DESC and state.voting_epoch == X + 2
        status, served = state.document_for_epoch(X + 1, net.time.now)
        assert status == ConsensusStatus.OK and served == raw

    # The next round chains from the first: same genesis, SRV chained, layers kept.
    net.run_until(at(X + 1, 1))
    net.post_all(X + 2)
    net.run_until(at(X + 1, 7 * P / 8 + 1))
    second = {s.documents[X + 2].raw for s in net.states.values()}
    assert len(second) == 1
    doc2 = net.states["a2"].documents[X + 2]
    assert doc2.genesis_epoch == X + 1 and doc2.shared_random_value != doc.shared_random_value


def test_one_authority_down_still_publishes_with_two_signatures(tmp_path):
    net = make_network(tmp_path, start=at(X, 10))
    net.down.add("a3")
    net.post_all(X + 1, to=["a1", "a2"])
    net.run_until(at(X, 7 * P / 8 + 1))
    raws = {net.states[n].documents[X + 1].raw for n in ("a1", "a2")}
    assert len(raws) == 1
    assert signers(raws.pop()) == sorted([net.keys["a1"].identity, net.keys["a2"].identity])
    assert X + 1 not in net.states["a3"].documents


def test_a_late_authority_fetches_the_document_at_bootstrap(tmp_path):
    net = make_network(tmp_path, start=at(X, 10))
    net.down.add("a3")
    net.post_all(X + 1, to=["a1", "a2"])
    net.run_until(at(X + 1, 5))
    late = net.states["a3"]
    net.down.clear()
    late.wake_at = net.time.now  # comes back: bootstraps, fetches now-1 and now
    net.deliver("a3", late.step(net.time.now))
    assert late.documents[X + 1].raw == net.states["a1"].documents[X + 1].raw
    # ... and votes on the next round with the inherited chain.
    net.post_all(X + 2)
    net.run_until(at(X + 1, 7 * P / 8 + 1))
    assert len({s.documents[X + 2].raw for s in net.states.values()}) == 1
    assert late.documents[X + 2].genesis_epoch == X + 1


def test_restart_serves_the_same_documents_and_resumes_the_round(tmp_path):
    net = make_network(tmp_path, start=at(X, 10))
    net.post_all(X + 1)
    net.run_until(at(X, 7 * P / 8 + 1))
    first = net.states["a1"].documents[X + 1].raw
    net.run_until(at(X + 1, 1))
    net.post_all(X + 2)
    net.run_until(at(X + 1, P / 2 + 1))  # a1 has voted for X+2, then dies
    assert net.keys["a1"].identity in net.states["a1"].votes[X + 2]
    net.states["a1"].store.close()
    restarted = open_state(tmp_path, "a1", net.keys,
                           {n: 20000 + i for i, n in enumerate(net.keys)}, net.clock, P)
    restarted.restore(net.time.now)
    net.states["a1"] = restarted
    status, raw = restarted.document_for_epoch(X + 1, net.time.now)
    assert status == ConsensusStatus.OK and raw == first
    assert restarted.phase is Phase.ACCEPT_VOTE and restarted.voting_epoch == X + 2
    net.run_until(at(X + 1, 7 * P / 8 + 1))
    docs = {s.documents[X + 2].raw for s in net.states.values()}
    assert len(docs) == 1 and len(signers(docs.pop())) == 3  # its reveal came from the store


def test_too_few_descriptors_means_no_vote_and_bootstrap(tmp_path, caplog):
    net = make_network(tmp_path, start=at(X, 10))
    net.post_all(X + 1, nodes=("mix0", "provider1"))
    net.run_until(at(X, P / 2 + 1))
    for state in net.states.values():
        assert state.phase is Phase.BOOTSTRAP and state.voting_epoch == X + 2
        assert state.wake_at == at(X + 1, 0)
    assert "Not voting because insufficient descriptors uploaded for epoch" in caplog.text
    assert net.replies == []


def test_without_a_majority_of_votes_the_round_fails_and_restarts(tmp_path, caplog):
    net = make_network(tmp_path, start=at(X, 10))
    net.down.update({"a2", "a3"})
    net.post_all(X + 1, to=["a1"])
    net.run_until(at(X, 7 * P / 8 + 1))
    a1 = net.states["a1"]
    assert X + 1 not in a1.documents
    assert a1.phase is Phase.BOOTSTRAP and a1.genesis_epoch == 0
    assert "not enough votes for epoch" in caplog.text
    assert a1.document_for_epoch(X + 1, net.time.now)[0] == ConsensusStatus.GONE


def test_get_consensus_follows_the_schedule(tmp_path):
    net = make_network(tmp_path, start=at(X, 10))
    a1 = net.states["a1"]
    now = net.time.now
    assert a1.document_for_epoch(X, now)[0] == ConsensusStatus.GONE  # no bootstrap grace
    assert a1.document_for_epoch(X - 5, now)[0] == ConsensusStatus.GONE
    assert a1.document_for_epoch(X + 1, now)[0] == ConsensusStatus.NOT_FOUND
    assert a1.document_for_epoch(X + 9, now)[0] == ConsensusStatus.NOT_FOUND
    # After 7P/8 but before this authority combined: still NotFound (a Go node that saw
    # Gone would never ask again).
    late = at(X, 7 * P / 8 + 0.5)
    assert a1.document_for_epoch(X + 1, late)[0] == ConsensusStatus.NOT_FOUND
    a1.combined.add(X + 1)
    assert a1.document_for_epoch(X + 1, late)[0] == ConsensusStatus.GONE


def test_joining_after_the_vote_deadline_waits_for_the_next_epoch(tmp_path):
    net = make_network(tmp_path, start=at(X, P / 2 + 5))
    for state in net.states.values():
        assert state.phase is Phase.BOOTSTRAP and state.voting_epoch == X + 2
        assert state.wake_at == at(X + 1, 0)


@pytest.mark.parametrize("late_by", [P, 3 * P])
def test_a_step_woken_an_epoch_late_abandons_the_round(tmp_path, late_by):
    net = make_network(tmp_path, start=at(X, 10))
    a1 = net.states["a1"]
    out = a1.step(at(X, P / 2) + late_by)  # the process was suspended across the round
    assert a1.voting_epoch == X + late_by // P + 1 and a1.phase is Phase.ACCEPT_DESC
    assert a1.genesis_epoch == 0 and {o.kind for o in out} == {"fetch"}


def test_restart_after_tabulating_resends_the_stored_signature(tmp_path):
    net = make_network(tmp_path, start=at(X, 10))
    net.post_all(X + 1)
    net.run_until(at(X, 3 * P / 4 + 1))  # everyone signed; a1 dies before the signatures arrive
    a1 = net.states["a1"]
    own = a1.certificates[X + 1][net.keys["a1"].identity]
    for name in ("a2", "a3"):  # a1's signature never reached them
        del net.states[name].certificates[X + 1][net.keys["a1"].identity]
    a1.store.close()
    restarted = open_state(tmp_path, "a1", net.keys,
                           {n: 20000 + i for i, n in enumerate(net.keys)}, net.clock, P)
    restarted.restore(at(X, 3 * P / 4 + 30))
    net.states["a1"] = restarted
    net.run_until(at(X, 7 * P / 8 + 1))
    # The same signature was resent (not a new tabulation): the peers now hold it.
    assert net.states["a2"].certificates[X + 1][net.keys["a1"].identity] == own
    docs = {s.documents[X + 1].raw for s in net.states.values()}
    assert len(docs) == 1 and len(signers(docs.pop())) == 3


def test_an_authority_alone_publishes_with_its_own_signature(tmp_path):
    net = make_network(tmp_path, names=("solo",), start=at(X, 10))
    solo = net.states["solo"]
    assert solo.threshold == 1 and solo.verifiers() == [net.keys["solo"].identity]
    net.post_all(X + 1)
    net.run_until(at(X, 7 * P / 8 + 1))
    assert signers(solo.documents[X + 1].raw) == [net.keys["solo"].identity]


def test_a_descriptor_after_the_vote_is_accepted_but_enters_no_document(tmp_path, caplog):
    caplog.set_level(logging.INFO, "katzenpost.authority")
    net = make_network(tmp_path, start=at(X, 10))
    net.post_all(X + 1, nodes=("mix0", "mix1", "mix2", "provider1"))
    net.run_until(at(X, P / 2 + 1))
    net.post_all(X + 1, nodes=("provider2",))  # Ok, as the reference answers
    assert "arrived after this authority voted" in caplog.text
    net.run_until(at(X, 7 * P / 8 + 1))
    doc = net.states["a1"].documents[X + 1]
    assert [d.name for d in doc.providers] == ["provider1"]


def test_a_resumed_round_still_fetches_the_documents_a_bootstrap_would(tmp_path):
    """a1 misses round X+1, bootstraps in X+1 (the fetched document is kept in memory only),
    votes for X+2 and restarts: resuming its round it fetches the document of X+1 again, so it
    serves it and chains the shared random value from it (its signature combines)."""
    net = make_network(tmp_path, start=at(X, 10))
    net.down.add("a1")
    net.post_all(X + 1, to=["a2", "a3"])
    net.run_until(at(X + 1, 5))
    net.down.clear()
    a1 = net.states["a1"]
    a1.wake_at = net.time.now
    net.deliver("a1", a1.step(net.time.now))
    assert X + 1 in a1.documents and a1.store.document(X + 1) is None
    net.post_all(X + 2)
    net.run_until(at(X + 1, P / 2 + 1))
    a1.store.close()
    restarted = open_state(tmp_path, "a1", net.keys,
                           {n: 20000 + i for i, n in enumerate(net.keys)}, net.clock, P)
    restarted.restore(net.time.now)
    net.states["a1"] = restarted
    assert restarted.phase is Phase.ACCEPT_VOTE and X + 1 not in restarted.documents
    net.run_until(at(X + 1, 7 * P / 8 + 1))
    assert restarted.document_for_epoch(X + 1, net.time.now)[0] == ConsensusStatus.OK
    docs = {s.documents[X + 2].raw for s in net.states.values()}
    assert len(docs) == 1 and len(signers(docs.pop())) == 3
