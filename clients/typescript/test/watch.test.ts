/** watchEvents: an async iterator over the project's events. */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import { Code, ConnectError, ConveyorClient, type Event, KEEPALIVE_TYPE, plainTask } from "../src/index.js";
import { connect, uniqueQueue } from "./support.js";

const client = connect();
after(() => client.close());

test("a watch yields a task's events in order, with the task as plain JSON", async () => {
  const queue = uniqueQueue("watch");
  const created = await client.createTask("watched", { step: 0 }, { queue });
  // Replay from just before the task's first event, then follow it live: every event
  // comes once, in order, however late the stream opens.
  const { events } = await client.events.listEvents({ parent: client.project, filter: { tasks: [created.name] } });
  const first = events.reduce((low, event) => (event.id < low ? event.id : low), events[0].id);
  const watch = client.watchEvents({ tasks: [created.name], after: first - 1n });
  const seen: string[] = [];
  const worker = (async () => {
    const [lease] = await client.leaseTasks({ worker: "ts-watch", queues: [queue], waitSeconds: 10 });
    await client.completeTask(lease.name, lease.leaseId, { step: 1 });
  })();
  for await (const event of watch) {
    seen.push(event.type);
    if (event.type === "task.succeeded") {
      assert.deepEqual(plainTask(event.task!).result, { step: 1 });
      break;
    }
  }
  await worker;
  assert.equal(seen[0], "task.created");
  assert.deepEqual(seen.slice(-2), ["task.started", "task.succeeded"]);
  assert.ok(watch.lastId > 0n);
});

test("a watch whose stream breaks resumes after its last event: each event once, in order", async () => {
  // The connection breaks (UNAVAILABLE) after each stream's first event (keep-alives
  // aside), on this client's side; the server is the real one.
  const cut: Interceptor = (next) => async (request) => {
    const response = await next(request);
    if (!response.stream || request.method.name !== "WatchEvents") return response;
    const events = response.message as AsyncIterable<Event>;
    async function* firstOnly() {
      for await (const event of events) {
        yield event;
        if (event.type !== KEEPALIVE_TYPE) throw new ConnectError("connection lost", Code.Unavailable);
      }
    }
    return { ...response, message: firstOnly() };
  };
  const breaking = new ConveyorClient({ project: "default", interceptors: [cut] });
  try {
    const queue = uniqueQueue("resume");
    const created = await client.createTask("watched", null, { queue });
    const { events } = await client.events.listEvents({ parent: client.project, filter: { tasks: [created.name] } });
    const first = events.reduce((low, event) => (event.id < low ? event.id : low), events[0].id);
    const watch = breaking.watchEvents({ tasks: [created.name], after: first - 1n });
    const worker = (async () => {
      const [lease] = await client.leaseTasks({ worker: "ts-resume", queues: [queue], waitSeconds: 10 });
      await client.completeTask(lease.name, lease.leaseId, "done");
    })();
    const ids: bigint[] = [];
    const types: string[] = [];
    for await (const event of watch) {
      ids.push(event.id);
      types.push(event.type);
      if (event.type === "task.succeeded") break;
    }
    await worker;
    assert.ok(watch.reconnects >= types.length - 1, `${watch.reconnects} reconnects for ${types.length} events`);
    assert.deepEqual([...ids].sort((a, b) => (a < b ? -1 : 1)), ids, "in order");
    assert.equal(new Set(ids).size, ids.length, "no duplicates");
    assert.equal(types[0], "task.created");
    assert.deepEqual(types.slice(-2), ["task.started", "task.succeeded"]);
  } finally {
    breaking.close();
  }
});
