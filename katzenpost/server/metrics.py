"""Prometheus metrics of the node, served over HTTP at `/metrics` on the `[Metrics]` address.

Nothing is counted here: at scrape time a collector reads the pipeline's counters and the node's
`status()`, so metrics cost the packet path nothing. Names follow the reference server's
(`katzenpost_<subsystem>_<name>`) where it has a counterpart; the rest are ours, also under
`katzenpost_`. docs/operations.md lists every metric.

The HTTP side is a small asyncio server on the node's loop (so `status()` is read on the thread
that owns the node's state): one bounded request per connection, GET or HEAD, then close.
"""
import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest

from katzenpost.config import check_ip_port, split_host_port
from katzenpost.server.counters import DropReason, Event

log = logging.getLogger("katzenpost.server.metrics")

NS = "katzenpost"
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 10.0          # seconds to read a request head or write the response
MAX_CONNECTIONS = 16
# generate_latest writes the classic text format; name that version, which every Prometheus reads
# (recent prometheus_client versions advertise a newer one by default).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The reference server's per-subsystem drop counters, by the place its code drops the packet
# (our DropReasons are finer). HALT (packets still queued at shutdown) has no counterpart.
REFERENCE_DROPS = {
    "crypto_worker": (DropReason.UNWRAP_DELAY, DropReason.UNWRAP_FAILED, DropReason.DUPLICATE_COMMAND,
                      DropReason.REPLAY, DropReason.INVALID_COMMANDS, DropReason.FORWARD_AT_PROVIDER,
                      DropReason.DELAY_TOO_LONG, DropReason.DWELL_EXCEEDED, DropReason.TERMINAL_AT_MIX,
                      DropReason.CLIENT_BYPASS, DropReason.SCHEDULER_QUEUE_FULL, DropReason.LOCAL_QUEUE_FULL,
                      DropReason.WORKER_ERROR, DropReason.NO_MIX_KEYS),
    "scheduler": (DropReason.DELAY_ABOVE_MAX, DropReason.NO_ROUTE, DropReason.SCHEDULER_FULL,
                  DropReason.SCHEDULER_LATE, DropReason.DISPATCH_QUEUE_FULL),
    "incoming_conn": (DropReason.INGRESS_QUEUE_FULL,),
    "outgoing_conn": (DropReason.DESTINATION_QUEUE_FULL, DropReason.SEND_SLACK, DropReason.DESTINATION_GONE),
    "provider": (DropReason.KAETZCHEN_SURB_REPLY,),
}

# The provider role's own drop reasons (its STATUS `provider.drops`), counted in the provider
# after the pipeline handed a packet over: exported with the pipeline's reasons in
# `katzenpost_dropped_packets_total{reason}` (all present, zeros included, on a provider) and in
# the reference's `katzenpost_provider_dropped_packets_total`. docs/operations.md explains each.
PROVIDER_DROP_REASONS = (
    "provider_delay", "unknown_recipient", "invalid_recipient", "malformed_payload", "spool_backlog",
    "spool_write_failed", "rate_limited", "kaetzchen_unknown_endpoint", "kaetzchen_malformed",
    "kaetzchen_queue_full", "kaetzchen_failed", "kaetzchen_delay",
)

# Our named totals: metric name -> (pipeline event, help).
EVENT_TOTALS = {
    "packets_in": (Event.RECEIVED, "Packets accepted from the network into the pipeline."),
    "unwrapped_packets": (Event.UNWRAPPED, "Packets whose Sphinx unwrap succeeded."),
    "forwarded_packets": (Event.FORWARD, "Unwrapped packets classified for forwarding to the next hop."),
    "packets_out": (Event.SENT, "Packets handed to a next hop's connection."),
    "packets_delivered_locally": (Event.LOCAL_DELIVERED, "Packets handed to the provider or decoy side."),
}

# The decoy loop's outcomes (STATUS `decoy`, on a mix with SendDecoyTraffic), and the replies the
# reference's `decoy_dropped_packets_total` counts: a wrong recipient or SURB ID, or a payload
# that does not decrypt.
DECOY_OUTCOMES = ("sent", "delivered", "lost")
DECOY_DROPPED = ("unmatched_replies", "undecryptable_replies")


class NodeCollector:
    """Builds every metric family from one `pipeline_counters()` snapshot and one `status()`."""

    def __init__(self, counters, status):
        self._counters = counters
        self._status = status if isinstance(status, Mapping) else {}

    def collect(self):
        if self._counters is not None:
            snapshot = self._counters.snapshot()
            yield from _drop_families(snapshot["drops"], _provider_drops(self._status))
            yield from _event_families(snapshot["events"])
            histogram = getattr(self._counters, "dispatch_delay", None)
            if histogram is not None:
                yield _dispatch_delay_family(histogram.snapshot())
        yield from _status_families(self._status)


