"""The README's newcomer path works as written on a fresh machine: commands use the virtual
environment's Python, and the sample configurations' DataDirs can be created there."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
# Directories a fresh Debian machine has, under which a DataDir may be created directly.
FRESH_MACHINE_DIRS = ("/var/lib", "/tmp")


def test_commands_run_the_scripts_and_benchmarks_with_the_venv_python():
    assert not re.search(r"(?<![/\w])python3? (scripts|bench)/", README)  # the system Python
    assert ".venv/bin/python scripts/genkeys.py" in README


def test_sample_configurations_named_in_the_readme_have_creatable_data_dirs():
    samples = re.findall(r"`(\w+\.toml)`", README[README.index("Sample configurations"):][:300])
    assert {"sample_provider.toml", "minimal_provider.toml", "minimal_mix.toml"} <= set(samples)
    for name in samples:
        server = tomllib.loads((REPO / "tests" / "configs" / name).read_text())["Server"]
        assert os.path.dirname(server["DataDir"].rstrip("/")) in FRESH_MACHINE_DIRS, name


def test_readme_examples_put_data_dirs_where_they_can_be_created():
    for data_dir in re.findall(r'DataDir = "([^"]+)"', README):
        assert os.path.dirname(data_dir) in FRESH_MACHINE_DIRS, data_dir
    for directory in re.findall(r"scripts/genkeys\.py (?:--authority )?(\S+)", README):
        if directory.startswith("/"):
            assert os.path.dirname(directory) in FRESH_MACHINE_DIRS, directory


def test_genkeys_as_the_readme_runs_it(tmp_path):
    target = tmp_path / "katzenpost-mix1"  # a fresh directory directly under an existing one
    result = subprocess.run([str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists()
                             else sys.executable, str(REPO / "scripts" / "genkeys.py"), str(target)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "identity public key" in result.stdout and "link public key" in result.stdout
    assert oct(target.stat().st_mode & 0o777) == "0o700"
