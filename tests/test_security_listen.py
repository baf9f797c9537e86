"""A node listens only on the addresses it is configured with: a mix and a provider, each with
metrics off and on (and the provider with its registration HTTP endpoint), started as real
`katzenpost -f` processes. Their TCP listening sockets are read from /proc/<pid>/net/tcp{,6}
matched with the inodes of /proc/<pid>/fd; no UDP socket is held. (The whole network with metrics
on, and the authority, are checked in test_security_network.py.)"""
import subprocess

import pytest

from node_support import console_script, free_port, private_dir, stop_process, wait_for
from security_support import bound_sockets
from katzenpost import keys

NODE_TOML = """[Server]
Identifier = "{name}"
Addresses = ["127.0.0.1:{port}"]
DataDir = "{data_dir}"
IsProvider = {is_provider}

[Logging]
File = "node.log"
Level = "INFO"

[PKI]
  [PKI.Nonvoting]
  Address = "127.0.0.1:{authority_port}"
  PublicKey = "{authority_key}"

[Debug]
EpochPeriod = 60
NumSphinxWorkers = 1
{extra}
"""
PROVIDER_EXTRA = """
[Provider]
EnableUserRegistrationHTTP = true
UserRegistrationHTTPAddresses = ["127.0.0.1:{http_port}"]
[Provider.UserDB]
Backend = "bolt"
[Provider.SpoolDB]
Backend = "bolt"
"""


@pytest.mark.parametrize("is_provider", [False, True], ids=["mix", "provider"])
@pytest.mark.parametrize("metrics", [False, True], ids=["metrics-off", "metrics-on"])
def test_a_node_listens_only_where_it_is_told(tmp_path, is_provider, metrics):
    data_dir = private_dir(tmp_path / "node")
    keys.load_or_create_identity_key(str(data_dir))
    keys.load_or_create_link_key(str(data_dir))
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    expected = {("127.0.0.1", port)}
    extra = ""
    if is_provider:
        extra += PROVIDER_EXTRA.format(http_port=http_port)
        expected.add(("127.0.0.1", http_port))
    if metrics:
        extra += f'\n[Metrics]\nAddress = "127.0.0.1:{metrics_port}"\n'
        expected.add(("127.0.0.1", metrics_port))
    config = tmp_path / "node.toml"
    # No authority listens there: the node starts anyway and retries its PKI fetches.
    config.write_text(NODE_TOML.format(name="node1", port=port, data_dir=data_dir,
                                       is_provider=str(is_provider).lower(), authority_port=free_port(),
                                       authority_key=keys.IdentityKey.generate().public.hex(), extra=extra))
    proc = subprocess.Popen([*console_script("katzenpost"), "-f", str(config)], cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = data_dir / "node.log"
    try:
        def started():
            assert proc.poll() is None, proc.stderr.read().decode()
            return log.exists() and "Node started" in log.read_text()
        wait_for(started, 60, "the node to start")
        found = wait_for(lambda: (s := bound_sockets(proc.pid))["tcp_listen"] >= expected and s, 10,
                         "every configured listener")
        assert found["tcp_listen"] == expected, found
        assert found["udp"] == set(), found
    finally:
        stop_process(proc)