async def render(control) -> bytes:
    """The Prometheus text exposition of the node's metrics now."""
    try:
        status = control.status()
        if inspect.isawaitable(status):
            status = await status
    except Exception:
        log.exception("metrics: the node's status failed; serving the counters only")
        status = {}
    counters = control.pipeline_counters()
    return generate_latest(NodeCollector(counters, status))


# ------------------------------------------------------------ families
def _family(kind, name, documentation, value=None, labels=()):
    """A `kind` metric family named katzenpost_<name>: unlabelled with `value`, or empty to be
    filled per label set."""
    family = kind(f"{NS}_{name}", documentation, labels=list(labels) or None)
    if value is not None:
        family.add_metric([], value)
    return family


_counter = functools.partial(_family, CounterMetricFamily)
_gauge = functools.partial(_family, GaugeMetricFamily)


def _provider_drops(status) -> dict[str, int] | None:
    """The provider role's drop counts from STATUS (None on a mix): every known reason (zeros
    included, STATUS lists only the non-zero ones), then any other it reports."""
    provider = status.get("provider")
    if not isinstance(provider, Mapping):
        return None
    reported = provider.get("drops")
    reported = reported if isinstance(reported, Mapping) else {}
    drops = {reason: 0 for reason in PROVIDER_DROP_REASONS}
    for reason, count in sorted(reported.items(), key=lambda kv: str(kv[0])):
        if _is_number(count):
            drops[str(reason)] = count
    return drops


def _drop_families(drops, provider_drops=None):
    by_reason = _counter("dropped_packets", "Packets dropped, by reason.", labels=["reason"])
    for reason in DropReason:
        by_reason.add_metric([reason.name.lower()], drops.get(reason.name.lower(), 0))
    pipeline_reasons = {reason.name.lower() for reason in DropReason}
    for reason, count in (provider_drops or {}).items():
        if reason not in pipeline_reasons:      # a name clash would be two series of one label set
            by_reason.add_metric([reason], count)
    yield by_reason
    for subsystem, reasons in REFERENCE_DROPS.items():
        total = sum(drops.get(r.name.lower(), 0) for r in reasons)
        if subsystem == "provider":
            total += sum((provider_drops or {}).values())
        yield _counter(f"{subsystem}_dropped_packets", f"Packets dropped by the {subsystem} stage.", total)
    yield _counter("crypto_worker_replayed_packets", "Packets dropped as replays (also in the crypto "
                   "worker's dropped total).", drops.get("replay", 0))


def _event_families(events):
    for name, (event, documentation) in EVENT_TOTALS.items():
        yield _counter(name, documentation, events.get(event.name.lower(), 0))
    every = _counter("pipeline_events", "Every pipeline event counter, by event.", labels=["event"])
    for event in Event:
        every.add_metric([event.name.lower()], events.get(event.name.lower(), 0))
    yield every


def _dispatch_delay_family(histogram):
    buckets, cumulative = [], 0
    for bound_ms, count in zip(histogram["bounds_ms"], histogram["counts"]):
        cumulative += count
        buckets.append((_seconds_label(bound_ms), cumulative))
    cumulative += histogram["counts"][-1]
    buckets.append(("+Inf", cumulative))
    return HistogramMetricFamily(
        f"{NS}_scheduler_dispatch_delay_seconds",
        "Time from a forwarded packet's scheduled departure to its hand-over to the outgoing queue.",
        buckets=buckets, sum_value=histogram["sum_ms"] / 1000)


def _seconds_label(bound_ms):
    return repr(bound_ms / 1000)


def _status_families(status):
    identifier = status.get("identifier")
    if isinstance(identifier, str):
        info = _gauge("info", "Constant 1, labelled with the node's identifier and role.",
                      labels=["identifier", "role"])
        info.add_metric([identifier, "provider" if status.get("is_provider") else "mix"], 1)
        yield info
    for key, name, documentation in (
            ("uptime_seconds", "uptime_seconds", "Seconds since the node started."),
            ("epoch", "epoch", "The current PKI epoch."),
    ):
        if _is_number(status.get(key)):
            yield _gauge(name, documentation, status[key])
    yield from _nested(status, "peers", {
        "up": ("peers_up", "Outgoing peers with an established session."),
        "known": ("peers_known", "Outgoing peers the PKI document lists for this node."),
    }, _gauge)
    yield from _nested(status, "connection_totals", {
        "outgoing": ("outgoing_conn_outgoing_connections", "Outgoing connections established."),
        "canceled_outgoing": ("outgoing_conn_canceled_outgoing_connections",
                              "Outgoing connection attempts canceled."),
    }, _counter)
    yield from _labelled_gauge(status, "connections", "connections", "direction",
                               "Open connections, by direction.")
    yield from _labelled_gauge(status, "queues", "queue_packets", "queue",
                               "Packets waiting in a queue of the node, by queue.")
    yield from _decoy_families(status)


