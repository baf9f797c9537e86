"""Shared random value: commit and reveal formats, signed reveals, SRV, PriorSharedRandom and
GenesisEpoch rules, bad reveals."""
import hashlib

import pytest
from voting_lib_support import EPOCH, NOW, authorities, load

from katzenpost.pki import cert
from katzenpost.pki.document import Document
from katzenpost.pki.epochtime import EpochClock
from katzenpost.voting import srv
from katzenpost.voting.errors import RevealError, SharedRandomError, VotingError
from katzenpost.wire import commands

VECTORS = load("srv")
BY_NAME = {a["name"]: a for a in VECTORS["authorities"]}


@pytest.mark.parametrize("entry", VECTORS["authorities"], ids=lambda e: e["name"])
def test_commit_and_reveal_match_the_reference(entry):
    commit, reveal = srv.commit_and_reveal(VECTORS["epoch"], bytes.fromhex(entry["rn_hex"]))
    assert reveal.hex() == entry["reveal_hex"]
    assert commit.hex() == entry["commit_hex"]
    assert srv.make_commit(reveal) == commit
    assert srv.reveal_epoch(reveal) == EPOCH
    assert [a.pk.hex() for a in authorities() if a.name == entry["name"]] == [entry["pk_hex"]]


def _tables(auths=None):
    auths = authorities() if auths is None else auths
    return {a.pk: a.commit for a in auths}, {a.pk: a.reveal for a in auths}


def test_srv_with_and_without_a_previous_value():
    commits, reveals = _tables()
    assert srv.shared_random_value(EPOCH, commits, reveals, None).hex() == \
        VECTORS["srv_prev_zero_hex"]
    assert srv.shared_random_value(EPOCH, commits, reveals, bytes(32)).hex() == \
        VECTORS["srv_prev_zero_hex"]
    prev = bytes.fromhex(VECTORS["prev_5a_hex"])
    assert srv.shared_random_value(EPOCH, commits, reveals, prev).hex() == \
        VECTORS["srv_prev_5a_hex"]


def test_srv_hashes_reveals_in_descending_order_whatever_the_table_order():
    auths = authorities()
    by_name = {a.name: a for a in auths}
    ordered = [by_name[n] for n in VECTORS["descending_reveal_order"]]
    expected = hashlib.sha3_256(b"shared-random" + EPOCH.to_bytes(8, "big") + b"".join(
        a.pk + a.reveal for a in ordered) + bytes(32)).digest()
    for permutation in (auths, auths[::-1], auths[1:] + auths[:1]):
        commits, reveals = _tables(permutation)
        assert srv.shared_random_value(EPOCH, commits, reveals, None) == expected


def test_missing_and_bad_reveals_are_left_out_of_the_srv():
    a1, a2, a3 = authorities()
    commits, reveals = _tables()
    only_two = srv.shared_random_value(EPOCH, {a1.pk: a1.commit, a3.pk: a3.commit},
                                       {a1.pk: a1.reveal, a3.pk: a3.reveal}, None)
    assert srv.shared_random_value(EPOCH, commits, {a1.pk: a1.reveal, a3.pk: a3.reveal},
                                   None) == only_two
    for bad in (a2.reveal[:-1], a2.reveal + b"\0", a1.reveal, bytes(40), b""):
        assert srv.shared_random_value(EPOCH, commits, {**reveals, a2.pk: bad},
                                       None) == only_two
    good, skipped = srv.valid_reveals(commits, {a1.pk: a1.reveal, a2.pk: b"x" * 40})
    assert set(good) == {a1.pk} and set(skipped) == {a2.pk, a3.pk}
    assert "failed to reveal" in skipped[a3.pk]


def test_a_reveal_without_a_vote_is_ignored():
    a1, a2, _ = authorities()
    assert srv.shared_random_value(EPOCH, {a1.pk: a1.commit}, {a1.pk: a1.reveal, a2.pk: a2.reveal},
                                   None) == \
        srv.shared_random_value(EPOCH, {a1.pk: a1.commit}, {a1.pk: a1.reveal}, None)


def test_no_votes_means_no_srv():
    with pytest.raises(SharedRandomError, match="No votes present"):
        srv.shared_random_value(EPOCH, {}, {}, None)
    a1 = authorities()[0]
    with pytest.raises(SharedRandomError):
        srv.shared_random_value(EPOCH, {a1.pk: a1.commit}, {}, bytes(31))


@pytest.mark.parametrize("mutate, message", [
    (lambda r, c: (r[:39], c), "length"),
    (lambda r, c: (r + b"\0", c), "length"),
    (lambda r, c: ((EPOCH + 1).to_bytes(8, "big") + r[8:], c), "epoch"),
    (lambda r, c: (r[:8] + bytes(32), c), "hash"),
    (lambda r, c: (r, None), "SharedRandomCommit"),
    (lambda r, c: (r, c[:7]), "SharedRandomCommit"),
    (lambda r, c: (r, c[:39]), "SharedRandomCommit"),
])
def test_bad_reveals_are_refused(mutate, message):
    a1 = authorities()[0]
    srv.check_reveal(a1.reveal, a1.commit)
    reveal, commit = mutate(a1.reveal, a1.commit)
    with pytest.raises(RevealError, match=message):
        srv.check_reveal(reveal, commit)


