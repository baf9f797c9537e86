"""`python -m bench report RESULTS.json -o DIR`: DIR/index.html with PNG charts of one saved run
(throughput against offered load, the added-latency CDF, CPU per packet by stage, memory over a
run and per queued packet, the ratios) and a table of every benchmark and ratio. It draws what
the run holds: a chart whose data the run lacks is replaced by a line saying so.

matplotlib is the optional extra `bench` (`pip install 'katzenpost[bench]'`), used headless (Agg).
"""
from __future__ import annotations

import argparse
import html
from pathlib import Path

from bench import suite_ratios
from bench.suite_files import NotARun, load

# ------------------------------------------------------------------ charts (each returns a title, or
# None when the run holds no data for it)

def save_figure(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finish_axes(ax, xlabel, ylabel, title, fontsize=None):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=fontsize)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)

def chart_throughput(plt, extra, path):
    node_rows = (extra.get("node") or {}).get("rows") or []
    pipe_rows = [r for r in (extra.get("pipeline") or {}).get("rows") or [] if "offered_pps" in r]
    if not node_rows and not pipe_rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    top = 0
    for mode in sorted({r["mode"] for r in node_rows}):
        rows = sorted((r for r in node_rows if r["mode"] == mode), key=lambda r: r["offered_pps"])
        ax.plot([r["offered_pps"] for r in rows], [r["forwarded_pps"] for r in rows], "o-",
                label=f"node, {mode} (real wire sessions)")
        top = max(top, *(r["offered_pps"] for r in rows))
    for case in sorted({r["case"] for r in pipe_rows}):
        rows = sorted((r for r in pipe_rows if r["case"] == case), key=lambda r: r["offered_pps"])
        ax.plot([r["offered_pps"] for r in rows], [r["forwarded_pps"] for r in rows], "s--", alpha=0.7,
                label=f"pipeline on loopback, {case}")
        top = max(top, *(r["offered_pps"] for r in rows))
    ax.plot([0, top], [0, top], ":", color="grey", label="no loss")
    finish_axes(ax, "offered load (packets/s)", "forwarded (packets/s)", "Throughput against offered load")
    save_figure(plt, fig, path)
    return "Throughput against offered load"


