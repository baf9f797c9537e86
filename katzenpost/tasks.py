"""Bounded cancellation of asyncio tasks for the stop and halt paths.

A task can survive one ``cancel()``: Python 3.11's ``asyncio.wait_for`` returns a result that
arrived together with the cancellation and drops the cancellation, and so can any code that
catches CancelledError. A halt that cancels once and waits without a bound then hangs until
SIGKILL. ``cancel_and_wait`` cancels again at every short interval and gives up, with a
warning, after a deadline, so every stop step ends.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Iterable

log = logging.getLogger("katzenpost.tasks")

STOP_TIMEOUT = 10.0        # seconds one stop step may take before it is abandoned
RECANCEL_INTERVAL = 0.25   # a task that swallowed a cancellation is cancelled again this soon


async def cancel_and_wait(tasks: Iterable[asyncio.Task | None], what: str,
                          timeout: float = STOP_TIMEOUT) -> bool:
    """Cancel the tasks and wait until they are done, at most ``timeout`` seconds; True if
    they all ended. Their results and exceptions are consumed (a stop step reports nothing)."""
    tasks = [task for task in tasks if task is not None]
    current = asyncio.current_task()
    pending = {task for task in tasks if not task.done() and task is not current}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            log.warning("%s: %d task(s) did not stop within %.1f s; abandoned",
                        what, len(pending), timeout)
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, RECANCEL_INTERVAL))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    return not pending


__all__ = ["cancel_and_wait", "STOP_TIMEOUT"]
