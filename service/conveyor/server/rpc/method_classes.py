"""Which request-limit class (RateLimits) each contract method draws on.

A table, not a rule: the class is a decision (a worker's lease is not a "write" that
a flood of creates may starve), so a new method is classified here on purpose.
tests/test_request_limits.py walks every method of the descriptors and fails on one
missing from this table. Streams count once, when they open.

Methods a branch is still building may be listed before they exist: a name no
descriptor has is never looked up.
"""

from __future__ import annotations

from conveyor.server.domain.request_limits import CLASSES

__all__ = ["METHOD_CLASSES", "class_index"]

_READ, _WRITE, _BULK, _STREAM, _WORKER = "read", "write", "bulk", "stream", "worker"

METHOD_CLASSES: dict[str, str] = {
    # TaskService
    "/conveyor.v1.TaskService/CreateTask": _WRITE,
    "/conveyor.v1.TaskService/BatchCreateTasks": _BULK,
    "/conveyor.v1.TaskService/GetTask": _READ,
    "/conveyor.v1.TaskService/ListTasks": _READ,
    "/conveyor.v1.TaskService/GetTaskTree": _READ,
    "/conveyor.v1.TaskService/CancelTask": _WRITE,
    "/conveyor.v1.TaskService/ApproveTask": _WRITE,
    "/conveyor.v1.TaskService/RejectTask": _WRITE,
    "/conveyor.v1.TaskService/BatchDeleteTasks": _BULK,
    "/conveyor.v1.TaskService/ExportTasks": _BULK,
    "/conveyor.v1.TaskService/ListTaskLogs": _READ,
    "/conveyor.v1.TaskService/WatchTaskLogs": _STREAM,
    "/conveyor.v1.TaskService/AppendTaskLogs": _WORKER,
    # QueueService
    "/conveyor.v1.QueueService/ListQueues": _READ,
    "/conveyor.v1.QueueService/GetQueue": _READ,
    "/conveyor.v1.QueueService/UpdateQueue": _WRITE,
    "/conveyor.v1.QueueService/PauseQueue": _WRITE,
    "/conveyor.v1.QueueService/ResumeQueue": _WRITE,
    # WorkerService: the worker class, except the reads about workers.
    "/conveyor.v1.WorkerService/Connect": _WORKER,
    "/conveyor.v1.WorkerService/LeaseTasks": _WORKER,
    "/conveyor.v1.WorkerService/ExtendLease": _WORKER,
    "/conveyor.v1.WorkerService/CompleteTask": _WORKER,
    "/conveyor.v1.WorkerService/FailTask": _WORKER,
    "/conveyor.v1.WorkerService/ReportTasks": _WORKER,
    "/conveyor.v1.WorkerService/ListWorkers": _READ,
    "/conveyor.v1.WorkerService/GetWorker": _READ,
    # ScheduleService
    "/conveyor.v1.ScheduleService/CreateSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/GetSchedule": _READ,
    "/conveyor.v1.ScheduleService/ListSchedules": _READ,
    "/conveyor.v1.ScheduleService/UpdateSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/DeleteSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/PauseSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/ResumeSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/CancelSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/SnoozeSchedule": _WRITE,
    "/conveyor.v1.ScheduleService/RunScheduleNow": _WRITE,
    "/conveyor.v1.ScheduleService/PreviewSchedule": _READ,
    # CommandService
    "/conveyor.v1.CommandService/RetryTask": _WRITE,
    "/conveyor.v1.CommandService/BatchRetryTasks": _BULK,
    "/conveyor.v1.CommandService/PurgeQueue": _BULK,
    "/conveyor.v1.CommandService/RestartWorker": _WRITE,
    "/conveyor.v1.CommandService/ResizePool": _WRITE,
    "/conveyor.v1.CommandService/AddConsumer": _WRITE,
    "/conveyor.v1.CommandService/CancelConsumer": _WRITE,
    "/conveyor.v1.CommandService/SetRateLimit": _WRITE,
    "/conveyor.v1.CommandService/GetCommand": _READ,
    "/conveyor.v1.CommandService/ListCommands": _READ,
    # Reads the whole chain, but changes nothing and holds no lock.
    "/conveyor.v1.CommandService/VerifyAuditLog": _READ,
    # EventService
    "/conveyor.v1.EventService/WatchEvents": _STREAM,
    "/conveyor.v1.EventService/ListEvents": _READ,
    "/conveyor.v1.EventService/PublishEvent": _WRITE,
    # ProjectService
    "/conveyor.v1.ProjectService/CreateProject": _WRITE,
    "/conveyor.v1.ProjectService/GetProject": _READ,
    "/conveyor.v1.ProjectService/ListProjects": _READ,
    "/conveyor.v1.ProjectService/UpdateProject": _WRITE,
    "/conveyor.v1.ProjectService/CreateApiKey": _WRITE,
    "/conveyor.v1.ProjectService/ListApiKeys": _READ,
    "/conveyor.v1.ProjectService/UpdateApiKey": _WRITE,
    "/conveyor.v1.ProjectService/DeleteApiKey": _WRITE,
    "/conveyor.v1.ProjectService/GetWebhookSecret": _READ,
    "/conveyor.v1.ProjectService/RotateWebhookSecret": _WRITE,
}


def class_index(method: str) -> int:
    """The index in CLASSES of `method`'s class. A method missing from the table (the
    test forbids it) is counted as a write rather than served unlimited."""
    return CLASSES.index(METHOD_CLASSES.get(method, _WRITE))
