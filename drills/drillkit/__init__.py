"""The drill harness: a PostgreSQL the drills own, `conveyor serve` replicas and SDK
workers as real processes, an effect log every handler appends to, and the checker that
reads the log and the database.

    postgres.py       DrillPostgres: start, stop in immediate mode, start again
    replicas.py       Replica: one `conveyor serve` process on port 0 over that database
    workers.py        WorkerProcess: one `effect_worker` process (stream or unary)
    effect_worker.py  the worker process itself: every handler appends its effect
    effects.py        the effect log: one line `task_id lease_id attempt ...` per effect
    checker.py        counts lost, duplicated, unexpected and re-run work
"""
