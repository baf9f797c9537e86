"""The management socket's user commands on every user database, with the reference's exact
replies: argument counts, key formats (hex or base64), username fix-up, refusals (554)."""
from __future__ import annotations

import asyncio
import base64

import pytest

from katzenpost.provider.storage import Storage
from katzenpost.provider.user_commands import BAD_ARGUMENTS, FAILED, OK, UNRECOGNISED, UserCommands
from katzenpost.provider.usernames import UsernamePolicy
from tests.provider_support import PostgresSchema, key, provider_config
from tests.test_provider_userdb import AuthService


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request, tmp_path):
    schema = None
    if request.param == "sqlite":
        cfg = provider_config(tmp_path)
    else:
        schema = PostgresSchema()
        cfg = provider_config(tmp_path, userdb="sql", spool="sql", dsn=schema.dsn)
    store = Storage(cfg.provider, 1)
    store.open()
    try:
        yield store
    finally:
        store.shutdown()
        if schema is not None:
            schema.drop()


def commands(storage, **policy):
    return UserCommands(storage, UsernamePolicy(**policy))


def handle(cmds, line: str) -> str:
    return run(cmds.handle(line.split(" ")))


def test_user_lifecycle_with_the_reference_replies(storage):
    cmds = commands(storage)
    link, link2, identity = key(), key(), key()
    b64 = lambda k: base64.b64encode(k).decode()
    script = [
        (f"ADD_USER alice {link.hex()}", OK),
        (f"ADD_USER alice {link.hex()}", FAILED),                # exists
        (f"add_user Bob {b64(link2)}", OK),                      # verb case-insensitive, base64 key
        ("USER_LINK BOB", f"250 {b64(link2)}"),                  # names fixed up (case mapped)
        ("USER_IDENTITY alice", FAILED),                         # no identity yet
        (f"SET_USER_IDENTITY alice {identity.hex()}", OK),
        ("USER_IDENTITY alice", f"250 {b64(identity)}"),
        ("SET_USER_IDENTITY alice", OK),                          # without a key: removes it
        ("USER_IDENTITY alice", FAILED),
        (f"SET_USER_IDENTITY alice {b64(identity)}", OK),
        ("REMOVE_USER_IDENTITY alice", OK),
        ("USER_IDENTITY alice", FAILED),
        (f"UPDATE_USER alice {link2.hex()}", OK),
        ("USER_LINK alice", f"250 {b64(link2)}"),
        (f"UPDATE_USER carol {link.hex()}", FAILED),             # no such user
        (f"SET_USER_IDENTITY carol {identity.hex()}", FAILED),
        ("REMOVE_USER alice", OK),
        ("REMOVE_USER alice", FAILED),
        ("USER_LINK alice", FAILED),
    ]
    assert [(line, handle(cmds, line)) for line, _ in script] == script


@pytest.mark.parametrize("line", [
    "ADD_USER alice", "ADD_USER alice 00 extra", "ADD_USER  " + "00" * 32,  # empty name: 501, not 554
    "ADD_USER alice " + "00" * 31, "ADD_USER alice zz", "ADD_USER alice " + "A" * 44,
    "ADD_USER al\x01ice " + "00" * 32, "ADD_USER " + "a" * 65 + " " + "00" * 32,
    "USER_LINK  alice", "USER_LINK", "REMOVE_USER", "SET_USER_IDENTITY alice 1234",
    "SET_USER_IDENTITY",
])
def test_bad_arguments_get_501_and_write_nothing(storage, line):
    cmds = commands(storage)
    assert handle(cmds, line) == BAD_ARGUMENTS
    assert not storage.userdb.exists(b"alice")


def test_unknown_verbs_get_500(storage):
    assert handle(commands(storage), "FROB alice") == UNRECOGNISED
    assert run(commands(storage).handle([])) == UNRECOGNISED


def test_send_rate_and_burst_are_node_commands_not_user_commands(storage):
    cmds = commands(storage)
    assert "SEND_RATE" not in cmds.verbs and "SEND_BURST" not in cmds.verbs
    assert handle(cmds, "SEND_RATE 120") == UNRECOGNISED


def test_binary_recipients_keep_names_raw(storage):
    cmds = commands(storage, binary_recipients=True)
    link = key()
    assert handle(cmds, f"ADD_USER Alice {link.hex()}") == OK
    assert storage.userdb.exists(b"Alice") and not storage.userdb.exists(b"alice")


def test_remove_user_removes_the_spool_too(storage):
    cmds = commands(storage)
    handle(cmds, f"ADD_USER alice {key().hex()}")
    storage.spool.store_message(b"alice", bytes(1490))
    assert handle(cmds, "REMOVE_USER alice") == OK
    assert storage.spool.get(b"alice", False).is_empty


def test_extern_userdb_refuses_mutations_with_554_and_answers_lookups(tmp_path):
    service = AuthService()
    identity = key()
    service.links["alice"] = key()
    service.identities["alice"] = identity
    try:
        cfg = provider_config(tmp_path, userdb="extern", extern_url=service.url)
        store = Storage(cfg.provider, 1)
        store.open()
        try:
            cmds = commands(store)
            assert handle(cmds, f"ADD_USER bob {key().hex()}") == FAILED
            assert handle(cmds, f"UPDATE_USER alice {key().hex()}") == FAILED
            assert handle(cmds, "REMOVE_USER alice") == FAILED
            assert handle(cmds, f"SET_USER_IDENTITY alice {key().hex()}") == FAILED
            assert handle(cmds, "USER_LINK alice") == FAILED
            assert handle(cmds, "USER_IDENTITY alice") == f"250 {base64.b64encode(identity).decode()}"
            assert handle(cmds, "USER_IDENTITY bob") == FAILED
        finally:
            store.shutdown()
    finally:
        service.close()
