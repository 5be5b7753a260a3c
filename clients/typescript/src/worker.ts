/**
 * Worker: runs handlers, by task kind, for the tasks a Connect stream pushes to it; the
 * same protocol as the Python SDK's Worker.
 *
 *     const worker = new Worker(client, { queues: ["default"], concurrency: 4 });
 *     worker.handle("email.send", async (ctx) => ({ sentTo: ctx.input.to }));
 *     await worker.run(); // until worker.stop()
 *
 * The protocol, in order: Hello (with `batches`), Credit{concurrency} once Welcomed, then
 * each pushed Lease (in LeaseBatch messages) runs its handler while a heartbeat extends
 * its lease every heartbeat interval (the Welcome's, or a third of the lease, whichever
 * is shorter) and carries its progress. A heartbeat answer with cancelRequested aborts
 * `ctx.signal`. The outcome is reported on the stream in ReportBatch messages (a report
 * frees its window slot): the return value as the result, or the thrown error as the
 * error, retryable unless it is a PermanentError. When the stream breaks the worker
 * reconnects with backoff; handlers keep running and report with the unary RPCs (a
 * lease that expired meanwhile is refused with FAILED_PRECONDITION: logged and
 * dropped). Stopping shrinks the window to 0, waits up to the grace period for running
 * handlers, reports the ones still running as retryable `WorkerStopped` failures, and
 * half-closes the stream. Worker-control commands are obeyed and acknowledged.
 */

import { create, type JsonObject } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { hostname } from "node:os";
import { fullJitter, settleOrTimeout, sleep } from "./backoff.js";
import { type ConveyorClient, projectName, seconds } from "./client.js";
import type { TaskContext } from "./context.js";
import { CommandVerb } from "./gen/conveyor/v1/enums_pb.js";
import type { Lease } from "./gen/conveyor/v1/task_pb.js";
import {
  CommandAckSchema,
  type ConnectRequest,
  type ConnectResponse,
  type Welcome,
  type WorkerCommand,
} from "./gen/conveyor/v1/worker_pb.js";
import { Reports } from "./reports.js";
import { WorkerStream } from "./stream.js";
import { TaskRun } from "./task_run.js";

export const SDK_VERSION = "conveyor-typescript/0.1.0";

/** A handler: returns the task's result (any JSON, or undefined for none). */
export type Handler = (ctx: TaskContext) => unknown | Promise<unknown>;

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const quiet: Logger = {
  info: () => {},
  warn: (message) => console.warn(`conveyor worker: ${message}`),
  error: (message) => console.error(`conveyor worker: ${message}`),
};

/** Stream errors that retrying cannot fix: the worker stops and throws them. */
const FATAL = new Set<Code>([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.NotFound,
  Code.Unimplemented,
]);
/** After the grace period, how long the last reports may take (seconds). */
const REPORT_DEADLINE = 5;
/** A stream open this long (seconds) counts as healthy: the reconnect backoff starts over. */
const HEALTHY_STREAM = 5;
/** How long the server may take to end the call once the worker half-closed it (ms). */
const CLOSE_TIMEOUT_MS = 2000;

export interface WorkerOptions {
  queues?: string[];
  /** Handlers that run at once (the stream's window). Default 1. */
  concurrency?: number;
  /** Default the client's project. */
  project?: string;
  /** 1..63 of [a-z0-9-], stable across reconnects; default `<hostname>-<pid>`. */
  workerId?: string;
  /** Overrides the tasks' own lease duration (seconds). */
  leaseSeconds?: number;
  labels?: { [key: string]: string };
  /** Seconds stop() waits for running handlers. Default 30. */
  shutdownGraceSeconds?: number;
  /** LeaseBatch / ReportBatch messages (default); false: one message per task. */
  batches?: boolean;
  log?: Logger;
}

/** `<hostname>-<pid>` as a worker id: 1..63 of [a-z0-9-]. */
export function defaultWorkerId(): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "worker";
  const suffix = `-${process.pid}`;
  return host.slice(0, 63 - suffix.length).replace(/-+$/, "") + suffix;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

export class Worker {
  readonly project: string;
  readonly workerId: string;
  readonly queues: string[];
  concurrency: number;
  readonly handlers = new Map<string, Handler>();
  private readonly leaseSeconds: number | undefined;
  private readonly labels: { [key: string]: string };
  private readonly batches: boolean;
  private readonly log: Logger;
  private readonly reports: Reports;
  private readonly running = new Map<string, TaskRun>();
  private grace: number;
  private stream: WorkerStream | undefined;
  private attempt: WorkerStream | undefined;
  private callAbort: AbortController | undefined;
  private generation = 0;
  private heartbeatInterval: number | undefined;
  private readonly stopRequested = deferred();
  private stopping = false;
  private readonly closed = new AbortController();
  private closing = false;
  private finished = false;
  private done: Promise<void> | undefined;

