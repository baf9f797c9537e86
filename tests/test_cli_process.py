"""The `katzenpost` command run as a real subprocess (README.md, Command line): -g output and
exit code, --check, broken configs and DataDirs, -h, and the hand-over to the node runtime."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from katzenpost import keys, sphinx

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 30
BANNER_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (NOTI|WARN|ERRO) server: (.*)$")
HEX_KEY = re.compile(r"^[0-9A-F]{64}$")


def run(args, cwd, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "katzenpost", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def write_config(directory: Path, data_dir: Path, extra: str = "", name="katzenpost.toml") -> Path:
    path = directory / name
    path.write_text(f"""
[Server]
Identifier = "Example.COM"
Addresses = ["127.0.0.1:30001"]
DataDir = "{data_dir}"

[PKI.Nonvoting]
Address = "127.0.0.1:30000"
PublicKey = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
{extra}
""")
    return path


def banner(stdout: str) -> list[tuple[str, str]]:
    lines = []
    for line in stdout.splitlines():
        match = BANNER_LINE.match(line)
        assert match, f"unexpected output line: {line!r}"
        lines.append(match.groups())
    return lines


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One `-g` run with the default config path (katzenpost.toml in the working directory)."""
    work = tmp_path_factory.mktemp("cli")
    data_dir = work / "data"
    write_config(work, data_dir)
    result = run(["-g"], cwd=work)
    return result, data_dir, work


def test_generate_exits_0_and_logs_the_banner_in_order(generated):
    result, data_dir, _ = generated
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = banner(result.stdout)
    messages = [message for _, message in lines]
    assert lines[0] == ("NOTI", "Katzenpost is still pre-alpha.  DO NOT DEPEND ON IT FOR STRONG "
                                "SECURITY OR ANONYMITY.")
    assert messages[1].startswith("AEZv5 implementation ")
    assert messages[2] == f"Sphinx X25519 backend: {sphinx.X25519_BACKEND} (IFMA lanes: {sphinx.IFMA_STATUS})."
    assert messages[3:] == [
        "Server identifier is: 'example.com'",
        "Server identity public key is: " + messages[4].rsplit(" ", 1)[1],
        "Server link public key is: " + messages[5].rsplit(" ", 1)[1],
    ]
    assert [level for level, _ in lines[2:]] == ["NOTI"] * 4


def test_generate_logs_the_aez_acceleration_line(generated):
    try:
        from katzenpost.sphinx import aez
    except ImportError as err:
        pytest.skip(f"katzenpost.sphinx.aez is not importable yet ({err}): the expected AEZ line is unknown")
    result, _, _ = generated
    expected = (("NOTI", "AEZv5 implementation is hardware accelerated.") if aez.HARDWARE_ACCELERATED
                else ("WARN", "AEZv5 implementation IS NOT hardware accelerated."))
    assert banner(result.stdout)[1] == expected


def test_generate_prints_the_public_keys_of_the_files_as_uppercase_hex(generated):
    result, data_dir, _ = generated
    messages = [message for _, message in banner(result.stdout)]
    identity_hex = messages[4].rsplit(" ", 1)[1]
    link_hex = messages[5].rsplit(" ", 1)[1]
    assert HEX_KEY.match(identity_hex) and HEX_KEY.match(link_hex)
    assert identity_hex == keys.load_identity_key(str(data_dir)).public.hex().upper()
    assert link_hex == keys.load_link_key(str(data_dir)).public.hex().upper()


def test_generate_creates_data_dir_0700_and_key_files_0600(generated):
    _, data_dir, _ = generated
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert sorted(os.listdir(data_dir)) == ["identity.private.pem", "identity.public.pem", "link.private.pem"]
    for name in os.listdir(data_dir):
        assert stat.S_IMODE(os.stat(data_dir / name).st_mode) == 0o600


def test_second_generate_loads_the_same_keys(generated):
    result, data_dir, work = generated
    again = run(["-g", "-f", str(work / "katzenpost.toml")], cwd="/")
    assert again.returncode == 0, again.stderr
    assert banner(again.stdout)[3:] == banner(result.stdout)[3:]


def test_debug_level_warns_that_it_is_unsafe(tmp_path):
    config = write_config(tmp_path, tmp_path / "data", '[Logging]\nLevel = "debug"\n')
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("WARN", "Unsafe Debug logging is enabled.") in banner(result.stdout)


def test_private_keys_are_never_logged_even_at_debug(tmp_path):
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir, '[Logging]\nLevel = "DEBUG"\n')
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    secrets = [keys.load_identity_key(str(data_dir)).seed, keys.load_link_key(str(data_dir)).private]
    output = result.stdout + result.stderr
    for secret in secrets:
        for form in (secret.hex(), secret.hex().upper(), keys.public_key_base64(secret)):
            assert form not in output


def test_log_file_relative_to_data_dir_receives_the_banner(tmp_path):
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir, '[Logging]\nFile = "node.log"\n')
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    log_text = (data_dir / "node.log").read_text()
    assert "NOTI server: Server identifier is: 'example.com'" in log_text
    assert stat.S_IMODE(os.stat(data_dir / "node.log").st_mode) == 0o600


