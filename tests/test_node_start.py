"""`katzenpost -f` start and halt as a process, without an authority: the start-up lines, a busy
port, a provider configuration, a damaged mix key, the stale management socket file, in-memory
mix keys, and the graceful halt on SIGINT."""
import signal
import socket
import urllib.request

import pytest

from node_support import MixNode, free_port, private_dir, wait_for
from katzenpost import keys


@pytest.fixture
def mix(tmp_path):
    data_dir = private_dir(tmp_path / "mix")
    identity, _ = keys.load_or_create_identity_key(str(data_dir))
    link, _ = keys.load_or_create_link_key(str(data_dir))
    node = MixNode("lonely", data_dir, free_port(), identity, link, tmp_path / "mix.toml")
    node.write_config(free_port(), keys.IdentityKey.generate().public, 20)
    yield node
    node.stop()


def run_to_exit(node, timeout=30):
    node.start()
    node.proc.wait(timeout)
    return node.proc.returncode


def test_a_mix_starts_logs_its_capacity_and_halts_on_sigint(mix):
    stale = mix.data_dir / "management_sock"
    stale.write_text("left over")                          # deleted at start, management disabled
    mix.start()
    wait_for(lambda: "Node started" in mix.log_text(), 30, "the node to start")
    text = mix.log_text()
    assert "unwraps ~" in text and "packets/s with 1 workers" in text
    assert "Listening on: 127.0.0.1:%d" % mix.port in text
    assert f"management socket file '{stale}' already exists, deleting it." in text
    assert not stale.exists()
    assert mix.link.private.hex() not in text.lower() and mix.identity.seed.hex() not in text.lower()
    key_files = sorted(p.name for p in mix.data_dir.glob("mixkey-*.private.pem"))
    assert len(key_files) == 3
    assert all((mix.data_dir / f).stat().st_mode & 0o777 == 0o600 for f in key_files)
    assert mix.stop(signal.SIGINT) == 0
    text = mix.log_text()
    assert text.index("Starting graceful shutdown.") < text.index("Shutdown complete.")


def test_a_busy_port_stops_the_start_with_a_clear_error(mix):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", mix.port))
        busy.listen()
        assert run_to_exit(mix) == 1
    text = mix.log_text()
    assert f"cannot listen on 127.0.0.1:{mix.port}" in text
    assert "Shutdown complete." in text                    # the full halt ran


def test_a_provider_whose_plugin_cannot_start_stops_with_a_clear_error(mix):
    missing = mix.data_dir / "no-such-plugin"
    mix.config_path.write_text(mix.config_path.read_text().replace(
        "[Server]\n", "[Server]\nIsProvider = true\n") + f"""
[Provider]
  [[Provider.CBORPluginKaetzchen]]
  Capability = "echo"
  Endpoint = "+echo"
  Command = "{missing}"
  MaxConcurrency = 1
""")
    assert run_to_exit(mix) == 1
    text = mix.log_text()
    assert str(missing) in text and "Node started" not in text
    assert "Shutdown complete." in text                    # the full halt ran


def test_a_damaged_mix_key_stops_the_start(mix):
    assert run_to_exit_after_start(mix) == 0
    victim = sorted(mix.data_dir.glob("mixkey-*.private.pem"))[0]
    victim.write_text("garbage")
    assert run_to_exit(mix) == 1
    assert "Failed to initialize mix keys" in mix.log_text()


def run_to_exit_after_start(node):
    node.start()
    wait_for(lambda: "Node started" in node.log_text(), 30, "the node to start")
    return node.stop()


def test_in_memory_mix_keys_leave_no_files(mix):
    mix.extra_debug = "MixKeysInMemory = true"
    mix.write_config(free_port(), keys.IdentityKey.generate().public, 20)
    assert run_to_exit_after_start(mix) == 0
    assert not list(mix.data_dir.glob("mixkey-*")) and not list(mix.data_dir.glob("replay-*"))


def test_metrics_endpoint_serves_the_node(mix):
    port = free_port()
    mix.config_path.write_text(mix.config_path.read_text() + f'\n[Metrics]\nAddress = "127.0.0.1:{port}"\n')
    mix.start()
    wait_for(lambda: "Node started" in mix.log_text(), 30, "the node to start")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    assert 'katzenpost_info{identifier="lonely",role="mix"} 1.0' in body
    assert "katzenpost_epoch" in body
    assert mix.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_halts_cleanly(mix, sig):
    """A signal between the banner and the event loop (keys, imports) is remembered by the CLI and
    honoured when the runtime takes over: exit 0, no traceback, no half-written key files."""
    mix.start()
    wait_for(lambda: "Katzenpost is still pre-alpha" in mix.log_text(), 30, "the banner",
             interval=0.002)
    mix.proc.send_signal(sig)
    mix.proc.wait(30)
    stderr = mix.proc.stderr.read().decode()
    assert mix.proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    text = mix.log_text()
    assert "during start-up: not starting." in text or "Shutdown complete." in text
