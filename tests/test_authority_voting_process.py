"""Three `katzenpost-authority` processes on 127.0.0.1 voting with a 20-second test epoch: nodes
post to all three, the three publish one consensus signed by all three, peers' sessions are
classified (wrong link key, anonymous or node votes get nothing), a restarted authority
serves the same document, two publish the next one while the third is down, the third fetches
it when it returns, and all exit 0 on SIGTERM. Every wait is bounded."""
import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from _pki_fixtures import MIXES, PROVIDERS, public_for, seed_for
from authority_voting_support import (
    authority_keys,
    post_descriptor,
    round_trip,
    signed_vote,
    voting_config_text,
)
from katzenpost.authority import config as authority_config
from katzenpost import keys
from node_support import free_port, stop_process, wait_for
from katzenpost.pki import cert
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.keyconv import x25519_private_from_ed25519_seed
from katzenpost.voting.consensus import verify_consensus
from katzenpost.wire.commands import (
    Consensus,
    GetConsensus,
    Reveal,
    RevealStatus,
    Vote,
    VoteStatus,
    VoteStatusCode,
)
from katzenpost.wire.errors import HandshakeError

PERIOD = 20
CLOCK = EpochClock(period=PERIOD)
REPO = pathlib.Path(__file__).resolve().parent.parent
NAMES = ("a1", "a2", "a3")


def start(config_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "katzenpost.authority", "-f", str(config_path)],
                            cwd=str(REPO), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def listening(port, proc):
    assert proc.poll() is None, proc.stderr.read()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(port, proc):
    wait_for(lambda: listening(port, proc), 20, "the authority to listen", 0.05)


def prepare(tmp_path):
    """Keys written as `-g` would, and one config per authority listing the other two."""
    auth = {n: authority_keys(n) for n in NAMES}
    ports = {n: free_port() for n in NAMES}
    configs = {}
    for name in NAMES:
        data_dir = tmp_path / name
        data_dir.mkdir(mode=0o700)
        keys.write_identity_key(str(data_dir), keys.IdentityKey.from_seed(auth[name].seed))
        keys.write_link_key(str(data_dir), keys.LinkKey.from_private(auth[name].link_private))
        peers = [(auth[o], ports[o]) for o in NAMES if o != name]
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(voting_config_text(
            data_dir, ports[name], peers, period=PERIOD,
            sections='[Logging]\nLevel = "INFO"\nFile = "authority.log"\n'))
    return auth, ports, configs


async def post_everywhere(auth, ports, epoch, names=NAMES):
    now = CLOCK.unix_now()
    codes = await asyncio.gather(*(post_descriptor(ports[n], auth[n], node, epoch, now)
                                   for n in names for node in MIXES + PROVIDERS))
    assert codes == [0] * len(codes)


def room_to_post():
    """The epoch whose P/2 vote is still >= 4 s away (waiting for the next epoch if needed)."""
    epoch, elapsed, till = CLOCK.now()
    if elapsed > PERIOD / 2 - 4:
        time.sleep(till + 0.1)
        epoch += 1
    return epoch


async def session_checks(auth, ports, epoch, parameters):
    """On a1, voting on `epoch` + 1: what each class of peer may send, and what it gets back."""
    a1, a2, port = auth["a1"], auth["a2"], ports["a1"]
    old_vote = Vote(epoch=1, public_key=a2.identity, payload=b"x")
    reply = await round_trip(port, a1, old_vote, link_private=a2.link_private, ad=a2.identity)
    assert isinstance(reply, VoteStatus) and reply.error_code == VoteStatusCode.TOO_EARLY
    # Bad input from a configured peer, each refused with its code (and counted, see the log):
    # a2's genuine vote of the epoch before replayed in this round, a malformed vote, and a
    # vote under a3's key on a2's session.
    replayed, _ = signed_vote(a2, epoch, parameters, CLOCK.unix_now(), PERIOD)
    for command, code in [(Vote(epoch=epoch + 1, public_key=a2.identity, payload=replayed),
                           VoteStatusCode.NOT_SIGNED),
                          (Vote(epoch=epoch + 1, public_key=a2.identity, payload=os.urandom(300)),
                           VoteStatusCode.NOT_SIGNED),
                          (Vote(epoch=epoch + 1, public_key=auth["a3"].identity, payload=replayed),
                           VoteStatusCode.NOT_AUTHORIZED)]:
        reply = await round_trip(port, a1, command, link_private=a2.link_private, ad=a2.identity)
        assert isinstance(reply, VoteStatus) and reply.error_code == code, (command, reply)
    reveal = Reveal(epoch=1, public_key=a2.identity, payload=os.urandom(64))
    reply = await round_trip(port, a1, reveal, link_private=a2.link_private, ad=a2.identity)
    assert isinstance(reply, RevealStatus) and reply.error_code == 10
    assert await round_trip(port, a1, old_vote) is None  # anonymous: no reply
    mix = seed_for(MIXES[0])
    assert await round_trip(port, a1, old_vote, link_private=x25519_private_from_ed25519_seed(mix),
                            ad=public_for(mix)) is None  # a node may not vote
    assert await round_trip(port, a1, VoteStatus(error_code=0), link_private=a2.link_private,
                            ad=a2.identity) is None
    with pytest.raises(HandshakeError):  # a2's identity with another link key
        await round_trip(port, a1, old_vote, link_private=os.urandom(32), ad=a2.identity)


