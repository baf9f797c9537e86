"""`katzenpost-authority` as a real process on 127.0.0.1: key generation, node PKI workers posting
and fetching over TCP, a restart that serves the same document, garbage that it survives, and
clean exits. Uses a 60-second test-network epoch; every wait is bounded."""
import asyncio
import base64
import contextlib
import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass

import pytest

from _pki_fixtures import MIXES, PROVIDERS, MemoryMixKeys, authority_config_text, node_self
from katzenpost import keys
from katzenpost.pki.client import AuthorityClient, DocumentNotFoundError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.worker import PKIWorker
from katzenpost.wire.handshake import PeerCredentials

PERIOD = 60
CLOCK = EpochClock(period=PERIOD)
REPO = pathlib.Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path, port, extra=""):
    data_dir = tmp_path / "authority"
    text = authority_config_text(
        data_dir, port=port, sections='[Logging]\nLevel = "DEBUG"\nFile = "authority.log"\n',
        debug=f"EpochPeriod = {PERIOD}\n{extra}")
    path = tmp_path / "authority.toml"
    path.write_text(text)
    return str(path), str(data_dir)


def authority(config_path, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "katzenpost.authority", "-f", config_path,
                             *args], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_listening(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("authority did not start listening")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def authority_client(port, authority_key):
    return AuthorityClient("127.0.0.1", port, authority_key, clock=CLOCK,
                           connect_timeout=5, handshake_timeout=5, response_timeout=5)


def node_worker(name, port, authority_key):
    client = authority_client(port, authority_key)
    return PKIWorker(node_self(name, port=40000 + len(name)), client, MemoryMixKeys(name), CLOCK)


def wait_for_room_in_epoch(seconds_needed=6):
    """All nodes must post within one epoch for the bootstrap; rarely waits (6 s in 60)."""
    till = CLOCK.till_next()
    if till < seconds_needed:
        time.sleep(till + 0.2)


@dataclass(frozen=True)
class Generated:
    port: int
    config_path: str
    data_dir: str
    authority_key: bytes


@contextlib.contextmanager
def serving(auth: Generated):
    """The authority daemon from `auth`'s config, listening; it must exit 0 on SIGTERM."""
    proc = authority(auth.config_path)
    try:
        wait_listening(auth.port, proc)
        yield proc
    finally:
        code = stop(proc)
    assert code == 0, proc.stderr.read()


@pytest.fixture
def generated(tmp_path):
    port = free_port()
    config_path, data_dir = write_config(tmp_path, port)
    proc = authority(config_path, "-g")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return Generated(port, config_path, data_dir, keys.load_identity_key(data_dir).public)


def test_generate_only_writes_private_keys_and_exits(generated):
    data_dir = generated.data_dir
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    for name in ("identity.private.pem", "identity.public.pem"):
        assert stat.S_IMODE(os.stat(os.path.join(data_dir, name)).st_mode) == 0o600
    assert not os.path.exists(os.path.join(data_dir, "link.private.pem"))  # derived, not stored
    log_text = pathlib.Path(data_dir, "authority.log").read_text()
    identity = keys.load_identity_key(data_dir)
    assert f"Authority identity public key is: {base64.b64encode(identity.public).decode()}" in log_text


def test_nodes_post_fetch_and_the_restarted_authority_serves_the_same_document(generated):
    port = generated.port
    with serving(generated):
        wait_for_room_in_epoch()
        workers = [node_worker(name, port, generated.authority_key) for name in MIXES + PROVIDERS]

        async def publish_and_fetch():
            epoch = CLOCK.current()
            for worker in workers:
                await worker.tick()  # posts the descriptor for the current epoch
            assert all(w.last_published_epoch == epoch for w in workers)
            for _ in range(40):
                await asyncio.gather(*(w.tick() for w in workers))
                if all(epoch in w.documents for w in workers):
                    break
                await asyncio.sleep(0.25)
            return epoch

        epoch = asyncio.run(asyncio.wait_for(publish_and_fetch(), 60))
        docs = [w.documents[epoch].doc for w in workers]
        assert len({d.raw for d in docs}) == 1
        first = docs[0]
        assert sorted(d.name for layer in first.topology for d in layer) == list(MIXES)
        for worker in workers:  # every node accepts its previous layer's nodes by the document
            for peer in worker.documents[epoch].incoming.values():
                creds = PeerCredentials(additional_data=peer.identity_key, public_key=peer.link_key)
                assert worker.authenticate_connection(creds, False) == (True, True)

        # Garbage and a half-open connection must not hurt the daemon.
        junk = socket.create_connection(("127.0.0.1", port))
        junk.sendall(os.urandom(4096))
        idle = socket.create_connection(("127.0.0.1", port))
        again = asyncio.run(asyncio.wait_for(workers[1].client.get_document(epoch), 30))
        assert again.raw == first.raw
        junk.close()
        idle.close()

    with serving(generated):  # restarted: the persisted document, byte for byte
        after = asyncio.run(asyncio.wait_for(workers[0].client.get_document(epoch), 30))
        assert after.raw == first.raw

    # A whole DEBUG-level run (posts, fetches, garbage, restart) never logs a private key.
    log_text = pathlib.Path(generated.data_dir, "authority.log").read_text()
    assert "PostDescriptor" in log_text  # the DEBUG/INFO lines are there
    identity = keys.load_identity_key(generated.data_dir)
    for secret in (identity.seed, identity.to_x25519_private()):
        for form in (secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()):
            assert form not in log_text



def test_damaged_persistence_file_exits_255_with_a_message(generated):
    import sqlite3
    db = sqlite3.connect(os.path.join(generated.data_dir, "persistence.sqlite"))
    db.executescript("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value BLOB);"
                     "INSERT OR REPLACE INTO metadata VALUES ('version', x'00');"
                     "CREATE TABLE documents (epoch INTEGER PRIMARY KEY);")  # no raw column
    db.close()
    proc = authority(generated.config_path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 255, err
    assert b"Failed to spawn authority instance: authority store: read from" in err
    assert b"Traceback" not in err

def test_console_script_target_in_pyproject_runs_the_authority(tmp_path):
    # What the installed `katzenpost-authority` wrapper does: import the module, call main().
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["katzenpost-authority"].split(":")
    config_path, data_dir = write_config(tmp_path, free_port())
    wrapper = f"import importlib, sys; sys.exit(importlib.import_module({module!r}).{function}())"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", wrapper, "-f", config_path, "-g"], cwd=str(REPO),
                          env=env, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(os.path.join(data_dir, "identity.private.pem"))
    usage = subprocess.run([sys.executable, "-c", wrapper, "--help"], cwd=str(REPO), env=env,
                           capture_output=True, timeout=30)
    assert usage.returncode == 0 and b"katzenpost-authority" in usage.stdout


def test_debug_generate_only_acts_like_dash_g(tmp_path):
    config_path, data_dir = write_config(tmp_path, free_port(), extra="GenerateOnly = true\n")
    proc = authority(config_path)  # no -g: the config alone makes it exit after the keys
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert keys.load_identity_key(data_dir).public


def test_bad_config_exits_255_with_the_field_named(tmp_path):
    port = free_port()
    config_path, _ = write_config(tmp_path, port, extra="Bogus = 1\n")
    proc = authority(config_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 255
    assert b"Failed to load config file" in err and b"Debug.Bogus" in err


def test_wrong_data_dir_mode_exits_255(generated):
    os.chmod(generated.data_dir, 0o755)
    proc = authority(generated.config_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 255 and b"permissions" in err


def test_unreachable_fetch_before_anyone_posts_is_not_found(generated):
    with serving(generated):
        client = authority_client(generated.port, generated.authority_key)
        with pytest.raises(DocumentNotFoundError):
            asyncio.run(asyncio.wait_for(client.get_document(CLOCK.current() + 1), 30))


def test_sighup_reopens_the_log_file_after_rotation(generated):
    with serving(generated) as proc:
        log_path = pathlib.Path(generated.data_dir, "authority.log")
        log_path.rename(log_path.with_suffix(".old"))
        proc.send_signal(signal.SIGHUP)
        client = authority_client(generated.port, generated.authority_key)
        deadline = time.time() + 15
        while time.time() < deadline:
            with pytest.raises(DocumentNotFoundError):
                asyncio.run(asyncio.wait_for(client.get_document(CLOCK.current() + 1), 30))
            if log_path.exists() and "GetConsensus" in log_path.read_text():
                break
            time.sleep(0.2)
        assert "GetConsensus" in log_path.read_text()
        assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600
        assert proc.poll() is None


def test_a_log_file_that_cannot_be_reopened_on_sighup_exits_255_and_says_why(generated):
    proc = authority(generated.config_path)
    try:
        wait_listening(generated.port, proc)
        log_path = pathlib.Path(generated.data_dir, "authority.log")
        log_path.rename(log_path.with_suffix(".old"))
        log_path.mkdir()  # a directory where the log file must be reopened
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    assert code == 255, err
    assert "cannot reopen the log file on SIGHUP" in err and "authority.log" in err


def test_generate_prints_the_keys_on_the_terminal_when_the_log_goes_to_a_file(generated):
    proc = authority(generated.config_path, "-g")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    identity = keys.load_identity_key(generated.data_dir)
    assert out.decode().splitlines() == [
        f"Authority identity public key is: {base64.b64encode(identity.public).decode()}",
        f"Authority link public key is: {base64.b64encode(identity.to_x25519_public()).decode()}"]


def test_a_private_key_file_others_may_read_is_warned_about(generated):
    key_path = os.path.join(generated.data_dir, "identity.private.pem")
    os.chmod(key_path, 0o644)
    proc = authority(generated.config_path, "-g")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    log_text = pathlib.Path(generated.data_dir, "authority.log").read_text()
    assert f"private key file '{key_path}' has mode 0644" in log_text and "chmod 600" in log_text