def _decoy_families(status):
    """The decoy loop's counters; nothing when the node runs no decoy (no STATUS `decoy`)."""
    decoy = status.get("decoy")
    if not isinstance(decoy, Mapping):
        return
    loops = _counter("decoy_loops", "Decoy loop packets of this mix, by outcome.", labels=["outcome"])
    for outcome in DECOY_OUTCOMES:
        loops.add_metric([outcome], decoy[outcome] if _is_number(decoy.get(outcome)) else 0)
    yield loops
    yield _counter("decoy_dropped_packets", "Decoy SURB replies dropped: unknown recipient or SURB ID, "
                   "or undecryptable.", sum(decoy[k] for k in DECOY_DROPPED if _is_number(decoy.get(k))))
    yield from _nested(status, "decoy", {
        "ignored_documents": ("decoy_documents_ignored", "PKI documents the decoy could not use."),
        "send_failures": ("decoy_send_failures", "Decoy loops not sent: no loop provider or no path."),
    }, _counter)
    yield from _nested(status, "decoy", {
        "pending": ("decoy_pending_surbs", "Decoy loops sent and still awaiting their reply."),
    }, _gauge)


def _nested(status, key, fields, make):
    """One `make` family per number found in the sub-table status[key] (others are skipped)."""
    section = status.get(key)
    if isinstance(section, Mapping):
        for field, (name, documentation) in fields.items():
            if _is_number(section.get(field)):
                yield make(name, documentation, section[field])


def _labelled_gauge(status, key, name, label, documentation):
    section = status.get(key)
    if isinstance(section, Mapping):
        family = _gauge(name, documentation, labels=[label])
        for item, value in sorted(section.items(), key=lambda kv: str(kv[0])):
            if _is_number(value):
                family.add_metric([str(item)], value)
        yield family


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------ HTTP
class MetricsServer:
    """Serves `/metrics` on `address` ("IP:port", a literal IP) from the running node `control`.

    A busy or unusable address does not stop the node (as in the reference): `start` logs an
    ERROR and `bound_address` stays None."""

    def __init__(self, address: str, control):
        check_ip_port(address)
        self._host, self._port = split_host_port(address)
        self._control = control
        self._server = None
        self._connections = set()
        self.bound_address = None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("metrics: already started")
        try:
            self._server = await asyncio.start_server(self._on_connection, self._host, self._port,
                                                      limit=MAX_REQUEST_BYTES)
        except OSError as err:
            log.error("metrics: cannot listen on %s:%d (%s); metrics are off", self._host, self._port,
                      err.strerror or err)
            return
        host, port = self._server.sockets[0].getsockname()[:2]
        self.bound_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("metrics: serving http://%s/metrics", self.bound_address)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections, timeout=REQUEST_TIMEOUT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), REQUEST_TIMEOUT)
        self.bound_address = None

    async def _on_connection(self, reader, writer):
        task = asyncio.current_task()
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await asyncio.wait_for(self._serve(reader, writer), REQUEST_TIMEOUT)
        except (asyncio.CancelledError, asyncio.TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics: request failed")
        finally:
            self._connections.discard(task)
            writer.transport.abort()     # the response was drained; nothing else to wait for

    async def _serve(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return await _respond(writer, 431, "Request Header Fields Too Large")
        except asyncio.IncompleteReadError:
            return
        request = head.split(b"\r\n", 1)[0].split(b" ")
        if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
            return await _respond(writer, 400, "Bad Request")
        method, target = request[0], request[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return await _respond(writer, 405, "Method Not Allowed", extra=b"Allow: GET, HEAD\r\n")
        if target != b"/metrics":
            return await _respond(writer, 404, "Not Found")
        try:
            body = await render(self._control)
        except Exception:
            log.exception("metrics: rendering failed")
            return await _respond(writer, 500, "Internal Server Error")
        await _respond(writer, 200, "OK", body, CONTENT_TYPE, head_only=method == b"HEAD")


async def _respond(writer, code, reason, body=None, content_type="text/plain; charset=utf-8",
                   *, head_only=False, extra=b""):
    if body is None:
        body = f"{code} {reason}\n".encode()
    writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode() + extra + b"\r\n")
    if not head_only:
        writer.write(body)
    await writer.drain()
