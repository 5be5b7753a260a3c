"""One Connect stream of a Worker: its outgoing queue, window and generation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from conveyor.v1 import worker_pb2


class Stream:
    """The sending side of one Connect call.

    `generation` numbers the streams of a Worker, so a task knows whether it was
    assigned on the stream that is open now (it reports there) or on an earlier one
    (it reports with the unary RPCs). `window` is the credit granted on this stream.
    """

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.window = 0
        self.welcomed = False
        self.open = True
        self._outgoing: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()

    def send(self, message: worker_pb2.ConnectRequest) -> None:
        if self.open:
            self._outgoing.put_nowait(message)

    def grant(self, tasks: int) -> None:
        """Changes the window by `tasks` (negative shrinks it)."""
        if tasks:
            self.window = max(0, self.window + tasks)
            self.send(worker_pb2.ConnectRequest(credit=worker_pb2.Credit(tasks=tasks)))

    def close(self) -> None:
        """Half-closes: the server sees the end of the requests and ends the call."""
        if self.open:
            self.open = False
            self._outgoing.put_nowait(None)

    async def requests(self) -> AsyncIterator[worker_pb2.ConnectRequest]:
        while True:
            message = await self._outgoing.get()
            if message is None:
                return
            yield message
