"""The authority's state machine without sockets: upload rules, document replies, generation,
bootstrap and persistence across a restart (docs/authority.md)."""
import hashlib
import random

import pytest

from _pki_fixtures import (
    AUTHORITY_SEED,
    CLOCK,
    authority_config_text,
    make_descriptor,
    public_for,
    seed_for,
)
from katzenpost.authority import config as ac
from katzenpost.authority import generate
from katzenpost.authority.state import AuthorityState
from katzenpost.authority.store import AuthorityStore, StoreError
from katzenpost.pki.descriptor import sign_descriptor
from katzenpost.pki.document import verify_and_parse_document
from katzenpost.wire.commands import ConsensusStatus, DescriptorStatus

MIXES = ["mix0", "mix1", "mix2", "mix3"]
PROVIDERS = ["provider1", "provider2"]
AUTHORITY = public_for(AUTHORITY_SEED)
E = 5_000_000
START = CLOCK.epoch_start(E)


def config_text(data_dir, mixes=MIXES, providers=PROVIDERS, sections=""):
    return authority_config_text(data_dir, mixes=mixes, providers=providers, layers=2,
                                 sections=sections)


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "authority"
    path.mkdir(mode=0o700)
    return str(path)


def new_state(data_dir, now, **kwargs):
    cfg = ac.parse(config_text(data_dir, **kwargs))
    state = AuthorityState(cfg, AUTHORITY_SEED, AUTHORITY, AuthorityStore.open_in(data_dir), CLOCK)
    state.restore(now)
    return state


def post(state, node, epoch, now, **kwargs):
    desc = make_descriptor(node, epoch, provider=node.startswith("provider"), **kwargs)
    raw = sign_descriptor(seed_for(node), desc, CLOCK, now)
    return state.post_descriptor(epoch, raw, desc.identity_key, now)


def post_all(state, epoch, now, names=MIXES + PROVIDERS):
    for name in names:
        assert post(state, name, epoch, now).status == DescriptorStatus.OK


# --- PostDescriptor rules ----------------------------------------------------------------

def test_post_for_now_previous_and_next_epoch_is_accepted(data_dir):
    state = new_state(data_dir, START + 10)
    for epoch in (E - 1, E, E + 1):
        assert post(state, "mix0", epoch, START + 10).status == DescriptorStatus.OK


@pytest.mark.parametrize("epoch", [E - 2, E + 2])
def test_post_outside_the_three_epochs_is_invalid(data_dir, epoch):
    state = new_state(data_dir, START + 10)
    assert post(state, "mix0", epoch, START + 10).status == DescriptorStatus.INVALID


def test_post_signed_by_someone_else_is_invalid(data_dir):
    state = new_state(data_dir, START + 10)
    desc = make_descriptor("mix0", E)
    raw = sign_descriptor(seed_for("mix1"), desc, CLOCK, START)
    assert state.post_descriptor(E, raw, desc.identity_key, START + 10).status == DescriptorStatus.INVALID


def test_post_not_well_formed_is_invalid(data_dir):
    state = new_state(data_dir, START + 10)
    result = post(state, "mix0", E, START + 10, addresses={"tcp6": ["[::1]:5"]})
    assert result.status == DescriptorStatus.INVALID and "TCPv4" in result.reason


def test_post_garbage_is_invalid(data_dir):
    state = new_state(data_dir, START + 10)
    peer = public_for(seed_for("mix0"))
    for payload in (b"", b"garbage", b"\xa5" * 1000):
        assert state.post_descriptor(E, payload, peer, START + 10).status == DescriptorStatus.INVALID


def test_post_by_a_node_that_is_not_whitelisted_is_forbidden(data_dir):
    state = new_state(data_dir, START + 10)
    assert post(state, "stranger", E, START + 10).status == DescriptorStatus.FORBIDDEN


