"""Vote and Reveal handling rules in the reference's evaluation order, each status code, bad
input refused with its code, counted and logged, never a crash."""
import os

import pytest

from authority_voting_support import authority_keys, make_network, signed_vote
from katzenpost.pki import cert
from katzenpost.pki.epochtime import EPOCH_ZERO
from katzenpost.voting import srv
from katzenpost.wire.commands import RevealStatusCode as R
from katzenpost.wire.commands import VoteStatusCode as V

P = 1200
X = 200_000
NOW = EPOCH_ZERO + X * P + 10


@pytest.fixture
def net(tmp_path):
    return make_network(tmp_path, start=NOW)


def make_vote(net, signer="a2", epoch=X + 1, doc_epoch=None, now=NOW, random=b"\x01" * 32):
    return signed_vote(net.keys[signer], doc_epoch or epoch, net.states["a1"].cfg.parameters, now,
                       P, random=random, descriptors_at=NOW)


def vote(net, payload, sender="a2", epoch=X + 1, session=None):
    me = net.keys[sender].identity if sender in net.keys else sender
    session = net.keys[session].identity if session else me
    return net.states["a1"].on_vote(epoch, me, payload, session, NOW)


def reveal(net, payload, sender="a2"):
    return net.states["a1"].on_reveal(net.keys[sender].identity, payload, NOW)


def test_vote_rules_in_order(net, caplog):
    raw, _ = make_vote(net)
    a1 = net.states["a1"]
    assert a1.voting_epoch == X + 1
    assert vote(net, raw, epoch=X) == V.TOO_EARLY == 2  # an old epoch: code 2 (names swapped)
    assert vote(net, raw, epoch=X + 2) == V.TOO_LATE == 1
    stranger = authority_keys("stranger")
    assert a1.on_vote(X + 1, stranger.identity, raw, stranger.identity, NOW) == V.NOT_AUTHORIZED
    assert vote(net, raw, session="a3") == V.NOT_AUTHORIZED  # key is not the session's
    assert vote(net, raw, sender="a3") == V.NOT_SIGNED  # a2's vote under a3's key
    assert vote(net, b"garbage") == V.NOT_SIGNED
    assert vote(net, b"") == V.NOT_SIGNED
    other_epoch, _ = make_vote(net, doc_epoch=X)
    assert vote(net, other_epoch) == V.NOT_SIGNED  # document epoch is not the Vote's
    assert a1.votes.get(X + 1, {}).get(net.keys["a2"].identity) is None
    assert vote(net, raw) == V.OK  # first: the vote
    assert a1.votes[X + 1][net.keys["a2"].identity].raw == raw
    assert vote(net, raw) == V.OK  # second: stored as a2's signature (the protocol)
    assert a1.certificates[X + 1][net.keys["a2"].identity] == raw
    assert vote(net, raw) == V.ALREADY_RECEIVED  # third
    assert a1.refused["vote_not_signed"] == 4 and a1.refused["vote_already_received"] == 1
    assert "Refused a vote for epoch 200001" in caplog.text
    assert "vote_not_signed refused so far: 4" in caplog.text


def test_an_expired_vote_is_not_signed(net):
    raw, _ = make_vote(net, now=NOW - 5 * P)
    assert vote(net, raw) == V.NOT_SIGNED


def test_reveal_rules_in_order(net):
    a1 = net.states["a1"]
    raw, the_reveal = make_vote(net)
    signed = srv.sign_reveal(net.keys["a2"].seed, the_reveal, int(NOW) + P, NOW)
    stranger = authority_keys("stranger")
    assert a1.on_reveal(stranger.identity, signed, NOW) == R.NOT_AUTHORIZED == 10
    assert reveal(net, signed, sender="a3") == R.NOT_AUTHORIZED  # signed by a2, sent as a3
    assert reveal(net, b"\x00" * 50) == R.NOT_AUTHORIZED
    short = cert.sign(net.keys["a2"].seed, b"1234567", int(NOW) + P, NOW)
    assert reveal(net, short) == R.NOT_AUTHORIZED  # < 8 certified bytes (a Go crash)
    old = cert.sign(net.keys["a2"].seed, X.to_bytes(8, "big") + bytes(32), int(NOW) + P, NOW)
    assert reveal(net, old) == R.TOO_LATE == 12
    future = cert.sign(net.keys["a2"].seed, (X + 2).to_bytes(8, "big") + bytes(32),
                       int(NOW) + P, NOW)
    assert reveal(net, future) == R.TOO_EARLY == 9
    assert reveal(net, signed) == R.TOO_EARLY  # no votes at all yet
    own, _ = make_vote(net, signer="a3", random=b"\x03" * 32)
    assert vote(net, own, sender="a3") == V.OK
    assert reveal(net, signed) == R.TOO_EARLY  # a vote, but not a2's
    assert vote(net, raw) == V.OK
    assert reveal(net, signed) == R.OK == 8
    assert a1.reveals[X + 1][net.keys["a2"].identity] == the_reveal
    assert reveal(net, signed) == R.ALREADY_RECEIVED == 11
    assert a1.refused["reveal_too_early"] == 3


def test_random_payloads_never_crash_the_handlers(net):
    for size in (0, 1, 7, 8, 40, 300, 5000):
        for _ in range(5):
            junk = os.urandom(size)
            assert vote(net, junk) == V.NOT_SIGNED
            assert reveal(net, junk) == R.NOT_AUTHORIZED


def test_votes_and_reveals_are_persisted_for_the_round(net):
    raw, the_reveal = make_vote(net)
    assert vote(net, raw) == V.OK
    signed = srv.sign_reveal(net.keys["a2"].seed, the_reveal, int(NOW) + P, NOW)
    assert reveal(net, signed) == R.OK
    store = net.states["a1"].store
    a2 = net.keys["a2"].identity
    assert store.round_items("votes", X + 1)[a2] == raw
    assert store.round_items("reveals", X + 1)[a2] == the_reveal
