"""Path selection over a PKI document: shapes (client forward, SURB, a mix's decoy loop), routing
commands, delays (Exp(Mu) + 1 ms, MuMaxDelay cap), per-hop epoch keys, injectable RNGs, errors."""
import random
import statistics

import numpy as np
import pytest

from _pki_fixtures import make_descriptor, make_document, mix_key_public
from katzenpost.client import paths
from katzenpost.client.paths import PathError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.sphinx import NodeDelay, Recipient, SURBReply

CLOCK = EpochClock()
EPOCH = 300_000
NOW = CLOCK.epoch_start(EPOCH) + 60.0
SURB_ID = bytes(range(16))


@pytest.fixture(scope="module")
def doc():
    return make_document(EPOCH, NOW, per_layer=2)


def layers(doc, path):
    """Topology index of each node (255 for providers)."""
    index = {d.identity_key: i for i, layer in enumerate(doc.topology) for d in layer}
    return [index.get(n.identity_key, 255) for n in path.nodes]


def names(path):
    return [n.name for n in path.nodes]


def commands_of(path):
    return [[type(c) for c in hop.commands] for hop in path.hops]


def test_client_forward_path_with_surb(doc):
    p1, p2 = doc.providers
    path = paths.forward_path(doc, p1, p2, "alice", with_surb=True, start=NOW, rng=random.Random(1))
    assert names(path)[0] == "provider1" and names(path)[-1] == "provider2"
    assert layers(doc, path)[1:-1] == [0, 1, 2]
    assert commands_of(path) == [[NodeDelay]] * 4 + [[NodeDelay, Recipient]]
    assert path.hops[-1].commands[1].id == b"alice" + bytes(59)
    assert [h.id for h in path.hops] == [n.identity_key for n in path.nodes]
    assert [h.public_key for h in path.hops] == [mix_key_public(n.name, EPOCH) for n in path.nodes]
    assert path.delays_ms == tuple(h.commands[0].delay for h in path.hops)
    assert path.total_delay_ms == sum(path.delays_ms)
    assert path.end == pytest.approx(NOW + path.total_delay_ms / 1000)
    assert path.first_hop == p1.identity_key


def test_client_forward_path_without_surb_has_no_terminal_delay(doc):
    p1, p2 = doc.providers
    path = paths.forward_path(doc, p1, p2, b"bob", with_surb=False, start=NOW, rng=random.Random(2))
    assert commands_of(path) == [[NodeDelay]] * 4 + [[Recipient]]
    assert path.delays_ms[-1] == 0


def test_surb_path_starts_at_layer_zero_and_ends_with_surb_reply(doc):
    p1, p2 = doc.providers
    path = paths.surb_path(doc, p2, p1, "alice", SURB_ID, start=NOW, rng=random.Random(3))
    assert layers(doc, path) == [0, 1, 2, 255]
    assert names(path)[-1] == "provider1"
    assert commands_of(path) == [[NodeDelay]] * 3 + [[Recipient, SURBReply]]
    assert path.hops[-1].commands[1].id == SURB_ID


@pytest.mark.parametrize("layer, forward_layers, surb_layers", [(0, [1, 2], []), (1, [2], [0]), (2, [], [0, 1])])
def test_decoy_shapes_from_a_mix(doc, layer, forward_layers, surb_layers):
    me = doc.topology[layer][1]
    provider = doc.providers[0]
    fwd = paths.new_path(doc, me, provider, "+loop", from_client=False, forward=True, with_surb=True,
                         start=NOW, rng=random.Random(4))
    assert layers(doc, fwd) == forward_layers + [255]
    assert commands_of(fwd)[-1] == [NodeDelay, Recipient]
    back = paths.surb_path(doc, provider, me, bytes(64), SURB_ID, start=fwd.end, rng=random.Random(5))
    assert layers(doc, back) == surb_layers + [layer]
    assert back.nodes[-1] is me
    assert commands_of(back)[-1] == [Recipient, SURBReply]


def test_each_layer_choice_is_uniform_over_its_mixes(doc):
    rng = random.Random(6)
    p1, p2 = doc.providers
    seen = {paths.forward_path(doc, p1, p2, "a", with_surb=True, start=NOW, rng=rng).nodes[2].name
            for _ in range(64)}
    assert seen == {"mix1-0", "mix1-1"}


