"""Votes and the consensus document against the reference vectors: descriptors, vote payload
and certificate, consensus payload, single- and multi-signature certificates, the Expiration
rule, combining signatures and the acceptance check."""
import base64
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voting_lib_support import (
    EPOCH,
    EXPIRATION,
    NOW,
    authorities,
    default_parameters,
    load,
    mix_descriptor,
    provider_descriptor,
    tabulate,
    vector_descriptors,
    votes_and_reveals,
)

from katzenpost.pki import cert
from katzenpost.pki.epochtime import EpochClock
from katzenpost.voting import consensus, tally, vote
from katzenpost.voting.errors import ConsensusError, VoteError
from katzenpost.voting.tally import client_threshold
from katzenpost.wire import commands

DOCS = load("documents")
DIGESTS = DOCS["digests"]


def _check(name, data):
    length, digest = DIGESTS[name]
    assert (len(data), hashlib.sha256(data).hexdigest()) == (length, digest)


@pytest.mark.parametrize("i", [1, 2, 3])
def test_mix_descriptor_certificates(i):
    desc = mix_descriptor(i)
    _check(f"mix{i}_descriptor", desc.raw)
    if i == 1:
        assert cert.get_certified(desc.raw, NOW).decode() == DOCS["mix1_payload"]


def test_a1_vote_payload_and_certificate():
    a1 = authorities()[0]
    doc = vote.build_vote(EPOCH, vector_descriptors(), default_parameters(), a1.commit,
                          genesis_epoch=EPOCH, prior_shared_random=None, layers=3)
    payload = doc.to_json()
    _check("vote_A1_payload", payload)
    differences = DOCS["vote_A1_differences"]
    assert b'"PriorSharedRandom":null' in payload
    assert f'"SharedRandomCommit":"{differences["SharedRandomCommit"]}"'.encode() in payload
    assert f'"SharedRandomValue":"{differences["SharedRandomValue"]}"'.encode() in payload
    assert [[d.name for d in layer] for layer in doc.topology] == differences["Topology"]
    raw = cert.sign(a1.seed, payload, EXPIRATION, NOW)
    _check("vote_A1_cert", raw)
    assert raw == a1.vote()
    doc.prior_shared_random = []
    assert len(doc.to_json()) == DOCS["vote_A1_payload_len_with_empty_prior"]


def test_vote_descriptor_order_does_not_matter():
    a1 = authorities()[0]
    shuffled = vector_descriptors()[::-1]
    assert a1.vote(descriptors=shuffled) == a1.vote()


def test_sign_vote_uses_3p_plus_10_minutes_and_verifies_as_a_peer_would():
    a1 = authorities()[0]
    doc = vote.build_vote(EPOCH, vector_descriptors(), default_parameters(), a1.commit,
                          genesis_epoch=EPOCH, prior_shared_random=None, layers=3)
    for period, lifetime in ((1200, 4200), (120, 960)):
        raw = vote.sign_vote(a1.seed, doc, NOW + 0.9, period)
        assert cert.parse(raw, NOW).expiration == int(NOW) + lifetime
        parsed = vote.parse_vote(raw, a1.pk, NOW)
        assert parsed.shared_random_commit == a1.commit
        assert vote.vote_commit(raw) == a1.commit


def test_a_vote_that_peers_would_refuse_is_not_signed():
    a1 = authorities()[0]
    two_mixes = [mix_descriptor(1), mix_descriptor(2), provider_descriptor()]
    doc = vote.build_vote(EPOCH, two_mixes, default_parameters(), a1.commit,
                          genesis_epoch=EPOCH, prior_shared_random=None, layers=3)
    with pytest.raises(VoteError, match="no nodes"):
        vote.sign_vote(a1.seed, doc, NOW, 1200)
    no_provider = vote.build_vote(EPOCH, vector_descriptors()[:3], default_parameters(),
                                  a1.commit, genesis_epoch=EPOCH, prior_shared_random=None,
                                  layers=3)
    with pytest.raises(VoteError, match="Providers"):
        vote.sign_vote(a1.seed, no_provider, NOW, 1200)
    with pytest.raises(VoteError):
        vote.build_vote(EPOCH, vector_descriptors(), default_parameters(), a1.commit[:39],
                        genesis_epoch=EPOCH, prior_shared_random=None, layers=3)
    with pytest.raises(VoteError):
        vote.build_vote(EPOCH, vector_descriptors(), object(), a1.commit,
                        genesis_epoch=EPOCH, prior_shared_random=None, layers=3)


@pytest.fixture(scope="module")
def signed():
    auths = authorities()
    votes, reveals = votes_and_reveals(auths)
    results = {a.name: tabulate(a, votes, reveals) for a in auths}
    return auths, results


def test_consensus_payload_and_single_signer_certificates(signed):
    auths, results = signed
    srv = bytes.fromhex(load("srv")["srv_prev_zero_hex"])
    for auth in auths:
        result = results[auth.name]
        assert result.error is None and result.srv == srv
        assert result.prior_shared_random == [srv, srv]
        _check("consensus_payload", result.document.to_json())
        _check(f"consensus_cert_{auth.name}", result.certificate)


