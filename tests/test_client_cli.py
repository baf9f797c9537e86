"""`katzenpost-client` without a network: every kind of bad input gets one clear line and exit
status 2 (1 when the network is at fault), never a traceback; `genkey` writes a private key
file 0600 in a 0700 directory. The commands against a live network are in test_testnet.py."""
import os
import subprocess
import sys

import pytest

from katzenpost import keys
from katzenpost.client import cli

AUTH = "aa" * 32
PROV = "bb" * 32


def run_cli(*args, stdin=b""):
    proc = subprocess.run([sys.executable, "-m", "katzenpost.client.cli", *args], input=stdin,
                          capture_output=True, timeout=60)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def config(tmp_path, body: str) -> str:
    path = tmp_path / "client.toml"
    path.write_text(body)
    return str(path)


def full_config(tmp_path, **changes) -> str:
    values = {"User": '"alice"', "DataDir": f'"{tmp_path / "alice"}"', "Name": '"provider1"',
              "Address": '"127.0.0.1:1"', "IdentityKey": f'"{PROV}"', "PublicKey": f'"{AUTH}"'}
    values.update(changes)
    return config(tmp_path, f"""[Client]
User = {values['User']}
DataDir = {values['DataDir']}
[Provider]
Name = {values['Name']}
Address = {values['Address']}
IdentityKey = {values['IdentityKey']}
[Authority]
PublicKey = {values['PublicKey']}
""")


def test_genkey_writes_a_private_key_and_prints_the_registration_line(tmp_path):
    code, out, err = run_cli("--user", "alice", "--data-dir", str(tmp_path / "alice"), "genkey")
    assert code == 0, err
    key = keys.load_link_key(str(tmp_path / "alice"))
    assert f"ADD_USER alice {key.public.hex()}" in out
    assert os.stat(tmp_path / "alice").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "alice" / keys.LINK_PRIVATE_FILE).st_mode & 0o777 == 0o600
    code, again, _ = run_cli("--user", "alice", "--data-dir", str(tmp_path / "alice"), "genkey")
    assert code == 0 and again == out               # loaded, never overwritten


@pytest.mark.parametrize("args, message", [
    (["send", "bob"], "missing --user, --data-dir, --provider, --provider-address, --provider-key, --authority-key"),
    (["-c", "/nonexistent/client.toml", "send", "bob"], "cannot read '/nonexistent/client.toml'"),
    (["genkey"], "missing --data-dir"),
])
def test_missing_settings(args, message):
    code, out, err = run_cli(*args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_configuration_files(tmp_path):
    cases = [
        ("[Client]\nUser = \n", "is not valid TOML"),
        ("[Client]\nColour = 'blue'\n[Nonsense]\nx = 1\n", "unknown key Client.Colour; unknown section [Nonsense]"),
        ("[Client]\nUser = 5\n", "Client.User has the wrong type (int)"),
    ]
    for body, message in cases:
        code, _, err = run_cli("-c", config(tmp_path, body), "send", "bob", "hi")
        assert code == 2 and message in err and "Traceback" not in err, (body, err)


def test_bad_values(tmp_path):
    run_cli("--data-dir", str(tmp_path / "alice"), "genkey")
    cases = [
        ({"Address": '"127.0.0.1"'}, "provider address '127.0.0.1': missing port in address"),
        ({"Address": '"127.0.0.1:99999"'}, "expected HOST:PORT with a port 1-65535"),
        ({"IdentityKey": '"zz"'}, "provider key 'zz' is neither hex nor base64"),
        ({"PublicKey": '"abcd"'}, "authority key must be 32 bytes, got 2"),
        ({"DataDir": f'"{tmp_path / "nobody"}"'}, "link key in"),
        ({"User": '""'}, "missing --user"),
    ]
    for change, message in cases:
        code, _, err = run_cli("-c", full_config(tmp_path, **change), "send", "bob", "hi")
        assert code == 2 and message in err and "Traceback" not in err, (change, err)


def test_bad_arguments(tmp_path):
    run_cli("--data-dir", str(tmp_path / "alice"), "genkey")
    path = full_config(tmp_path)
    for args, message in [
        (["send", "bob@", "hi"], "'bob@': expected NAME or NAME@PROVIDER"),
        (["send", "b" * 65, "hi"], "is longer than 64 bytes"),
        (["send", "bob", "x" * 1491], "over 1490 bytes"),
        (["load", "--rate", "0", "--duration", "1"], "must be > 0"),
        (["load", "--rate", "x", "--duration", "1"], "not a number"),
        (["frobnicate"], "invalid choice"),
    ]:
        code, _, err = run_cli("-c", path, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


def test_a_long_message_on_standard_input_is_refused(tmp_path):
    run_cli("--data-dir", str(tmp_path / "alice"), "genkey")
    code, _, err = run_cli("-c", full_config(tmp_path), "send", "bob", stdin=b"y" * 2000)
    assert code == 2 and "over 1490 bytes" in err


def test_unreachable_provider_is_exit_1(tmp_path):
    run_cli("--data-dir", str(tmp_path / "alice"), "genkey")
    code, _, err = run_cli("-c", full_config(tmp_path), "--timeout", "2", "ping", "+echo")
    assert code == 1 and "cannot connect to provider provider1 at 127.0.0.1:1" in err
    assert "Traceback" not in err


def test_relative_data_dir_is_relative_to_the_configuration_file(tmp_path):
    run_cli("--data-dir", str(tmp_path / "alice"), "genkey")
    args = cli.build_parser().parse_args(["-c", full_config(tmp_path, DataDir='"alice"'), "send", "bob"])
    settings = cli.settings_from(args)
    assert settings.link_key.public == keys.load_link_key(str(tmp_path / "alice")).public
    assert settings.address == ("127.0.0.1", 1) and settings.provider == "provider1"
