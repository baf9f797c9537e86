"""The node's TOML configuration (`katzenpost.config.load_bytes`, what `katzenpost -f` reads).

Documented outcome: a `Config` or `ConfigError` whose problems are strings starting `config: `."""
from pathlib import Path

from katzenpost import config

MAX_LEN = 8192
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def TestOneInput(data: bytes) -> None:
    try:
        config.load_bytes(data)
    except config.ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p.startswith("config: ")
                                    for p in err.problems), err.problems
    try:
        config.load_bytes(data, keys_only=True)
    except config.ConfigError:
        pass


def seeds():
    return {path.stem: path.read_bytes() for path in sorted(CONFIGS.glob("*.toml"))}
