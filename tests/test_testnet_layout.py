"""The testnet's written network without starting it: every file loads with its program's own
loader, keys and configurations are private, ports are distinct, the plan survives a reload,
a broken file is reported, and the live view and report render."""
import json
import os

import pytest
import toml
from rich.console import Console

from katzenpost import config as node_config
from katzenpost.authority import config as authority_config
from katzenpost.client import cli as client_cli
from katzenpost.client.load import TrafficStats, percentile
from katzenpost.testnet import layout, monitor, view
from katzenpost.testnet.cli import build_parser, main


@pytest.fixture
def plan(tmp_path):
    plan = layout.write_network(str(tmp_path / "net"), epoch_period=15)
    plan.reservation.release()
    return plan


def test_every_file_loads_with_its_programs_loader(plan):
    authority = authority_config.load(plan.authority_config)
    assert authority.epoch_period == 15 and authority.debug.layers == 3 and authority.debug.min_nodes_per_layer == 1
    assert {p.identifier for p in authority.providers} == {"provider1", "provider2"}
    assert {m.identity_key.hex() for m in authority.mixes} == {m.identity_key for m in plan.mixes}
    for node in plan.nodes:
        cfg = node_config.load_file(node.config_path)
        assert cfg.server.is_provider == node.is_provider and cfg.epoch_period == 15
        assert cfg.debug.unwrap_delay == cfg.debug.scheduler_slack == 1000
    provider = toml.load(plan.providers[0].config_path)["Provider"]
    assert [k["Capability"] for k in provider["Kaetzchen"]] == ["echo", "keyserver", "loop"]
    for user in plan.users:
        args = client_cli.build_parser().parse_args(["-c", user.client_config, "retrieve"])
        settings = client_cli.settings_from(args)
        assert settings.user == user.name and settings.epoch_period == 15
        assert settings.link_key.public.hex() == user.link_key


def test_files_are_private_and_ports_distinct(plan):
    for path in [plan.authority_config, os.path.join(plan.root, layout.PLAN_FILE),
                 *(n.config_path for n in plan.nodes), *(u.client_config for u in plan.users)]:
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    for directory in [plan.root, plan.authority_dir, *(n.data_dir for n in plan.nodes), *(u.data_dir for u in plan.users)]:
        assert os.stat(directory).st_mode & 0o777 == 0o700, directory
    ports = [plan.authority_port] + [p for n in plan.nodes for p in (n.port, n.metrics_port)]
    assert len(set(ports)) == len(ports)
    assert all(len(n.management_path) < 100 for n in plan.nodes)      # UNIX socket path limit


def test_plan_reload_and_rewrite_keep_the_keys(plan):
    again = layout.Plan.load(plan.root)
    assert again == plan
    rewritten = layout.write_network(plan.root, epoch_period=20, strict_timing=True)
    rewritten.reservation.release()
    assert [n.identity_key for n in rewritten.nodes] == [n.identity_key for n in plan.nodes]
    assert rewritten.authority_key == plan.authority_key
    assert node_config.load_file(rewritten.mixes[0].config_path).debug.unwrap_delay == 10
    with pytest.raises(layout.LayoutError, match="no test network"):
        layout.Plan.load(os.path.join(plan.root, "nowhere"))
    with open(os.path.join(plan.root, layout.PLAN_FILE), "w") as f:
        f.write("{")
    with pytest.raises(layout.LayoutError, match="is damaged"):
        layout.Plan.load(plan.root)


def test_a_file_its_program_refuses_is_reported(plan):
    with open(plan.mixes[0].config_path, "a") as f:
        f.write("\n[Colour]\nName = 'blue'\n")
    with pytest.raises(layout.LayoutError, match="Undecoded keys"):
        layout.read_back(plan)


def test_bad_options_exit_2(capsys):
    for argv in (["--rate", "0"], ["--epoch-period", "5"], ["--restart", "mix9@3"], ["--restart", "mix1"],
                 ["--duration", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 2
    assert main(["--stop"]) == 2
    assert "needs --dir" in capsys.readouterr().err


def test_stop_on_a_directory_without_a_network(tmp_path, capsys):
    assert main(["--stop", "--dir", str(tmp_path)]) == 2
    assert "no test network in" in capsys.readouterr().err


def test_node_view_rates_and_restart():
    node = monitor.NodeView("mix1", "mix")
    node.update({"packets": {"received": 100, "sent": 90}, "epoch": 7, "peers": {"up": 1, "known": 1},
                 "drops": {"replay": 2}, "mix_keys": [6, 7, 8]}, now=10.0)
    assert node.rate_in == 0.0 and node.up and node.dropped == 2
    node.update({"packets": {"received": 150, "sent": 140}}, now=12.0)
    assert node.rate_in == 25.0 and node.rate_out == 25.0
    node.update({"packets": {"received": 3, "sent": 3}}, now=13.0)   # restarted: counters from 0
    assert node.rate_in == 0.0
    node.down()
    assert not node.up
    node.update({"packets": {}, "drops": {"replay": 2, "send_slack": 1}}, now=14.0)
    node.mark_baseline()
    node.update({"packets": {}, "drops": {"replay": 5, "send_slack": 1, "no_route": 1}}, now=15.0)
    assert node.drops_since_baseline() == {"replay": 3, "no_route": 1}
    node.update({"packets": {}, "drops": {"no_route": 2}}, now=16.0)     # restarted: from zero
    assert node.drops_since_baseline() == {"no_route": 2}
    assert node.as_dict()["drops"] == {"no_route": 2}


def test_live_view_and_report_render():
    stats = TrafficStats()
    stats.kind("message").sent = 3
    stats.kind("message").delivered = 2
    stats.kind("message").lost = 1
    stats.kind("message").latencies += [0.5, 0.7]
    views = {"mix1": monitor.NodeView("mix1", "mix")}
    console = Console(record=True, width=160, force_terminal=True)
    console.print(view.live_view(stats, views, "header"))
    text = console.export_text()
    assert "message" in text and "500 ms" in text and "mix1" in text and "down" in text and "in/s" in text
    report = view.report_dict(stats, views, settings={}, epochs=[1, 2], restarts=[], acked=2,
                              acked_not_retrieved=0, duplicates=0, errors={"x": 1})
    json.dumps(report)
    rendered = view.report_text(report)
    assert "sent 3, delivered 2, lost 1" in rendered and "p50 500 ms" in rendered and "epochs during traffic: 1, 2" in rendered
    assert percentile([], 0.5) is None and percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