def test_descriptor_for_another_identity_is_forbidden(data_dir):
    # Signed by the peer (mix0) but describing mix1: step 3 of onPostDescriptor.
    state = new_state(data_dir, START + 10)
    desc = make_descriptor("mix1", E)
    raw = sign_descriptor(seed_for("mix0"), desc, CLOCK, START)
    result = state.post_descriptor(E, raw, public_for(seed_for("mix0")), START + 10)
    assert result.status == DescriptorStatus.FORBIDDEN and "identity" in result.reason
    assert state.descriptors == {}


def test_provider_with_another_name_is_forbidden(data_dir):
    state = new_state(data_dir, START + 10)
    result = post(state, "provider1", E, START + 10, name="provider2")
    assert result.status == DescriptorStatus.FORBIDDEN


def test_mix_key_posting_as_provider_is_forbidden(data_dir):
    state = new_state(data_dir, START + 10)
    result = post(state, "mix0", E, START + 10, layer=255, name="provider1",
                  kaetzchen={"loop": {"endpoint": "+loop"}})
    assert result.status == DescriptorStatus.FORBIDDEN


def test_same_bytes_again_is_ok_different_bytes_conflict(data_dir):
    state = new_state(data_dir, START + 10)
    desc = make_descriptor("mix0", E)
    raw = sign_descriptor(seed_for("mix0"), desc, CLOCK, START)
    assert state.post_descriptor(E, raw, desc.identity_key, START + 10).status == DescriptorStatus.OK
    assert state.post_descriptor(E, raw, desc.identity_key, START + 11).status == DescriptorStatus.OK
    again = sign_descriptor(seed_for("mix0"), desc, CLOCK, START + 1)  # new expiration
    assert state.post_descriptor(E, again, desc.identity_key, START + 11).status == DescriptorStatus.CONFLICT


def test_post_after_the_document_exists_conflicts(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E + 1, START + 10, names=["mix0", "mix1", "provider1"])
    late = START + CLOCK.period - 60  # past the straggler deadline (3P/8 left)
    assert state.tick(late) == [E + 1]
    result = post(state, "mix2", E + 1, late)
    assert result.status == DescriptorStatus.CONFLICT and "document" in result.reason


# --- GetConsensus replies (documentForEpoch) ------------------------------------------

def test_bootstrap_replies_not_found_for_now_and_next(data_dir):
    state = new_state(data_dir, START + 10)
    assert state.document_for_epoch(E, START + 10)[0] == ConsensusStatus.NOT_FOUND
    assert state.document_for_epoch(E + 1, START + 10)[0] == ConsensusStatus.NOT_FOUND


def test_past_epoch_without_document_is_gone(data_dir):
    state = new_state(data_dir, START + 10)
    assert state.document_for_epoch(E - 1, START + 10)[0] == ConsensusStatus.GONE


def test_far_future_epoch_is_not_found(data_dir):
    state = new_state(data_dir, START + 10)
    assert state.document_for_epoch(E + 5, START + 10)[0] == ConsensusStatus.NOT_FOUND


def test_current_epoch_after_bootstrap_window_is_gone(data_dir):
    state = new_state(data_dir, START + 10)
    later = CLOCK.epoch_start(E + 2) + 10
    assert state.document_for_epoch(E + 2, later)[0] == ConsensusStatus.GONE


def test_next_epoch_late_in_the_epoch_is_gone(data_dir):
    state = new_state(data_dir, START + 10)
    next_start = CLOCK.epoch_start(E + 1)
    assert state.document_for_epoch(E + 2, next_start + 10)[0] == ConsensusStatus.NOT_FOUND
    assert state.document_for_epoch(E + 2, next_start + 7 * CLOCK.period / 8 + 1)[0] == ConsensusStatus.GONE


# --- generation -------------------------------------------------------------------------

def test_bootstrap_waits_for_every_whitelisted_node(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10, names=MIXES + ["provider1"])
    assert state.tick(START + 11) == []
    post_all(state, E, START + 12, names=["provider2"])
    assert state.tick(START + 13) == [E]
    status, raw = state.document_for_epoch(E, START + 14)
    doc = verify_and_parse_document(raw, AUTHORITY, START + 14)
    assert status == ConsensusStatus.OK and doc.epoch == E and doc.genesis_epoch == E
    assert sorted(len(layer) for layer in doc.topology) == [2, 2]
    assert len(doc.prior_shared_random) == 2
    assert doc.prior_shared_random[0] == doc.prior_shared_random[1] == doc.shared_random_value


