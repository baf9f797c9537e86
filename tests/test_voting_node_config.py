"""A node's `[PKI.Voting]` block (README.md, `[PKI]`): the peers it trusts, each with addresses,
identity and link keys; every problem reported at once, stricter than the reference where the
reference would only fail later (zero peers, an empty address list, a hex link key)."""
import base64
import copy

import pytest
import toml

from katzenpost import config
from katzenpost.config import ConfigError

IDENTITIES = [bytes([i]) * 32 for i in (1, 2, 3)]
LINKS = [bytes([0x40 + i]) * 32 for i in (1, 2, 3)]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def peer(i: int, **overrides) -> dict:
    entry = {"Addresses": [f"127.0.0.1:{30000 + i}"], "IdentityPublicKey": b64(IDENTITIES[i]),
             "LinkPublicKey": b64(LINKS[i])}
    entry.update(overrides)
    return entry


def mix(peers) -> dict:
    return {"Server": {"Identifier": "mix1", "Addresses": ["127.0.0.1:30001"], "DataDir": "/srv/mix1"},
            "PKI": {"Voting": {"Peers": peers}}}


def problems_of(document, keys_only=False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load_text(toml.dumps(document), keys_only)
    return caught.value.problems


def test_three_peers_load_with_their_keys_and_addresses():
    peers = [peer(0), peer(1, Addresses=["127.0.0.1:30011", "[::1]:30012"]), peer(2)]
    peers[2]["IdentityPublicKey"] = IDENTITIES[2].hex()   # identity keys: hex or base64
    cfg = config.load_text(toml.dumps(mix(peers)))
    assert cfg.pki.nonvoting is None
    got = cfg.pki.voting.peers
    assert [p.identity_public_key for p in got] == IDENTITIES
    assert [p.link_public_key for p in got] == LINKS
    assert got[1].addresses == ("127.0.0.1:30011", "[::1]:30012")


def test_the_reference_layout_with_case_insensitive_keys_loads():
    text = toml.dumps({"Server": mix([])["Server"]}) + f"""
[pki]
  [pki.voting]
    [[pki.voting.peers]]
    addresses = ["127.0.0.1:30000"]
    identitypublickey = "{b64(IDENTITIES[0])}"
    LinkPublicKey = "{b64(LINKS[0])}"
"""
    assert config.load_text(text).pki.voting.peers[0].identity_public_key == IDENTITIES[0]


def test_every_problem_of_every_peer_is_reported_at_once():
    peers = [peer(0, Addresses=["authority.example:1"]),
             peer(1, IdentityPublicKey="not a key", LinkPublicKey=LINKS[1].hex()),
             peer(2, Addresses=[], LinkPublicKey=b64(b"short"), Colour="red")]
    problems = problems_of(mix(peers))
    expected = ["Peers[0].Addresses[0] must be a literal IP:port",
                "Peers[1].IdentityPublicKey is invalid",
                "Peers[1].LinkPublicKey looks like hex",
                "Peers[2].Addresses must list at least one",
                "Peers[2].LinkPublicKey must decode to 32 bytes",
                "Undecoded keys in config file: [PKI.Voting.Peers[2].Colour]"]
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize("field", ["IdentityPublicKey", "LinkPublicKey"])
def test_a_missing_key_is_named(field):
    entry = peer(0)
    del entry[field]
    assert problems_of(mix([entry])) == [f"config: PKI.Voting.Peers[0].{field} is not set"]


def test_missing_addresses_are_refused():
    entry = peer(0)
    del entry["Addresses"]
    [problem] = problems_of(mix([entry]))
    assert "Peers[0].Addresses must list at least one literal IP:port" in problem


def test_zero_peers_are_refused():
    document = mix([])
    document["PKI"]["Voting"] = {}
    [problem] = problems_of(document)
    assert "PKI.Voting has no [[PKI.Voting.Peers]]" in problem


def test_peers_of_the_wrong_type_give_one_problem():
    document = mix([])
    document["PKI"]["Voting"] = {"Peers": "127.0.0.1:1"}
    [problem] = problems_of(document)
    assert "PKI.Voting.Peers must be an array of tables" in problem


def test_an_authority_listed_twice_is_refused():
    twice = peer(1, IdentityPublicKey=IDENTITIES[0].hex())
    [problem] = problems_of(mix([peer(0), twice]))
    assert "Peers[1].IdentityPublicKey is listed more than once" in problem


def test_voting_and_nonvoting_together_are_refused():
    document = mix([peer(0)])
    document["PKI"]["Nonvoting"] = {"Address": "127.0.0.1:1", "PublicKey": b64(IDENTITIES[0])}
    [problem] = problems_of(document)
    assert "cannot configure voting and nonvoting pki" in problem


def test_keys_only_load_accepts_peers_without_keys_yet():
    """-g runs before the authorities exist: their keys may still be missing (not malformed)."""
    entry = {"Addresses": ["127.0.0.1:1"]}
    cfg = config.load_text(toml.dumps(mix([entry])), keys_only=True)
    assert cfg.pki.voting.peers[0].identity_public_key == b""
    bad = copy.deepcopy(entry)
    bad["LinkPublicKey"] = "???"
    assert problems_of(mix([bad]), keys_only=True) == [
        "config: PKI.Voting.Peers[0].LinkPublicKey is not base64"]
