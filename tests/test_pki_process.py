"""`katzenpost-authority` as a real process on 127.0.0.1: key generation, node PKI workers posting
and fetching over TCP, a restart that serves the same document, garbage that it survives, and
clean exits. Uses a 30-second test-network epoch; every wait is bounded."""
import asyncio
import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from _pki_fixtures import MemoryMixKeys, link_private_for, public_for, seed_for, x25519_public
from katzenpost import keys
from katzenpost.pki.client import AuthorityClient, DocumentNotFoundError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.worker import NodeSelf, PKIWorker
from katzenpost.wire.handshake import PeerCredentials

PERIOD = 30
CLOCK = EpochClock(period=PERIOD)
MIXES = ["mix0", "mix1", "mix2"]
PROVIDERS = ["provider1", "provider2"]
REPO = pathlib.Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path, port, extra=""):
    data_dir = tmp_path / "authority"
    text = (f'[Authority]\nIdentifier = "auth"\nAddresses = ["127.0.0.1:{port}"]\n'
            f'DataDir = "{data_dir}"\n[Logging]\nLevel = "DEBUG"\nFile = "authority.log"\n'
            f"[Debug]\nLayers = 3\nMinNodesPerLayer = 1\nEpochPeriod = {PERIOD}\n{extra}")
    for name in MIXES:
        text += f'[[Mixes]]\nIdentityKey = "{public_for(seed_for(name)).hex()}"\n'
    for name in PROVIDERS:
        text += (f'[[Providers]]\nIdentifier = "{name}"\n'
                 f'IdentityKey = "{public_for(seed_for(name)).hex()}"\n')
    path = tmp_path / "authority.toml"
    path.write_text(text)
    return str(path), str(data_dir)


def authority(config_path, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "katzenpost.pki.authority_cli", "-f", config_path,
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


def node_worker(name, port, authority_key):
    provider = name.startswith("provider")
    me = NodeSelf(identifier=name, identity_seed=seed_for(name),
                  identity_public=public_for(seed_for(name)),
                  link_public=x25519_public(link_private_for(name)),
                  addresses={"tcp4": [f"127.0.0.1:{40000 + len(name)}"]}, is_provider=provider,
                  kaetzchen_for_pki=(lambda: {"loop": {"endpoint": "+loop"}}) if provider else None)
    client = AuthorityClient("127.0.0.1", port, authority_key, clock=CLOCK,
                             connect_timeout=5, handshake_timeout=5, response_timeout=5)
    return PKIWorker(me, client, MemoryMixKeys(name), CLOCK)


def wait_for_room_in_epoch(seconds_needed=12):
    till = CLOCK.till_next()
    if till < seconds_needed:
        time.sleep(till + 0.2)


@pytest.fixture
def generated(tmp_path):
    port = free_port()
    config_path, data_dir = write_config(tmp_path, port)
    proc = authority(config_path, "-g")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return port, config_path, data_dir


def test_generate_only_writes_private_keys_and_exits(generated):
    _, _, data_dir = generated
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    for name in ("identity.private.pem", "identity.public.pem"):
        assert stat.S_IMODE(os.stat(os.path.join(data_dir, name)).st_mode) == 0o600
    assert not os.path.exists(os.path.join(data_dir, "link.private.pem"))  # derived, not stored
    log_text = pathlib.Path(data_dir, "authority.log").read_text()
    identity = keys.load_identity_key(data_dir)
    import base64
    assert f"Authority identity public key is: {base64.b64encode(identity.public).decode()}" in log_text


def test_nodes_post_fetch_and_the_restarted_authority_serves_the_same_document(generated):
    port, config_path, data_dir = generated
    authority_key = keys.load_identity_key(data_dir).public
    wait_for_room_in_epoch()
    proc = authority(config_path)
    try:
        wait_listening(port, proc)
        workers = [node_worker(name, port, authority_key) for name in MIXES + PROVIDERS]

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
        assert sorted(d.name for layer in first.topology for d in layer) == MIXES
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
    finally:
        assert stop(proc) == 0
    assert proc.poll() == 0

    restarted = authority(config_path)
    try:
        wait_listening(port, restarted)
        client = workers[0].client
        after = asyncio.run(asyncio.wait_for(client.get_document(epoch), 30))
        assert after.raw == first.raw
    finally:
        assert stop(restarted) == 0


def test_bad_config_exits_255_with_the_field_named(tmp_path):
    port = free_port()
    config_path, _ = write_config(tmp_path, port, extra="Bogus = 1\n")
    proc = authority(config_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 255
    assert b"Failed to load config file" in err and b"Debug.Bogus" in err


def test_wrong_data_dir_mode_exits_255(generated):
    _, config_path, data_dir = generated
    os.chmod(data_dir, 0o755)
    proc = authority(config_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 255 and b"permissions" in err


def test_unreachable_fetch_before_anyone_posts_is_not_found(generated):
    port, config_path, data_dir = generated
    authority_key = keys.load_identity_key(data_dir).public
    proc = authority(config_path)
    try:
        wait_listening(port, proc)
        client = AuthorityClient("127.0.0.1", port, authority_key, clock=CLOCK,
                                 connect_timeout=5, handshake_timeout=5, response_timeout=5)
        with pytest.raises(DocumentNotFoundError):
            asyncio.run(asyncio.wait_for(client.get_document(CLOCK.current() + 1), 30))
    finally:
        assert stop(proc) == 0


def test_sighup_reopens_the_log_file_after_rotation(generated):
    port, config_path, data_dir = generated
    authority_key = keys.load_identity_key(data_dir).public
    proc = authority(config_path)
    try:
        wait_listening(port, proc)
        log_path = pathlib.Path(data_dir, "authority.log")
        log_path.rename(log_path.with_suffix(".old"))
        proc.send_signal(signal.SIGHUP)
        client = AuthorityClient("127.0.0.1", port, authority_key, clock=CLOCK,
                                 connect_timeout=5, handshake_timeout=5, response_timeout=5)
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
    finally:
        assert stop(proc) == 0
