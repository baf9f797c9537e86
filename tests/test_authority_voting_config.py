"""The voting authority's configuration: `[[Authorities]]` parsed and validated at load (every
problem at once), the non-voting form unchanged, and `-g` writing both keys 0600 and printing
the entry peers need."""
import base64
import os
import stat
import subprocess
import sys
import tomllib

import pytest

from authority_voting_support import authority_keys, free_port, voting_config_text
from katzenpost import keys
from katzenpost.authority import config as ac

A2, A3 = authority_keys("a2"), authority_keys("a3")
B64 = base64.b64encode


def voting(tmp_path, extra=""):
    return voting_config_text(tmp_path / "a1", 29990, [(A2, 29991), (A3, 29992)]) + extra


def test_authorities_make_the_voting_form_and_keys_decode(tmp_path):
    cfg = ac.parse(voting(tmp_path))
    assert cfg.is_voting and len(cfg.authorities) == 2
    peer = cfg.authorities[0]
    assert peer.identity_public_key == A2.identity and peer.link_public_key == A2.link_public
    assert peer.dial_addresses() == [("127.0.0.1", 29991)]
    # Identity keys: hex first, then base64 (as for nodes).
    text = voting(tmp_path).replace(B64(A2.identity).decode(), A2.identity.hex())
    assert ac.parse(text).authorities[0].identity_public_key == A2.identity


def test_the_non_voting_form_is_unchanged(tmp_path):
    text = voting(tmp_path)
    plain = text[:text.index("[[Authorities]]")]
    cfg = ac.parse(plain)
    assert not cfg.is_voting and cfg.authorities is None


def test_an_authority_alone_is_a_voting_authority_with_no_peers(tmp_path):
    cfg = ac.parse(voting_config_text(tmp_path / "a1", 29990, []))
    assert cfg.is_voting and cfg.authorities == []


@pytest.mark.parametrize("entry,message", [
    ('[[Authorities]]\nLinkPublicKey = "{link}"\nAddresses = ["127.0.0.1:1"]\n',
     r"Authorities\[2\]\.IdentityPublicKey is not set"),
    ('[[Authorities]]\nIdentityPublicKey = "{ident}"\nAddresses = ["127.0.0.1:1"]\n',
     r"Authorities\[2\]\.LinkPublicKey is not set"),
    ('[[Authorities]]\nIdentityPublicKey = "{ident}"\nLinkPublicKey = "{link}"\n',
     r"Authorities\[2\]\.Addresses must list at least one"),
    ('[[Authorities]]\nIdentityPublicKey = "{ident}"\nLinkPublicKey = "{link}"\nAddresses = []\n',
     r"Authorities\[2\]\.Addresses must list at least one"),
    ('[[Authorities]]\nIdentityPublicKey = "{ident}"\nLinkPublicKey = "{link}"\n'
     'Addresses = ["auth.example:1"]\n', r"Authorities\[2\]\.Addresses.*literal"),
    ('[[Authorities]]\nIdentityPublicKey = "{ident}"\nLinkPublicKey = "{link_hex}"\n'
     'Addresses = ["127.0.0.1:1"]\n', r"Authorities\[2\]\.LinkPublicKey.*base64"),
    ('[[Authorities]]\nIdentityPublicKey = "abcd"\nLinkPublicKey = "{link}"\n'
     'Addresses = ["127.0.0.1:1"]\n', r"Authorities\[2\]\.IdentityPublicKey.*32-byte"),
    ('[[Authorities]]\nIdentityPublicKey = "{ident}"\nLinkPublicKey = "{link}"\n'
     'Addresses = ["127.0.0.1:1"]\nColour = 1\n', r"Undecoded keys.*Authorities\[2\]\.Colour"),
    ('[[Authorities]]\nIdentityPublicKey = "{dup}"\nLinkPublicKey = "{link}"\n'
     'Addresses = ["127.0.0.1:1"]\n', r"IdentityPublicKey is listed twice"),
])
def test_invalid_peers_are_named(tmp_path, entry, message):
    other = authority_keys("other")
    text = voting(tmp_path, entry.format(ident=B64(other.identity).decode(),
                                         link=B64(other.link_public).decode(),
                                         link_hex=other.link_public.hex(),
                                         dup=B64(A2.identity).decode()))
    with pytest.raises(ac.AuthorityConfigError, match=message):
        ac.parse(text)


