"""No secret in the repr or str of key, session and configuration objects, nor in the messages of
the errors raised about keys and configuration: a log line, a traceback or an error reply may
carry any of them. Each object is built from a known secret and every textual form of it
(tests/security_support.forms) is looked for."""
import os

import pytest

from provider_support import provider_config
from security_support import forms
from katzenpost import config, keys
from katzenpost.client.message import SURBContext
from katzenpost.client.session import ClientSettings
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.worker import NodeSelf
from katzenpost.server.mixkeys import MixKeys
from katzenpost.wire.framing import FrameOpener, FrameSealer
from katzenpost.wire.handshake import Handshake
from katzenpost.wire.noise import CipherState, SymmetricState

SECRET = bytes(range(100, 132))
PASSWORD = "s3cr3t-Passw0rd"


def shown(obj) -> str:
    return repr(obj) + "\n" + str(obj)


def assert_hidden(text: str, *secrets: bytes) -> None:
    for secret in secrets:
        found = [f for f in forms(secret) if f in text]
        assert found == [], f"secret shown as {found} in: {text[:500]}"


def test_key_pairs_show_only_their_public_half():
    identity = keys.IdentityKey.from_seed(SECRET)
    link = keys.LinkKey.from_private(SECRET)
    for key in (identity, link):
        assert key.public.hex() in repr(key)                  # the control: the repr is useful
        assert_hidden(shown(key), SECRET)
    assert_hidden(shown(identity), identity.go_bytes(), identity.to_x25519_private())


def test_mix_keys_and_the_pki_self_description(tmp_path):
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    store = MixKeys(data_dir, EpochClock(60), expected_entries=1000)
    store.start()
    try:
        for epoch, key in store.keys.items():
            assert_hidden(shown(key), bytes(key.private))
        assert_hidden(shown(store.keys), *(bytes(k.private) for k in store.keys.values()))
    finally:
        store.close()
    node = NodeSelf(identifier="mix", identity_seed=SECRET, identity_public=b"\x01" * 32,
                    link_public=b"\x02" * 32, addresses={})
    assert_hidden(shown(node), SECRET)


def test_noise_and_link_frame_state():
    for obj in (CipherState(SECRET), FrameSealer(SECRET), FrameOpener(SECRET),
                Handshake(initiator=True, link_key=SECRET, additional_data=b"ad")):
        assert_hidden(shown(obj), SECRET)
    state = SymmetricState()
    state.mix_key(SECRET)
    assert_hidden(shown(state), SECRET)


def test_client_settings_and_surb_contexts():
    settings = ClientSettings(user="alice", link_key=keys.LinkKey.from_private(SECRET), provider="p",
                              provider_key=b"\x01" * 32, address=("127.0.0.1", 1), authority_key=b"\x02" * 32)
    assert_hidden(shown(settings), SECRET)
    fields = SURBContext.__dataclass_fields__
    values = {name: (SECRET if name == "keys" else None) for name in fields}
    assert_hidden(shown(SURBContext(**values)), SECRET)


def test_the_configuration_hides_the_database_password(tmp_path):
    dsn = f"postgresql://kp:{PASSWORD}@db.example/kp"
    cfg = provider_config(tmp_path, spool="sql", dsn=dsn)
    assert cfg.provider.sql_db.data_source_name == dsn                 # the control: it is there
    assert PASSWORD not in shown(cfg) and PASSWORD not in shown(cfg.provider)
    with pytest.raises(config.ConfigError) as error:      # a bad neighbour: the error names it only
        provider_config(tmp_path, spool="nosuch", dsn=dsn)
    assert "SpoolDB" in str(error.value) and PASSWORD not in str(error.value)


def pem(path, block: str, body: bytes) -> None:
    import base64
    path.write_text(f"-----BEGIN {block}-----\n{base64.b64encode(body).decode()}\n-----END {block}-----\n")
    os.chmod(path, 0o600)


@pytest.mark.parametrize("block, body", [
    ("X25519 PRIVATE KEY", SECRET[:31]),                  # wrong length
    ("ED25519 PRIVATE KEY", SECRET),                      # wrong type for what is asked
    ("X25519 PRIVATE KEY", SECRET + b"\x00" * 40),        # too long
])
def test_key_file_errors_name_the_file_not_the_key(tmp_path, block, body):
    path = tmp_path / "link.private.pem"
    pem(path, block, body)
    with pytest.raises(keys.KeyFileError) as error:
        keys.read_pem_key(str(path), "X25519 PRIVATE KEY", 32)
    assert str(path) in str(error.value)
    assert_hidden(str(error.value), body, SECRET[:31])


def test_a_mismatched_identity_key_error_shows_neither_half():
    raw = SECRET + bytes(32)
    with pytest.raises(ValueError) as error:
        keys.IdentityKey.from_bytes(raw)
    assert_hidden(str(error.value), SECRET, raw)