HALF_LEFT = START + CLOCK.period / 2  # till == P/2: not yet "less than half left"
STRAGGLERS = START + 5 * CLOCK.period / 8  # till == 3P/8


def test_next_document_with_every_node_posted_comes_once_less_than_half_is_left(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E + 1, START + 10)
    assert state.tick(HALF_LEFT) == []  # exactly half left: not yet (the reference's till < P/2)
    assert state.tick(HALF_LEFT + 0.01) == [E + 1]
    doc = state.documents[E + 1]
    assert [len(layer) for layer in doc.topology] == [2, 2] and len(doc.providers) == 2
    assert doc.send_rate_per_minute == 100


def test_next_document_waits_for_stragglers_until_three_eighths_are_left(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E + 1, START + 10, names=["mix0", "mix1", "provider1"])  # mix2, mix3, provider2 late
    assert state.tick(HALF_LEFT + 1) == []  # the minimum is there, but whitelisted nodes are missing
    assert state.tick(STRAGGLERS - 0.01) == []
    post_all(state, E + 1, STRAGGLERS - 0.01, names=["mix2"])  # a node started late still gets in
    assert state.tick(STRAGGLERS) == [E + 1]
    names = sorted(d.name for layer in state.documents[E + 1].topology for d in layer)
    assert names == ["mix0", "mix1", "mix2"]


def test_next_document_needs_the_minimum_even_at_the_end_of_the_epoch(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E + 1, START + 10, names=["mix0", "provider1"])
    late = START + CLOCK.period - 1
    assert state.tick(late) == []  # one mix, two layers
    post_all(state, E + 1, late, names=["mix1"])
    assert state.tick(late + 0.5) == [E + 1]
    assert [len(layer) for layer in state.documents[E + 1].topology] == [1, 1]


P = CLOCK.period


@pytest.mark.parametrize("elapsed, expected", [
    (0, P / 2), (P / 2 - 1, 1), (P / 2, 0), (P / 2 + 1, P / 8 - 1), (5 * P / 8, 0),
    (5 * P / 8 + 1, (3 * P / 8 - 1) + P / 2),  # past both marks: the next epoch's P/2 mark
])
def test_the_worker_is_told_when_the_next_deadline_comes(data_dir, elapsed, expected):
    state = new_state(data_dir, START + 10)
    assert state.next_deadline(START + elapsed) == pytest.approx(expected)