def test_reveal_command_of_a1_is_byte_exact():
    a1 = authorities()[0]
    signed = srv.sign_reveal(a1.seed, a1.reveal, VECTORS["expiration"], NOW)
    command = commands.Reveal(epoch=EPOCH, public_key=a1.pk, payload=signed).to_bytes()
    assert len(command) == VECTORS["reveal_command_len"]
    assert command.hex() == VECTORS["reveal_command_A1_hex"]
    decoded = commands.Command.from_bytes(command)
    assert srv.open_signed_reveal(decoded.payload, decoded.public_key, NOW) == (EPOCH, a1.reveal)


def test_open_signed_reveal_refuses_wrong_signers_garbage_and_short_payloads():
    a1, a2, _ = authorities()
    signed = srv.sign_reveal(a1.seed, a1.reveal, VECTORS["expiration"], NOW)
    with pytest.raises(RevealError):
        srv.open_signed_reveal(signed, a2.pk, NOW)
    with pytest.raises(RevealError):
        srv.open_signed_reveal(signed, a1.pk, VECTORS["expiration"] + 1)  # expired
    for garbage in (b"", b"\xff" * 10, signed[:-1], signed + b"\0"):
        with pytest.raises(RevealError):
            srv.open_signed_reveal(garbage, a1.pk, NOW)
    short = cert.sign(a1.seed, b"1234567", VECTORS["expiration"], NOW)
    with pytest.raises(RevealError, match="no epoch"):
        srv.open_signed_reveal(short, a1.pk, NOW)
    # Longer payloads open (the length rule is applied against the commit, at tabulation).
    longer = cert.sign(a1.seed, a1.reveal + b"x", VECTORS["expiration"], NOW)
    assert srv.open_signed_reveal(longer, a1.pk, NOW) == (EPOCH, a1.reveal + b"x")


@pytest.mark.parametrize("args", [(EPOCH, bytes(31)), (-1, bytes(32)), (2**64, bytes(32))])
def test_bad_random_input_is_refused(args):
    with pytest.raises(VotingError):
        srv.commit_and_reveal(*args)
    with pytest.raises(RevealError):
        srv.make_commit(bytes(39))
    with pytest.raises(RevealError):
        srv.sign_reveal(bytes(32), bytes(39), 10**10, NOW)


@pytest.mark.parametrize("period", [1200, 120])
def test_reveal_expiration_is_the_end_of_the_current_epoch(period):
    clock = EpochClock(period)
    start = clock.epoch_start(EPOCH)
    for now in (start, start + 0.5, start + period * 5 / 8, start + period - 0.001):
        assert srv.reveal_expiration(clock, now) == start + period


SRV_A, SRV_B = b"\xaa" * 32, b"\xbb" * 32


@pytest.mark.parametrize("period, week", [(1200, 504), (120, 5040)])
def test_prior_shared_random_rotates_16_epochs_after_genesis_then_weekly(period, week):
    genesis = 1000
    assert srv.rotation_period(period) == week
    assert srv.next_prior_shared_random(genesis, genesis, SRV_A, None, period) == [SRV_A, SRV_A]
    assert srv.next_prior_shared_random(genesis + 3, genesis, SRV_A, [], period) == [SRV_A] * 2
    prior = [SRV_B, b"\xcc" * 32]
    # (genesis - epoch) mod 2^64 divisible by W: epoch - genesis = 0 or ≡ 2^64 ≡ 16 (mod W).
    rotating = [genesis, genesis + 16, genesis + 16 + week, genesis + 16 + 5 * week]
    for epoch in rotating:
        assert srv.next_prior_shared_random(epoch, genesis, SRV_A, prior, period) == \
            [SRV_A, SRV_B]
    for epoch in (genesis + 1, genesis + 15, genesis + 17, genesis + week):
        assert srv.next_prior_shared_random(epoch, genesis, SRV_A, prior, period) == prior


def _previous_document(genesis, prior):
    return Document(epoch=EPOCH - 1, genesis_epoch=genesis, send_rate_per_minute=0, mu=0.0,
                    mu_max_delay=0, lambda_p=0.0, lambda_p_max_delay=0, lambda_l=0.0,
                    lambda_l_max_delay=0, lambda_d=0.0, lambda_d_max_delay=0, lambda_m=0.0,
                    lambda_m_max_delay=0, topology=[], providers=[],
                    shared_random_value=SRV_A, prior_shared_random=prior)


def test_genesis_for_vote_keeps_inherits_or_restarts_the_chain():
    previous = _previous_document(500, [SRV_A, SRV_B])
    assert srv.genesis_for_vote(700, [SRV_B], previous, EPOCH) == (700, [SRV_B])
    assert srv.genesis_for_vote(0, None, previous, EPOCH) == (500, [SRV_A, SRV_B])
    assert srv.genesis_for_vote(0, None, None, EPOCH) == (EPOCH, None)
    assert srv.genesis_for_vote(0, [], None, EPOCH) == (EPOCH, [])
