"""SIGTERM and SIGINT stop a Worker gracefully; a second signal gets the default action,
for an impatient operator."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

_log = logging.getLogger("conveyor.worker")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]) -> None:
    def on_signal(signum: signal.Signals) -> None:
        _log.info("worker stopping on %s", signum.name)
        request_stop()
        forget_signals(loop)

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)


def forget_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in _SIGNALS:
        loop.remove_signal_handler(sig)
