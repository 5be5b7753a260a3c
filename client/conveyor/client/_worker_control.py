"""Worker-control commands as a Worker obeys them: what each does to the worker's
concurrency and queues, and the acknowledgement it sends back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.client._json import from_struct
from conveyor.v1 import enums_pb2, worker_pb2


@dataclass(frozen=True)
class Obeyed:
    """The worker after a command: its concurrency and queues, whether it must open a
    new stream (with a new Hello), and the acknowledgement to send first."""

    ack: worker_pb2.CommandAck
    verb: str
    concurrency: int
    queues: list[str]
    reconnect: bool


def obey(command: worker_pb2.WorkerCommand, concurrency: int, queues: list[str]) -> Obeyed:
    """RESIZE_POOL changes the concurrency by its delta (at least 1 remains);
    ADD_CONSUMER / CANCEL_CONSUMER change the queues (never to none); those and
    RESTART_WORKER then reconnect. Anything else is refused."""
    verb = enums_pb2.CommandVerb.Name(command.verb).removeprefix("COMMAND_VERB_")
    args = from_struct(command.args)
    ok, error, reconnect = True, "", False
    queues = list(queues)
    result: dict[str, Any] = {}
    if verb == "RESTART_WORKER":
        reconnect = True
    elif verb == "RESIZE_POOL":
        concurrency = max(1, concurrency + int(args.get("delta", 0)))
        result = {"concurrency": concurrency}
    elif verb in ("ADD_CONSUMER", "CANCEL_CONSUMER"):
        queue = str(args.get("queue", ""))
        if verb == "ADD_CONSUMER" and queue not in queues:
            queues.append(queue)
            reconnect = True
        elif verb == "CANCEL_CONSUMER" and queue in queues:
            if len(queues) == 1:
                ok, error = False, "a worker needs at least one queue"
            else:
                queues.remove(queue)
                reconnect = True
        result = {"queues": list(queues)}
    else:
        ok, error = False, f"{verb} is not a worker-control command this worker knows"
    ack = worker_pb2.CommandAck(command=command.command, ok=ok, error=error)
    ack.result.update(result)
    return Obeyed(ack, verb, concurrency, queues, reconnect and ok)
