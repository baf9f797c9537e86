"""Test helpers for the management socket and the metrics endpoint: a line client and an HTTP
scraper with bounded waits, and a fake node."""
import asyncio
import os
import socket

from prometheus_client.parser import text_string_to_metric_families

from katzenpost.server.counters import DropReason, Event, PipelineCounters
from katzenpost.server.metrics import MetricsServer

TIMEOUT = 5.0


def run(coro, timeout=60.0, *, loop=None):
    """Run one async test body with an upper bound on its duration, on the stock asyncio loop or,
    with loop="uvloop" or KATZENPOST_TEST_LOOP=uvloop, on uvloop (which the node prefers)."""
    factory = None
    if (loop or os.environ.get("KATZENPOST_TEST_LOOP")) == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))


def serve(start, scenario, *, loop=None):
    """Run `scenario(server)` (or `scenario(*values)` when `start` gives a tuple whose first item
    is the server) against the server `await start()` started; the server is always stopped."""
    async def main():
        values = await start()
        values = values if isinstance(values, tuple) else (values,)
        try:
            return await scenario(*values)
        finally:
            await values[0].stop()
    return run(main(), loop=loop)


class Client:
    """One management session over the UNIX socket; every read is bounded."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path, *, banner=True):
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), TIMEOUT)
        client = cls(reader, writer)
        if banner:
            client.banner = await client.line()
        return client

    async def line(self):
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT)
        return raw[:-2].decode("utf-8")

    def send(self, data):
        self.writer.write(data if isinstance(data, bytes) else data.encode("utf-8"))

    async def command(self, text, end="\r\n"):
        self.send(text + end)
        await self.writer.drain()
        return await self.line()

    async def at_eof(self):
        """True once the server closed the session (after any unread data)."""
        rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        return rest == b""

    def close(self):
        self.writer.transport.abort()


class FakeUserCommands:
    def __init__(self):
        self.calls = []

    async def handle(self, fields):
        self.calls.append(list(fields))
        return "250 Requested action ok, completed"


class FakeControl:
    """The node as node_commands and metrics see it."""

    def __init__(self, *, is_provider=False, status=None):
        self.identifier = "mix1.example.org"
        self.is_provider = is_provider
        self.user_commands = FakeUserCommands() if is_provider else None
        self.shutdown_reasons = []
        self.send_rate = self.send_burst = None
        self.counters = PipelineCounters()
        self._status = status if status is not None else {
            "identifier": self.identifier, "is_provider": is_provider, "epoch": 42,
            "uptime_seconds": 12.5, "peers": {"up": 3, "known": 4},
            "connections": {"incoming": 2, "outgoing": 3},
            "queues": {"ingress": 5, "scheduler": 7, "outgoing": 1},
        }

    def request_shutdown(self, reason):
        self.shutdown_reasons.append(reason)

    def set_send_rate(self, n):
        self.send_rate = n

    def set_send_burst(self, n):
        self.send_burst = n

    def status(self):
        return self._status

    def pipeline_counters(self):
        return self.counters


def add_drops(counters, stage, **reasons):
    """Count drops on `stage` by reason name, e.g. add_drops(c, "worker-0", replay=3)."""
    block = counters.stage(stage)
    for name, n in reasons.items():
        block.drop(DropReason[name.upper()], n)


def add_events(counters, stage, **events):
    block = counters.stage(stage)
    for name, n in events.items():
        block.count(Event[name.upper()], n)


# ------------------------------------------------------------ metrics endpoint
async def started_metrics(control):
    """A MetricsServer on a free 127.0.0.1 port (retried if the port was taken meanwhile)."""
    for _ in range(5):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = MetricsServer(f"127.0.0.1:{port}", control)
        await server.start()
        if server.bound_address is not None:
            return server
    raise RuntimeError("no free port")


async def http(address, request):
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else None
    return status, head.decode(), body


async def scrape(address):
    status, head, body = await http(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, head
    assert "text/plain; version=0.0.4" in head
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape_once(control, *, loop=None):
    """Start a metrics endpoint for `control`, scrape it once, stop it: the parsed samples."""
    return serve(lambda: started_metrics(control), lambda server: scrape(server.bound_address), loop=loop)


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]
