"""The tally: thresholds, missing and conflicting votes, reveals, parameter agreement, and the
failure modes of tabulation. Bad vote payloads raise VoteError, never anything else."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voting_lib_support import (
    EPOCH,
    EXPIRATION,
    NOW,
    authorities,
    default_parameters,
    mix_descriptor,
    provider_descriptor,
    tabulate,
    vector_descriptors,
    votes_and_reveals,
)

from katzenpost.pki import cert
from katzenpost.voting import consensus, tally, vote
from katzenpost.voting.errors import SharedRandomError, TallyError, VoteError, VotingError

# N: (T, D, client threshold with n = N peers, background fetch threshold)
THRESHOLDS = {1: (1, -1, 1, 1), 2: (2, -1, 2, 1), 3: (2, 0, 2, 2), 4: (3, 0, 3, 2),
              5: (3, 1, 3, 3), 6: (4, 1, 4, 3), 7: (4, 2, 4, 4)}


@pytest.mark.parametrize("n", sorted(THRESHOLDS))
def test_thresholds(n):
    assert (tally.authority_threshold(n), tally.dissent_bound(n), tally.client_threshold(n),
            tally.fetch_threshold(n)) == THRESHOLDS[n]


def _names(entries):
    return sorted(d.name for d in entries)


ALL = ["mix1", "mix2", "mix3", "provider1"]


def test_three_agreeing_votes():
    auths = authorities()
    votes, reveals = votes_and_reveals(auths)
    result = tally.tally_votes(EPOCH, votes, reveals, 3, NOW)
    assert _names(result.entries) == ALL
    assert [d.identity_key for d in result.entries] == sorted(d.identity_key
                                                              for d in result.entries)
    assert result.parameters == default_parameters()
    assert result.counted == sorted(a.pk for a in auths) and result.skipped == {}


def test_a_missing_vote_or_reveal_still_reaches_the_threshold_of_three():
    a1, a2, a3 = authorities()
    votes, reveals = votes_and_reveals([a1, a2, a3])
    without_vote = {k: v for k, v in votes.items() if k != a3.pk}
    assert _names(tally.tally_votes(EPOCH, without_vote, reveals, 3, NOW).entries) == ALL
    without_reveal = {k: v for k, v in reveals.items() if k != a3.pk}
    result = tally.tally_votes(EPOCH, votes, without_reveal, 3, NOW)
    assert _names(result.entries) == ALL and "failed to reveal" in result.skipped[a3.pk]


def test_one_counted_vote_fails_the_parameter_tally():
    a1, a2, a3 = authorities()
    votes, _ = votes_and_reveals([a1, a2, a3])
    # D = 0 for N = 3, so the reference calls any losing group a partition.
    with pytest.raises(TallyError, match="a consensus partition"):
        tally.tally_votes(EPOCH, votes, {a1.pk: a1.reveal}, 3, NOW)
    # No counted vote at all: no group, a plain failure.
    with pytest.raises(TallyError, match="consensus failure"):
        tally.tally_votes(EPOCH, votes, {}, 3, NOW)


def test_too_few_votes_are_refused_before_reveals_are_checked():
    a1, a2, _ = authorities()
    with pytest.raises(TallyError, match=f"no votes for epoch {EPOCH}"):
        tally.tally_votes(EPOCH, {}, {}, 3, NOW)
    with pytest.raises(TallyError, match=f"not enough votes for epoch {EPOCH}"):
        tally.tally_votes(EPOCH, {a1.pk: a1.vote()}, {a1.pk: a1.reveal}, 3, NOW)
    # N = 1: the authority alone is a threshold.
    result = tally.tally_votes(EPOCH, {a1.pk: a1.vote()}, {a1.pk: a1.reveal}, 1, NOW)
    assert _names(result.entries) == ALL


def test_a_bad_reveal_drops_that_vote():
    a1, a2, a3 = authorities()
    votes, reveals = votes_and_reveals([a1, a2, a3])
    for bad in (a3.reveal[:39], a2.reveal, bytes(40), a3.reveal + b"\0"):
        result = tally.tally_votes(EPOCH, votes, {**reveals, a3.pk: bad}, 3, NOW)
        assert result.counted == sorted([a1.pk, a2.pk]) and a3.pk in result.skipped


def test_conflicting_descriptor_bytes_count_separately():
    a1, a2, a3 = authorities()
    resigned = mix_descriptor(1, expiration=EXPIRATION - 1)  # same node, other bytes
    assert resigned.identity_key == mix_descriptor(1).identity_key
    other = [resigned, mix_descriptor(2), mix_descriptor(3), provider_descriptor()]
    votes = {a1.pk: a1.vote(), a2.pk: a2.vote(), a3.pk: a3.vote(descriptors=other)}
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    result = tally.tally_votes(EPOCH, votes, reveals, 3, NOW)
    assert [d.raw for d in result.entries if d.name == "mix1"] == [mix_descriptor(1).raw]
    # Each authority holds "a" mix1, but no single byte string reaches T = 2 of 3.
    votes = {a1.pk: a1.vote(),
             a2.pk: a2.vote(descriptors=other),
             a3.pk: a3.vote(descriptors=[mix_descriptor(1, expiration=EXPIRATION - 2)]
                            + other[1:])}
    result = tally.tally_votes(EPOCH, votes, reveals, 3, NOW)
    assert _names(result.entries) == ["mix2", "mix3", "provider1"]


def test_a_node_absent_from_a_minority_of_votes_stays():
    a1, a2, a3 = authorities()
    fewer = [mix_descriptor(1), mix_descriptor(2), mix_descriptor(3), provider_descriptor(),
             mix_descriptor(4)]
    votes = {a1.pk: a1.vote(descriptors=fewer), a2.pk: a2.vote(descriptors=fewer),
             a3.pk: a3.vote()}
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    assert _names(tally.tally_votes(EPOCH, votes, reveals, 3, NOW).entries) == ALL[:3] + [
        "mix4", "provider1"]
    votes = {a1.pk: a1.vote(descriptors=fewer), a2.pk: a2.vote(), a3.pk: a3.vote()}
    assert _names(tally.tally_votes(EPOCH, votes, reveals, 3, NOW).entries) == ALL


def test_parameters_need_a_threshold_and_signed_zero_is_zero():
    a1, a2, a3 = authorities()
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    odd = default_parameters(mu=0.001)
    votes = {a1.pk: a1.vote(), a2.pk: a2.vote(), a3.pk: a3.vote(parameters=odd)}
    assert tally.tally_votes(EPOCH, votes, reveals, 3, NOW).parameters == default_parameters()
    votes = {a1.pk: a1.vote(parameters=default_parameters(lambda_m=0.002)), a2.pk: a2.vote(),
             a3.pk: a3.vote(parameters=odd)}
    with pytest.raises(TallyError, match="a consensus partition"):
        tally.tally_votes(EPOCH, votes, reveals, 3, NOW)
    assert vote.VotingParameters.of(default_parameters(mu=-0.0)).tally_key() == \
        vote.VotingParameters.of(default_parameters(mu=0.0)).tally_key()


def test_float_parameters_compare_bitwise():
    base = default_parameters()
    nudged = default_parameters(mu=math.nextafter(base.mu, 1.0))  # one ulp away
    assert nudged.mu != base.mu and nudged.tally_key() != base.tally_key()
    assert default_parameters(send_rate_per_minute=101).tally_key() != base.tally_key()


def test_an_expired_vote_is_skipped():
    a1, a2, a3 = authorities()
    votes = {a1.pk: a1.vote(), a2.pk: a2.vote(), a3.pk: a3.vote(expiration=int(NOW) + 10)}
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    result = tally.tally_votes(EPOCH, votes, reveals, 3, NOW + 20)
    assert result.counted == sorted([a1.pk, a2.pk]) and "expired" in result.skipped[a3.pk]


@pytest.mark.parametrize("mangle", [
    lambda raw: b"",
    lambda raw: raw[:-1],
    lambda raw: raw + b"\0",
    lambda raw: b"\xa4" + raw[1:],
    lambda raw: bytes(len(raw)),
    lambda raw: raw.replace(b"document-v0", b"document-v1"),
    lambda raw: raw.replace(b'"Epoch":"123456"', b'"Epoch":"123457"'),
])
def test_malformed_vote_payloads_raise_vote_error(mangle):
    a1, a2, a3 = authorities()
    bad = mangle(a3.vote())
    with pytest.raises(VoteError):
        vote.parse_vote(bad, a3.pk, NOW)
    votes = {a1.pk: a1.vote(), a2.pk: a2.vote(), a3.pk: bad}
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    result = tally.tally_votes(EPOCH, votes, reveals, 3, NOW)
    assert a3.pk in result.skipped and _names(result.entries) == ALL


def test_a_vote_signed_by_someone_else_is_refused():
    a1, a2, _ = authorities()
    with pytest.raises(VoteError):
        vote.parse_vote(a1.vote(), a2.pk, NOW)


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_random_bytes_never_crash_the_vote_and_reveal_parsers(data):
    a1 = authorities()[0]
    with pytest.raises(VotingError):
        vote.parse_vote(data, a1.pk, NOW)
    assert vote.vote_commit(data) is None or isinstance(vote.vote_commit(data), bytes)


def test_signed_non_documents_are_vote_errors():
    a1 = authorities()[0]
    for payload in (b"{}", b"[]", b"null", b'{"Version":"document-v0"}', b"\xff\xfe",
                    b'{"Version":"document-v0","Epoch":"-1"}'):
        raw = cert.sign(a1.seed, payload, EXPIRATION, NOW)
        with pytest.raises(VoteError):
            vote.parse_vote(raw, a1.pk, NOW)


# --- tabulation ------------------------------------------------------------------------------

def test_tabulation_without_votes_has_no_srv():
    with pytest.raises(SharedRandomError):
        tabulate(authorities()[0], {}, {})


def test_a_failed_tally_still_updates_the_srv_chain():
    a1, a2, a3 = authorities()
    votes, _ = votes_and_reveals([a1, a2, a3])
    prior = [b"\x01" * 32, b"\x02" * 32]
    # Genesis 16 epochs back: this tabulation rotates PriorSharedRandom.
    result = tabulate(a1, votes, {a1.pk: a1.reveal}, prior_shared_random=prior,
                       genesis_epoch=EPOCH - 16)
    assert result.error == "a consensus partition" and result.certificate is None
    assert result.prior_shared_random == [result.srv, prior[0]]
    kept = tabulate(a1, votes, {a1.pk: a1.reveal}, prior_shared_random=prior,
                     genesis_epoch=EPOCH - 1)
    assert kept.srv == result.srv and kept.prior_shared_random == prior


def test_different_reveal_sets_give_uncombinable_signatures():
    a1, a2, a3 = authorities()
    votes, reveals = votes_and_reveals([a1, a2, a3])
    full = tabulate(a1, votes, reveals)
    partial = tabulate(a2, votes, {k: v for k, v in reveals.items() if k != a3.pk})
    assert full.srv != partial.srv
    assert full.document.to_json() != partial.document.to_json()
    with pytest.raises(VotingError):
        consensus.add_peer_signature(full.certificate, partial.certificate, a2.pk, NOW)


def test_a_consensus_with_an_empty_layer_is_signed_but_never_published():
    a1, a2, a3 = authorities()
    two_mixes = [mix_descriptor(1), mix_descriptor(2), provider_descriptor()]
    votes = {a.pk: a.vote(descriptors=two_mixes, layers=2) for a in (a1, a2, a3)}
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    results = {a.pk: tabulate(a, votes, reveals) for a in (a1, a2, a3)}
    assert all(r.certificate for r in results.values())
    with pytest.raises(VotingError, match="No consensus found"):
        consensus.combine_signatures(EPOCH, {pk: r.certificate for pk, r in results.items()},
                                     list(results), NOW)


def test_consecutive_epochs_use_the_continuity_layout_and_chain_the_srv():
    a1, a2, a3 = authorities()
    votes, reveals = votes_and_reveals([a1, a2, a3])
    first = tabulate(a1, votes, reveals)
    previous = first.document
    # Pretend the same tables voted for the next epoch, with `previous` held for epoch-1.
    chained = tabulate(a1, votes, reveals, previous=previous)
    assert chained.srv != first.srv
    assert chained.error is None
    assert [[d.name for d in layer] for layer in chained.document.topology] == \
        [[d.name for d in layer] for layer in previous.topology]  # one per layer: all stay


@pytest.mark.parametrize("n", range(1, 8))
def test_threshold_of_votes_for_n_authorities(n):
    """With N authorities, k agreeing counted votes make a consensus iff k >= N // 2 + 1."""
    pool = authorities(n)
    descs = vector_descriptors()
    signed = {a.pk: a.vote(descriptors=descs) for a in pool}
    for k in range(1, n + 1):
        votes = dict(list(signed.items())[:k])
        reveals = {a.pk: a.reveal for a in pool}
        if k >= tally.authority_threshold(n):
            assert _names(tally.tally_votes(EPOCH, votes, reveals, n, NOW).entries) == ALL
        else:
            with pytest.raises(TallyError, match="not enough votes"):
                tally.tally_votes(EPOCH, votes, reveals, n, NOW)


