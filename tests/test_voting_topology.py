"""Layer assignment of the voting consensus: the random and the continuity algorithms."""
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from voting_lib_support import load, mix_descriptor

from katzenpost.voting.errors import TopologyError
from katzenpost.voting.rand import DeterministicRand
from katzenpost.voting.topology import build_topology, continuity_topology, random_topology

VECTORS = load("topology")


def _names(topology):
    return [[entry.name for entry in layer] for layer in topology]


def _vector_mixes():
    mixes = {f"mix{i}": mix_descriptor(i) for i in (1, 2, 3)}
    for entry in VECTORS["mixes"]:
        assert mixes[entry["name"]].identity_key.hex() == entry["pk_hex"]
    ordered = sorted(mixes.values(), key=lambda d: d.identity_key)
    assert [d.name for d in ordered] == VECTORS["ascending_order"]
    return ordered


def test_random_topology_keyed_with_the_srv():
    key = bytes.fromhex(VECTORS["random_srv_key_hex"])
    assert DeterministicRand(key).perm(3) == VECTORS["random_srv_perm3"]
    assert _names(build_topology(_vector_mixes(), 3, key)) == VECTORS["random_srv_layers"]


def test_random_topology_keyed_with_zeros_as_in_a_vote():
    assert _names(build_topology(_vector_mixes(), 3, bytes(32))) == \
        VECTORS["random_zero_key_layers"]


def _abstract(name):
    # mN with identity keys in ascending order of N.
    return SimpleNamespace(name=name, identity_key=bytes([int(name[1:])]) * 32)


@pytest.mark.parametrize("case", VECTORS["continuity"], ids=["one-leftover-a", "one-leftover-b",
                                                              "three-leftovers"])
def test_continuity_table(case):
    current = [_abstract(n) for n in case["current"]]
    previous = [[_abstract(n) for n in layer] for layer in case["previous"]]
    key = bytes.fromhex(VECTORS["continuity_key_hex"])
    result = build_topology(current, VECTORS["layers"], key, previous)
    assert _names(result) == case["result"]
    by_name = {entry.name: entry for entry in current}
    # The new entries are placed, never the previous document's.
    assert all(entry is by_name[entry.name] for layer in result for entry in layer)


def test_a_previous_document_with_more_layers_is_refused():
    mixes = [_abstract(f"m{i}") for i in range(1, 5)]
    previous = [[m] for m in mixes]
    with pytest.raises(TopologyError):
        build_topology(mixes, 3, bytes(32), previous)


@pytest.mark.parametrize("layers", [0, -1, "3"])
def test_bad_layer_counts_are_refused(layers):
    with pytest.raises(TopologyError):
        build_topology([_abstract("m1")], layers, bytes(32))


def test_fewer_mixes_than_layers_leave_a_layer_empty():
    result = random_topology([_abstract("m1"), _abstract("m2")], 3, DeterministicRand(bytes(32)))
    assert sorted(len(layer) for layer in result) == [0, 1, 1]


def test_previous_with_fewer_layers_fills_only_those_and_deals_the_rest():
    mixes = [_abstract(f"m{i}") for i in range(1, 7)]
    previous = [[mixes[0], mixes[1], mixes[2]]]
    result = continuity_topology(mixes, 3, previous, DeterministicRand(bytes(32)))
    assert sorted(e.name for layer in result for e in layer) == sorted(m.name for m in mixes)
    # Layer 0 keeps two of its previous nodes (target 6 // 3); the four others are dealt
    # round-robin from layer 0, as the reference does (layers 1 and 2 are never "filled").
    assert [len(layer) for layer in result] == [4, 1, 1]
    assert {e.name for e in result[0][:2]} < {"m1", "m2", "m3"}


@given(n_mixes=st.integers(0, 30), layers=st.integers(1, 5),
       prev_sizes=st.lists(st.integers(0, 8), min_size=1, max_size=5),
       key=st.binary(min_size=32, max_size=32))
@settings(max_examples=150, deadline=None)
def test_continuity_places_every_mix_once_and_keeps_layers_balanced(n_mixes, layers, prev_sizes,
                                                                   key):
    prev_sizes = prev_sizes[:layers]
    mixes = [_abstract(f"m{i}") for i in range(1, n_mixes + 1)]
    # The previous document knows some current mixes and some that left (m100+).
    pool = [_abstract(f"m{i}") for i in range(1, n_mixes + 1)] + \
        [_abstract(f"m{100 + i}") for i in range(40)]
    previous, start = [], 0
    for size in prev_sizes:
        previous.append(pool[start:start + size])
        start += size
    result = build_topology(mixes, layers, key, previous)
    placed = [e.name for layer in result for e in layer]
    assert sorted(placed) == sorted(m.name for m in mixes)
    target = n_mixes // layers
    assert all(len(layer) >= target for layer in result[:len(previous)])
    if len(previous) == layers:
        assert {len(layer) for layer in result} <= {target, target + 1}
    # Deterministic: the same inputs give the same layout.
    assert _names(build_topology(mixes, layers, key, previous)) == _names(result)


@given(n_mixes=st.integers(0, 30), layers=st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_random_topology_deals_round_robin(n_mixes, layers):
    mixes = [_abstract(f"m{i}") for i in range(1, n_mixes + 1)]
    result = build_topology(mixes, layers, bytes(32))
    assert sorted(e.name for layer in result for e in layer) == sorted(m.name for m in mixes)
    assert max(map(len, result)) - min(map(len, result)) <= 1