def test_following_document_chains_the_srv_and_keeps_layers(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    first = state.documents[E]
    post_all(state, E + 1, START + 20)
    state.tick(START + CLOCK.period - 60)
    second = state.documents[E + 1]
    assert second.genesis_epoch == E
    assert second.prior_shared_random == first.prior_shared_random
    assert second.shared_random_value != first.shared_random_value
    layer_of = lambda doc: {d.name: i for i, l in enumerate(doc.topology) for d in l}
    assert layer_of(first) == layer_of(second)


def test_parameters_are_copied_from_the_config(data_dir):
    cfg = ac.parse(config_text(data_dir, sections="[Parameters]\nMu = 0.001\nMuMaxDelay = 90000\n"
                                                  "SendRatePerMinute = 7\n"))
    state = AuthorityState(cfg, AUTHORITY_SEED, AUTHORITY, AuthorityStore.open_in(data_dir), CLOCK)
    state.restore(START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    doc = state.documents[E]
    assert (doc.mu, doc.mu_max_delay, doc.send_rate_per_minute) == (0.001, 90000, 7)
    assert (doc.lambda_p, doc.lambda_p_max_delay) == (0.00025, 46051)


def test_old_epochs_are_pruned(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    later = CLOCK.epoch_start(E + 4) + 1
    state.tick(later)
    assert E not in state.documents and E not in state.descriptors
    assert state.store.document(E) is None


# --- persistence ----------------------------------------------------------------------

def test_restart_restores_documents_descriptors_and_genesis(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    post(state, "mix0", E + 1, START + 12)
    raw = state.documents[E].raw
    state.store.close()
    again = new_state(data_dir, START + 30)
    assert again.document_for_epoch(E, START + 30) == (ConsensusStatus.OK, raw)
    assert again.genesis_epoch == E and again.bootstrap_epoch == 0
    assert list(again.descriptors[E + 1]) == [public_for(seed_for("mix0"))]
    assert post(again, "mix0", E + 1, START + 31).status == DescriptorStatus.CONFLICT


def test_restart_drops_descriptors_no_longer_whitelisted(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E + 1, START + 10, names=["mix3"])
    state.store.close()
    again = new_state(data_dir, START + 20, mixes=MIXES[:3])
    assert E + 1 not in again.descriptors


def test_restart_skips_expired_certificates(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    state.store.close()
    much_later = START + 10 + CLOCK.document_lifetime() + 1
    again = new_state(data_dir, much_later)
    assert E not in again.documents


def test_store_refuses_a_newer_schema(data_dir):
    store = AuthorityStore.open_in(data_dir)
    store._db.execute("UPDATE metadata SET value = x'07' WHERE key = 'version'")
    store.close()
    with pytest.raises(StoreError, match="schema version"):
        AuthorityStore.open_in(data_dir)



def test_store_read_failures_are_store_errors(data_dir):
    store = AuthorityStore.open_in(data_dir)
    store._db.executescript("DROP TABLE documents; CREATE TABLE documents (epoch INTEGER PRIMARY KEY);"
                            "DROP TABLE descriptors; CREATE TABLE descriptors (epoch INTEGER);")
    store.close()
    damaged = AuthorityStore.open_in(data_dir)  # the tables exist, with the wrong columns
    with pytest.raises(StoreError, match="read from .* failed"):
        damaged.document(E)
    with pytest.raises(StoreError, match="read from .* failed"):
        damaged.descriptors(E)
    damaged.close()

def test_store_file_is_private(data_dir):
    import os
    import stat
    AuthorityStore.open_in(data_dir).close()
    mode = stat.S_IMODE(os.stat(os.path.join(data_dir, "persistence.sqlite")).st_mode)
    assert mode == 0o600


# --- topology and shared randomness ---------------------------------------------------------

def _descs(names, epoch=E):
    from _pki_fixtures import signed_descriptor
    return [signed_descriptor(n, epoch, START, provider=n.startswith("provider")) for n in names]


def test_first_topology_deals_the_shuffled_mixes_round_robin():
    topology = generate.topology(_descs(MIXES + ["mix4"]), 2, None, random.Random(3))
    assert [len(layer) for layer in topology] == [3, 2]
    assert sorted(d.name for layer in topology for d in layer) == sorted(MIXES + ["mix4"])


def test_next_topology_keeps_layers_up_to_the_target_and_fills_short_layers(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    before = {d.name: i for i, layer in enumerate(state.documents[E].topology) for d in layer}
    stayers = [n for n in MIXES if before[n] == 0]  # both mixes of layer 0 stay...
    leaver = next(n for n in MIXES if before[n] == 1)  # ...one of layer 1 leaves
    survivors = stayers + [n for n in MIXES if before[n] == 1 and n != leaver] + ["mix4"]
    topology = generate.topology(_descs(survivors, E + 1), 2, state.documents[E], random.Random(5))
    after = {d.name: i for i, layer in enumerate(topology) for d in layer}
    assert [len(layer) for layer in topology] == [2, 2]
    assert all(after[n] == before[n] for n in survivors if n != "mix4")
    assert after["mix4"] == 1  # the newcomer fills the short layer


def test_document_with_fewer_mixes_than_layers_is_refused_not_fatal(data_dir):
    state = new_state(data_dir, START + 10)
    post_all(state, E, START + 10, names=["mix0", "provider1"])
    assert state._generate(E, START + 11) is False and E not in state.documents
    assert state.store.document(E) is None


def test_prior_shared_random_rotates_on_the_uint64_weekly_rule():
    prior, srv = [b"A" * 32, b"B" * 32], b"S" * 32
    rotate = generate.next_prior_shared_random
    # (genesis - epoch) mod 2**64 mod 504 == 0 happens at epoch = genesis + 16 (2**64 = 16 mod 504)
    assert rotate(E + 16, E, srv, prior) == [srv, b"A" * 32]
    assert rotate(E + 504, E, srv, prior) == [b"A" * 32, b"B" * 32]
    assert rotate(E + 1, E, srv, prior) == [b"A" * 32, b"B" * 32]
    assert rotate(E + 1, E, srv, []) == [srv, srv]


class _FixedRandom(random.Random):
    """Deterministic shuffles and a known reveal, so the SRV can be recomputed."""

    def randbytes(self, n):
        return bytes(n)


def test_srv_chains_epoch_authority_reveal_and_the_previous_value(data_dir):
    cfg = ac.parse(config_text(data_dir))
    state = AuthorityState(cfg, AUTHORITY_SEED, AUTHORITY, AuthorityStore.open_in(data_dir), CLOCK,
                           rng=_FixedRandom(1))
    state.restore(START + 10)
    post_all(state, E, START + 10)
    state.tick(START + 11)
    first = state.documents[E]
    reveal = E.to_bytes(8, "big") + hashlib.sha3_256(bytes(32)).digest()
    assert first.shared_random_value == hashlib.sha3_256(
        b"shared-random" + E.to_bytes(8, "big") + AUTHORITY + reveal + bytes(32)).digest()
    post_all(state, E + 1, START + 20)
    state.tick(HALF_LEFT + 1)
    reveal = (E + 1).to_bytes(8, "big") + hashlib.sha3_256(bytes(32)).digest()
    assert state.documents[E + 1].shared_random_value == hashlib.sha3_256(
        b"shared-random" + (E + 1).to_bytes(8, "big") + AUTHORITY + reveal
        + first.shared_random_value).digest()


# --- the public, clock-free generation ------------------------------------------------------

def test_generate_document_builds_a_valid_document_from_descriptors_alone():
    from katzenpost.pki.document import sign_document
    descs = _descs(MIXES + PROVIDERS)
    params = ac.Parameters(send_rate_per_minute=9, mu=0.002, mu_max_delay=1000)
    doc = generate.generate_document(E, descs, params, layers=2, authority_identity=AUTHORITY,
                                     genesis_epoch=E, rng=random.Random(1))
    again = generate.generate_document(E, descs, params, layers=2, authority_identity=AUTHORITY,
                                       genesis_epoch=E, rng=random.Random(1))
    assert doc == again  # a function of its inputs
    assert [len(layer) for layer in doc.topology] == [2, 2] and len(doc.providers) == 2
    assert (doc.send_rate_per_minute, doc.mu, doc.mu_max_delay) == (9, 0.002, 1000)
    raw = sign_document(AUTHORITY_SEED, doc, CLOCK, START)
    parsed = verify_and_parse_document(raw, AUTHORITY, START + 1)
    assert parsed.epoch == E and parsed.prior_shared_random == [doc.shared_random_value] * 2
    following = generate.generate_document(
        E + 1, _descs(MIXES + PROVIDERS, E + 1), params, layers=2, authority_identity=AUTHORITY,
        genesis_epoch=E, previous=parsed, prior_shared_random=parsed.prior_shared_random,
        rng=random.Random(2))
    layer_of = lambda d: {x.name: i for i, layer in enumerate(d.topology) for x in layer}
    assert layer_of(following) == layer_of(parsed)


@pytest.mark.parametrize("names", [MIXES, ["mix0"] + PROVIDERS])
def test_generate_document_refuses_without_a_provider_or_with_an_empty_layer(names):
    with pytest.raises(generate.GenerationError, match="not generating"):
        generate.generate_document(E, _descs(names), ac.Parameters(), layers=2,
                                   authority_identity=AUTHORITY, genesis_epoch=E)