async def fetch(auth, ports, name, epoch):
    reply = await round_trip(ports[name], auth[name], GetConsensus(epoch=epoch))
    assert isinstance(reply, Consensus)
    return reply


def test_three_authority_processes_publish_signed_consensus_documents(tmp_path):
    auth, ports, configs = prepare(tmp_path)
    procs = {}
    try:
        for name in NAMES:
            procs[name] = start(configs[name])
        for name in NAMES:
            wait_listening(ports[name], procs[name])
        epoch = room_to_post()
        asyncio.run(post_everywhere(auth, ports, epoch + 1))
        parameters = authority_config.load(str(configs["a1"])).parameters
        asyncio.run(session_checks(auth, ports, epoch, parameters))
        sleep_until(CLOCK.epoch_start(epoch) + 7 * PERIOD / 8 + 1.0)
        verifiers = [auth[n].identity for n in NAMES]
        served = {}
        for name in NAMES:
            reply = asyncio.run(fetch(auth, ports, name, epoch + 1))
            assert reply.error_code == 0, (name, reply.error_code, _logs(tmp_path))
            accepted = verify_consensus(reply.payload, verifiers, 2, epoch + 1)
            assert sorted(accepted.good) == sorted(verifiers)  # signed by all three
            served[name] = reply.payload
        assert len({cert.decode(raw).certified for raw in served.values()}) == 1
        assert "Consensus made for epoch %d with 3/3 signatures" % (epoch + 1) in _logs(tmp_path)
        a1_log = (tmp_path / "a1" / "authority.log").read_text()
        for counter in ("vote_too_early", "vote_not_signed", "vote_not_authorized",
                        "reveal_not_authorized"):
            assert f"{counter} refused so far: " in a1_log, counter
        summary = [line for line in a1_log.splitlines() if "Refused votes and reveals so far" in line]
        assert summary and "vote_not_signed=2" in summary[-1], summary

        assert stop_process(procs["a1"]) == 0  # restarted: the persisted document, byte for byte
        procs["a1"] = start(configs["a1"])
        wait_listening(ports["a1"], procs["a1"])
        again = asyncio.run(fetch(auth, ports, "a1", epoch + 1))
        assert again.error_code == 0 and again.payload == served["a1"]

        # A minority down: without a3, a1 and a2 publish E+2 with their two signatures.
        assert stop_process(procs["a3"]) == 0
        a2_log = tmp_path / "a2" / "authority.log"  # meanwhile a2's log is rotated (SIGHUP)
        a2_log.rename(a2_log.with_suffix(".old"))
        procs["a2"].send_signal(signal.SIGHUP)
        sleep_until(CLOCK.epoch_start(epoch + 1) + 0.1)
        asyncio.run(post_everywhere(auth, ports, epoch + 2, names=("a1", "a2")))
        sleep_until(CLOCK.epoch_start(epoch + 1) + 7 * PERIOD / 8 + 1.0)
        second = {}
        for name in ("a1", "a2"):
            reply = asyncio.run(fetch(auth, ports, name, epoch + 2))
            assert reply.error_code == 0, (name, reply.error_code, _logs(tmp_path))
            accepted = verify_consensus(reply.payload, verifiers, 2, epoch + 2)
            assert sorted(accepted.good) == sorted([auth["a1"].identity, auth["a2"].identity])
            second[name] = cert.decode(reply.payload).certified
        assert "Consensus made for epoch %d with 2/3 signatures" % (epoch + 2) in a2_log.read_text()

        # a3 comes back: at its bootstrap it fetches the current document from its peers.
        procs["a3"] = start(configs["a3"])
        wait_listening(ports["a3"], procs["a3"])
        caught_up = wait_for(lambda: served_document(auth, ports, "a3", epoch + 2), 25,
                             "a3 to fetch the document of E+2", 0.5)
        assert cert.decode(caught_up).certified == second["a1"]
    finally:
        codes = {name: stop_process(proc) for name, proc in procs.items()}
    assert codes == {name: 0 for name in NAMES}, [p.stderr.read() for p in procs.values()]


def sleep_until(unix_time):
    time.sleep(max(0.0, unix_time - CLOCK.unix_now()))


def served_document(auth, ports, name, epoch):
    reply = asyncio.run(fetch(auth, ports, name, epoch))
    return reply.payload if reply.error_code == 0 else None


def _logs(tmp_path):
    return "\n".join((tmp_path / n / "authority.log").read_text() for n in NAMES
                     if (tmp_path / n / "authority.log").exists())