  constructor(
    readonly client: ConveyorClient,
    options: WorkerOptions = {},
  ) {
    this.concurrency = options.concurrency ?? 1;
    if (this.concurrency < 1) throw new RangeError("concurrency must be at least 1");
    this.queues = [...(options.queues ?? ["default"])];
    if (!this.queues.length) throw new RangeError("a worker needs at least one queue");
    this.project = projectName(options.project ?? client.project);
    this.workerId = options.workerId ?? defaultWorkerId();
    this.leaseSeconds = options.leaseSeconds;
    this.labels = { ...(options.labels ?? {}) };
    this.grace = options.shutdownGraceSeconds ?? 30;
    this.batches = options.batches ?? true;
    this.log = options.log ?? quiet;
    this.reports = new Reports(client, this.log);
    this.reports.batches = this.batches;
    this.reports.maxBatch = this.concurrency;
  }

  /** Registers the handler of `kind`. */
  handle(kind: string, handler: Handler): this {
    this.handlers.set(kind, handler);
    return this;
  }

  /** The worker's resource name, `projects/{project}/workers/{worker}`. */
  get name(): string {
    return `${this.project}/workers/${this.workerId}`;
  }

  /** Runs until stop(); rejects with what ended it otherwise (a refusal such as a bad key). */
  run(): Promise<void> {
    if (this.done !== undefined) throw new Error("a Worker runs once");
    this.done = this.main();
    return this.done;
  }

  /** Stops gracefully (see the module doc); resolves once run() has ended. */
  async stop(graceSeconds?: number): Promise<void> {
    if (graceSeconds !== undefined) this.grace = graceSeconds;
    this.stopping = true;
    this.stopRequested.resolve();
    await this.done?.catch(() => undefined);
  }

  private async main(): Promise<void> {
    const drain = this.drainOnStop();
    try {
      await this.connectLoop();
    } finally {
      this.finished = true;
      this.stopRequested.resolve(); // ends drainOnStop if it still waits
      await drain;
      await this.abandonAll();
      this.log.info(`worker ${this.name} stopped`);
    }
  }

  private async connectLoop(): Promise<void> {
    let failures = 0;
    while (!this.closing) {
      const began = Date.now();
      let welcomed = false;
      try {
        welcomed = await this.session();
      } catch (error) {
        const refused = ConnectError.from(error);
        if (FATAL.has(refused.code)) {
          this.log.error(`worker refused: ${refused.message}`);
          throw refused;
        }
        this.log.warn(`worker stream broke: ${refused.message}`);
      }
      if (this.closing) return;
      // A stream that lived a while starts the backoff over; one that keeps breaking
      // right after its Welcome (a failing server) backs off like a refusal.
      const healthy = welcomed && Date.now() - began >= HEALTHY_STREAM * 1000;
      failures = healthy ? 0 : failures + 1;
      await sleep(fullJitter(failures), this.closed.signal);
    }
  }

  /** One Connect call; resolves whether it was welcomed, throws how it broke. */
  private async session(): Promise<boolean> {
    this.generation += 1;
    const stream = new WorkerStream(this.generation);
    stream.send({
      message: {
        case: "hello",
        value: {
          parent: this.project,
          worker: this.workerId,
          queues: this.queues,
          capacity: this.concurrency,
          labels: this.labels,
          sdkVersion: SDK_VERSION,
          leaseDuration: this.leaseSeconds === undefined ? undefined : seconds(this.leaseSeconds),
          batches: this.batches,
        },
      },
    });
    const abort = new AbortController();
    this.attempt = stream;
    this.callAbort = abort;
    try {
      const responses = this.client.workers.connect(stream.requests(), { signal: abort.signal });
      for await (const response of responses) {
        this.onResponse(stream, response);
      }
    } catch (error) {
      // Our own abort after a close the server did not answer in time ends it quietly.
      if (!(this.closing && abort.signal.aborted)) throw error;
    } finally {
      this.attempt = undefined;
      this.callAbort = undefined;
      this.onStreamEnd(stream);
      abort.abort();
    }
    return stream.welcomed;
  }

  private onResponse(stream: WorkerStream, response: ConnectResponse): void {
    const { message } = response;
    switch (message.case) {
      case "welcome":
        this.onWelcome(stream, message.value);
        break;
      case "assignment":
        this.start(stream, message.value);
        break;
      case "assignments":
        for (const lease of message.value.leases) this.start(stream, lease);
        break;
      case "heartbeat": {
        const beat = message.value;
        this.running.get(`${beat.name} ${beat.leaseId}`)?.onHeartbeatAnswer(beat);
        break;
      }
      case "reportAck":
      case "reportAcks":
        this.reports.onResponse(response);
        break;
      case "command":
        this.onCommand(stream, message.value);
        break;
    }
  }

  private onWelcome(stream: WorkerStream, welcome: Welcome): void {
    stream.welcomed = true;
    const interval = welcome.heartbeatInterval ? durationMs(welcome.heartbeatInterval) / 1000 : 0;
    this.heartbeatInterval = interval > 0 ? interval : undefined;
    this.stream = stream;
    this.log.info(`worker ${welcome.worker || this.name} connected`);
    // Tasks still running from an earlier stream hold their slots until reported.
    if (!this.stopping) stream.grant(this.concurrency - this.running.size);
  }

