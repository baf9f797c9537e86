"""The operator scripts run as real processes: scripts/genkeys.py (node and authority key sets)
and scripts/run-main.sh (the README's main job)."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from config_support import PROVIDER_NESTED_FIELDS, SECTION_FIELDS
from katzenpost import keys
from katzenpost.server.replay import replay_filter_path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def genkeys(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "genkeys.py"), *args],
                          capture_output=True, text=True, timeout=TIMEOUT, env=ENV)


def printed_key(stdout: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}: ([0-9A-F]{{64}}) \(base64 (\S+), (new|existing)\)$",
                      stdout, re.MULTILINE)
    assert match, stdout
    assert keys.decode_key_string(match.group(2)).hex().upper() == match.group(1)
    return match.group(1)


def test_genkeys_writes_a_node_key_set_and_prints_its_public_keys(tmp_path):
    directory = tmp_path / "mix1"
    result = genkeys(str(directory))
    assert result.returncode == 0, result.stderr
    identity = printed_key(result.stdout, "identity public key")
    link = printed_key(result.stdout, "link public key")
    assert identity == keys.load_identity_key(str(directory)).public.hex().upper()
    assert link == keys.load_link_key(str(directory)).public.hex().upper()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for name in ("identity.private.pem", "identity.public.pem", "link.private.pem"):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600
    again = genkeys(str(directory))
    assert printed_key(again.stdout, "identity public key") == identity
    assert "existing" in again.stdout


def test_genkeys_authority_writes_only_the_identity_and_prints_the_derived_link_key(tmp_path):
    directory = tmp_path / "authority"
    result = genkeys("--authority", str(directory))
    assert result.returncode == 0, result.stderr
    identity = keys.load_identity_key(str(directory))
    assert printed_key(result.stdout, "identity public key") == identity.public.hex().upper()
    derived = printed_key(result.stdout, "link public key (derived from the identity)")
    assert derived == identity.to_x25519_public().hex().upper()
    assert sorted(os.listdir(directory)) == ["identity.private.pem", "identity.public.pem"]


def test_genkeys_refuses_a_wide_directory(tmp_path):
    directory = tmp_path / "wide"
    directory.mkdir()
    directory.chmod(0o755)
    result = genkeys(str(directory))
    assert result.returncode == 1
    assert "has invalid permissions" in result.stderr and os.listdir(directory) == []



def test_genkeys_needs_an_existing_parent_directory_as_the_readme_says(tmp_path):
    result = genkeys(str(tmp_path / "missing" / "mix1"))
    assert result.returncode == 1
    assert "cannot be created" in result.stderr and not (tmp_path / "missing").exists()
    assert "parent must\nalready exist" in readme_section((REPO / "README.md").read_text(),
                                                        "### Key generation")

def test_run_main_runs_a_bounded_test_network_and_reports(tmp_path):
    env = dict(ENV, KATZENPOST_TESTNET=f"{sys.executable} -m katzenpost.testnet.cli", PYTHONUNBUFFERED="1")
    result = subprocess.run([str(REPO / "scripts" / "run-main.sh"), "--duration", "4", "--rate", "2",
                             "--epoch-period", "10", "--plain", "--dir", str(tmp_path / "net")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "== katzenpost-testnet report" in result.stdout
    assert re.search(r"^sent 8, delivered 8, lost 0, failed 0, pending 0; latency p50 \d+ ms", result.stdout, re.M)
    assert "testnet: stopping every process" in result.stdout


def test_readme_setup_has_exactly_the_two_commands_and_they_exist():
    readme = (REPO / "README.md").read_text()
    assert readme.index("## Set-up") < readme.index("## Command line")
    setup_section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = setup_section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == ["./scripts/install.sh && ./scripts/run-main.sh", "./scripts/test.sh"]
    for script in ("install.sh", "run-main.sh", "test.sh"):
        assert os.access(REPO / "scripts" / script, os.X_OK), script
    assert "## Authority" in readme and "docs/authority.md" in readme
    assert "./scripts/test.sh" in readme.split("## Development", 1)[1]


def readme_section(readme: str, heading: str) -> str:
    return readme.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def test_readme_documents_every_config_field_in_its_section():
    from katzenpost import config, rules
    readme = (REPO / "README.md").read_text()
    for section, names in SECTION_FIELDS.items():
        text = readme_section(readme, f"### `[{section}]`")
        for name in names:  # a row of its own, or the sub-table rows ([Provider.UserDB] Backend)
            row = re.search(rf"^\| {name} \|", text, re.M)
            sub_table = re.search(rf"`\[\[?{section}\.{name}\]", text)
            assert row or sub_table, f"{section}.{name}"
    nested = {"PKI": ["Address", "PublicKey"],  # PKI.Voting is refused, so not documented
              "Provider": [n for n in PROVIDER_NESTED_FIELDS if n not in ("Bolt", "Extern")]}
    for section, names in nested.items():
        text = readme_section(readme, f"### `[{section}]`")
        for name in names:
            assert re.search(rf"^\| (`[^`]+` )?{name} \|", text, re.M), f"{section}.….{name}"
    debug = readme_section(readme, "### `[Debug]`")
    for ceiling in (config.MAX_WORKERS, config.MAX_SCHEDULER_QUEUE_SIZE, config.MAX_SCHEDULER_BURST,
                    config.MAX_DURATION_MS):
        assert str(ceiling) in debug, ceiling
    epoch_row = next(line for line in debug.splitlines() if line.startswith("| EpochPeriod |"))
    assert "test networks only" in epoch_row and f"{rules.MIN_TEST_PERIOD}–1200" in epoch_row


def test_readme_documents_data_dir_files_signals_and_points_to_the_docs():
    readme = (REPO / "README.md").read_text()
    files = readme_section(readme, "## Files in DataDir")
    for name in (keys.IDENTITY_PRIVATE_FILE, keys.IDENTITY_PUBLIC_FILE, keys.LINK_PRIVATE_FILE,
                 "mixkey-<epoch>.db", "users.db", "spool.db", "management_sock",
                 os.path.basename(replay_filter_path("/", 0)).replace("0", "<epoch>")):
        assert f"`{name}`" in files, name
    signals = readme_section(readme, "## Signals")
    assert "SIGHUP" in signals and "SIGTERM" in signals and "SIGINT" in signals
    for doc in ("docs/architecture.md", "docs/interfaces.md"):
        assert (REPO / doc).exists()
        assert f"]({doc})" in readme
    assert "## Architecture" in readme and "## Interfaces" in readme