def test_delays_are_exponential_with_mean_one_over_mu_plus_one(doc):
    rng = random.Random(7)
    p1, p2 = doc.providers
    delays = [d for _ in range(400)
              for d in paths.forward_path(doc, p1, p2, "a", with_surb=True, start=NOW, rng=rng).delays_ms]
    assert min(delays) >= 1
    assert statistics.mean(delays) == pytest.approx(1 / doc.mu + 1, rel=0.08)
    assert statistics.median(delays) == pytest.approx(np.log(2) / doc.mu, rel=0.12)


def test_delays_are_capped_at_mu_max_delay():
    capped = make_document(EPOCH, NOW, mu=0.0001, mu_max_delay=50)
    p1, p2 = capped.providers
    path = paths.forward_path(capped, p1, p2, "a", with_surb=True, start=NOW, rng=random.Random(8))
    assert max(path.delays_ms) == 50 and path.total_delay_ms <= 250


def test_hop_keys_follow_the_epoch_the_packet_reaches_them_in(doc):
    start = CLOCK.epoch_start(EPOCH + 1) - 0.5          # half a second before the next epoch
    slow = make_document(EPOCH, NOW, mu=1 / 400, mu_max_delay=0)
    p1, p2 = slow.providers
    path = paths.forward_path(slow, p1, p2, "a", with_surb=True, start=start, rng=random.Random(9))
    then = start
    epochs = []
    for node, hop, delay in zip(path.nodes, path.hops, path.delays_ms):
        epoch = CLOCK.epoch_at(int(then))[0]
        epochs.append(epoch)
        assert hop.public_key == mix_key_public(node.name, epoch)
        then += delay / 1000
    assert epochs[0] == EPOCH and epochs[-1] == EPOCH + 1


def test_a_missing_key_is_a_clear_error(doc):
    p1, p2 = doc.providers
    later = CLOCK.epoch_start(EPOCH + 3) + 1
    with pytest.raises(PathError, match="no mix key for epoch"):
        paths.forward_path(doc, p1, p2, "a", with_surb=True, start=later, rng=random.Random(1))


def test_seeded_generators_are_reproducible_and_both_kinds_work(doc):
    p1, p2 = doc.providers

    def draw(rng):
        path = paths.forward_path(doc, p1, p2, "a", with_surb=True, start=NOW, rng=rng)
        return names(path), path.delays_ms

    assert draw(random.Random(11)) == draw(random.Random(11))
    assert draw(np.random.default_rng(11)) == draw(np.random.default_rng(11))
    assert draw(None)[0][0] == "provider1"                 # the system CSPRNG by default
    with pytest.raises(TypeError):
        draw(object())


def test_errors_for_missing_layers_providers_and_bad_input(doc):
    p1, p2 = doc.providers
    hollow = make_document(EPOCH, NOW)
    hollow.topology[1] = []
    with pytest.raises(PathError, match="layer 1"):
        paths.forward_path(hollow, *hollow.providers, "a", with_surb=True, start=NOW)
    assert paths.provider_named(doc, "provider2") is p2
    with pytest.raises(PathError, match="provider 'nobody'"):
        paths.provider_named(doc, "nobody")
    with pytest.raises(PathError, match="recipient"):
        paths.forward_path(doc, p1, p2, b"x" * 65, with_surb=True, start=NOW)
    with pytest.raises(PathError, match="recipient"):
        paths.forward_path(doc, p1, p2, b"", with_surb=True, start=NOW)
    with pytest.raises(PathError, match="SURB ID"):
        paths.new_path(doc, p2, p1, "a", from_client=False, forward=False, start=NOW)
    with pytest.raises(PathError, match="not a provider"):
        paths.forward_path(doc, doc.topology[0][0], p2, "a", with_surb=True, start=NOW)
    with pytest.raises(PathError, match="not a provider"):
        paths.forward_path(doc, p1, doc.topology[0][0], "a", with_surb=True, start=NOW)
    with pytest.raises(PathError, match="not a provider"):
        paths.surb_path(doc, doc.topology[0][0], p1, "a", SURB_ID, start=NOW)
    stranger = make_descriptor("stranger", EPOCH)
    with pytest.raises(PathError, match="in no layer"):
        paths.surb_path(doc, p1, stranger, "a", SURB_ID, start=NOW)
    with pytest.raises(PathError, match="Mu"):
        paths.forward_path(make_document(EPOCH, NOW, mu=0.0), p1, p2, "a", with_surb=True, start=NOW)
    deep = make_document(EPOCH, NOW, layers=4)
    with pytest.raises(PathError, match="at most 5"):
        paths.forward_path(deep, *deep.providers, "a", with_surb=True, start=NOW)
