// Futex waits for the JS layer. Each slow path (a lock's acquire, a condition's wait, ...) is
// written once, as a generator that yields the waits it needs; `runSync` serves them by blocking
// this thread (the ...Sync API), `runAsync` by a native waiter thread while the event loop runs.
import { describe } from './describe';
import { abortError } from './errors';
import { native, WaitResult } from './native';

export { WaitResult };

export interface WaitRequest {
  buffer: ArrayBuffer;
  byteOffset: number;
  expected: number;
  /** Milliseconds; undefined waits for ever. */
  timeout: number | undefined;
}

export type WaitPlan<T> = Generator<WaitRequest, T, WaitResult>;

const pending = new Map<number, (result: WaitResult) => void>();
let dispatcherInstalled = false;

function installDispatcher(): void {
  native.setWaitCallback((id, result) => {
    const resolve = pending.get(id);
    if (resolve !== undefined) {
      pending.delete(id);
      resolve(result);
    }
  });
  dispatcherInstalled = true;
}

/** Sleeps this thread while the word holds `expected`. */
export function waitSync(req: WaitRequest): WaitResult {
  return native.futexWait(req.buffer, req.byteOffset, req.expected >>> 0, req.timeout);
}

/** Resolves when the word is woken, changes, or the timeout passes; never blocks the event loop. */
export function waitAsync(req: WaitRequest, signal?: AbortSignal): Promise<WaitResult> {
  if (!dispatcherInstalled) installDispatcher();
  return new Promise((resolve, reject) => {
    const id = native.futexWaitAsync(req.buffer, req.byteOffset, req.expected >>> 0, req.timeout);
    if (signal === undefined) {
      pending.set(id, resolve);
      return;
    }
    const onAbort = (): void => {
      pending.delete(id);
      native.futexCancel(id);
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    pending.set(id, (result) => {
      signal.removeEventListener('abort', onAbort);
      resolve(result);
    });
  });
}

export function wake(buffer: ArrayBuffer, byteOffset: number, count: number): number {
  return native.futexWake(buffer, byteOffset, count);
}

export function runSync<T>(plan: WaitPlan<T>): T {
  let step = plan.next();
  while (!step.done) step = plan.next(waitSync(step.value));
  return step.value;
}

/**
 * Drives a plan on the event loop. When `signal` aborts, the plan is resumed with an AbortError
 * thrown at its wait, so its `finally` blocks (re-acquiring a condition's lock, say) still run,
 * without the signal, before the call rejects.
 */
export async function runAsync<T>(plan: WaitPlan<T>, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted) {
    plan.return(undefined as never);
    throw abortError(signal);
  }
  let step = plan.next();
  while (!step.done) {
    let result: WaitResult;
    try {
      result = await waitAsync(step.value, signal);
    } catch (err) {
      step = plan.throw(err);
      signal = undefined;
      continue;
    }
    step = plan.next(result);
  }
  return step.value;
}

/** Validates a timeout in milliseconds: undefined/null is for ever, a negative one is zero. */
export function checkTimeout(timeout: unknown, what = 'timeout'): number | undefined {
  if (timeout === undefined || timeout === null) return undefined;
  if (typeof timeout !== 'number' || Number.isNaN(timeout)) {
    throw new TypeError(`${what} must be a number of milliseconds or undefined, got ${describe(timeout)}`);
  }
  return timeout < 0 ? 0 : timeout;
}

export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined || signal === null) return undefined;
  if (!(signal instanceof AbortSignal)) throw new TypeError(`signal must be an AbortSignal, got ${describe(signal)}`);
  return signal;
}

/** A deadline on the monotonic clock, or Infinity. */
export function deadlineAfter(timeout: number | undefined): number {
  return timeout === undefined ? Infinity : performance.now() + timeout;
}

/** Milliseconds left before `deadline` (undefined for none), capped at `cap`. */
export function remaining(deadline: number, cap = Infinity): number | undefined {
  if (deadline === Infinity) return cap === Infinity ? undefined : cap;
  return Math.min(Math.max(0, deadline - performance.now()), cap);
}
