"""The mixes' decoy loops end to end, with real processes on 127.0.0.1: the provider network of
test_provider_e2e (authority, three mixes, two providers with the `loop` Kaetzchen), the mixes
started with `[Debug] SendDecoyTraffic = true` and the authority's LambdaM raised so that each
mix sends a loop about every 0.5 s. Every mix must see its loops come back (STATUS `decoy`), and
the providers' Kaetzchen must have answered them (STATUS `provider.kaetzchen_replies`).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from test_provider_e2e import ProviderNetwork, current_document, run, users, wait_ready
from katzenpost.wire import WireError

MIX_DEBUG = "SendDecoyTraffic = true"
DECOY_PARAMETERS = "LambdaM = 0.002\nLambdaMMaxDelay = 2000"     # mean 500 ms between loops
LOOPS_TIMEOUT = 30.0        # after the network is ready (a loop round trip takes about a second)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """Its own network: the decoy traffic does not reach the provider tests' networks."""
    net = None

    def start():
        nonlocal net
        net = ProviderNetwork(tmp_path_factory.mktemp("decoy-e2e"), ["", ""], mix_debug=MIX_DEBUG,
                              parameters=DECOY_PARAMETERS)
        net.start()
        asyncio.run(wait_ready(net, users(net)[0]))

    try:
        try:
            start()
        except (AssertionError, OSError, WireError):
            # A start-up retry on a detected port collision (never a retry of a test).
            if not net.port_clash():
                raise
            net.close()
            start()
        yield net
    finally:
        if net is not None:
            net.close()


def decoys(net) -> dict[str, dict]:
    return {mix.name: mix.status().get("decoy") for mix in net.mixes}


def test_the_document_carries_the_raised_lambda_m(network):
    alice, _ = users(network)

    async def go():
        doc = await current_document(alice)
        assert (doc.lambda_m, doc.lambda_m_max_delay) == (0.002, 2000)
    run(go, alice)


def test_every_mix_gets_its_decoy_loops_back_through_the_providers_loop_service(network):
    deadline = time.monotonic() + LOOPS_TIMEOUT
    while True:
        counts = decoys(network)
        assert all(c is not None for c in counts.values()), f"a mix runs no decoy: {counts}"
        if all(c["delivered"] >= 1 for c in counts.values()):
            break
        network.check_alive()
        assert time.monotonic() < deadline, f"a mix got no decoy loop back: {counts}"
        time.sleep(0.5)
    # Read after the mixes: every loop a mix counts delivered was answered by a provider first.
    providers = {p.name: p.status()["provider"]["kaetzchen_replies"] for p in network.providers}
    print({name: {k: c[k] for k in ("sent", "delivered", "lost", "pending")} for name, c in counts.items()},
          "provider Kaetzchen replies:", providers)
    for name, c in counts.items():
        assert c["sent"] >= c["delivered"] >= 1, (name, c)
        # No reply is misattributed or garbled, and nothing failed to go out.
        assert (c["unmatched_replies"], c["undecryptable_replies"], c["send_failures"]) == (0, 0, 0), (name, c)
    assert sum(providers.values()) >= sum(c["delivered"] for c in counts.values()) >= 3, (providers, counts)


def test_providers_run_no_decoy(network):
    # SendDecoyTraffic is a mix's setting; the providers' STATUS has no decoy section.
    assert all("decoy" not in p.status() for p in network.providers)
