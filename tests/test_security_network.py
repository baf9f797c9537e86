"""Security checks on a whole running network (`katzenpost-testnet --keep`, every process at
INFO, real client traffic with client authentication at the providers):

- no secret any key file holds (identity, link and mix private keys of the nodes and the
  authority, the users' link and identity keys, and what derives from them) appears in any log,
  the testnet's output, STATUS or the metrics, in hex, base64 or bytes-repr form — and, as the
  control that the search works, the public keys the start banners print are found;
- key files and every other file in a DataDir are 0600, DataDirs 0700, the management sockets
  0600 (the provider's user and spool databases included);
- each process listens only on its configured addresses (node: its address and its metrics
  port; authority: its address), and holds no UDP socket.
"""
import json
import os
import pathlib
import socket
import stat
import urllib.request

import pytest

from security_support import bound_sockets, forms, leaks, secrets_under
from testnet_support import plan, run_testnet, stop_leftovers

DURATION = 6
RATE = 5


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    root = tmp_path_factory.mktemp("tn-security")
    try:
        proc = run_testnet(root, "--keep", "--duration", str(DURATION), "--rate", str(RATE),
                           "--log-level", "INFO")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        yield root, proc, plan(root)
    finally:
        stop_leftovers(root)


def nodes(p: dict) -> list[dict]:
    return p["mixes"] + p["providers"]


def management(path: str, line: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        stream = sock.makefile("rwb")
        stream.readline()
        stream.write(line.encode() + b"\r\n")
        stream.flush()
        return stream.readline().decode()


def test_no_secret_in_logs_output_status_or_metrics(network):
    root, proc, p = network
    secrets = secrets_under(root)
    assert len(secrets) >= 5 * 3 + 2 * 2, sorted(secrets)      # every node's and user's keys
    texts = {str(path): path.read_text(errors="replace") for path in root.rglob("*.log")}
    texts["testnet stdout"], texts["testnet stderr"] = proc.stdout, proc.stderr
    for node in nodes(p):
        texts[f"{node['name']} STATUS"] = management(os.path.join(node["data_dir"], "management_sock"), "STATUS")
        url = f"http://127.0.0.1:{node['metrics_port']}/metrics"
        texts[f"{node['name']} metrics"] = urllib.request.urlopen(url, timeout=10).read().decode()
    levels = {line.split()[1] for path, text in texts.items() if path.endswith(".log")
              for line in text.splitlines() if line[:1].isdigit() and len(line.split()) > 1}
    assert "INFO" in levels and "DEBU" not in levels, levels
    assert any("Stored the PKI document" in t for t in texts.values())   # traffic-time lines logged

    assert leaks(texts, secrets) == []
    # Control: the identity public keys the banners print are found by the same search.
    public = {n["name"]: bytes.fromhex(n["identity_key"]) for n in nodes(p)}
    assert len(leaks(texts, public)) >= len(public)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_key_files_data_dirs_databases_and_sockets_are_private(network):
    root, _, p = network
    data_dirs = [pathlib.Path(n["data_dir"]) for n in nodes(p) + p["authorities"]]
    data_dirs += [pathlib.Path(u["data_dir"]) for u in p["users"]]
    wrong = []
    for data_dir in data_dirs:
        if mode(data_dir) != 0o700:
            wrong.append(f"{data_dir}: {oct(mode(data_dir))}")
        for path in data_dir.rglob("*"):
            if mode(path) & 0o077:
                wrong.append(f"{path}: {oct(mode(path))}")
    keys = list(root.rglob("*.private.pem"))
    sockets = [pathlib.Path(n["data_dir"]) / "management_sock" for n in nodes(p)]
    databases = [d / f"{name}.db" for d in data_dirs if (d / "users.db").exists() for name in ("users", "spool")]
    assert len(keys) >= 5 * 3 + 1 + 2 * 2 and len(databases) == 4, (keys, databases)
    for path in keys + databases:
        if mode(path) != 0o600:
            wrong.append(f"{path}: {oct(mode(path))}")
    for path in sockets:
        assert stat.S_ISSOCK(os.lstat(path).st_mode), path
        if mode(path) != 0o600:
            wrong.append(f"{path}: {oct(mode(path))}")
    if mode(root / "clients") != 0o700:
        wrong.append(f"{root / 'clients'}: {oct(mode(root / 'clients'))}")
    assert wrong == []


def test_every_process_listens_only_on_its_configured_addresses(network):
    _, _, p = network
    expected = {a["name"]: {("127.0.0.1", a["port"])} for a in p["authorities"]}
    for node in nodes(p):
        expected[node["name"]] = {("127.0.0.1", node["port"]), ("127.0.0.1", node["metrics_port"])}
    assert set(p["pids"]) == set(expected), p["pids"]
    for name, pid in p["pids"].items():
        found = bound_sockets(pid)
        assert found["tcp_listen"] == expected[name], (name, found)
        assert found["udp"] == set(), (name, found)


def test_the_forms_cover_what_a_log_line_could_carry():
    secret = bytes(range(32))
    found = forms(secret)
    assert secret.hex() in found and secret.hex().upper() in found
    assert "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" in found
    assert any(f.startswith("\\x00\\x01\\x02") for f in found)            # bytes repr
    assert leaks({"a log": f"key={secret.hex().upper()}"}, {"k": secret}) == ["k in a log"]
    assert leaks({"a log": json.dumps({"x": 1})}, {"k": secret}) == []
