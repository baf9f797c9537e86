"""The import rules of docs/architecture.md that keep the rooms apart, checked on the source."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "katzenpost"
BASE = ("keys", "log", "rules", "config")


def imported_modules(path: Path) -> set[str]:
    """Every `katzenpost.*` module a source file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("katzenpost.")}


@pytest.mark.parametrize("module", BASE)
def test_the_base_imports_nothing_above_the_base(module):
    allowed = {f"katzenpost.{name}" for name in BASE}
    upward = {name for name in imported_modules(PACKAGE / f"{module}.py")
              if not any(name == base or name.startswith(base + ".") for base in allowed)}
    assert not upward, f"{module}.py imports {sorted(upward)}"


def test_rules_is_a_leaf():
    assert imported_modules(PACKAGE / "rules.py") == set()


def test_pki_never_imports_the_authority_or_the_node():
    for path in sorted((PACKAGE / "pki").glob("*.py")):
        higher = {name for name in imported_modules(path)
                  if name.startswith(("katzenpost.authority", "katzenpost.server",
                                      "katzenpost.config"))}
        assert not higher, f"{path.name} imports {sorted(higher)}"


def test_voting_library_imports_only_pki_and_the_base():
    allowed = ("katzenpost.voting", "katzenpost.pki", "katzenpost.rules", "katzenpost.keys")
    for path in sorted((PACKAGE / "voting").glob("*.py")):
        other = {name for name in imported_modules(path) if not name.startswith(allowed)}
        assert not other, f"voting/{path.name} imports {sorted(other)}"


def test_the_authority_package_holds_the_daemon():
    assert not list((PACKAGE / "pki").glob("authority*.py"))
    assert {p.stem for p in (PACKAGE / "authority").glob("*.py")} >= {
        "__init__", "__main__", "cli", "config", "daemon", "state", "store"}
