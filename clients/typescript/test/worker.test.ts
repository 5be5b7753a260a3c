/** Worker: handlers by kind over the Connect stream, heartbeats, batching, retries. */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  Backoff,
  Code,
  CommandStatus,
  CommandVerb,
  ConnectError,
  ConveyorClient,
  PermanentError,
  seconds,
  TaskState,
  toValue,
  Worker,
} from "../src/index.js";
import { connect, eventually, uniqueQueue } from "./support.js";

const client = connect();
const silent = { info() {}, warn() {}, error() {} };
after(() => client.close());

test("a worker drains 1,000 tasks in batches", async () => {
  const queue = uniqueQueue("drain");
  const total = 1000;
  const answer = await client.tasks.batchCreateTasks({
    parent: client.project,
    requests: Array.from({ length: total }, (_, i) => ({
      parent: client.project,
      task: { queue, kind: "double", input: toValue({ i }) },
    })),
  });
  assert.equal(answer.results.length, total);

  const worker = new Worker(client, { queues: [queue], concurrency: 32, workerId: "ts-drain" });
  let handled = 0;
  let allHandled!: () => void;
  const finished = new Promise<void>((resolve) => (allHandled = resolve));
  worker.handle("double", (ctx) => {
    const { i } = ctx.input as { i: number };
    handled += 1;
    if (handled === total) allHandled();
    return { doubled: i * 2 };
  });
  const running = worker.run();
  await finished;
  await worker.stop(); // drains: every report is answered before the stream closes
  await running;

  const succeeded = await eventually(async () => {
    const page = await client.tasks.listTasks({
      parent: client.project,
      filter: { queues: [queue], states: [TaskState.SUCCEEDED] },
      pageSize: 5000,
    });
    return page.tasks.length === total ? page.tasks : undefined;
  });
  assert.equal(handled, total);
  const one = await client.getTask(succeeded[0].name);
  assert.deepEqual(one.result, { doubled: 2 * (one.input as { i: number }).i });
  assert.equal(one.worker, worker.name);
});

test("handlers by kind: a thrown error is retried, a PermanentError and an unknown kind are not", async () => {
  const queue = uniqueQueue("kinds");
  const retry = { maxAttempts: 3, backoff: Backoff.FIXED, initialBackoff: seconds(0), maxBackoff: seconds(0) };
  const flaky = await client.createTask("flaky", { fail: 1 }, { queue, retryPolicy: retry });
  const doomed = await client.createTask("doomed", null, { queue, retryPolicy: retry });
  const unknown = await client.createTask("nobody.handles.this", null, { queue, retryPolicy: retry });

  // The failures below are expected: keep their log lines out of the test output.
  const worker = new Worker(client, { queues: [queue], concurrency: 2, workerId: "ts-kinds", log: silent });
  worker.handle("flaky", (ctx) => {
    if (ctx.attempt <= (ctx.input as { fail: number }).fail) throw new Error(`attempt ${ctx.attempt} failed`);
    ctx.setSummary(`attempt ${ctx.attempt}`);
    return { attempt: ctx.attempt };
  });
  worker.handle("doomed", async () => {
    throw new PermanentError("cannot ever work");
  });
  const running = worker.run();
  const ended = (name: string) =>
    eventually(async () => {
      const task = await client.getTask(name);
      return [TaskState.SUCCEEDED, TaskState.FAILED].includes(task.state) ? task : undefined;
    });
  const [ok, permanent, unhandled] = await Promise.all([ended(flaky.name), ended(doomed.name), ended(unknown.name)]);
  await worker.stop();
  await running;

  assert.equal(ok.state, TaskState.SUCCEEDED);
  assert.deepEqual(ok.result, { attempt: 2 });
  assert.equal(ok.summary, "attempt 2");
  assert.equal(ok.attempts[0].error?.message, "attempt 1 failed");
  assert.equal(permanent.state, TaskState.FAILED);
  assert.equal(permanent.error?.type, "PermanentError");
  assert.equal(permanent.attempts.length, 1);
  assert.equal(unhandled.state, TaskState.FAILED);
  assert.equal(unhandled.error?.type, "UnknownKind");
});

test("heartbeats extend the lease and carry progress; a cancel aborts ctx.signal", async () => {
  const queue = uniqueQueue("beats");
  const task = await client.createTask("long", null, { queue });
  const worker = new Worker(client, { queues: [queue], workerId: "ts-beats", leaseSeconds: 1, log: silent });
  worker.handle("long", async (ctx) => {
    ctx.reportProgress({ step: "waiting" });
    // Runs past its one-second lease until the test cancels it: only heartbeats keep it.
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
    throw ctx.signal.reason;
  });
  const running = worker.run();
  const progressed = await eventually(async () => {
    const read = await client.getTask(task.name);
    return read.progress?.step === "waiting" ? read : undefined;
  });
  assert.equal(progressed.state, TaskState.RUNNING);
  // Several lease lengths later the first lease is still the task's: it was extended.
  await eventually(async () => {
    const read = await client.getTask(task.name);
    const started = read.startTime ? Number(read.startTime.seconds) : Infinity;
    const expires = read.leaseExpireTime ? Number(read.leaseExpireTime.seconds) : 0;
    return expires >= started + 3 ? read : undefined;
  });
  assert.equal((await client.getTask(task.name)).attempt, 1);
  await client.cancelTask(task.name, "enough");
  const interrupted = await eventually(async () => {
    const read = await client.getTask(task.name);
    return read.state === TaskState.INTERRUPTED ? read : undefined;
  });
  assert.equal(interrupted.attempts.length, 1);
  await worker.stop();
  await running;
});

test("RESTART_WORKER: the worker acks and reconnects; a task running across it reports with the unary RPCs", async () => {
  const queue = uniqueQueue("restart");
  const worker = new Worker(client, { queues: [queue], concurrency: 2, workerId: `ts-restart-${queue.slice(-8)}` });
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  worker.handle("held", async () => {
    started();
    await released;
    return "after the restart";
  });
  worker.handle("next", () => "on the new stream");
  const run = worker.run();
  const held = await client.createTask("held", null, { queue });
  await running;

  const command = await client.commands.restartWorker({ parent: client.project, worker: worker.name });
  const acked = await eventually(async () => {
    const read = await client.commands.getCommand({ name: command.name });
    return read.status === CommandStatus.SUCCEEDED ? read : undefined;
  });
  assert.equal(acked.verb, CommandVerb.RESTART_WORKER);
  release();
  const next = await client.createTask("next", null, { queue });
  const ended = (name: string) =>
    eventually(async () => {
      const task = await client.getTask(name);
      return task.state === TaskState.SUCCEEDED ? task : undefined;
    });
  const [first, second] = await Promise.all([ended(held.name), ended(next.name)]);
  assert.equal(first.result, "after the restart");
  assert.equal(second.result, "on the new stream");
  await worker.stop();
  await run;
});

test("a worker whose key is refused stops and run() rejects", async () => {
  const refused = new ConveyorClient({ apiKey: "not-a-key" });
  const worker = new Worker(refused, { queues: [uniqueQueue("refused")], log: silent });
  await assert.rejects(worker.run(), (error) => ConnectError.from(error).code === Code.Unauthenticated);
  refused.close();
});
