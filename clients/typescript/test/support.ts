/**
 * What the tests share: a client of the server that tests/test_typescript_client.py
 * started (CONVEYOR_ADDRESS and CONVEYOR_API_KEY in the environment), and a queue of
 * each test's own so tests never take each other's tasks.
 */

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { ConveyorClient } from "../src/index.js";

export function connect(): ConveyorClient {
  if (!process.env.CONVEYOR_ADDRESS || !process.env.CONVEYOR_API_KEY) {
    throw new Error("set CONVEYOR_ADDRESS and CONVEYOR_API_KEY (tests/test_typescript_client.py does)");
  }
  return new ConveyorClient({ project: "default" });
}

export function uniqueQueue(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Polls `check` until it returns a value (not undefined), for up to `seconds`. */
export async function eventually<T>(check: () => Promise<T | undefined>, seconds = 30): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not true within ${seconds} s`);
    await sleep(50);
  }
}
