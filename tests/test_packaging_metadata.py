"""pyproject.toml's metadata: runtime dependencies are what the package imports, build-only
tools stay build requirements, and nothing makes setuptools warn on install."""
import ast
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Distribution name -> the module it installs, where they differ.
MODULE_OF = {"pyzmq": "zmq", "prometheus_client": "prometheus_client"}


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]


def imported_top_level_modules() -> set[str]:
    found = set()
    for path in (REPO / "katzenpost").rglob("*.py*"):
        if path.suffix not in (".py", ".pyx", ".pxd"):
            continue
        text = path.read_text()
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
        else:  # Cython: cimport/import lines
            found.update(re.findall(r"^\s*(?:c?import|from)\s+(\w+)", text, re.M))
    return found


def test_every_runtime_dependency_is_imported_by_the_package():
    imported = imported_top_level_modules()
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = requirement_name(requirement)
        assert MODULE_OF.get(name, name) in imported, f"{name} is listed but never imported"


def test_build_tools_are_build_requirements_only():
    runtime = {requirement_name(r).lower() for r in PYPROJECT["project"]["dependencies"]}
    assert "cython" not in runtime
    assert any(requirement_name(r).lower() == "cython" for r in PYPROJECT["build-system"]["requires"])


def test_license_is_an_spdx_expression_not_the_deprecated_table():
    assert isinstance(PYPROJECT["project"]["license"], str)
