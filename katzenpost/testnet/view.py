"""What the testnet shows: the live view (a `rich` table redrawn in place on a terminal, one
progress line every few seconds otherwise) and the final report (a table and a JSON file)."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table

from katzenpost.client.load import TrafficStats


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def traffic_table(stats: TrafficStats, title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("traffic", "sent", "delivered", "lost", "failed", "pending", "p50", "p99"):
        table.add_column(column, justify="left" if column == "traffic" else "right", no_wrap=True)
    rows = [(name, stats.summary(name)) for name in sorted(stats.kinds)] + [("total", stats.summary())]
    for name, s in rows:
        table.add_row(name, str(s["sent"]), str(s["delivered"]), str(s["lost"]), str(s["failed"]),
                      str(s["pending"]), _ms(s["latency_p50"]), _ms(s["latency_p99"]),
                      style="bold" if name == "total" else None)
    return table


def node_table(views) -> Table:
    table = Table(title="nodes", title_justify="left", expand=False)
    for column in ("node", "epoch", "links", "in/s", "out/s", "received", "dropped"):
        table.add_column(column, justify="left" if column == "node" else "right", no_wrap=True)
    for view in views.values():
        links = f"{view.peers_up}/{view.peers_known}" if view.up else "[red]down[/red]"
        table.add_row(view.name, "-" if view.epoch is None else str(view.epoch), links,
                      f"{view.rate_in:.1f}", f"{view.rate_out:.1f}", str(view.received),
                      str(sum(view.drops_since_baseline().values())))
    return table


def live_view(stats: TrafficStats, views, header: str) -> Group:
    return Group(header, traffic_table(stats, "client traffic"), node_table(views))


def progress_line(stats: TrafficStats, views, elapsed: float) -> str:
    s = stats.summary()
    rates = " ".join(f"{v.name}={v.rate_in:.0f}" for v in views.values())
    return (f"[{elapsed:5.0f} s] sent {s['sent']} delivered {s['delivered']} lost {s['lost']} "
            f"failed {s['failed']} pending {s['pending']} p50 {_ms(s['latency_p50'])} "
            f"p99 {_ms(s['latency_p99'])} | pkts/s in: {rates}")


def report_dict(stats: TrafficStats, views, *, settings: dict, epochs: list[int], restarts: list[dict],
                acked: int, acked_not_retrieved: int, duplicates: int, errors: dict) -> dict:
    return {
        "settings": settings,
        "total": stats.summary(),
        "by_kind": {name: stats.summary(name) for name in sorted(stats.kinds)},
        "messages": {"acknowledged": acked, "acknowledged_not_retrieved": acked_not_retrieved,
                     "retrieved_twice": duplicates},
        "epochs": epochs,
        "restarts": restarts,
        "nodes": {name: view.as_dict() for name, view in views.items()},
        "errors": errors,
    }


def report_text(report: dict) -> str:
    total, msgs = report["total"], report["messages"]
    lines = [
        "== katzenpost-testnet report",
        f"sent {total['sent']}, delivered {total['delivered']}, lost {total['lost']}, failed "
        f"{total['failed']}, pending {total['pending']}; latency p50 {_ms(total['latency_p50'])}, "
        f"p99 {_ms(total['latency_p99'])}, max {_ms(total['latency_max'])}",
        f"messages acknowledged {msgs['acknowledged']}, of those not retrieved by the recipient "
        f"{msgs['acknowledged_not_retrieved']}",
        f"epochs during traffic: {', '.join(map(str, report['epochs']))}",
    ]
    for name, s in report["by_kind"].items():
        lines.append(f"  {name:<10} sent {s['sent']:>5} delivered {s['delivered']:>5} lost {s['lost']:>3} "
                     f"failed {s['failed']:>3}  p50 {_ms(s['latency_p50']):>7} p99 {_ms(s['latency_p99']):>7}")
    for restart in report["restarts"]:
        if restart.get("error"):
            lines.append(f"  restarted {restart['name']} at {restart['at']:.0f} s: did not come back")
        else:
            lines.append(f"  restarted {restart['name']} at {restart['at']:.0f} s, back in {restart['took']:.1f} s, "
                         f"{restart.get('delivered_after', 0)} replies after that")
    for name, node in report["nodes"].items():
        drops = ", ".join(f"{k} {v}" for k, v in sorted(node["drops"].items())) or "none"
        lines.append(f"  {name:<10} received {node['packets_received']:>6} sent {node['packets_sent']:>6} "
                     f"drops during traffic: {drops}")
    for error, count in report["errors"].items():
        lines.append(f"  error x{count}: {error}")
    return "\n".join(lines)
