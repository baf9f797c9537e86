"""One contract for every user database (embedded SQLite, PostgreSQL, extern HTTP), plus each
backend's own rules: persistence, trust on first use, the extern protocol and its refusals."""
from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from katzenpost.provider.postgres import SQLDatabase, SQLDatabaseError
from katzenpost.provider.userdb.base import NoIdentity, NoSuchUser, NotSupported, UserDBError, UserExists
from katzenpost.provider.userdb.extern import ExternUserDB
from katzenpost.provider.userdb.postgres import PostgresUserDB
from katzenpost.provider.userdb.sqlite import SQLiteUserDB
from tests.provider_support import PostgresSchema, key


class AuthService:
    """A real HTTP server on 127.0.0.1 speaking the extern user database protocol."""

    def __init__(self):
        self.links: dict[str, bytes] = {}
        self.identities: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                fields = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                endpoint = self.path.lstrip("/")
                service.requests.append((endpoint, fields))
                answer = service.answer(endpoint, fields)
                if answer is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, endpoint, fields):
        user = fields.get("user", "")
        if endpoint == "exists":
            return {"exists": user in self.links}
        if endpoint == "isvalid":
            return {"isvalid": self.links.get(user) == base64.b64decode(fields.get("key", ""))}
        if endpoint == "getidkey":
            if user not in self.identities:
                return None
            return {"getidkey": self.identities[user].hex()}
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Admin:
    """Sets users up in a backend: through the backend itself, or behind the extern service."""

    def __init__(self, db, service=None):
        self.db, self.service = db, service

    def add(self, user: bytes, link: bytes):
        if self.service:
            self.service.links[user.decode()] = link
        else:
            self.db.add(user, link)

    def set_identity(self, user: bytes, identity: bytes):
        if self.service:
            self.service.identities[user.decode()] = identity
        else:
            self.db.set_identity(user, identity)


@pytest.fixture(params=["sqlite", "postgres", "extern"])
def backend(request, tmp_path):
    kind = request.param
    if kind == "sqlite":
        db = SQLiteUserDB(str(tmp_path / "users.db"))
        yield kind, db, Admin(db)
        db.close()
    elif kind == "postgres":
        schema = PostgresSchema()
        database = SQLDatabase(schema.dsn)
        db = PostgresUserDB(database)
        try:
            yield kind, db, Admin(db)
        finally:
            database.close()
            schema.drop()
    else:
        service = AuthService()
        db = ExternUserDB(service.url)
        try:
            yield kind, db, Admin(db, service)
        finally:
            service.close()


# ------------------------------------------------------------------------- the shared contract

def test_known_user_exists_and_is_valid_only_with_its_link_key(backend):
    _, db, admin = backend
    alice, bob = key(), key()
    admin.add(b"alice", alice)
    admin.add(b"bob", bob)
    assert db.exists(b"alice") and db.exists(b"bob")
    assert db.is_valid(b"alice", alice) and db.is_valid(b"bob", bob)
    assert not db.is_valid(b"alice", bob)
    assert not db.is_valid(b"alice", alice[:31])


def test_unknown_user_neither_exists_nor_is_valid(backend):
    _, db, _ = backend
    assert not db.exists(b"mallory")
    assert not db.is_valid(b"mallory", key())


def test_identity_is_returned_once_set_and_missing_otherwise(backend):
    _, db, admin = backend
    admin.add(b"alice", key())
    with pytest.raises((NoIdentity, NoSuchUser)):
        db.identity(b"alice")
    identity = key()
    admin.set_identity(b"alice", identity)
    assert db.identity(b"alice") == identity
    with pytest.raises((NoIdentity, NoSuchUser)):
        db.identity(b"nobody")


# ------------------------------------------------------------------------- mutable backends

@pytest.fixture(params=["sqlite", "postgres"])
def mutable(request, tmp_path):
    if request.param == "sqlite":
        db = SQLiteUserDB(str(tmp_path / "users.db"))
        yield db
        db.close()
    else:
        schema = PostgresSchema()
        database = SQLDatabase(schema.dsn)
        try:
            yield PostgresUserDB(database)
        finally:
            database.close()
            schema.drop()


def test_add_refuses_an_existing_user_and_update_a_missing_one(mutable):
    first = key()
    mutable.add(b"alice", first)
    with pytest.raises(UserExists):
        mutable.add(b"alice", key())
    assert mutable.is_valid(b"alice", first)
    with pytest.raises(NoSuchUser):
        mutable.add(b"bob", key(), update=True)
    assert not mutable.exists(b"bob")


def test_update_replaces_the_link_key(mutable):
    old, new = key(), key()
    mutable.add(b"alice", old)
    mutable.add(b"alice", new, update=True)
    assert mutable.link(b"alice") == new
    assert not mutable.is_valid(b"alice", old)


def test_identity_set_clear_and_missing_user(mutable):
    mutable.add(b"alice", key())
    identity = key()
    mutable.set_identity(b"alice", identity)
    assert mutable.identity(b"alice") == identity
    mutable.set_identity(b"alice", None)
    with pytest.raises(NoIdentity):
        mutable.identity(b"alice")
    with pytest.raises(NoSuchUser):
        mutable.set_identity(b"bob", identity)
    with pytest.raises(NoSuchUser):
        mutable.identity(b"bob")


