/**
 * One task a Worker holds: running its handler, its heartbeats, and the report that
 * ends it (the Python SDK's _task_runs.py).
 */

import { create } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { plainTask, seconds } from "./client.js";
import { describe, PermanentError, TaskCancelled, TaskContext } from "./context.js";
import type { Lease } from "./gen/conveyor/v1/task_pb.js";
import { type ConnectRequest, ConnectRequestSchema, type ExtendLeaseResponse } from "./gen/conveyor/v1/worker_pb.js";
import { toValue } from "./json.js";
import { keyOf, type Key } from "./reports.js";
import type { WorkerStream } from "./stream.js";
import type { Handler, Logger } from "./worker.js";

const DEFAULT_LEASE = 30;

/** Thrown into a handler's race when the worker stops waiting for it. */
class WorkerStopped extends Error {
  override name = "WorkerStopped";
}

export class TaskRun {
  readonly ctx: TaskContext;
  readonly key: Key;
  readonly leaseSeconds: number;
  abandoned = false;
  /** Resolves once the task is reported (set by the Worker). */
  runner: Promise<void> | undefined;
  private giveUp: ((error: Error) => void) | undefined;

  constructor(
    lease: Lease,
    workerId: string,
    readonly generation: number,
    private readonly override: number | undefined,
    private readonly log: Logger,
  ) {
    const task = plainTask(lease.task!);
    this.ctx = new TaskContext(task, lease.leaseId, workerId);
    this.key = keyOf(task.name, lease.leaseId);
    const own = task.leaseDuration ? durationMs(task.leaseDuration) / 1000 : 0;
    this.leaseSeconds = override ?? (own || DEFAULT_LEASE);
  }

  /**
   * Sends a heartbeat on the open stream every third of the lease (or the Welcome's
   * interval, when shorter); returns the function that stops them.
   */
  startHeartbeats(
    stream: () => WorkerStream | undefined,
    interval: () => number | undefined,
  ): () => void {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const next = (): void => {
      const welcome = interval();
      const wait = Math.min(this.leaseSeconds / 3, welcome ?? Infinity);
      timer = setTimeout(() => {
        const current = stream();
        if (current?.open) {
          current.send(this.heartbeat());
        }
        if (!stopped) next();
      }, Math.max(wait, 0.05) * 1000);
    };
    next();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  /** The heartbeat that extends the lease and carries the progress since the last. */
  heartbeat(): ConnectRequest {
    return create(ConnectRequestSchema, {
      message: {
        case: "heartbeat",
        value: {
          name: this.ctx.name,
          leaseId: this.ctx.leaseId,
          leaseDuration: this.override === undefined ? undefined : seconds(this.override),
          progress: this.ctx.takeProgress(),
        },
      },
    });
  }

  /** Runs the handler; returns the report of its outcome. */
  async execute(handler: Handler | undefined): Promise<ConnectRequest> {
    const ctx = this.ctx;
    if (handler === undefined) {
      return this.failure("UnknownKind", `worker ${ctx.worker} has no handler for kind ${JSON.stringify(ctx.kind)}`, false);
    }
    const started = Date.now();
    this.log.info(`task ${ctx.name} (${ctx.kind}) attempt ${ctx.attempt} started`);
    let result: unknown;
    try {
      const stopped = new Promise<never>((_, reject) => {
        this.giveUp = reject;
      });
      result = await Promise.race([Promise.resolve().then(() => handler(ctx)), stopped]);
    } catch (error) {
      const report = this.failureFrom(error);
      const failed = report.message.case === "fail" ? report.message.value : undefined;
      const outcome = failed?.retryable ? "failed, will retry" : "failed";
      this.log.error(`task ${ctx.name} (${ctx.kind}) ${outcome} (after ${Date.now() - started} ms): ${String(error)}`);
      return report;
    } finally {
      this.giveUp = undefined;
    }
    let value;
    try {
      value = result === undefined ? undefined : toValue(result);
    } catch (error) {
      // The same code would return the same thing again: no retry.
      return this.failure("TypeError", `the result is not JSON: ${(error as Error).message}`, false);
    }
    this.log.info(`task ${ctx.name} (${ctx.kind}) succeeded in ${Date.now() - started} ms`);
    return create(ConnectRequestSchema, {
      message: {
        case: "complete",
        value: {
          name: ctx.name,
          leaseId: ctx.leaseId,
          result: value,
          summary: ctx.summary,
          resumeToken: ctx.resumeToken,
        },
      },
    });
  }

  private failureFrom(error: unknown): ConnectRequest {
    const { type, message, trace } = describe(error);
    if (this.abandoned) {
      // Not the task's fault: another attempt (on another worker) may finish it.
      return this.failure("WorkerStopped", "the worker stopped before the handler did", true);
    }
    if (this.ctx.cancelled) {
      return this.failure("Cancelled", message, false, trace);
    }
    return this.failure(type, message, !(error instanceof PermanentError), trace);
  }

  private failure(type: string, message: string, retryable: boolean, trace = ""): ConnectRequest {
    return create(ConnectRequestSchema, {
      message: {
        case: "fail",
        value: {
          name: this.ctx.name,
          leaseId: this.ctx.leaseId,
          error: { type, message, retryable, details: trace ? { traceback: trace } : undefined },
          retryable,
        },
      },
    });
  }

  onHeartbeatAnswer(beat: ExtendLeaseResponse): void {
    if (beat.cancelRequested) {
      if (beat.leaseExpireTime === undefined) {
        // Not extended: the lease is gone and the task moved on without us.
        this.log.warn(`task ${beat.name}: lease lost; stopping its handler`);
      }
      this.log.info(`task ${this.ctx.name}: cancel requested`);
      this.ctx.cancel(new TaskCancelled(`${this.ctx.name} was cancelled`));
    }
  }

  /** Gives up on the handler (the worker is stopping): it is reported as WorkerStopped. */
  abandon(): void {
    this.abandoned = true;
    const error = new WorkerStopped("the worker stopped before the handler did");
    this.ctx.cancel(error);
    this.giveUp?.(error);
  }
}
