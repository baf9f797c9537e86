"""The load generator's batches: `run_load` asks for each batch ahead of its first send with
the planned send times, and `Prebuilt` hands the built items out by index, failures included."""
import asyncio

import pytest

from katzenpost.client import load
from katzenpost.client.load import Prebuilt, TrafficStats, batch_size, run_load
from katzenpost.client.session import ClientError


def test_batch_size_follows_the_rate_within_bounds():
    assert batch_size(0.1) == 1 and batch_size(4) == 16 and batch_size(1000) == load.MAX_BATCH


def test_run_load_prepares_each_batch_before_its_first_send(monkeypatch):
    events = []

    async def prepare(indices, times):
        events.append(("prepare", list(indices), times))

    async def send_one(index):
        events.append(("send", index))

    monkeypatch.setattr(load, "LOOKAHEAD", 0.5)          # 40/s -> batches of 20
    asyncio.run(run_load(send_one, rate=40, duration=1.0, stats=TrafficStats(), reply_slack=0,
                         prepare=prepare))
    prepares = [e for e in events if e[0] == "prepare"]
    assert [p[1] for p in prepares] == [list(range(0, 20)), list(range(20, 40))]
    assert [e[1] for e in events if e[0] == "send"] == list(range(40))
    assert events.index(prepares[1]) == events.index(("send", 19)) + 1
    times = prepares[0][2] + prepares[1][2]
    assert all(b - a == pytest.approx(1 / 40) for a, b in zip(times, times[1:]))


def test_prebuilt_hands_out_items_and_their_errors():
    async def build(indices, unix_times):
        if indices[0] == 10:
            raise ClientError("client: no document")
        return [ClientError(f"bad {i}") if i == 2 else (i, t) for i, t in zip(indices, unix_times)]

    built = Prebuilt(build, unix_now=lambda: 1000.0)

    async def go():
        import time
        now = time.monotonic()
        await built.prepare(range(0, 4), [now + i for i in range(4)])
        await built.prepare(range(10, 12), [now, now])
    asyncio.run(go())
    index, unix = built.take(1)
    assert index == 1 and unix == pytest.approx(1001.0, abs=0.05)
    with pytest.raises(ClientError, match="bad 2"):
        built.take(2)
    with pytest.raises(ClientError, match="no document"):
        built.take(11)
    with pytest.raises(KeyError):
        built.take(1)                                    # an item is handed out once
