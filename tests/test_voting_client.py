"""The node's voting PKI client (katzenpost/pki/voting_client.py) against fake voting authorities
on 127.0.0.1: the majority rule for documents, fail-over between authorities, posts to every
authority with retries of the unreached ones only, and bad replies."""
import asyncio
import logging
import time

import pytest

from _pki_fixtures import CLOCK, make_descriptor, node_self, seed_for, MemoryMixKeys
from katzenpost.pki.client import (
    AuthorityUnreachableError,
    DocumentGoneError,
    DocumentNotFoundError,
    InvalidDocumentError,
    PostConflictError,
    PostRejectedError,
)
from katzenpost.pki.voting_client import (
    ConsensusThresholdError,
    VotingAuthority,
    VotingClient,
    verify_consensus,
)
from katzenpost.pki.worker import PKIWorker
from katzenpost.wire.commands import ConsensusStatus, DescriptorStatus, PostDescriptorStatus
from voting_node_support import FakeAuthority, fake_authorities, signed_consensus, voting_client


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def serve(fakes, epoch, raw, status=ConsensusStatus.OK):
    for fake in fakes:
        fake.consensus[epoch] = (status, raw)


def refusals(caplog):
    return [r for r in caplog.records if r.getMessage().startswith("Refused the consensus")]