def test_consensus_payload_shape(signed):
    _, results = signed
    payload = results["A1"].document.to_json().decode()
    names = {base64.b64encode(mix_descriptor(i).raw).decode(): f"<b64 mix{i}>" for i in (1, 2, 3)}
    names[base64.b64encode(provider_descriptor().raw).decode()] = "<b64>"
    elided = re.sub(r'"([A-Za-z0-9+/=]{200,})"', lambda m: f'"{names[m.group(1)]}"', payload)
    assert elided == DOCS["consensus_shape"]


def test_three_signature_certificate_and_its_order(signed):
    auths, results = signed
    a1, a2, a3 = auths
    combined = consensus.add_peer_signature(results["A1"].certificate,
                                            results["A2"].certificate, a2.pk, NOW)
    combined = consensus.add_peer_signature(combined, results["A3"].certificate, a3.pk, NOW)
    _check("consensus_cert_A1_plus_A2_A3", combined)
    by_pk = {a.pk: a.name for a in auths}
    assert [by_pk[s.identity] for s in cert.get_signatures(combined, NOW)] == \
        DOCS["three_signature_order"]
    accepted = consensus.verify_consensus(combined, [a.pk for a in auths], 3, EPOCH, NOW)
    assert accepted.good == [a.pk for a in auths] and accepted.bad == []
    assert accepted.document.to_json() == results["A1"].document.to_json()


def test_two_signature_certificate(signed):
    auths, results = signed
    combined = consensus.add_peer_signature(results["A2"].certificate,
                                            results["A3"].certificate, auths[2].pk, NOW)
    _check("consensus_cert_A2_plus_A3", combined)
    pks = [a.pk for a in auths]
    accepted = consensus.verify_consensus(combined, pks, client_threshold(3), EPOCH, NOW)
    assert accepted.good == pks[1:] and accepted.bad == pks[:1]
    with pytest.raises(ConsensusError, match="2 good signatures, 3 required"):
        consensus.verify_consensus(combined, pks, 3, EPOCH, NOW)


def test_a_signature_with_another_expiration_does_not_combine(signed):
    # Q1: the Expiration is part of the signed message.
    auths, results = signed
    late = consensus.sign_consensus(auths[1].seed, results["A2"].document,
                                    DOCS["q1_bad_expiration"], NOW)
    with pytest.raises(ConsensusError, match=DOCS["q1_error"]):
        consensus.add_peer_signature(results["A1"].certificate, late, auths[1].pk, NOW)


def test_adding_a_duplicate_or_absent_signature_fails(signed):
    auths, results = signed
    with pytest.raises(ConsensusError, match="duplicate"):
        consensus.add_peer_signature(results["A1"].certificate, results["A1"].certificate,
                                     auths[0].pk, NOW)
    with pytest.raises(ConsensusError, match="no signature"):
        consensus.add_peer_signature(results["A1"].certificate, results["A2"].certificate,
                                     auths[2].pk, NOW)
    for garbage in (b"", b"\x00" * 50, results["A2"].certificate[:-3]):
        with pytest.raises(ConsensusError):
            consensus.add_peer_signature(results["A1"].certificate, garbage, auths[1].pk, NOW)
        with pytest.raises(ConsensusError):
            consensus.add_peer_signature(garbage, results["A2"].certificate, auths[1].pk, NOW)


def test_combine_signatures_publishes_with_a_threshold(signed):
    auths, results = signed
    pks = [a.pk for a in auths]
    certificates = {a.pk: results[a.name].certificate for a in auths}
    accepted = consensus.combine_signatures(EPOCH, certificates, pks, NOW, prefer=auths[0].pk)
    _check("consensus_cert_A1_plus_A2_A3", accepted.raw)
    # Without A1's certificate (its own document differed), A2 and A3 still reach T = 2.
    two = {pk: c for pk, c in certificates.items() if pk != auths[0].pk}
    accepted = consensus.combine_signatures(EPOCH, two, pks, NOW)
    _check("consensus_cert_A2_plus_A3", accepted.raw)
    with pytest.raises(ConsensusError, match="No consensus found"):
        consensus.combine_signatures(EPOCH, {auths[1].pk: certificates[auths[1].pk]}, pks, NOW)
    with pytest.raises(ConsensusError, match="No certificates"):
        consensus.combine_signatures(EPOCH, {}, pks, NOW)


def test_combine_ignores_uncombinable_and_garbage_certificates(signed):
    auths, results = signed
    pks = [a.pk for a in auths]
    late = consensus.sign_consensus(auths[0].seed, results["A1"].document, EXPIRATION + 1, NOW)
    certificates = {pks[0]: late, pks[1]: b"\xa5garbage",
                    pks[2]: results["A3"].certificate}
    with pytest.raises(ConsensusError, match="No consensus found"):
        consensus.combine_signatures(EPOCH, certificates, pks, NOW)
    certificates[pks[1]] = results["A2"].certificate
    accepted = consensus.combine_signatures(EPOCH, certificates, pks, NOW)
    _check("consensus_cert_A2_plus_A3", accepted.raw)