def test_with_seven_authorities_small_groups_are_a_failure_not_a_partition():
    pool = authorities(7)  # T = 4, D = 2
    reveals = {a.pk: a.reveal for a in pool}
    distinct = {a.pk: a.vote(parameters=default_parameters(send_rate_per_minute=100 + i))
                for i, a in enumerate(pool[:4])}
    with pytest.raises(TallyError, match="^consensus failure$"):
        tally.tally_votes(EPOCH, distinct, reveals, 7, NOW)
    pair = dict(distinct)
    pair[pool[1].pk] = pool[1].vote()  # two votes now share parameters with pool[0]
    with pytest.raises(TallyError, match="^a consensus partition$"):
        tally.tally_votes(EPOCH, pair, reveals, 7, NOW)


def test_layout_and_signing_failures_are_reported_not_raised():
    a1, a2, a3 = authorities()
    votes, reveals = votes_and_reveals([a1, a2, a3])
    previous = tabulate(a1, votes, reveals).document
    fewer_layers = tabulate(a1, votes, reveals, previous=previous, layers=2)
    assert fewer_layers.certificate is None and "more than the 2 configured" in fewer_layers.error
    assert len(fewer_layers.srv) == 32 and fewer_layers.tally is not None
    expired = tabulate(a1, votes, reveals, expiration=int(NOW) - 1)
    assert expired.certificate is None and "expired" in expired.error