@pytest.mark.parametrize("n,threshold", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_threshold_is_a_simple_majority(n, threshold):
    fakes = [FakeAuthority(f"a{i}").authority(1) for i in range(n)]
    assert VotingClient(fakes).threshold == threshold


def test_a_document_signed_by_all_three_is_accepted():
    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            serve(fakes, epoch, signed_consensus(epoch, now, fakes))
            doc = await voting_client(fakes).get_document(epoch, now)
            assert doc.epoch == epoch and len(doc.topology) == 3
            assert sum(len(f.gets) for f in fakes) == 1      # the first authority asked had it
    run(scenario())


def test_one_signature_of_three_is_refused_with_one_log_line_per_authority(caplog):
    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            serve(fakes, epoch, signed_consensus(epoch, now, fakes[:1]))
            with pytest.raises(InvalidDocumentError) as caught:
                await voting_client(fakes).get_document(epoch, now)
            assert "refused" in str(caught.value)
            assert all(f.gets == [epoch] for f in fakes)     # every authority was tried
    caplog.set_level(logging.WARNING, "katzenpost.pki")
    run(scenario())
    lines = refusals(caplog)
    assert len(lines) == 3
    assert all("1 of 3 authorities' signatures are valid, 2 required" in r.getMessage() for r in lines)


def test_two_of_three_signatures_are_enough_and_unknown_signers_do_not_count():
    now = time.time()
    epoch = CLOCK.epoch_at(now)[0]
    fakes = [FakeAuthority(f"a{i}") for i in range(3)]
    strangers = [seed_for("stranger-1"), seed_for("stranger-2")]
    verifiers = [f.identity for f in fakes]
    two = signed_consensus(epoch, now, fakes[1:])
    assert verify_consensus(two, verifiers, epoch, now).epoch == epoch
    one_and_strangers = signed_consensus(epoch, now, [fakes[0], *strangers])
    with pytest.raises(ConsensusThresholdError, match="1 of 3"):
        verify_consensus(one_and_strangers, verifiers, epoch, now)
    with pytest.raises(InvalidDocumentError, match="for epoch"):
        verify_consensus(two, verifiers, epoch + 1, now)        # the document is for `epoch`
    with pytest.raises(InvalidDocumentError):
        verify_consensus(b"\xa0garbage", verifiers, epoch, now)


def test_a_forged_signature_does_not_count():
    now = time.time()
    epoch = CLOCK.epoch_at(now)[0]
    fakes = [FakeAuthority(f"a{i}") for i in range(3)]
    raw = bytearray(signed_consensus(epoch, now, fakes[:2]))
    raw[-5] ^= 1                                  # inside the last signature's payload
    with pytest.raises(ConsensusThresholdError, match="1 of 3"):
        verify_consensus(bytes(raw), [f.identity for f in fakes], epoch, now)


def test_an_authority_down_or_serving_a_bad_document_is_skipped(caplog):
    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            good = signed_consensus(epoch, now, fakes)
            fakes[0].consensus[epoch] = (ConsensusStatus.OK, signed_consensus(epoch, now, fakes[:1]))
            fakes[1].consensus[epoch] = (ConsensusStatus.OK, good)
            await fakes[2].stop()
            client = voting_client(fakes)
            for _ in range(8):                          # the order is random: every order works
                assert (await client.get_document(epoch, now)).epoch == epoch
    caplog.set_level(logging.WARNING, "katzenpost.pki")
    run(scenario())


def test_bad_replies_are_errors_never_crashes():
    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            fakes[0].answer = PostDescriptorStatus(error_code=0)        # wrong command
            fakes[1].consensus[epoch] = (ConsensusStatus.OK, b"not a certificate")
            fakes[2].consensus[epoch] = (7, b"")                        # unknown status
            with pytest.raises(InvalidDocumentError):
                await voting_client(fakes).get_document(epoch, now)
    run(scenario())


def test_an_authority_with_another_link_key_is_not_trusted():
    async def scenario():
        async with fake_authorities(1) as [fake]:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            serve([fake], epoch, signed_consensus(epoch, now, [fake]))
            wrong = VotingAuthority(fake.identity, bytes(32), (("127.0.0.1", fake.port),))
            client = VotingClient([wrong], clock=CLOCK, connect_timeout=3, handshake_timeout=3)
            with pytest.raises(AuthorityUnreachableError):
                await client.get_document(epoch, now)
            assert fake.gets == []                     # the command was never sent
    run(scenario())


def test_gone_needs_a_majority_and_is_never_final_for_the_next_epoch():
    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            client = voting_client(fakes)
            serve(fakes[:1], epoch, b"", ConsensusStatus.GONE)
            with pytest.raises(DocumentNotFoundError):              # 1 Gone, 2 NotFound
                await client.get_document(epoch, now)
            serve(fakes[1:], epoch, b"", ConsensusStatus.GONE)
            with pytest.raises(DocumentGoneError):
                await client.get_document(epoch, now)
            # A voting authority still combining signatures may answer Gone for the next epoch.
            serve(fakes, epoch + 1, b"", ConsensusStatus.GONE)
            with pytest.raises(DocumentNotFoundError):
                await client.get_document(epoch + 1, now)
            await fakes[2].stop()
            serve(fakes[:2], epoch - 1, b"", ConsensusStatus.GONE)
            with pytest.raises(DocumentGoneError):                  # 2 of 3 is a majority
                await client.get_document(epoch - 1, now)
    run(scenario())


def test_all_authorities_down_is_a_retryable_error():
    async def scenario():
        async with fake_authorities() as fakes:
            for fake in fakes:
                await fake.stop()
            with pytest.raises(AuthorityUnreachableError) as caught:
                await voting_client(fakes).get_document(CLOCK.current())
            assert caught.value.retryable
    run(scenario())


def test_a_second_address_is_tried_when_the_first_is_down():
    async def scenario():
        async with fake_authorities(1) as [fake]:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            serve([fake], epoch, signed_consensus(epoch, now, [fake]))
            dead = FakeAuthority("dead")
            await dead.start()
            dead_port = dead.port
            await dead.stop()
            both = VotingAuthority(fake.identity, fake.link_public,
                                   (("127.0.0.1", dead_port), ("127.0.0.1", fake.port)))
            client = VotingClient([both], clock=CLOCK, connect_timeout=3)
            for _ in range(4):
                assert (await client.get_document(epoch, now)).epoch == epoch
    run(scenario())


# --- posting ---------------------------------------------------------------------------------

def descriptor(epoch):
    return make_descriptor("mix0", epoch)


def test_post_reaches_every_authority_with_the_node_identity():
    async def scenario():
        async with fake_authorities() as fakes:
            epoch = CLOCK.current()
            await voting_client(fakes).post_descriptor(epoch, seed_for("mix0"), descriptor(epoch))
            raws = {raw for f in fakes for _, raw, _ in f.posts}
            assert len(raws) == 1                                   # signed once
            assert all(f.posts[0][2] == descriptor(epoch).identity_key for f in fakes)
    run(scenario())


def test_one_authority_down_then_back_gets_the_same_bytes_and_only_it_is_retried(caplog):
    async def scenario():
        async with fake_authorities() as fakes:
            epoch = CLOCK.current()
            client = voting_client(fakes)
            port = fakes[2].port
            await fakes[2].stop()
            for _ in range(2):                  # warned about once, then at DEBUG
                with pytest.raises(AuthorityUnreachableError, match="accepted by 2 of 3"):
                    await client.post_descriptor(epoch, seed_for("mix0"), descriptor(epoch))
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
            await fakes[2].start(port)
            await client.post_descriptor(epoch, seed_for("mix0"), descriptor(epoch), time.time() + 2)
            assert [len(f.posts) for f in fakes] == [1, 1, 1]
            assert fakes[2].posts[0][1] == fakes[0].posts[0][1]
    caplog.set_level(logging.DEBUG, "katzenpost.pki")
    run(scenario())


def test_post_with_every_authority_down_is_retryable():
    async def scenario():
        async with fake_authorities() as fakes:
            for fake in fakes:
                await fake.stop()
            epoch = CLOCK.current()
            with pytest.raises(AuthorityUnreachableError, match="accepted by 0 of 3") as caught:
                await voting_client(fakes).post_descriptor(epoch, seed_for("mix0"), descriptor(epoch))
            assert caught.value.retryable
    run(scenario())


def test_refusals_are_logged_per_authority_and_settle_the_post(caplog):
    async def scenario():
        async with fake_authorities() as fakes:
            epoch = CLOCK.current()
            fakes[1].post_status = DescriptorStatus.CONFLICT
            client = voting_client(fakes)
            with pytest.raises(PostConflictError, match="1 of 3"):
                await client.post_descriptor(epoch, seed_for("mix0"), descriptor(epoch))
            fakes[2].post_status = DescriptorStatus.FORBIDDEN
            with pytest.raises(PostRejectedError, match="2 of 3"):   # Conflict + Forbidden
                await client.post_descriptor(epoch + 1, seed_for("mix0"), descriptor(epoch + 1))
            with pytest.raises(PostConflictError):                 # settled: nobody is asked again
                await client.post_descriptor(epoch, seed_for("mix0"), descriptor(epoch))
            assert [len(f.posts) for f in fakes] == [2, 2, 2]
            fakes[0].answer = fakes[1].answer = fakes[2].answer = PostDescriptorStatus(error_code=9)
            with pytest.raises(PostRejectedError, match="3 of 3"):
                await client.post_descriptor(epoch - 1, seed_for("mix0"), descriptor(epoch - 1))
    caplog.set_level(logging.WARNING, "katzenpost.pki")
    run(scenario())
    names = [FakeAuthority(f"a{i}").authority(1).name for i in range(3)]
    messages = [r.getMessage() for r in caplog.records]
    assert any(names[1] in m and "conflicts" in m for m in messages)
    assert any(names[2] in m and "Forbidden" in m for m in messages)


def test_a_malformed_descriptor_is_refused_before_any_connection():
    async def scenario():
        async with fake_authorities() as fakes:
            epoch = CLOCK.current()
            with pytest.raises(ValueError):
                await voting_client(fakes).post_descriptor(epoch, seed_for("mix0"), descriptor(epoch + 5))
            assert all(not f.posts for f in fakes)
    run(scenario())


def test_zero_authorities_or_addresses_are_refused():
    with pytest.raises(ValueError, match="zero authorities"):
        VotingClient([])
    with pytest.raises(ValueError, match="without addresses"):
        VotingClient([VotingAuthority(bytes(32), bytes(32), ())])


def test_log_lines_name_authorities_by_key_and_addresses_only_at_debug(caplog):
    async def scenario():
        async with fake_authorities() as fakes:
            await fakes[0].stop()
            epoch = CLOCK.current()
            client = voting_client(fakes)
            with pytest.raises(AuthorityUnreachableError):
                await client.post_descriptor(epoch, seed_for("mix0"), descriptor(epoch))
            with pytest.raises(DocumentNotFoundError) as caught:
                await client.get_document(epoch)
            assert "127.0.0.1" not in str(caught.value)
            return fakes[0].authority().name
    caplog.set_level(logging.DEBUG, "katzenpost.pki")
    name = run(scenario())
    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert any(name in m and "unreachable" in m for m in above_debug)
    assert not any("127.0.0.1" in m for m in above_debug)
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


# --- the PKI worker with the voting client ---------------------------------------------------

def test_the_pki_worker_posts_and_stores_a_majority_signed_document():
    async def scenario():
        async with fake_authorities() as fakes:
            now = time.time()
            epoch = CLOCK.epoch_at(now)[0]
            node = node_self("mix0-0", port=31000)     # a mix listed in make_document's layer 0
            serve(fakes, epoch, signed_consensus(epoch, now, fakes[1:]))
            worker = PKIWorker(node, voting_client(fakes), MemoryMixKeys("mix0-0"), CLOCK)
            await worker.tick(now)
            assert epoch in worker.documents
            assert all({e for e, _, _ in f.posts} == {epoch, epoch + 1} for f in fakes)
    run(scenario())
