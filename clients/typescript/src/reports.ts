/**
 * The reports of a Worker's finished tasks, until the server has them (the Python
 * SDK's _reports.py).
 *
 * On a stream whose Hello asked for batches, reports that finish within BATCH_WINDOW of
 * each other (or `maxBatch` of them, the worker's concurrency) go in one ReportBatch,
 * answered by one ReportAckBatch. A report sent on the stream is kept until its ack;
 * when the stream breaks first it is sent again with the unary RPCs (one that did
 * arrive is refused as stale, which changes nothing). Unary reports are retried with
 * backoff while the server is unavailable; any other refusal is logged and dropped.
 */

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConveyorClient } from "./client.js";
import { fullJitter, settleOrTimeout, sleep } from "./backoff.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  type ReportAck,
} from "./gen/conveyor/v1/worker_pb.js";
import type { WorkerStream } from "./stream.js";
import type { Logger } from "./worker.js";

/** Seconds a report waits for others to go in the same ReportBatch. */
export const BATCH_WINDOW = 0.001;

/** `name leaseId`: a task's attempt. */
export type Key = string;

export function keyOf(name: string, leaseId: string): Key {
  return `${name} ${leaseId}`;
}

function taskOf(message: ConnectRequest): string {
  const { message: body } = message;
  return body.case === "complete" || body.case === "fail" ? body.value.name : "";
}

export class Reports {
  batches = true;
  maxBatch = 1;
  private readonly unacked = new Map<Key, ConnectRequest>();
  private readonly unary = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private pending: ConnectRequest[] = [];
  private pendingStream: WorkerStream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private settled: (() => void) | undefined;

  constructor(
    private readonly client: ConveyorClient,
    private readonly log: Logger,
  ) {}

  /**
   * On the open stream when the task came on it; else with the unary RPCs, and (with
   * `freeSlot`) the slot the task held on the open stream's window is free.
   */
  send(
    stream: WorkerStream | undefined,
    generation: number,
    key: Key,
    message: ConnectRequest,
    freeSlot: boolean,
  ): void {
    if (stream?.open && stream.generation === generation) {
      this.unacked.set(key, message);
      if (!this.batches) {
        stream.send(message);
        return;
      }
      if (this.pendingStream !== stream) {
        this.flush();
        this.pendingStream = stream;
      }
      this.pending.push(message);
      if (this.pending.length >= this.maxBatch) {
        this.flush();
      } else if (this.timer === undefined) {
        this.timer = setTimeout(() => this.flush(), BATCH_WINDOW * 1000);
      }
      return;
    }
    if (stream?.open && freeSlot) {
      stream.grant(1);
    }
    this.sendUnary(message);
  }

  /** Sends the reports waiting for a batch, in one ReportBatch. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const pending = this.pending;
    const stream = this.pendingStream;
    this.pending = [];
    this.pendingStream = undefined;
    if (!pending.length || stream === undefined) {
      return;
    }
    const completes = [];
    const fails = [];
    for (const { message } of pending) {
      if (message.case === "complete") completes.push(message.value);
      else if (message.case === "fail") fails.push(message.value);
    }
    stream.send({ message: { case: "reports", value: { completes, fails } } });
  }

  /** A `reportAck`, or the `reportAcks` of a ReportBatch. */
  onResponse(response: ConnectResponse): void {
    const { message } = response;
    if (message.case === "reportAck") {
      this.onAck(message.value);
    } else if (message.case === "reportAcks") {
      for (const ack of message.value.acks) {
        this.onAck(ack);
      }
    }
  }

  private onAck(ack: ReportAck): void {
    const key = keyOf(ack.name, ack.leaseId);
    const message = this.unacked.get(key);
    this.unacked.delete(key);
    this.notify();
    const code = ack.status?.code ?? 0;
    if (code === 0) {
      return;
    }
    this.log.warn(`report on ${ack.name} refused: ${ack.status?.message ?? ""}`);
    // A result the server cannot store (too large, say) still ends the attempt.
    if (message?.message.case === "complete" && code === Code.InvalidArgument) {
      this.sendUnary(
        create(ConnectRequestSchema, {
          message: {
          case: "fail",
          value: {
              name: ack.name,
              leaseId: ack.leaseId,
              error: { type: "InvalidResult", message: ack.status?.message ?? "", retryable: false },
              retryable: false,
            },
          },
        }),
      );
    }
  }

  /** Sends what the lost stream may not have delivered with the unary RPCs. */
  onStreamEnd(): void {
    // Reports still waiting for their batch are in `unacked` too.
    this.flush();
    for (const [key, message] of [...this.unacked]) {
      this.unacked.delete(key);
      this.sendUnary(message);
    }
  }

  private sendUnary(message: ConnectRequest): void {
    const sent: Promise<void> = this.reportUnary(message).finally(() => {
      this.unary.delete(sent);
      this.notify();
    });
    this.unary.add(sent);
  }

  private async reportUnary(request: ConnectRequest): Promise<void> {
    const { message } = request;
    const signal = this.abort.signal;
    let failures = 0;
    for (;;) {
      try {
        if (message.case === "complete") {
          await this.client.workers.completeTask(message.value, { signal });
        } else if (message.case === "fail") {
          await this.client.workers.failTask(message.value, { signal });
        }
        return;
      } catch (error) {
        const code = ConnectError.from(error).code;
        if (signal.aborted) {
          return;
        }
        if (code !== Code.Unavailable && code !== Code.DeadlineExceeded) {
          // A stale lease (the task moved on while we were away) is expected.
          const line = `report on ${taskOf(request)} dropped: ${String(error)}`;
          if (code === Code.FailedPrecondition) this.log.info(line);
          else this.log.warn(line);
          return;
        }
      }
      failures += 1;
      if (!(await sleep(fullJitter(failures), signal))) {
        return;
      }
    }
  }

  private notify(): void {
    this.settled?.();
  }

  /** Resolves when every report is settled, or after `seconds`. */
  async wait(seconds: number): Promise<void> {
    const deadline = Date.now() + seconds * 1000;
    while ((this.unacked.size || this.unary.size) && Date.now() < deadline) {
      const settled = new Promise<void>((resolve) => {
        this.settled = resolve;
      });
      await settleOrTimeout([settled], (deadline - Date.now()) / 1000);
    }
  }

  /** Cancels the unary reports still running (the worker is going away). */
  async cancel(): Promise<void> {
    clearTimeout(this.timer);
    this.abort.abort();
    await settleOrTimeout([Promise.allSettled([...this.unary])], 1);
  }
}
