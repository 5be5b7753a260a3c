/** watchEvents: an async iterator over the project's events. */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { plainTask } from "../src/index.js";
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
