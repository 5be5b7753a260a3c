/** What a handler receives (TaskContext), and the errors that steer its outcome. */

import type { JsonObject, JsonValue } from "./json.js";
import type { PlainTask } from "./client.js";

const TRACEBACK_LIMIT = 16 * 1024;

/**
 * Throw it (or a subclass) from a handler to fail the task without a retry. Any other
 * error fails the attempt as retryable: the task is retried while its retry_policy has
 * attempts left.
 */
export class PermanentError extends Error {
  override name = "PermanentError";
}

/** Thrown by `ctx.throwIfCancelled()` once CancelTask was called. */
export class TaskCancelled extends Error {
  override name = "TaskCancelled";
}

/**
 * What a handler gets: the task, its input as plain JSON, and ways to report.
 *
 *     worker.handle("email.send", async (ctx) => {
 *       ctx.reportProgress({ step: "rendering" });
 *       ctx.setSummary("sent to 3 recipients");
 *       return { messageId: "..." }; // the task's result (any JSON)
 *     });
 *
 * `signal` aborts when CancelTask is called while the task runs (or the worker gives up
 * on the handler while stopping): pass it to fetch and timers, or check `cancelled`.
 * Whatever a handler throws after a cancel was requested is reported as a non-retryable
 * `Cancelled` failure, and the server ends the task INTERRUPTED.
 */
export class TaskContext {
  readonly name: string;
  readonly kind: string;
  /** The task's input as plain JSON (null when it has none). */
  readonly input: JsonValue;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly labels: { [key: string]: string };
  /** This worker's id. */
  readonly worker: string;
  /** The token the task was created with (or the one set since); "" to start fresh. */
  resumeToken: string;
  summary = "";
  private readonly controller = new AbortController();
  private progress: JsonObject | undefined;

  constructor(
    /** The task as it was leased. */
    readonly task: PlainTask,
    readonly leaseId: string,
    worker: string,
  ) {
    this.name = task.name;
    this.kind = task.kind;
    this.input = task.input;
    this.attempt = task.attempt;
    this.labels = { ...task.labels };
    this.worker = worker;
    this.resumeToken = task.resumeToken;
    if (task.cancelRequested) {
      this.controller.abort(new TaskCancelled(`${task.name} was cancelled`));
    }
  }

  /** Aborts when a cancel was requested (or the worker stopped waiting for the handler). */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get cancelled(): boolean {
    return this.controller.signal.aborted;
  }

  /** Throws TaskCancelled once a cancel was requested. */
  throwIfCancelled(): void {
    if (this.cancelled) {
      throw new TaskCancelled(`${this.name} was cancelled`);
    }
  }

  /** Keeps progress (a JSON object) on the attempt; sent with the next heartbeat. */
  reportProgress(progress: JsonObject): void {
    this.progress = progress;
  }

  /** Short text for people, stored on the task with the result. */
  setSummary(summary: string): void {
    this.summary = summary;
  }

  /** A token to continue from later, stored on the task when it completes. */
  setResumeToken(token: string): void {
    this.resumeToken = token;
  }

  /** The progress reported since the last call, if any. */
  takeProgress(): JsonObject | undefined {
    const progress = this.progress;
    this.progress = undefined;
    return progress;
  }

  /** @internal Aborts `signal`. */
  cancel(reason: Error): void {
    if (!this.cancelled) {
      this.controller.abort(reason);
    }
  }
}

/** The TaskError fields of what a handler threw. */
export function describe(error: unknown): { type: string; message: string; trace: string } {
  if (error instanceof Error) {
    const trace = (error.stack ?? "").slice(-TRACEBACK_LIMIT);
    return { type: error.name || error.constructor.name, message: error.message, trace };
  }
  return { type: "Error", message: String(error), trace: "" };
}
