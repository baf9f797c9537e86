"""`python -m bench`: a small real run (pyperf's fastest settings) saved, reported and compared;
the ratios, the report's charts and the comparison checked on synthetic runs. No timing is
asserted: the figures are whatever the shared machine gives."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyperf
import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import compare, report, suite_ratios  # noqa: E402
from bench.suite_files import extra_path, save  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def images(index: Path) -> list[Path]:
    return [index.parent / src for src in re.findall(r'<img src="([^"]+)"', index.read_text())]


def assert_valid_pngs(paths):
    assert paths
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and b"IEND" in data[-16:], path


def synthetic_benchmark(name, seconds, values=3):
    runs = [pyperf.Run([seconds * (1 + i / 100) for i in range(values)], warmups=[(1, seconds)],
                       metadata={"name": name, "loops": 1, "git_commit": "abc"}, collect_metadata=False)]
    return pyperf.Benchmark(runs)


def node_rows():
    rows = []
    for mode in ("pinned", "shared"):
        for rate, fwd in ((2000, 2000), (6000, 5990), (12000, 10500)):
            rows.append({"mode": mode, "loop": "uvloop", "offered_pps": rate, "forwarded_pps": fwd,
                         "loss": round(1 - fwd / rate, 5), "node_cpu_us_per_packet": 60.0,
                         "latency_quantiles_ms": {"0": 0.2, "50": 0.6, "99": 2.5, "100": 9.0},
                         "stage_cpu_us_per_packet": {"io_thread": 35.0, "zmq_threads": 3.0,
                                                     "workers_and_other_threads": 22.0}})
    return rows


SYNTHETIC_EXTRA = {
    "node": {"rows": node_rows(),
             "summary": {"baseline_unwrap_pps_one_core": 58000,
                         "pinned": {"max_no_loss_pps": 6000, "max_no_loss_vs_one_core_unwrap": 0.103,
                                    "p99_ms_at_2000": 2.5, "rss_peak_mb": 70.0}},
             "rss_trace_mb": {"pinned": [[0.0, 65.0], [0.25, 66.5], [0.5, 67.0]]}},
    "pipeline": {"rows": [{"case": "b_sphinx_w1_inline", "offered_pps": 2000, "forwarded_pps": 2000.0,
                           "received": 2000, "io_cpu_us_per_packet_net_of_idle": 20.0,
                           "thread_cpu_us_per_packet": {"katzenpost-crypto-0": 18.0}}],
                 "summary": {"b_sphinx_w1_inline": {"io_cpu_ratio_to_relay": 1.4, "no_loss_ratio_to_target": 0.5}}},
    "wheel_memory": {"rows": [{"packets": 0, "rss_growth_bytes": 0, "wheel_nbytes": 10},
                              {"packets": 4096, "rss_growth_bytes": 4096 * 2556, "wheel_nbytes": 4096 * 2556}],
                     "rss_bytes_per_queued_packet": 2556.0},
}


def save_synthetic(path, scale=1.0, extra=SYNTHETIC_EXTRA):
    benchmarks = [synthetic_benchmark("python_empty_call", 40e-9),
                  synthetic_benchmark("unwrap_batch_64_per_packet_ifma", 17e-6 * scale),
                  synthetic_benchmark("unwrap_batch_64_per_packet_libsodium", 64e-6),
                  synthetic_benchmark("unwrap_2524_core_ifma", 65e-6)]
    save(path, benchmarks, extra, {"git_commit": "abc"})


# ------------------------------------------------------------------ a real small run

def test_quick_subset_runs_saves_reports_and_compares(tmp_path):
    results = tmp_path / "RESULTS.json"
    run = bench("--quick", "--debug-single-value", "--quiet", "aez", "wheel", "replay", "-o", results)
    assert run.returncode == 0, run.stdout + run.stderr
    for line in ("AEZ AES-NI vs portable", "timer wheel vs heapq (40k_full_packets)",
                 "timer wheel vs heapq (40k_full_packets_us)",       # the node's microsecond deadlines
                 "timer wheel: microsecond vs millisecond deadlines",
                 "replay filter vs Python set (fresh tags)", "RSS per queued packet"):
        assert line in run.stdout
    suite = pyperf.BenchmarkSuite.load(str(results))
    names = set(suite.get_benchmark_names())
    assert {"python_empty_call", "aez_portable_2064", "aez_reference_2064", "wheel_40k_full_packets_copy",
            "heapq_40k_full_packets", "wheel_40k_full_packets_us_copy", "heapq_40k_full_packets_us",
            "replay_mmap_1M_1e-6", "replay_set_baseline_200k"} <= names
    assert "floor_40k_full_packets_us" not in names          # the floor has no deadlines: run once
    assert not names & {"unwrap_2524_public_api", "classify_batch64_core"}      # groups not asked for
    metadata = suite.get_metadata()
    assert metadata["bench_mode"] == "quick" and metadata["x25519_backend"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", metadata["git_commit"])
    assert metadata["cpu_model"] and metadata["cpu_count"] >= 1      # ours and pyperf's
    extra = json.loads(extra_path(results).read_text())
    assert extra["wheel_memory"]["rows"][-1]["packets"] > 0

    out = tmp_path / "report"
    run = bench("report", results, "-o", out, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    index = out / "index.html"
    assert_valid_pngs(images(index))
    page = index.read_text()
    assert "aez_reference_2064" in page and "timer wheel vs heapq" in page
    assert "No chart throughput.png" in page and "No chart latency_cdf.png" in page   # no node run
    assert "memory.png" in [p.name for p in images(index)]

    run = bench("compare", results, results, "--fail-on-regression", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 regression(s)" in run.stdout and "timer wheel vs heapq" in run.stdout
    assert results.exists() and bench("--quick", "aez", "-o", results).returncode != 0   # never overwritten


def test_a_tiny_node_run_gives_every_load_chart(tmp_path):
    """One real mix over real wire sessions (bench_node --quick: two 1.5-s steps), then its charts."""
    results = tmp_path / "node.json"
    run = bench("--quick", "--debug-single-value", "--quiet", "node", "-o", results, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "node (pinned): highest no-loss rate vs one core's raw batch unwrap rate" in run.stdout
    extra = json.loads(extra_path(results).read_text())
    rows = extra["node"]["rows"]
    assert [r["offered_pps"] for r in rows] == [2000, 6000] and all(r["sent"] > 0 for r in rows)
    assert all(set(r["stage_cpu_us_per_packet"]) == {"io_thread", "zmq_threads", "workers_and_other_threads"}
               for r in rows)
    assert extra["node"]["rss_trace_mb"]["pinned"]
    index = report.write_report(results, tmp_path / "out")
    assert {"throughput.png", "latency_cdf.png", "cpu_by_stage.png", "memory.png"} <= {p.name for p in images(index)}
    assert_valid_pngs(images(index))


def test_list_and_bad_input_give_clear_errors(tmp_path):
    listing = bench("--list", timeout=120)
    assert listing.returncode == 0 and "unwrap_batch_64_per_packet_" in listing.stdout
    assert "unwrap_batch_per_packet_2_threads" in listing.stdout                       # full-only
    assert "unwrap_batch_per_packet_2_threads" not in bench("--list", "--quick", timeout=120).stdout
    unknown = bench("nosuchgroup", timeout=120)
    assert unknown.returncode == 2 and "unknown group(s) nosuchgroup" in unknown.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "pyperf"}')
    for args in (("report", bad, "-o", tmp_path / "r"), ("compare", bad, bad), ("report", tmp_path / "none.json",
                                                                               "-o", tmp_path / "r")):
        run = bench(*args, timeout=120)
        assert run.returncode == 2 and "error:" in run.stderr and "Traceback" not in run.stderr


# ------------------------------------------------------------------ ratios, report, compare on synthetic runs

def test_ratios_are_computed_from_what_the_run_holds():
    results = {r.key: r for r in suite_ratios.compute(
        {"unwrap_batch_64_per_packet_ifma": 16e-6, "unwrap_batch_64_per_packet_libsodium": 64e-6,
         "unwrap_2524_core_ifma": 64e-6, "two_x25519_ifma": 60e-6}, SYNTHETIC_EXTRA)}
    assert results["sphinx.batch_lanes_vs_libsodium"].value == pytest.approx(4.0)
    assert results["sphinx.batch_lanes_vs_libsodium"].meets is True                  # target >= 3.5
    assert results["sphinx.batch_vs_single.ifma"].value == pytest.approx(4.0)
    assert results["sphinx.single_vs_floor.ifma"].value == pytest.approx(64 / 60)
    assert results["sphinx.batch_best_us"].value == pytest.approx(16.0) and results["sphinx.batch_best_us"].meets
    assert results["node.pinned.no_loss_vs_unwrap"].value == pytest.approx(0.103)
    assert results["node.pinned.max_no_loss_pps"].meets is False                     # target 9,000
    assert results["node.pinned.cpu_us_per_packet"].value == 60.0
    assert results["wheel.memory_bytes_per_packet"].value == 2556.0
    assert "aez.aesni_vs_reference" not in results and "replay.filter_vs_set" not in results
    lines = suite_ratios.format_results(list(results.values()))
    assert any("lanes vs libsodium" in line and "meets" in line for line in lines)
    assert any("highest no-loss rate offered" in line and "MISSES" in line for line in lines)


def test_report_draws_every_chart_of_a_full_run(tmp_path):
    results = tmp_path / "full.json"
    save_synthetic(results)
    index = report.write_report(results, tmp_path / "out")
    drawn = sorted(p.name for p in images(index))
    assert drawn == ["cpu_by_stage.png", "latency_cdf.png", "memory.png", "ratios.png", "throughput.png"]
    assert_valid_pngs(images(index))
    assert "No chart" not in index.read_text()


def test_report_of_a_run_without_its_sidecar_omits_those_charts(tmp_path):
    results = tmp_path / "bare.json"
    save_synthetic(results)
    extra_path(results).unlink()
    index = report.write_report(results, tmp_path / "out")
    assert [p.name for p in images(index)] == ["ratios.png"]
    assert index.read_text().count("No chart") == 4


def test_compare_flags_a_ratio_that_got_worse(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    save_synthetic(a)
    save_synthetic(b, scale=1.5)                    # the lanes' batch unwrap 50 % slower in B
    assert compare.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "batch unwrap per packet: lanes vs libsodium" in line)
    assert "REGRESSION" in line and "-33.3%" in line
    assert compare.main([str(a), str(b), "--fail-on-regression"]) == 1
    assert compare.main([str(a), str(a), "--fail-on-regression"]) == 0


def test_the_node_benchmarks_mix_runs_the_checkouts_code(tmp_path):
    """The mix of bench_node (and so of the `node` group) imports the checkout the suite runs
    from, not the editable install: a worktree of an older commit is measured as itself."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_node
    checkout = tmp_path / "checkout"
    (checkout / "katzenpost").mkdir(parents=True)
    (checkout / "katzenpost" / "__init__.py").write_text("")
    env = bench_node.mix_env("uvloop", root=checkout)
    assert env["KATZENPOST_EVENT_LOOP"] == "uvloop"
    where = subprocess.run([sys.executable, "-c", "import katzenpost; print(katzenpost.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(checkout / "katzenpost" / "__init__.py"), where.stderr
