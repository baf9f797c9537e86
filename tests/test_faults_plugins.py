"""Plugin faults beyond tests/test_provider_plugins.py (which covers a plugin that crashes once,
hangs, answers garbage CBOR or never prints its socket path, and tests/test_provider_plugin_orphans.py,
a provider killed with SIGKILL): a plugin in a crash loop, and one whose answer never ends. Real
plugin processes; every request ends as an answer or a counted failure within its timeout, and
nothing grows without bound (docs/reliability.md, "Faults")."""
from __future__ import annotations

import asyncio
import time

import pytest

from katzenpost.provider.kaetzchen.cborplugin import CBORPluginService, PluginError
from tests.test_provider_plugins import SERVER, run, script


def test_a_plugin_in_a_crash_loop_backs_off_and_never_blocks_a_request(tmp_path):
    """Every process exits a moment after it printed its socket path. Requests fail fast (no
    request waits for its 5-s timeout), the restarts back off (0.1, 0.2, 0.4 ... s), a parameter
    refresh before a publication keeps the last parameters and returns, and the halt is prompt."""
    looping = script(tmp_path, "looping", """
import threading
def respond(path, body):
    return cbor2.dumps({"k": "v"})
""" + SERVER.replace("print(path, flush=True)",
                     "print(path, flush=True)\nthreading.Timer(0.1, lambda: os._exit(3)).start()"))

    async def scenario():
        service = CBORPluginService("l", "+l", looping, {}, 1, backoff_initial=0.1, backoff_max=5)
        await service.start()
        outcomes, slowest = {"answered": 0, "failed": 0}, 0.0
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            began = time.monotonic()
            try:
                await service.on_request(1, b"x" + bytes(1489), True)
                outcomes["answered"] += 1
            except PluginError:
                outcomes["failed"] += 1
            slowest = max(slowest, time.monotonic() - began)
            await asyncio.sleep(0.02)
        began = time.monotonic()
        try:
            await service.refresh_parameters()
        except PluginError:
            pass
        refresh = time.monotonic() - began
        restarts, params = service.restarts, service.parameters()
        began = time.monotonic()
        await service.halt()
        return outcomes, slowest, refresh, restarts, params, time.monotonic() - began

    outcomes, slowest, refresh, restarts, params, halt = run(scenario())
    assert outcomes["failed"] > 0 and sum(outcomes.values()) > 20    # every request ended
    # Below the 5-s request timeout: a request that waited for it would show; a margin of
    # seconds keeps a busy machine's stalls from failing the test.
    assert slowest < 4.5 and refresh < 4.5 and halt < 5.0
    assert 1 <= restarts <= 5            # backed off: 0.1+0.2+0.4+0.8 s of waits in ~2 s
    assert params in ({}, {"k": "v"})                                 # the last known ones


def test_a_plugin_whose_answer_never_ends_is_cut_off_and_the_next_request_works(tmp_path):
    endless = script(tmp_path, "endless", """
import cbor2 as _c
def respond(path, body):
    request = _c.loads(body) if body else None
    if path == "/request" and request["Payload"][:1] == b"e":
        return "endless"
    return _c.dumps({"Payload": b"fine"})
""" + SERVER.replace("""        answer = respond(self.path, body)
        if answer is None:
            return
""", """        answer = respond(self.path, body)
        if answer is None:
            return
        if answer == "endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"10000\\r\\n" + bytes(65536) + b"\\r\\n")
            except OSError:
                return
"""))

    async def scenario():
        service = CBORPluginService("e", "+e", endless, {}, 1, request_timeout=10.0)
        await service.start()
        try:
            began = time.monotonic()
            with pytest.raises(PluginError, match="too long"):
                await service.on_request(1, b"e" + bytes(1489), True)
            cut = time.monotonic() - began
            return cut, await service.on_request(2, b"x" + bytes(1489), True)
        finally:
            await service.halt()

    cut, answer = run(scenario())
    assert cut < 10.0 and answer == b"fine"       # cut by its size, not by the timeout
