"""ThreadResults: sync handlers' outcomes come back to the loop, however many at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import Any

import pytest

from conveyor.client._thread_results import ThreadResults


async def test_every_outcome_reaches_its_own_waiter() -> None:
    results = ThreadResults()
    gate = threading.Event()

    def call(i: int) -> int:
        gate.wait(10)  # all finish together: most share one wake-up of the loop
        if i % 7 == 0:
            raise ValueError(i)
        return i * 2

    with concurrent.futures.ThreadPoolExecutor(16) as executor:
        waiters = [results.run(executor, functools.partial(call, i))[0] for i in range(200)]
        gate.set()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i % 7 == 0:
            assert isinstance(outcome, ValueError) and outcome.args == (i,)
        else:
            assert outcome == i * 2


async def test_work_given_up_on_never_runs_and_a_late_outcome_is_dropped() -> None:
    results = ThreadResults()
    release = threading.Event()
    ran: list[str] = []
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    def hold() -> str:
        release.wait(10)
        ran.append("held")
        return "late"

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        running, _ = results.run(executor, hold)
        queued, work = results.run(executor, lambda: ran.append("queued"))
        # The worker abandons both: the queued call never starts, the running one's
        # outcome arrives after its waiter was cancelled and is dropped.
        queued.cancel()
        work.cancel()
        running.cancel()
        release.set()
    # The threads have posted their outcomes (the executor waited for them): a callback
    # scheduled now runs after the settling.
    settled = loop.create_future()
    loop.call_soon(settled.set_result, None)
    await settled
    with pytest.raises(asyncio.CancelledError):
        await running
    assert queued.cancelled() and ran == ["held"]
    assert errors == []  # no outcome set on a waiter given up on
