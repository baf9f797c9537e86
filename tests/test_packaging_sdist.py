"""The source distribution: what MANIFEST.in and pyproject package-data ship. It must carry every
Cython source, hand-written C helper and test vector, and never the generated Cython .c files
(the install regenerates them). Builds an sdist of a copy of the checkout, never in place."""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "katzenpost" / "_core"
SKIP_IN_COPY = shutil.ignore_patterns("build", "dist", ".venv", ".git", "__pycache__", "*.so",
                                      "*.egg-info", ".hypothesis", ".pytest_cache", "*.html")


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory):
    copy = tmp_path_factory.mktemp("sdist") / "src"
    shutil.copytree(REPO, copy, ignore=SKIP_IN_COPY)
    for generated in (copy / "katzenpost" / "_core").glob("*.c"):
        if not generated.name.endswith("_impl.c"):
            generated.unlink()
    # One extension is enough to make cythonize write a generated .c into the copy (the
    # exclusion under test) while keeping the build short.
    env = dict(os.environ, KATZENPOST_EXTENSIONS="aez")
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(copy / "out")],
                            cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (copy / "katzenpost" / "_core" / "aez.c").exists()  # cythonize did generate it
    [archive] = (copy / "out").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_ships_every_cython_source_and_c_helper(sdist_names):
    wanted = [p for p in CORE.iterdir() if p.suffix in (".pyx", ".pxd", ".h")
              or p.name.endswith("_impl.c")]
    assert wanted
    for path in wanted:
        assert f"katzenpost/_core/{path.name}" in sdist_names, path.name


def test_sdist_never_ships_generated_cython_c_files(sdist_names):
    shipped_c = {n for n in sdist_names if n.startswith("katzenpost/_core/") and n.endswith(".c")}
    assert shipped_c and all(n.endswith("_impl.c") for n in shipped_c), sorted(shipped_c)


def test_sdist_ships_tests_vectors_configs_and_scripts(sdist_names):
    for folder in ("tests/vectors", "tests/configs", "scripts", "docs", "bench"):
        for path in (REPO / folder).rglob("*"):
            generated = folder == "bench" and path.suffix == ".c"  # Cython output of a stand-in
            if path.is_file() and "__pycache__" not in path.parts and not generated:
                assert str(path.relative_to(REPO)) in sdist_names, path
    for name in ("README.md", "setup.py", "pyproject.toml", "MANIFEST.in", ".ci/run"):
        assert name in sdist_names, name


def test_benchmark_stand_ins_ship_as_sources_only(sdist_names):
    assert "bench/unwrap_standin.pyx" in sdist_names
    assert not any(n.startswith("bench/") and n.endswith(".c") for n in sdist_names)
    assert not any("unwrap_standin" in n for n in sdist_names if n.startswith("katzenpost/"))


def test_a_wheel_never_carries_the_benchmark_stand_in(tmp_path):
    """Only the stand-in is selected, so the wheel build compiles nothing and stays quick."""
    copy = tmp_path / "src"
    shutil.copytree(REPO, copy, ignore=SKIP_IN_COPY)
    env = dict(os.environ, KATZENPOST_EXTENSIONS="unwrap_standin")
    result = subprocess.run([sys.executable, "setup.py", "-q", "bdist_wheel", "-d", str(tmp_path / "out")],
                            cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = (tmp_path / "out").glob("*.whl")
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("katzenpost/pki/") for n in names)
    assert not [n for n in names if "unwrap_standin" in n]