def chart_latency_cdf(plt, extra, path):
    rows = [r for r in (extra.get("node") or {}).get("rows") or [] if r.get("latency_quantiles_ms")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in sorted(rows, key=lambda r: (r["mode"], r["offered_pps"])):
        # The minimum (and any value <= 0: clock jitter between processes) has no place on a log axis.
        quantiles = sorted((float(q), v) for q, v in r["latency_quantiles_ms"].items() if float(q) > 0 and v > 0)
        ax.plot([v for _, v in quantiles], [q / 100 for q, _ in quantiles], ".-",
                label=f"{r['mode']}, {r['offered_pps']:,} pkt/s")
    ax.set_xscale("log")
    finish_axes(ax, "added latency beyond the 1 ms Sphinx delay (ms, log scale)", "fraction of packets",
                "Added latency per hop (one mix, CDF)")
    save_figure(plt, fig, path)
    return "Added latency per hop (CDF)"


def _stacked(ax, labels, stages, title):
    bottom = [0.0] * len(labels)
    for stage, values in stages.items():
        ax.bar(range(len(labels)), values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("CPU µs per packet")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax.grid(alpha=0.3, axis="y")


def chart_cpu_by_stage(plt, extra, path):
    node_rows = [r for r in (extra.get("node") or {}).get("rows") or [] if r.get("stage_cpu_us_per_packet")]
    pipe_rows = [r for r in (extra.get("pipeline") or {}).get("rows") or []
                 if "thread_cpu_us_per_packet" in r and r.get("received")]
    panels = [p for p in (node_rows, pipe_rows) if p]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    axes = list(axes[0])
    if node_rows:
        names = sorted({s for r in node_rows for s in r["stage_cpu_us_per_packet"]})
        _stacked(axes.pop(0), [f"{r['mode']} {r['offered_pps']:,}/s" for r in node_rows],
                 {n: [r["stage_cpu_us_per_packet"].get(n, 0.0) for r in node_rows] for n in names},
                 "whole node (real wire sessions), per forwarded packet")
    if pipe_rows:
        names = sorted({_thread_stage(t) for r in pipe_rows for t in r["thread_cpu_us_per_packet"]})
        stages = {"io_thread (net of idle)": [r.get("io_cpu_us_per_packet_net_of_idle", 0.0) for r in pipe_rows]}
        for n in names:
            stages[n] = [sum(v for t, v in r["thread_cpu_us_per_packet"].items() if _thread_stage(t) == n)
                         for r in pipe_rows]
        _stacked(axes.pop(0), [f"{r['case']} {r['offered_pps']:,}/s" for r in pipe_rows], stages,
                 "pipeline on loopback (no wire layer), per offered packet")
    save_figure(plt, fig, path)
    return "CPU per packet by stage"


def _thread_stage(thread_name):
    return "crypto workers" if thread_name.startswith("katzenpost-crypto") else thread_name


def chart_memory(plt, extra, path):
    traces = (extra.get("node") or {}).get("rss_trace_mb") or {}
    traces = {mode: t for mode, t in traces.items() if t}
    wheel = ((extra.get("wheel_memory") or {}).get("rows")) or []
    panels = int(bool(traces)) + int(bool(wheel))
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    axes = list(axes[0])
    if traces:
        ax = axes.pop(0)
        for mode, trace in traces.items():
            ax.plot([t for t, _ in trace], [mb for _, mb in trace], label=f"node, {mode}")
        ax.set_ylim(bottom=0)
        finish_axes(ax, "seconds into the run (load steps rising)", "RSS (MB)", "Node memory over a run", 9)
    if wheel:
        ax = axes.pop(0)
        ax.plot([r["packets"] for r in wheel], [r["rss_growth_bytes"] / 2**20 for r in wheel], "o-",
                label="RSS growth")
        ax.plot([r["packets"] for r in wheel], [r["wheel_nbytes"] / 2**20 for r in wheel], "x--",
                label="wheel.nbytes")
        finish_axes(ax, "packets held in the timer wheel", "MiB", "Memory per queued packet "
                    f"({extra['wheel_memory'].get('rss_bytes_per_queued_packet')} B of RSS)", 9)
    save_figure(plt, fig, path)
    return "Memory over a run and per queued packet"


def chart_ratios(plt, results, path):
    ratios = [r for r in results if r.unit == "x"]
    if not ratios:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(ratios) + 1.2))
    colours = ["tab:green" if r.meets else "tab:red" if r.meets is False else "tab:blue" for r in ratios]
    ax.barh(range(len(ratios)), [r.value for r in ratios], color=colours)
    ax.set_yticks(range(len(ratios)))
    ax.set_yticklabels([r.label for r in ratios], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xlabel("ratio (log scale; green/red: meets/misses its target)")
    ax.set_title("Hot path against its baseline, same run")
    ax.grid(alpha=0.3, axis="x", which="both")
    save_figure(plt, fig, path)
    return "Ratios"


CHARTS = [("throughput.png", chart_throughput, "node or pipeline load steps (groups node, pipeline)"),
          ("latency_cdf.png", chart_latency_cdf, "node latency quantiles (group node)"),
          ("cpu_by_stage.png", chart_cpu_by_stage, "per-stage CPU (groups node, pipeline)"),
          ("memory.png", chart_memory, "node RSS trace or wheel memory (groups node, wheel)")]


# ------------------------------------------------------------------ HTML

def _table(headers, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def benchmark_rows(suite):
    rows = []
    for bench in suite:
        values = bench.get_values()
        median = bench.median()
        spread = bench.format_value(bench.stdev()) if len(values) > 1 else "-"
        rows.append((bench.get_name(), bench.get_metadata().get("description", ""),
                     bench.format_value(median), spread, len(values)))
    return rows


def metadata_rows(suite, extra):
    common = dict(suite.get_metadata())
    wanted = ("git_commit", "bench_mode", "bench_groups", "cpu_model", "cpu_count", "cpu_count_usable",
              "x25519_backend", "x25519_backends_available", "x25519_ifma_status", "python_version",
              "platform", "date", "load_avg_1min")
    rows = [(k, common[k]) for k in wanted if k in common]
    if extra.get("saved_at"):
        rows.append(("saved_at", extra["saved_at"]))
    return rows


def write_report(results: Path, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suite, extra = load(results)
    out.mkdir(parents=True, exist_ok=True)
    computed = suite_ratios.compute(suite_ratios.medians_of(suite), extra)
    sections = []
    for name, draw, needs in CHARTS:
        title = draw(plt, extra, out / name)
        if title:
            sections.append(f'<h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">')
        else:
            (out / name).unlink(missing_ok=True)            # no stale chart from an earlier report
            sections.append(f"<p class=missing>No chart {html.escape(name)}: this run has no data for it "
                            f"(needs {html.escape(needs)}).</p>")
    title = chart_ratios(plt, computed, out / "ratios.png")
    if title:
        sections.insert(0, f'<h2>{title}</h2><img src="ratios.png" alt="ratios">')
    ratio_rows = [(r.group, r.label, r.format_value(), "lower" if not r.higher_is_better else "higher",
                   r.format_target()) for r in computed]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>katzenpost benchmarks: {html.escape(results.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto}} table{{border-collapse:collapse;
font-size:13px}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} img{{max-width:100%}}
.missing{{color:#a60}}</style></head><body>
<h1>katzenpost benchmarks: {html.escape(results.name)}</h1>
<p>Ratios compare a hot path with its baseline measured in the same run, so they travel between
machines; absolute figures are ranges on a shared machine. How to reproduce: docs/benchmarks.md.</p>
{_table(("metadata", "value"), metadata_rows(suite, extra))}
<h2>Ratios and figures</h2>
{_table(("group", "ratio or figure", "value", "better", "target"), ratio_rows)}
{''.join(sections)}
<h2>Every pyperf benchmark</h2>
{_table(("benchmark", "what", "median", "std dev", "values"), benchmark_rows(suite))}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="RESULTS.json written by `python -m bench -o`")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory for index.html and PNGs")
    args = parser.parse_args(argv)
    if not args.results.exists():
        parser.error(f"{args.results}: no such file")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("matplotlib is needed: pip install 'katzenpost[bench]' (or matplotlib)")
    try:
        index = write_report(args.results, args.output)
    except NotARun as exc:
        parser.error(str(exc))
    print(f"wrote {index}")
    return 0
