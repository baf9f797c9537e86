"""Bounded cancellation for the stop and halt paths (katzenpost.tasks)."""
import asyncio

from katzenpost.tasks import cancel_and_wait


def test_a_task_that_swallows_one_cancel_is_cancelled_again():
    async def scenario():
        async def stubborn():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(3600)
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task, None], "test", timeout=5)
        assert task.cancelled()
    asyncio.run(scenario())


def test_a_task_that_never_ends_is_abandoned_after_the_bound(caplog):
    async def scenario():
        release = asyncio.Event()

        async def immortal():
            while not release.is_set():
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass
        task = asyncio.create_task(immortal())
        await asyncio.sleep(0)
        ended = await asyncio.wait_for(cancel_and_wait([task], "immortal", timeout=0.6), 5)
        release.set()
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return ended
    caplog.set_level("WARNING", logger="katzenpost.tasks")
    assert asyncio.run(scenario()) is False
    assert any("immortal: 1 task(s) did not stop within 0.6 s" in r.getMessage()
               for r in caplog.records)


def test_exceptions_of_finished_tasks_are_consumed_and_the_caller_is_skipped():
    async def scenario():
        async def boom():
            raise RuntimeError("x")
        failed = asyncio.create_task(boom())
        await asyncio.sleep(0)
        assert await cancel_and_wait([failed, asyncio.current_task()], "test", timeout=1)
    asyncio.run(scenario())
