"""The node's provider role without processes: what it does at epoch changes, its callables
before the pipeline or the PKI worker exist, its STATUS section and its halt."""
import asyncio
from types import SimpleNamespace

from katzenpost.server.provider_role import ProviderRole
from katzenpost.wire.commands import ConsensusStatus
from provider_support import provider_config


class FakeNode(SimpleNamespace):
    """The node members the role reads: config, pipeline, pki (both None until started)."""


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


def role_for(tmp_path):
    node = FakeNode(config=provider_config(tmp_path), pipeline=None, pki=None)
    return node, ProviderRole(node)


def test_the_document_rate_is_taken_only_when_it_changes(tmp_path):
    async def scenario():
        node, role = role_for(tmp_path)
        rate = role.provider.rate
        role.on_epoch_change(SimpleNamespace(send_rate_per_minute=60))
        assert rate.send_rate_per_minute == 60
        role.provider.set_send_rate(5)                     # SEND_RATE from the operator
        role.on_epoch_change(SimpleNamespace(send_rate_per_minute=60))
        assert rate.send_rate_per_minute == 5              # the same document rate: it stands
        role.on_epoch_change(SimpleNamespace(send_rate_per_minute=0))
        assert rate.send_rate_per_minute == 0
        await role.halt()
    asyncio.run(scenario())


def test_callables_before_the_pipeline_and_the_pki_exist(tmp_path):
    node, role = role_for(tmp_path)
    assert role._raw_consensus(7) == (ConsensusStatus.NOT_FOUND, b"")
    role._schedule([b"x"], [1], [b"\0" * 32])              # no pipeline yet: dropped, no crash
    node.pki = SimpleNamespace(get_raw_consensus=lambda epoch: (ConsensusStatus.OK, b"doc%d" % epoch))
    node.pipeline = Recorder()
    assert role._raw_consensus(7) == (ConsensusStatus.OK, b"doc7")
    role._schedule("packets", "delays", "ids")
    role.attach(node.pipeline)
    assert node.pipeline.calls[0] == ("schedule", ("packets", "delays", "ids"))
    assert node.pipeline.calls[1][0] == "set_kaetzchen_endpoints"


def test_status_and_a_halt_with_epoch_work_pending(tmp_path):
    async def scenario():
        node, role = role_for(tmp_path)
        await role.start()
        role.provider.drops["unknown_recipient"] += 2
        role.provider.kaetzchen.replies += 3
        assert role.status() == {"stored": 0, "surb_acks": 0, "clients": 0, "kaetzchen_replies": 3,
                                 "drops": {"unknown_recipient": 2}}
        role.on_epoch_change(SimpleNamespace(send_rate_per_minute=10))   # vacuum + plugins task
        await role.halt()
        assert not role._tasks
        await role.halt()                                  # idempotent
    asyncio.run(scenario())
