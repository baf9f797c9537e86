"""The client (katzenpost/client) with a set of voting authorities: the document it fetches
through its provider must carry valid signatures of a majority of the configured authority
keys; the keys come from repeated --authority-key flags or Authority.PublicKeys."""
import argparse
import time

import pytest

from _pki_fixtures import AUTHORITY_SEED, CLOCK, make_document, public_for, seed_for
from katzenpost.client import cli
from katzenpost.client.session import ClientError
from katzenpost.pki import cert
from test_client_session import run, with_provider

SEEDS = [AUTHORITY_SEED, seed_for("voting-2"), seed_for("voting-3")]
KEYS = tuple(public_for(s) for s in SEEDS)


def consensus(signers) -> bytes:
    now = time.time()
    doc = make_document(CLOCK.current(), now)
    return cert.sign_multi(signers, doc.to_json(), int(now) + CLOCK.document_lifetime(), now)


def test_a_document_with_two_of_three_signatures_is_used():
    async def test(client, provider):
        doc = await client.document()
        assert doc.epoch == CLOCK.current()
    run(with_provider(test, raw_doc=consensus(SEEDS[1:]),
                      client_overrides={"authority_keys": KEYS}))


def test_a_document_with_one_of_three_signatures_is_refused():
    async def test(client, provider):
        with pytest.raises(ClientError, match="1 of 3 authorities' signatures are valid, 2 required"):
            await client.start()
    run(with_provider(test, raw_doc=consensus(SEEDS[:1]), start=False,
                      client_overrides={"authority_keys": KEYS}))


def test_bad_authority_keys_are_refused():
    async def test(client, provider):
        pass
    with pytest.raises(ClientError, match="32 bytes each"):
        run(with_provider(test, start=False, client_overrides={"authority_keys": (b"short",)}))


def args_for(tmp_path, flags=None, config_body=""):
    path = tmp_path / "client.toml"
    path.write_text(f"""[Client]
User = "alice"
DataDir = "{tmp_path / 'alice'}"
[Provider]
Name = "provider1"
Address = "127.0.0.1:1"
IdentityKey = "{KEYS[0].hex()}"
{config_body}""")
    namespace = argparse.Namespace(config=str(path), authority_key=flags)
    return cli.settings_from(namespace, create_key=True)


def test_authority_public_keys_in_the_file_or_repeated_flags(tmp_path):
    listed = ", ".join(f'"{k.hex()}"' for k in KEYS)
    settings = args_for(tmp_path, config_body=f"[Authority]\nPublicKeys = [{listed}]\n")
    assert settings.authority_keys == KEYS and settings.verifiers() == KEYS
    settings = args_for(tmp_path, flags=[k.hex() for k in KEYS[:2]],
                        config_body=f'[Authority]\nPublicKey = "{KEYS[2].hex()}"\n')
    assert settings.verifiers() == KEYS[:2]                   # flags win over the file
    single = args_for(tmp_path, config_body=f'[Authority]\nPublicKey = "{KEYS[2].hex()}"\n')
    assert single.authority_keys == () and single.verifiers() == (KEYS[2],)


@pytest.mark.parametrize("body, message", [
    ("[Authority]\nPublicKeys = [1, 2]\n", "Authority.PublicKeys must be an array of strings"),
    ('[Authority]\nPublicKeys = ["abcd", "abcd"]\n', "authority key must be 32 bytes, got 2"),
    ("[Authority]\nPublicKeys = []\n", "missing --authority-key"),
])
def test_bad_authority_key_lists_are_usage_errors(tmp_path, body, message):
    with pytest.raises(cli.UsageError, match=message):
        args_for(tmp_path, config_body=body)
