"""What the tracing tests share: an in-memory exporter that can be waited on, and the
whole application's hooks with a server TracerProvider exporting into it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.server.app import ServerHooks
from conveyor.server.services import default_hooks
from conveyor.server.tracing import Tracing


class Spans(InMemorySpanExporter):
    """An in-memory exporter that can be waited on."""

    def __init__(self) -> None:
        super().__init__()
        self.exported = threading.Condition()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.exported:
            result = super().export(spans)
            self.exported.notify_all()
        return result

    async def wait_for(self, name: str, count: int, within: float = 30) -> list[ReadableSpan]:
        """The first `count` finished spans named `name`, once there are that many."""

        def named() -> list[ReadableSpan]:
            return [s for s in self.get_finished_spans() if s.name == name]

        def wait() -> list[ReadableSpan]:
            with self.exported:
                assert self.exported.wait_for(lambda: len(named()) >= count, within), named()
                return named()[:count]

        return await asyncio.to_thread(wait)


def traced_hooks(exporter: Spans) -> ServerHooks:
    """default_hooks() with tracing on, every span exported to `exporter` as it ends."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return dataclasses.replace(default_hooks(), tracing=Tracing(provider))