def test_remove_deletes_the_user_and_its_identity(mutable):
    mutable.add(b"alice", key())
    mutable.set_identity(b"alice", key())
    mutable.remove(b"alice")
    assert not mutable.exists(b"alice")
    with pytest.raises(NoSuchUser):
        mutable.remove(b"alice")
    with pytest.raises(NoSuchUser):
        mutable.link(b"alice")
    mutable.add(b"alice", key())
    with pytest.raises(NoIdentity):  # a re-added user does not inherit the old identity
        mutable.identity(b"alice")


@pytest.mark.parametrize("user", [b"", b"x" * 65])
def test_bad_usernames_and_keys_are_refused_without_writing(mutable, user):
    with pytest.raises(UserDBError):
        mutable.add(user, key())
    with pytest.raises(UserDBError):
        mutable.add(b"alice", b"short")
    assert not mutable.exists(b"alice")


def test_binary_and_longest_names_are_kept_byte_exact(mutable):
    name = bytes(range(1, 65))
    link = key()
    mutable.add(name, link)
    assert mutable.is_valid(name, link) and mutable.link(name) == link


# ------------------------------------------------------------------------- embedded SQLite

def test_sqlite_userdb_persists_across_reopen_with_mode_0600(tmp_path):
    path = str(tmp_path / "users.db")
    db = SQLiteUserDB(path)
    link, identity = key(), key()
    db.add(b"alice", link)
    db.set_identity(b"alice", identity)
    db.close()
    db = SQLiteUserDB(path)
    assert db.is_valid(b"alice", link) and db.identity(b"alice") == identity
    db.close()
    assert (tmp_path / "users.db").stat().st_mode & 0o777 == 0o600


def test_sqlite_trust_on_first_use_adds_unknown_users_only(tmp_path):
    db = SQLiteUserDB(str(tmp_path / "users.db"), trust_on_first_use=True)
    first = key()
    assert db.is_valid(b"alice", first)
    assert db.exists(b"alice") and db.link(b"alice") == first
    assert not db.is_valid(b"alice", key())
    assert not db.is_valid(b"", key())  # not a storable name: refused, not added
    db.close()


def test_sqlite_userdb_refuses_a_foreign_or_corrupt_file(tmp_path):
    from katzenpost.provider.spool.sqlite import SQLiteSpool
    from katzenpost.provider.sqlite_store import SQLiteSchemaError

    SQLiteSpool(str(tmp_path / "spool.db")).close()
    with pytest.raises(SQLiteSchemaError, match="userdb"):
        SQLiteUserDB(str(tmp_path / "spool.db"))
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(SQLiteSchemaError):
        SQLiteUserDB(str(tmp_path / "junk.db"))


# ------------------------------------------------------------------------- extern HTTP

def test_extern_posts_the_reference_form_fields():
    service = AuthService()
    try:
        link = key()
        service.links["alice"] = link
        db = ExternUserDB(service.url)
        assert db.is_valid(b"alice", link)
        assert service.requests[-1] == ("isvalid", {"user": "alice", "key": base64.b64encode(link).decode()})
        db.exists(b"bob")
        assert service.requests[-1] == ("exists", {"user": "bob"})
    finally:
        service.close()


def test_extern_refuses_every_mutation_with_the_reference_text():
    db = ExternUserDB("http://127.0.0.1:9")
    for call in (lambda: db.add(b"a", key()), lambda: db.add(b"a", key(), True), lambda: db.remove(b"a")):
        with pytest.raises(NotSupported, match="External authentication is enabled"):
            call()
    for call in (lambda: db.link(b"a"), lambda: db.set_identity(b"a", key())):
        with pytest.raises(NotSupported, match="Support not implemented yet"):
            call()


def test_extern_unreachable_or_garbage_answers_mean_no():
    db = ExternUserDB("http://127.0.0.1:9", timeout=2)
    assert not db.exists(b"alice") and not db.is_valid(b"alice", key())
    with pytest.raises(NoIdentity):
        db.identity(b"alice")
    service = AuthService()
    service.answer = lambda endpoint, fields: {"exists": "yes", "isvalid": 1, "getidkey": "zz"}
    try:
        db = ExternUserDB(service.url)
        assert not db.exists(b"alice") and not db.is_valid(b"alice", key())
        with pytest.raises(NoIdentity):
            db.identity(b"alice")
    finally:
        service.close()


# ------------------------------------------------------------------------- PostgreSQL schema

def test_postgres_refuses_a_database_without_our_schema_or_another_version():
    schema = PostgresSchema(load=False)
    try:
        with pytest.raises(SQLDatabaseError, match="no katzenpost schema"):
            SQLDatabase(schema.dsn)
    finally:
        schema.drop()
    schema = PostgresSchema()
    try:
        schema.execute("UPDATE metadata SET schema_version = 1")
        with pytest.raises(SQLDatabaseError, match="schema version 1 is not supported"):
            SQLDatabase(schema.dsn)
    finally:
        schema.drop()


def test_postgres_spool_only_database_cannot_be_the_user_database():
    schema = PostgresSchema(spool_only=True)
    try:
        database = SQLDatabase(schema.dsn)
        try:
            assert database.spool_only
            with pytest.raises(SQLDatabaseError, match="spool-only"):
                PostgresUserDB(database)
        finally:
            database.close()
    finally:
        schema.drop()
