"""The ratios (hot path against its baseline, both measured in the same run) and the headline
figures against their targets, computed from a saved run: the pyperf suite's medians and the
extra results. One definition serves the end of a run, `compare` and `report`.

A ratio is "higher is better" (a speed-up: baseline time / hot-path time, or a throughput ratio)
unless marked lower-is-better. Targets are the performance targets of docs/capacity.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Result:
    key: str
    group: str
    label: str
    value: float
    unit: str                  # "x" for a ratio, else the figure's unit
    higher_is_better: bool
    target: float | None = None

    @property
    def meets(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def format_value(self) -> str:
        if self.unit == "x":
            return f"{self.value:.3g}x" if self.value < 100 else f"{self.value:.0f}x"
        return f"{self.value:,.3g} {self.unit}" if self.value < 1000 else f"{self.value:,.0f} {self.unit}"

    def format_target(self) -> str:
        if self.target is None:
            return ""
        sign = ">=" if self.higher_is_better else "<="
        verdict = "meets" if self.meets else "MISSES"
        return f"target {sign} {self.target:g}{'' if self.unit == 'x' else ' ' + self.unit}: {verdict}"


@dataclass(frozen=True)
class Definition:
    key: str
    group: str
    label: str
    compute: Callable[["Data"], float | None]
    unit: str = "x"
    higher_is_better: bool = True
    target: float | None = None


class Data:
    """Medians by benchmark name (seconds) and the extra results of one run."""

    def __init__(self, medians: dict, extra: dict):
        self.medians = medians
        self.extra = extra

    def m(self, name):
        return self.medians.get(name)

    def speedup(self, baseline, hot):
        b, h = self.m(baseline), self.m(hot)
        return b / h if b and h else None

    def first(self, *names):
        return next((n for n in names if n in self.medians), None)

    def get(self, *path):
        node = self.extra
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node


def medians_of(suite) -> dict:
    return {bench.get_name(): bench.median() for bench in suite}


def _micro(data, name):
    value = data.m(name)
    return value * 1e6 if value else None


def _nano(data, name):
    value = data.m(name)
    return value * 1e9 if value else None


def _replay_filter(data):
    return data.first("replay_mmap_12M_1e-6", "replay_mmap_1M_1e-6")


def _replay_set(data):
    return data.first("replay_set_baseline_2M", "replay_set_baseline_200k")


def _best_batch(data):
    return data.first(*[f"unwrap_batch_64_per_packet_{b}" for b in ("ifma", "libsodium", "openssl")])


def _pipeline_case(data, prefix):
    summary = data.get("pipeline", "summary") or {}
    return next((summary[c] for c in sorted(summary) if c.startswith(prefix)), None)


def _node_mode(data, mode, field):
    return data.get("node", "summary", mode, field)


def _node_cpu_at_best(data, mode):
    """Node CPU per forwarded packet at the busiest loss-free step of a mode."""
    rows = [r for r in (data.get("node", "rows") or []) if r["mode"] == mode and r["loss"] <= 0.001]
    return max(rows, key=lambda r: r["offered_pps"])["node_cpu_us_per_packet"] if rows else None


def _sphinx_backend_definitions():
    out = []
    for b in ("ifma", "libsodium", "openssl"):
        out += [
            Definition(f"sphinx.batch_vs_single.{b}", "sphinx", f"unwrap {b}: batch of 64 vs single packet",
                       lambda d, b=b: d.speedup(f"unwrap_2524_core_{b}", f"unwrap_batch_64_per_packet_{b}")),
            Definition(f"sphinx.single_vs_floor.{b}", "sphinx",
                       f"unwrap {b}: single packet vs its two-X25519 floor (1.0 = all X25519)",
                       lambda d, b=b: d.speedup(f"unwrap_2524_core_{b}", f"two_x25519_{b}"),
                       higher_is_better=False),
        ]
    return out


def _wheel_definitions():
    out = []
    for scenario in ("40k_full_packets", "40k_full_packets_us", "40k_32B", "1M_64B"):
        out += [Definition(f"wheel.vs_heapq.{scenario}", "wheel", f"timer wheel vs heapq ({scenario})",
                           lambda d, s=scenario: d.speedup(f"heapq_{s}", f"wheel_{s}_copy")),
                Definition(f"wheel.ns_per_packet.{scenario}", "wheel", f"timer wheel insert+expiry ({scenario})",
                           lambda d, s=scenario: _nano(d, f"wheel_{s}_copy"), "ns", False, 333.0)]
    out.append(Definition("wheel.us_vs_ms_ticks.40k_full_packets", "wheel",
                          "timer wheel: microsecond vs millisecond deadlines (40k_full_packets)",
                          lambda d: d.speedup("wheel_40k_full_packets_copy", "wheel_40k_full_packets_us_copy")))
    return out


DEFINITIONS = [
    Definition("machine.empty_call_ns", "machine", "empty Python call (machine reference)",
               lambda d: _nano(d, "python_empty_call"), "ns", False),
    # AEZ
    Definition("aez.aesni_vs_reference", "aez", "AEZ AES-NI vs pure-Python reference",
               lambda d: d.speedup("aez_reference_2064", "aez_aesni_2064")),
    Definition("aez.aesni_vs_portable", "aez", "AEZ AES-NI vs portable",
               lambda d: d.speedup("aez_portable_2064", "aez_aesni_2064")),
    Definition("aez.aesni_us", "aez", "AEZ AES-NI, 2,064 B", lambda d: _micro(d, "aez_aesni_2064"),
               "us", False, 3.0),
    # Sphinx
    Definition("sphinx.x25519_lanes_vs_libsodium", "sphinx", "X25519 per op in batches of 64: lanes vs libsodium",
               lambda d: d.speedup("x25519_per_op_batch_64_libsodium", "x25519_per_op_batch_64_ifma")),
    Definition("sphinx.batch_lanes_vs_libsodium", "sphinx", "batch unwrap per packet: lanes vs libsodium",
               lambda d: d.speedup("unwrap_batch_64_per_packet_libsodium", "unwrap_batch_64_per_packet_ifma"),
               target=3.5),
    Definition("sphinx.x25519_libsodium_vs_openssl", "sphinx", "X25519 one at a time: libsodium vs OpenSSL",
               lambda d: d.speedup("two_x25519_openssl", "two_x25519_libsodium")),
    *_sphinx_backend_definitions(),
    Definition("sphinx.batch_vs_reference", "sphinx", "batch unwrap (best backend) vs pure-Python reference",
               lambda d: d.speedup("unwrap_2524_pure_python_reference", _best_batch(d))),
    Definition("sphinx.two_threads_vs_one", "sphinx", "batch unwrap throughput: 2 threads vs 1",
               lambda d: d.speedup("unwrap_batch_per_packet_1_thread", "unwrap_batch_per_packet_2_threads"),
               target=1.8),
    Definition("sphinx.api_vs_core", "sphinx", "public API unwrap vs the core call (default backend)",
               lambda d: d.speedup("unwrap_2524_public_api",
                                   d.first(*[f"unwrap_2524_core_{b}" for b in ("ifma", "libsodium", "openssl")])),
               higher_is_better=False),
    Definition("sphinx.x25519_lanes_us", "sphinx", "X25519 per op, lanes (batches of 64)",
               lambda d: _micro(d, "x25519_per_op_batch_64_ifma"), "us", False),
    Definition("sphinx.batch_best_us", "sphinx", "batch unwrap per packet, best backend",
               lambda d: _micro(d, _best_batch(d)) if _best_batch(d) else None, "us", False, 20.0),
    # replay
    Definition("replay.filter_vs_set", "replay", "replay filter vs Python set (fresh tags)",
               lambda d: d.speedup(_replay_set(d), _replay_filter(d)) if _replay_filter(d) else None),
    Definition("replay.filter_ns_per_tag", "replay", "replay filter check_and_add per fresh tag (1e-6)",
               lambda d: _nano(d, _replay_filter(d)) if _replay_filter(d) else None, "ns", False, 150.0),
    Definition("replay.two_threads_vs_one", "replay", "replay filter: 2 threads (wall) vs 1 thread",
               lambda d: d.speedup("replay_mmap_12M_1e-6", "replay_two_threads")),
    *_wheel_definitions(),
    Definition("wheel.memory_bytes_per_packet", "wheel", "RSS per queued packet (2,524 B packets)",
               lambda d: d.get("wheel_memory", "rss_bytes_per_queued_packet"), "B", False),
    # wire
    Definition("wire.send_vs_twin", "wire", "SendPacket seal: compiled vs pure-Python twin",
               lambda d: d.speedup("wire_sendpacket_send_twin", "wire_sendpacket_send")),
    Definition("wire.receive_vs_twin", "wire", "SendPacket open: compiled vs pure-Python twin",
               lambda d: d.speedup("wire_sendpacket_receive_twin", "wire_sendpacket_receive")),
    Definition("wire.send_us", "wire", "SendPacket seal per frame", lambda d: _micro(d, "wire_sendpacket_send"),
               "us", False, 10.0),
    Definition("wire.receive_us", "wire", "SendPacket open per frame",
               lambda d: _micro(d, "wire_sendpacket_receive"), "us", False, 10.0),
    Definition("wire.handshake_vs_kyberpy", "wire", "handshake (responder): cryptography vs kyber-py",
               lambda d: d.speedup("wire_handshake_responder_kyberpy", "wire_handshake_responder")),
    # pipeline
    Definition("pipeline.classify_vs_reference", "pipeline", "worker classification: compiled vs twin",
               lambda d: d.speedup("classify_batch64_reference", "classify_batch64_core")),
    Definition("pipeline.io_cpu_vs_relay", "pipeline",
               "pipeline I/O-thread CPU per packet vs a plain relay (real unwrap, 1 worker)",
               lambda d: (_pipeline_case(d, "b_sphinx_w1") or {}).get("io_cpu_ratio_to_relay"),
               higher_is_better=False),
    Definition("pipeline.no_loss_vs_target", "pipeline",
               "pipeline no-loss rate vs 0.85 x workers / unwrap cost (1 worker)",
               lambda d: (_pipeline_case(d, "b_sphinx_w1") or {}).get("no_loss_ratio_to_target"), target=1.0),
    # node
    *[d for mode in ("pinned", "shared") for d in (
        Definition(f"node.{mode}.no_loss_vs_unwrap", "node",
                   f"node ({mode}): highest no-loss rate vs one core's raw batch unwrap rate",
                   lambda d, mode=mode: _node_mode(d, mode, "max_no_loss_vs_one_core_unwrap")),
        Definition(f"node.{mode}.max_no_loss_pps", "node", f"node ({mode}): highest no-loss rate offered",
                   lambda d, mode=mode: _node_mode(d, mode, "max_no_loss_pps"), "pkt/s", True,
                   9000.0 if mode == "pinned" else None),
        Definition(f"node.{mode}.cpu_us_per_packet", "node",
                   f"node ({mode}): CPU per forwarded packet at that rate",
                   lambda d, mode=mode: _node_cpu_at_best(d, mode), "us", False),
        Definition(f"node.{mode}.p99_ms_at_2000", "node", f"node ({mode}): p99 added latency at 2,000 pkt/s",
                   lambda d, mode=mode: _node_mode(d, mode, "p99_ms_at_2000"), "ms", False, 1.5),
        Definition(f"node.{mode}.rss_peak_mb", "node", f"node ({mode}): peak RSS",
                   lambda d, mode=mode: _node_mode(d, mode, "rss_peak_mb"), "MB", False, 150.0))],
    # provider
    Definition("provider.batched_vs_single_store", "provider", "spool store: batched commits vs one per message",
               lambda d: d.speedup("provider_spool_store_single_sqlite", "provider_spool_store_batched_sqlite")),
    Definition("provider.delivered_per_s", "provider", "provider delivery path (SQLite), messages/s",
               lambda d: d.get("provider", "delivery_sqlite", "delivered_per_s"), "msg/s"),
    Definition("provider.retrieve_vs_get_consensus", "provider",
               "RetrieveMessage vs GetConsensus round trips (wire session)",
               lambda d: d.get("provider", "node_sqlite", "retrieve_vs_get_consensus")),
    Definition("provider.client_vs_mix_ingress", "provider", "client ingress vs mix ingress rate (wire session)",
               lambda d: d.get("provider", "node_sqlite", "client_vs_mix_rate")),
]


def compute(medians: dict, extra: dict) -> list[Result]:
    """Every ratio and figure the run's data allows (the others are left out)."""
    data = Data(medians, extra or {})
    results = []
    for d in DEFINITIONS:
        try:
            value = d.compute(data)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            value = None
        if value is not None:
            results.append(Result(d.key, d.group, d.label, float(value), d.unit, d.higher_is_better, d.target))
    return results


def format_results(results: list[Result]) -> list[str]:
    lines = []
    ratios = [r for r in results if r.unit == "x"]
    figures = [r for r in results if r.unit != "x"]
    if ratios:
        lines.append("Ratios (hot path vs baseline, same run; > 1 = the hot path is faster unless marked):")
        lines += [f"  {r.label:<78} {r.format_value():>10}  {'(lower is better) ' if not r.higher_is_better else ''}"
                  f"{r.format_target()}".rstrip() for r in ratios]
    if figures:
        lines.append("Figures (absolute: ranges on a shared machine; compare ratios across machines):")
        lines += [f"  {r.label:<78} {r.format_value():>14}  {r.format_target()}".rstrip() for r in figures]
    return lines
