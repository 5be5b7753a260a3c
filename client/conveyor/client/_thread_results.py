"""Sync handlers' outcomes, from their threads back to the loop: one wake-up for all
the handlers that finished since the last.

`loop.run_in_executor` wraps each call's concurrent Future in an asyncio Future (a
callback each way, a copy of the state) and wakes the loop once per call through its
self-pipe (a write, then the loop's read and a pass): at concurrency 100 with short
handlers, that for every task. Here a thread appends its call's outcome to a deque and
wakes the loop only when no wake-up is pending; the loop then settles every outcome
waiting.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

Work = concurrent.futures.Future[Any]


class ThreadResults:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: collections.deque[tuple[asyncio.Future[Any], Work]] = collections.deque()
        self._lock = threading.Lock()
        self._waking = False

    def run(
        self, executor: concurrent.futures.ThreadPoolExecutor, call: Callable[[], Any]
    ) -> tuple[asyncio.Future[Any], Work]:
        """Runs `call` in `executor`: a future of its outcome on the loop, and the work
        (cancel both to give up on it; the work stops only if it has not started)."""
        self._loop = loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        work = executor.submit(call)
        work.add_done_callback(functools.partial(self._finished, waiter))
        return waiter, work

    def _finished(self, waiter: asyncio.Future[Any], work: Work) -> None:
        """In the thread that ran the call (or cancelled it)."""
        self._done.append((waiter, work))
        with self._lock:
            if self._waking:
                return  # the pending wake-up settles this one too: it appended first
            self._waking = True
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            self._waking = False  # before draining: what comes after wakes again
        while self._done:
            waiter, work = self._done.popleft()
            if waiter.done():
                continue  # given up on (abandoned)
            if work.cancelled():
                waiter.cancel()
                continue
            error = work.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(work.result())