def test_disabled_logging_prints_nothing(tmp_path):
    config = write_config(tmp_path, tmp_path / "data", "[Logging]\nDisable = true\n")
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_accepts_a_valid_config_and_changes_nothing(tmp_path):
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir)
    result = run(["--check", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert not data_dir.exists()


def test_check_prints_every_problem_and_exits_non_zero(tmp_path):
    config = write_config(tmp_path, tmp_path / "data",
                          '[Logging]\nLevel = "LOUD"\n[Debug]\nUnwrapDelay = 99999999999\n'
                          'SendSlack = -1\nColour = 1\n')
    config.write_text(config.read_text().replace('Identifier = "Example.COM"', 'Identifier = "bad_name"'))
    result = run(["--check", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 1
    for field in ("Debug.Colour", "Server.Identifier", "Logging.Level 'LOUD'", "Debug.UnwrapDelay"):
        assert field in result.stderr, field
    assert "4 problem(s)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "warning: Debug.SendSlack is negative (-1); the default is used" in result.stdout


def test_check_reports_a_wide_data_dir_and_a_bad_key_file(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "link.private.pem").write_text("junk")
    result = run(["--check", "-f", str(write_config(tmp_path, data_dir))], cwd=tmp_path)
    assert result.returncode == 1
    assert "has invalid permissions" in result.stderr
    assert "link.private.pem" in result.stderr and "no PEM block found" in result.stderr


def test_a_private_key_file_others_may_read_is_a_warning_of_check_and_of_g(tmp_path):
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir)
    assert run(["-g", "-f", str(config)], cwd=tmp_path).returncode == 0
    key_path = data_dir / "identity.private.pem"
    key_path.chmod(0o644)
    checked = run(["--check", "-f", str(config)], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr  # a warning: the reference does not refuse it
    assert f"warning: private key file '{key_path}' has mode 0644" in checked.stdout
    generated = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert generated.returncode == 0
    assert any(kind == "WARN" and f"'{key_path}' has mode 0644" in text
               for kind, text in banner(generated.stdout))
    key_path.chmod(0o600)
    assert "has mode" not in run(["--check", "-f", str(config)], cwd=tmp_path).stdout


def test_g_needs_no_authority_key_but_a_start_and_check_do(tmp_path):
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir)
    text = config.read_text()
    config.write_text(text[:text.index("[PKI.Nonvoting]")])  # the authority is not set up yet
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (data_dir / "identity.private.pem").exists() and (data_dir / "link.private.pem").exists()
    checked = run(["--check", "-f", str(config)], cwd=tmp_path)
    assert checked.returncode == 1 and "No PKI block was present" in checked.stderr
    config.write_text(text.replace('PublicKey = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="', ""))
    assert run(["-g", "-f", str(config)], cwd=tmp_path).returncode == 0
    assert "PKI.Nonvoting.PublicKey is not set" in run(["--check", "-f", str(config)],
                                                        cwd=tmp_path).stderr


def test_broken_config_exits_255_with_the_reference_message(tmp_path):
    config = write_config(tmp_path, tmp_path / "data", '[Logging]\nLevel = "LOUD"\n')
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 255
    assert result.stderr == (f"Failed to load config file '{config}': "
                             "config: Logging.Level 'LOUD' is invalid (must be one of ERROR, "
                             "WARNING, NOTICE, INFO, DEBUG, any case)\n")
    assert result.stdout == ""


def test_missing_config_file_exits_255(tmp_path):
    result = run(["-g"], cwd=tmp_path)
    assert result.returncode == 255
    assert result.stderr.startswith("Failed to load config file 'katzenpost.toml': config: cannot read")


def test_wide_data_dir_fails_to_spawn_with_255(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    result = run(["-g", "-f", str(write_config(tmp_path, data_dir))], cwd=tmp_path)
    assert result.returncode == 255
    assert result.stderr.startswith(f"Failed to spawn server instance: DataDir '{data_dir}' has invalid permissions")
    assert os.listdir(data_dir) == []


def test_malformed_identity_file_fails_cleanly_with_255(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "identity.private.pem").write_bytes(
        keys.encode_pem("X25519 PRIVATE KEY", bytes(32)))
    result = run(["-g", "-f", str(write_config(tmp_path, data_dir))], cwd=tmp_path)
    assert result.returncode == 255
    assert "Failed to spawn server instance: " in result.stderr
    assert "invalid PEM Type: 'X25519 PRIVATE KEY'" in result.stderr
    assert "ERRO server: Failed to initialize identity" in result.stdout
    assert "Traceback" not in result.stderr


def test_help_lists_the_options():
    result = run(["-h"], cwd=REPO)
    assert result.returncode == 0
    for option in ("-f PATH", "-g", "--check", "katzenpost.toml", "SIGHUP"):
        assert option in result.stdout, option


def test_unknown_option_is_a_usage_error():
    result = run(["--frobnicate"], cwd=REPO)
    assert result.returncode == 2 and "usage: katzenpost" in result.stderr


def test_console_script_behaves_like_python_m(tmp_path):
    script = Path(sys.executable).parent / "katzenpost"
    if not script.exists():
        pytest.skip("the katzenpost console script is not installed beside this interpreter")
    result = subprocess.run([str(script), "--check", "-f", str(write_config(tmp_path, tmp_path / "d"))],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and "configuration is valid" in result.stdout


def test_unopenable_log_file_fails_to_spawn_with_255(tmp_path):
    config = write_config(tmp_path, tmp_path / "data", '[Logging]\nFile = "missing/node.log"\n')
    result = run(["-g", "-f", str(config)], cwd=tmp_path)
    assert result.returncode == 255
    assert result.stderr.startswith("Failed to spawn server instance: failed to open the log file")
    assert "Traceback" not in result.stderr