def test_every_problem_is_reported_at_once(tmp_path):
    text = voting(tmp_path, '[[Authorities]]\nIdentityPublicKey = "x"\n'
                            '[[Authorities]]\nLinkPublicKey = "y"\nAddresses = ["nope"]\n')
    text = text.replace("[Debug]", '[Logging]\nLevel = "LOUD"\n[Debug]')
    with pytest.raises(ac.AuthorityConfigError) as info:
        ac.parse(text)
    problems = "\n".join(info.value.problems)
    for expected in ("Logging.Level", "Authorities[2].IdentityPublicKey", "Authorities[2].LinkPublicKey",
                     "Authorities[2].Addresses", "Authorities[3].IdentityPublicKey",
                     "Authorities[3].LinkPublicKey", "Authorities[3].Addresses"):
        assert expected in problems, problems


def test_listing_oneself_is_refused_once_the_key_is_known(tmp_path):
    cfg = ac.parse(voting(tmp_path))
    assert ac.check_not_a_peer(cfg, authority_keys("a1").identity) == []
    assert "own IdentityPublicKey" in ac.check_not_a_peer(cfg, A2.identity)[0]


def run_authority(config_path, *args):
    return subprocess.run([sys.executable, "-m", "katzenpost.authority", "-f", str(config_path),
                           *args], capture_output=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generate_writes_identity_and_link_keys_and_prints_the_peer_entry(tmp_path):
    port = free_port()
    data_dir = tmp_path / "a1"
    path = tmp_path / "a1.toml"
    path.write_text(voting_config_text(data_dir, port, [(A2, 29991)],
                                       sections='[Logging]\nFile = "authority.log"\n'))
    proc = run_authority(path, "-g")
    assert proc.returncode == 0, proc.stderr
    for name in ("identity.private.pem", "identity.public.pem", "link.private.pem"):
        assert stat.S_IMODE(os.stat(data_dir / name).st_mode) == 0o600
    identity = keys.load_identity_key(str(data_dir))
    link = keys.load_link_key(str(data_dir))
    assert link.public != identity.to_x25519_public()  # a separate key, not ToECDH(identity)
    out = proc.stdout.decode()
    assert f"Authority link public key is: {B64(link.public).decode()}" in out
    entry = tomllib.loads(out[out.index("[[Authorities]]"):])["Authorities"][0]
    assert entry == {"IdentityPublicKey": B64(identity.public).decode(),
                     "LinkPublicKey": B64(link.public).decode(),
                     "Addresses": [f"127.0.0.1:{port}"]}
    # The printed entry is what a peer's config takes.
    peer_cfg = ac.parse(voting_config_text(tmp_path / "a2", 29991, [(A3, 29992)])
                        + out[out.index("[[Authorities]]"):])
    assert peer_cfg.authorities[1].link_public_key == link.public
    again = run_authority(path, "-g")  # keys are loaded, not replaced
    assert again.returncode == 0 and keys.load_link_key(str(data_dir)).public == link.public


def test_a_config_listing_its_own_key_exits_255(tmp_path):
    data_dir = tmp_path / "a1"
    path = tmp_path / "a1.toml"
    path.write_text(voting_config_text(data_dir, free_port(), []))
    assert run_authority(path, "-g").returncode == 0
    me = keys.load_identity_key(str(data_dir))
    link = keys.load_link_key(str(data_dir))
    me_keys = type(A2)("me", b"", me.public, b"", link.public)
    path.write_text(voting_config_text(data_dir, free_port(), [(me_keys, 1)]))
    proc = run_authority(path)
    assert proc.returncode == 255
    assert b"Failed to load config file" in proc.stderr and b"own IdentityPublicKey" in proc.stderr


def test_the_documented_example_config_parses():
    import pathlib
    import re
    docs = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "authority.md").read_text()
    section = docs[docs.index("## Voting authorities"):]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    values = {"a2 identity key, base64": B64(A2.identity).decode(),
              "a2 link key, base64": B64(A2.link_public).decode(),
              "a3 identity key, base64": B64(A3.identity).decode(),
              "a3 link key, base64": B64(A3.link_public).decode()}
    nodes = iter(authority_keys(f"node{i}").identity.hex() for i in range(10))
    text = re.sub(r"<([^>]+)>", lambda m: values.get(m.group(1)) or next(nodes), example)
    cfg = ac.parse(text)
    assert cfg.is_voting and [p.identity_public_key for p in cfg.authorities] == [A2.identity,
                                                                                 A3.identity]
