/**
 * EventWatch: an async iterator over WatchEvents that resumes by itself.
 *
 *     for await (const event of client.watchEvents({ types: ["task.*"] })) { ... }
 *
 * It remembers the largest event id it received, keep-alives included (their id is the
 * stream's cursor), and when the stream breaks (the server went away, a replica shut
 * down, the subscriber fell behind and got RESOURCE_EXHAUSTED) it reopens the stream
 * with `after` set to that id: every event comes once, in order. Errors that a retry
 * cannot fix (a bad filter, no permission) are thrown to the loop. The same rules as the
 * Python client's watch_events.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import type { Event, EventFilterSchema, EventService } from "./gen/conveyor/v1/event_pb.js";

export const KEEPALIVE_TYPE = "conveyor.keepalive";

/** Codes a watch reopens its stream after; any other is thrown. */
const RESUMABLE = new Set<Code>([
  Code.Unavailable,
  Code.ResourceExhausted,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.Canceled,
  Code.Internal,
  Code.Unknown,
]);

export interface WatchOptions {
  /** Event types to keep (globs such as `task.*`); all when empty. */
  types?: string[];
  /** Task names to keep events of. */
  tasks?: string[];
  /** More of the EventFilter (task_filter); merged with types and tasks. */
  filter?: MessageInitShape<typeof EventFilterSchema>;
  /** Start after this event id (a cursor from an earlier watch); default: only new events. */
  after?: bigint | number;
  /** Also yield the server's keep-alive events (type conveyor.keepalive). */
  keepalives?: boolean;
  /** Longest wait between reconnects, in seconds (default 5). */
  maxBackoffSeconds?: number;
}

export class EventWatch implements AsyncIterableIterator<Event> {
  /** The cursor: pass it as `after` to continue elsewhere. */
  lastId: bigint;
  /** Times the stream was reopened. */
  reconnects = 0;
  private closed = false;
  private readonly abort = new AbortController();
  private readonly iterator: AsyncGenerator<Event, void, undefined>;
  private readonly filter: MessageInitShape<typeof EventFilterSchema>;

  constructor(
    private readonly service: Client<typeof EventService>,
    private readonly parent: string,
    private readonly options: WatchOptions = {},
  ) {
    this.lastId = BigInt(options.after ?? 0);
    const filter = options.filter ?? {};
    this.filter = {
      ...filter,
      types: [...(filter.types ?? []), ...(options.types ?? [])],
      tasks: [...(filter.tasks ?? []), ...(options.tasks ?? [])],
    };
    this.iterator = this.run();
  }

  [Symbol.asyncIterator](): EventWatch {
    return this;
  }

  next(): Promise<IteratorResult<Event, void>> {
    return this.iterator.next();
  }

  async return(): Promise<IteratorResult<Event, void>> {
    this.close();
    return this.iterator.return(undefined);
  }

  /** Ends the watch: the open stream is cancelled and the loop ends. */
  close(): void {
    this.closed = true;
    this.abort.abort();
  }

  private async *run(): AsyncGenerator<Event, void, undefined> {
    const maxBackoff = this.options.maxBackoffSeconds ?? 5;
    let failures = 0;
    while (!this.closed) {
      let code = Code.Unavailable; // a stream the server ended without an error
      try {
        const stream = this.service.watchEvents(
          { parent: this.parent, filter: this.filter, after: this.lastId },
          { signal: this.abort.signal },
        );
        for await (const event of stream) {
          failures = 0;
          if (event.id > this.lastId) {
            this.lastId = event.id;
          }
          if (this.options.keepalives || event.type !== KEEPALIVE_TYPE) {
            yield event;
          }
        }
      } catch (error) {
        if (this.closed) {
          return;
        }
        code = ConnectError.from(error).code;
        if (!RESUMABLE.has(code)) {
          throw error;
        }
      }
      this.reconnects += 1;
      failures += 1;
      // Cut off for being slow: the replay catches up from the table at once.
      if (code !== Code.ResourceExhausted || failures > 1) {
        const step = Math.min(maxBackoff, 0.05 * 2 ** (failures - 1));
        try {
          await sleep((step / 2 + (Math.random() * step) / 2) * 1000, undefined, {
            signal: this.abort.signal,
          });
        } catch {
          return; // closed while waiting
        }
      }
    }
  }
}
