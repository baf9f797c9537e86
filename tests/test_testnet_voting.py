"""`katzenpost-testnet --authorities N`: the voting network's files (every one read back by its
program's loader), the options that go with it, and the refusals. The network running is
tests/test_voting_e2e.py."""
import base64

import pytest

from katzenpost import config as node_config
from katzenpost.authority import config as authority_config
from katzenpost.client import cli as client_cli
from katzenpost.testnet import layout
from katzenpost.testnet.cli import keep_instructions, parse_args


@pytest.fixture
def voting_plan(tmp_path):
    plan = layout.write_network(str(tmp_path / "net"), epoch_period=15, authorities=3)
    plan.reservation.release()
    return plan


def test_three_voting_authorities_know_each_other_and_the_nodes_trust_all_three(voting_plan):
    plan = voting_plan
    assert [a.name for a in plan.authorities] == ["auth1", "auth2", "auth3"] and plan.voting
    identities = {bytes.fromhex(a.identity_key) for a in plan.authorities}
    links = {bytes.fromhex(a.link_key) for a in plan.authorities}
    assert len(identities) == len(links) == 3
    for authority in plan.authorities:
        cfg = authority_config.load(authority.config_path)
        assert cfg.is_voting and cfg.epoch_period == 15
        peers = {(p.identity_public_key, p.link_public_key) for p in cfg.authorities}
        me = (bytes.fromhex(authority.identity_key), bytes.fromhex(authority.link_key))
        assert len(peers) == 2 and me not in peers
        assert {m.identity_key.hex() for m in cfg.mixes} == {m.identity_key for m in plan.mixes}
    for node in plan.nodes:
        cfg = node_config.load_file(node.config_path)
        assert cfg.pki.nonvoting is None
        voting = cfg.pki.voting.peers
        assert {p.identity_public_key for p in voting} == identities
        assert {p.link_public_key for p in voting} == links
        assert sorted(a for p in voting for a in p.addresses) == sorted(a.address for a in plan.authorities)
    for user in plan.users:
        values = client_cli.read_config_file(user.client_config)
        assert {bytes.fromhex(k) for k in values[("Authority", "PublicKeys")]} == identities
    assert layout.Plan.load(plan.root) == plan


def test_the_link_key_in_the_node_config_is_the_one_the_authority_holds(voting_plan):
    from katzenpost import keys
    for authority in voting_plan.authorities:
        held = keys.load_link_key(authority.data_dir).public
        assert held.hex() == authority.link_key
        assert authority.peer_entry()["LinkPublicKey"] == base64.b64encode(held).decode()


def test_rewriting_keeps_every_authority_key(voting_plan):
    again = layout.write_network(voting_plan.root, epoch_period=15, authorities=3)
    again.reservation.release()
    assert [(a.identity_key, a.link_key) for a in again.authorities] == \
        [(a.identity_key, a.link_key) for a in voting_plan.authorities]


def test_one_authority_is_the_non_voting_network_as_before(tmp_path):
    plan = layout.write_network(str(tmp_path / "net"), epoch_period=15)
    plan.reservation.release()
    assert [a.name for a in plan.authorities] == ["authority"] and not plan.voting
    assert not authority_config.load(plan.authority_config).is_voting
    assert node_config.load_file(plan.mixes[0].config_path).pki.nonvoting.public_key.hex() == plan.authority_key
    assert len(plan.reservation.held) == 0 and layout.ports_needed(1) == 1 + 2 * 5


@pytest.mark.parametrize("count, message", [
    (2, "2 authorities cannot vote usefully"),
    (0, r"must be 1 \(non-voting\) or 3 to 9"),
    (10, r"must be 1 \(non-voting\) or 3 to 9"),
])
def test_unusable_authority_counts_are_refused(tmp_path, count, message):
    with pytest.raises(layout.LayoutError, match=message):
        layout.write_network(str(tmp_path / "net"), epoch_period=15, authorities=count)
    assert not (tmp_path / "net").exists()


def test_options(capsys):
    assert parse_args(["--authorities", "3", "--restart", "auth2@5"]).authorities == 3
    assert parse_args([]).authorities == 1
    for argv, message in [(["--authorities", "2"], "2 authorities cannot vote usefully"),
                          (["--authorities", "3", "--restart", "authority@5"], "auth1, auth2, auth3"),
                          (["--restart", "auth1@5"], "this network's authorities are authority"),
                          (["--authorities", "3", "--restart", "auth4@5"], "auth1, auth2, auth3"),
                          (["--authorities", "12"], "--authorities")]:
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, argv


def test_keep_instructions_list_every_authority(voting_plan):
    text = keep_instructions(voting_plan)
    for authority in voting_plan.authorities:
        assert f"{authority.name}" in text and authority.identity_key in text and authority.link_key in text
