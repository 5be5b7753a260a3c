"""The example worker of docker-compose.yml: one handler, for tasks of kind `example.echo`.

conveyor tasks create example.echo --input '{"say": "hello"}'
"""

from __future__ import annotations

from typing import Any

from conveyor.client import TaskContext, task


@task("example.echo")
def echo(ctx: TaskContext) -> Any:
    ctx.set_summary("echoed its input")
    return ctx.input