  private onStreamEnd(stream: WorkerStream): void {
    stream.close(); // also ends the request iterator
    if (this.stream === stream) this.stream = undefined;
    this.reports.onStreamEnd();
  }

  // Worker control.

  /**
   * RESIZE_POOL changes the concurrency by its delta (at least 1 remains) and the window;
   * ADD_CONSUMER / CANCEL_CONSUMER change the queues (never to none); those and
   * RESTART_WORKER end this stream after the ack, and the connect loop opens a new one
   * with a new Hello. Anything else is refused.
   */
  private onCommand(stream: WorkerStream, command: WorkerCommand): void {
    const verb = CommandVerb[command.verb] ?? String(command.verb);
    const args: JsonObject = command.args ?? {};
    let ok = true;
    let error = "";
    let reconnect = false;
    let result: JsonObject = {};
    if (verb === "RESTART_WORKER") {
      reconnect = true;
    } else if (verb === "RESIZE_POOL") {
      const concurrency = Math.max(1, this.concurrency + Math.trunc(Number(args.delta ?? 0)));
      const change = concurrency - this.concurrency;
      this.concurrency = concurrency;
      this.reports.maxBatch = concurrency;
      if (!this.stopping) stream.grant(change);
      result = { concurrency };
    } else if (verb === "ADD_CONSUMER" || verb === "CANCEL_CONSUMER") {
      const queue = String(args.queue ?? "");
      const at = this.queues.indexOf(queue);
      if (verb === "ADD_CONSUMER" && at < 0) {
        this.queues.push(queue);
        reconnect = true;
      } else if (verb === "CANCEL_CONSUMER" && at >= 0) {
        if (this.queues.length === 1) {
          ok = false;
          error = "a worker needs at least one queue";
        } else {
          this.queues.splice(at, 1);
          reconnect = true;
        }
      }
      result = { queues: [...this.queues] };
    } else {
      ok = false;
      error = `${verb} is not a worker-control command this worker knows`;
    }
    this.log.info(`worker ${this.name}: command ${command.command} ${verb} (ok=${ok})`);
    const ack = create(CommandAckSchema, { command: command.command, ok, error, result });
    stream.send({ message: { case: "commandAck", value: ack } });
    if (reconnect && ok) stream.close();
  }

  // Tasks.

  private start(stream: WorkerStream, lease: Lease): void {
    const run = new TaskRun(lease, this.workerId, stream.generation, this.leaseSeconds, this.log);
    this.running.set(run.key, run);
    // runTask reports every outcome itself; a throw here would be a bug, logged rather
    // than left to crash the process as an unhandled rejection.
    run.runner = this.runTask(run).catch((error: unknown) => {
      this.running.delete(run.key);
      this.log.error(`task ${run.ctx.name}: ${String(error)}`);
    });
  }

  private async runTask(run: TaskRun): Promise<void> {
    const stopBeats = run.startHeartbeats(
      () => this.stream,
      () => this.heartbeatInterval,
    );
    let report: ConnectRequest;
    try {
      report = await run.execute(this.handlers.get(run.ctx.kind));
    } finally {
      stopBeats();
    }
    this.running.delete(run.key);
    if (this.finished) return; // refused or gone: nothing can be reported
    this.reports.send(this.stream, run.generation, run.key, report, !this.stopping);
  }

  // Stopping.

  private async drainOnStop(): Promise<void> {
    await this.stopRequested.promise;
    if (this.finished) return;
    this.log.info(`worker ${this.name} draining for up to ${this.grace} s`);
    const stream = this.stream;
    if (stream?.open) stream.grant(-stream.window);
    await this.waitUntilDone(this.grace);
    for (const run of this.running.values()) run.abandon();
    await this.waitUntilDone(REPORT_DEADLINE);
    await this.reports.wait(REPORT_DEADLINE);
    this.close();
  }

  private async waitUntilDone(seconds: number): Promise<void> {
    const deadline = Date.now() + seconds * 1000;
    while (this.running.size && Date.now() < deadline) {
      const runners = [...this.running.values()].map((run) => run.runner!);
      await settleOrTimeout(runners, (deadline - Date.now()) / 1000);
    }
  }

  /** Ends the stream loop: half-closes the open call, aborts it if it lingers. */
  private close(): void {
    this.closing = true;
    this.closed.abort();
    const attempt = this.attempt;
    const abort = this.callAbort;
    if (attempt !== undefined && abort !== undefined) {
      attempt.close();
      setTimeout(() => abort.abort(), CLOSE_TIMEOUT_MS).unref();
    }
  }

  /** After the stream loop ended (stopped or refused): give up on what still runs. */
  private async abandonAll(): Promise<void> {
    this.closing = true;
    const runners = [...this.running.values()].map((run) => {
      run.abandon();
      return run.runner!;
    });
    if (runners.length) await settleOrTimeout([Promise.allSettled(runners)], REPORT_DEADLINE);
    await this.reports.cancel();
  }
}
