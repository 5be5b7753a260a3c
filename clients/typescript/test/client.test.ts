/** The task methods over the unary RPCs: create, lease, complete, fail and retry, stale leases. */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Backoff, Code, ConnectError, seconds, TaskState, toValue } from "../src/index.js";
import { connect, uniqueQueue } from "./support.js";

const client = connect();
after(() => client.close());

const input = { to: "ada@example.com", n: 3, ratio: 0.5, tags: ["a", "b"], nested: { ok: true, none: null } };

test("createTask takes and gives input as plain JSON", async () => {
  const queue = uniqueQueue("create");
  const created = await client.createTask("email.send", input, { queue, labels: { from: "ts" } });
  assert.match(created.name, /^projects\/default\/tasks\//);
  assert.equal(created.state, TaskState.QUEUED);
  assert.deepEqual(created.input, input);
  const read = await client.getTask(created.name);
  assert.deepEqual(read.input, input);
  assert.equal(read.queue, queue);
  assert.deepEqual(read.labels, { from: "ts" });
  assert.equal(read.result, null);
});

test("input that is not JSON is refused before it is sent", async () => {
  await assert.rejects(client.createTask("k", { when: () => 1 }), TypeError);
  assert.throws(() => toValue({ n: Number.NaN }), /\$\.n: NaN is not a JSON number/);
});

test("a leased task completes with a JSON result", async () => {
  const queue = uniqueQueue("lease");
  const created = await client.createTask("resize", { width: 640 }, { queue });
  const [lease, ...more] = await client.leaseTasks({ worker: "ts-unary", queues: [queue], waitSeconds: 10 });
  assert.equal(more.length, 0);
  assert.equal(lease.name, created.name);
  assert.deepEqual(lease.task.input, { width: 640 });
  assert.equal(lease.task.state, TaskState.RUNNING);
  const extended = await client.extendLease(lease.name, lease.leaseId, { progress: { step: 1 } });
  assert.equal(extended.cancelRequested, false);
  const done = await client.completeTask(lease.name, lease.leaseId, { width: 320, formats: ["webp"] }, { summary: "halved" });
  assert.equal(done.state, TaskState.SUCCEEDED);
  assert.deepEqual(done.result, { width: 320, formats: ["webp"] });
  assert.equal((await client.getTask(created.name)).summary, "halved");
});

test("a failed attempt is retried, and the last one fails the task", async () => {
  const queue = uniqueQueue("retry");
  const created = await client.createTask("flaky", null, {
    queue,
    retryPolicy: { maxAttempts: 2, backoff: Backoff.FIXED, initialBackoff: seconds(0), maxBackoff: seconds(0) },
  });
  const [first] = await client.leaseTasks({ worker: "ts-unary", queues: [queue], waitSeconds: 10 });
  assert.equal(first.task.attempt, 1);
  const retrying = await client.failTask(first.name, first.leaseId, { type: "Timeout", message: "upstream slow" });
  assert.notEqual(retrying.state, TaskState.FAILED);
  const [second] = await client.leaseTasks({ worker: "ts-unary", queues: [queue], waitSeconds: 10 });
  assert.equal(second.name, created.name);
  assert.equal(second.task.attempt, 2);
  const failed = await client.failTask(second.name, second.leaseId, { type: "Timeout", message: "still slow" });
  assert.equal(failed.state, TaskState.FAILED);
  assert.equal(failed.error?.type, "Timeout");
  assert.equal((await client.getTask(created.name)).attempts.length, 2);
});

test("a non-retryable failure ends the task at once", async () => {
  const queue = uniqueQueue("fatal");
  await client.createTask("bad", {}, { queue, retryPolicy: { maxAttempts: 5 } });
  const [lease] = await client.leaseTasks({ worker: "ts-unary", queues: [queue], waitSeconds: 10 });
  const failed = await client.failTask(lease.name, lease.leaseId, { type: "Invalid", message: "no" }, false);
  assert.equal(failed.state, TaskState.FAILED);
});

test("a report on a stale lease is refused and changes nothing", async () => {
  const queue = uniqueQueue("stale");
  const created = await client.createTask("slow", null, {
    queue,
    retryPolicy: { maxAttempts: 3, backoff: Backoff.FIXED, initialBackoff: seconds(0), maxBackoff: seconds(0) },
  });
  // A one-second lease that nobody extends: the reaper takes it back and the task is
  // leased again, under a new lease.
  const [old] = await client.leaseTasks({ worker: "ts-gone", queues: [queue], waitSeconds: 10, leaseSeconds: 1 });
  const [current] = await client.leaseTasks({ worker: "ts-next", queues: [queue], waitSeconds: 30 });
  assert.equal(current.name, created.name);
  assert.notEqual(current.leaseId, old.leaseId);

  for (const report of [
    () => client.completeTask(old.name, old.leaseId, { late: true }),
    () => client.failTask(old.name, old.leaseId, { type: "Late", message: "late" }),
    () => client.extendLease(old.name, old.leaseId),
  ]) {
    await assert.rejects(report(), (error) => ConnectError.from(error).code === Code.FailedPrecondition);
  }
  const unchanged = await client.getTask(created.name);
  assert.equal(unchanged.state, TaskState.RUNNING);
  assert.equal(unchanged.worker, "projects/default/workers/ts-next");
  assert.equal(unchanged.result, null);
  const done = await client.completeTask(current.name, current.leaseId, "on time");
  assert.equal(done.result, "on time");
});
