"""The files of a saved run: RESULTS.json, a pyperf BenchmarkSuite that every pyperf tool reads,
and its sidecar RESULTS.extra.json with what pyperf cannot hold (its metadata takes only
scalars): load steps, latency quantiles, RSS traces, CPU per stage, memory per queued packet."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import pyperf

EXTRA_SUFFIX = ".extra.json"
EXTRA_FORMAT = "katzenpost-bench-extra/1"


def extra_path(results: str | Path) -> Path:
    """RESULTS.json -> RESULTS.extra.json."""
    results = Path(results)
    stem = results.name[:-5] if results.name.endswith(".json") else results.name
    return results.with_name(stem + EXTRA_SUFFIX)


def save(output, benchmarks, extra: dict, metadata: dict) -> None:
    pyperf.BenchmarkSuite(benchmarks).dump(str(output), replace=True)
    document = {"format": EXTRA_FORMAT, "metadata": metadata,
                "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **extra}
    extra_path(output).write_text(json.dumps(document, indent=1))


class NotARun(Exception):
    """The file is not a run saved by `python -m bench -o` (the message says why)."""


def load(results: str | Path):
    """(pyperf suite, extra dict) of a saved run; a missing sidecar gives an empty dict."""
    try:
        suite = pyperf.BenchmarkSuite.load(str(results))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotARun(f"{results}: not a pyperf results file ({type(exc).__name__}: {exc})") from None
    side = extra_path(results)
    try:
        extra = json.loads(side.read_text()) if side.exists() else {}
    except (OSError, ValueError) as exc:
        raise NotARun(f"{side}: unreadable ({exc})") from None
    if extra and (not isinstance(extra, dict) or extra.get("format") != EXTRA_FORMAT):
        raise NotARun(f"{side}: not a katzenpost bench sidecar")
    return suite, extra
