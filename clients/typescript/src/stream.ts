/** One Connect stream of a Worker: its outgoing messages, window and generation. */

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type ConnectRequest, ConnectRequestSchema } from "./gen/conveyor/v1/worker_pb.js";

/**
 * The sending side of one Connect call. `generation` numbers the streams of a Worker, so
 * a task knows whether it was assigned on the stream that is open now (it reports
 * there) or on an earlier one (it reports with the unary RPCs). `window` is the credit
 * granted on this stream.
 */
export class WorkerStream {
  window = 0;
  welcomed = false;
  open = true;
  private readonly outgoing: ConnectRequest[] = [];
  private wake: (() => void) | undefined;

  constructor(readonly generation: number) {}

  send(message: MessageInitShape<typeof ConnectRequestSchema>): void {
    if (this.open) {
      this.outgoing.push(create(ConnectRequestSchema, message));
      this.wake?.();
    }
  }

  /** Changes the window by `tasks` (negative shrinks it). */
  grant(tasks: number): void {
    if (tasks) {
      this.window = Math.max(0, this.window + tasks);
      this.send({ message: { case: "credit", value: { tasks } } });
    }
  }

  /** Half-closes after what was sent: the server sees the end of the requests and ends the call. */
  close(): void {
    if (this.open) {
      this.open = false;
      this.wake?.();
    }
  }

  async *requests(): AsyncGenerator<ConnectRequest, void, undefined> {
    for (;;) {
      const next = this.outgoing.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (!this.open) {
        return;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }
}
