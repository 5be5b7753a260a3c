/** The client's backoff curve and full jitter (the Python client's _backoff.py). */

import { setTimeout as sleepMs } from "node:timers/promises";

/** The longest wait after `failures` failures in a row: `initial`, doubling, at most `maximum`. */
export function exponentialStep(failures: number, initial: number, maximum: number): number {
  return Math.min(maximum, initial * 2 ** Math.min(Math.max(failures, 1) - 1, 60));
}

/** Seconds to wait after `failures` failures in a row: uniform over [0, min(5, 0.1 * 2**failures)]. */
export function fullJitter(failures: number): number {
  return Math.random() * exponentialStep(failures + 1, 0.1, 5);
}

/** Resolves after `seconds`, or at once (false) when `signal` aborts first. */
export async function sleep(seconds: number, signal?: AbortSignal): Promise<boolean> {
  try {
    await sleepMs(Math.max(0, seconds * 1000), undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

/** Resolves when one of `promises` settles, or after `seconds`, whichever is first. */
export async function settleOrTimeout(promises: Promise<unknown>[], seconds: number): Promise<void> {
  const timer = new AbortController();
  try {
    await Promise.race([
      ...promises.map((promise) => promise.then(() => undefined, () => undefined)),
      sleep(seconds, timer.signal),
    ]);
  } finally {
    timer.abort(); // no timer keeps the process alive
  }
}