def test_acceptance_refuses_wrong_epoch_unknown_signers_and_garbage(signed):
    auths, results = signed
    pks = [a.pk for a in auths]
    full = consensus.combine_signatures(EPOCH, {a.pk: results[a.name].certificate
                                                for a in auths}, pks, NOW).raw
    with pytest.raises(ConsensusError, match="WRONG epoch"):
        consensus.verify_consensus(full, pks, 2, EPOCH + 1, NOW)
    assert consensus.verify_consensus(full, pks, 2, None, NOW).document.epoch == EPOCH
    strangers = [bytes([i]) * 32 for i in range(3)]
    with pytest.raises(ConsensusError):
        consensus.verify_consensus(full, strangers, 2, EPOCH, NOW)
    with pytest.raises(ConsensusError):
        consensus.verify_consensus(full, pks, 4, EPOCH, NOW)  # threshold > verifiers
    with pytest.raises(ConsensusError, match="expired"):
        consensus.verify_consensus(full, pks, 2, EPOCH, EXPIRATION + 1)
    for garbage in (b"", b"\x00", full[:100], full + b"\x00", bytes(4357)):
        with pytest.raises(ConsensusError):
            consensus.verify_consensus(garbage, pks, 2, EPOCH, NOW)
    # Signed by a threshold, but the payload is not a document.
    bogus = cert.sign_multi([a.seed for a in auths], b"{}", EXPIRATION, NOW)
    with pytest.raises(ConsensusError, match="invalid consensus document"):
        consensus.verify_consensus(bogus, pks, 2, EPOCH, NOW)


@pytest.mark.parametrize("period", [1200, 120])
def test_consensus_expiration_comes_from_the_schedule(period):
    clock = EpochClock(period)
    start = clock.epoch_start(EPOCH - 1)
    # What a Go authority signs when it wakes at 3P/4 and signs within that second.
    go_value = start + 3 * period // 4 + 3 * period + 600
    assert consensus.consensus_expiration(EPOCH, clock) == go_value
    assert go_value - start == {1200: 5100, 120: 1050}[period]
    with pytest.raises(ConsensusError):
        consensus.consensus_expiration(0, clock)


_FLOATS = st.one_of(st.sampled_from([0.0, 1.0, 2.0, 0.00025, 1e-7, 1.234e-05, 1.5e21, 123.5]),
                    st.floats(min_value=0, max_value=1e30, allow_nan=False,
                              allow_infinity=False))
_UINTS = st.integers(0, 2**64 - 1)


@given(mu=_FLOATS, lambda_p=_FLOATS, rate=_UINTS, delay=_UINTS,
       srv=st.binary(min_size=32, max_size=32), genesis=st.integers(1, EPOCH))
@settings(max_examples=60, deadline=None)
def test_consensus_encoding_round_trips(mu, lambda_p, rate, delay, srv, genesis):
    parameters = default_parameters(mu=mu, lambda_p=lambda_p, send_rate_per_minute=rate,
                                    lambda_m_max_delay=delay)
    entries = sorted(vector_descriptors(), key=lambda d: d.identity_key)
    result = tally.TallyResult(entries=entries, parameters=parameters, counted=[])
    doc = consensus.build_consensus(EPOCH, result, srv, genesis_epoch=genesis,
                                    prior_shared_random=[srv, bytes(32)], layers=3)
    a1 = authorities()[0]
    raw = consensus.sign_consensus(a1.seed, doc, EXPIRATION, NOW)
    accepted = consensus.verify_consensus(raw, [a1.pk], 1, EPOCH, NOW)
    assert accepted.document.to_json() == doc.to_json()
    assert vote.VotingParameters.of(accepted.document) == parameters
    assert accepted.document.shared_random_value == srv


def test_build_consensus_refuses_a_short_srv():
    result = tally.TallyResult(entries=vector_descriptors(), parameters=default_parameters(),
                               counted=[])
    with pytest.raises(ConsensusError):
        consensus.build_consensus(EPOCH, result, bytes(31), genesis_epoch=EPOCH,
                                  prior_shared_random=[], layers=3)


def test_a1_vote_command_and_status_replies():
    a1 = authorities()[0]
    command = commands.Vote(epoch=EPOCH, public_key=a1.pk, payload=a1.vote()).to_bytes()
    assert len(command) == DOCS["vote_command_A1_len"]
    assert command.hex().startswith(DOCS["vote_command_A1_prefix_hex"])
    assert commands.VoteStatus(commands.VoteStatusCode.OK).to_bytes().hex() == \
        DOCS["vote_status_ok_hex"]
    assert commands.RevealStatus(commands.RevealStatusCode.OK).to_bytes().hex() == DOCS["reveal_status_ok_hex"]
    decoded = commands.Command.from_bytes(command)
    assert vote.parse_vote(decoded.payload, decoded.public_key, NOW).epoch == EPOCH