def test_an_expired_vote_still_counts_in_the_srv_but_not_in_the_tally():
    a1, a2, a3 = authorities()
    fresh = {a.pk: a.vote() for a in (a1, a2, a3)}
    stale = dict(fresh)
    stale[a3.pk] = a3.vote(expiration=int(NOW) + 10)
    reveals = {a.pk: a.reveal for a in (a1, a2, a3)}
    later = NOW + 20
    both = tabulate(a1, fresh, reveals, now=later), tabulate(a1, stale, reveals, now=later)
    assert both[0].srv == both[1].srv  # the stored vote's commit is read without expiry
    assert both[1].tally.counted == sorted([a1.pk, a2.pk])


def test_a_signature_stored_as_a_vote_cannot_be_opened():
    # A peer's signed consensus, mistaken for its vote when Vote #1 was lost, has no commit.
    a1, a2, a3 = authorities()
    votes, reveals = votes_and_reveals([a1, a2, a3])
    signature = tabulate(a3, votes, reveals).certificate
    assert vote.vote_commit(signature) is None
    mixed = {**votes, a3.pk: signature}
    result = tally.tally_votes(EPOCH, mixed, reveals, 3, NOW)
    assert a3.pk in result.skipped and "SharedRandomCommit" in result.skipped[a3.pk]
    assert tabulate(a1, mixed, reveals).srv == tabulate(
        a1, {a1.pk: votes[a1.pk], a2.pk: votes[a2.pk]}, reveals).srv
