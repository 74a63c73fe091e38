// Futex waits for the JS layer. Each slow path (a lock's acquire, a condition's wait, ...) is
// written once, as a generator that yields the waits it needs; `runSync` serves them by blocking
// this thread (the ...Sync API), `runAsync` by the kernel (io_uring, or a native waiter thread)
// while the event loop runs.
import { describe } from './describe';
import { abortError } from './errors';
import { ClaimKind, native, WaitResult } from './native';
import { SpinBudget } from './spin';

export { ClaimKind, WaitResult };

export interface WaitRequest {
  buffer: ArrayBuffer;
  byteOffset: number;
  expected: number;
  /** Milliseconds; undefined waits for ever. */
  timeout: number | undefined;
  /**
   * false: an async wait sleeps at once, without polling first. For a wait whose answer is never
   * a moment away (a producer waiting for half a ring to drain): its poll would only take a core
   * from the side it waits for.
   */
  poll?: boolean;
  /** Async waits: what the wait may finish by itself once its word has moved (WaitClaim). */
  claim?: WaitClaim;
}

/**
 * A plan's last step, done in native code when its word has moved, right before the waiter is
 * told: the wake-up then costs one call into JS instead of resuming the plan (about half of an
 * async wake-up's time was the plan's JS, cold, once per wake). A claimed wait ends its call
 * with the claim's value and the plan is dropped, never resumed: only a plan with nothing else
 * left to run may yield one (no `finally` but the one the claim stands for), and its call's
 * value must be what the claim makes: `true` for a lock's, a semaphore's or an event's; for a
 * RingGet, the message itself (runAsync's `finish` of the plan's frame). A claim the word does
 * not allow (another process took the lock first, the message needs JS to decode) leaves the
 * plan to run on as usual.
 */
export interface WaitClaim {
  kind: ClaimKind;
  value: number;
  /** A word of the same buffer. */
  markByteOffset: number;
  markValue: number;
}

export type WaitPlan<T> = Generator<WaitRequest, T, WaitResult>;

// Polling before sleeping. A wake-up that reaches a sleeping event loop costs a halted core's
// exit and a cold cache: 40-70 µs on a 2-core VM whose C floor is ~21 µs. A loop that is still
// turning sees the word change within a turn (a few µs). So an async wait first polls its word
// between event-loop turns, for up to the window, when the last wait on that word was answered
// inside it ("the other side was active a moment ago"). A window that runs out, one spent
// preempted by other work, or a change another waiter won skips the next 1, 2, 4 ... 64 windows
// on that word (SpinBudget): an idle wait polls once and then sleeps, and a busy machine is not
// made busier. ...Sync waits never poll.
const MAX_POLL_MS = 1000;
const DEFAULT_POLL_MS = 2;
let pollMs = pollFromEnv();
/** Budgets per word: a Map per buffer; past the bound, the oldest word's is forgotten. */
const budgets = new WeakMap<ArrayBuffer, Map<number, SpinBudget>>();
const BUDGETS_PER_BUFFER = 4096;

function pollFromEnv(): number {
  const raw = process.env.NMP_WAIT_POLL_MS;
  if (raw === undefined || raw === '') return DEFAULT_POLL_MS;
  const ms = Number(raw);
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, MAX_POLL_MS) : DEFAULT_POLL_MS;
}

/**
 * Sets how long an async wait may poll its word between event-loop turns before it sleeps, in
 * milliseconds (0: never poll); returns the previous window. Applies to this process.
 */
export function setWaitPolling(ms: number): number {
  if (typeof ms !== 'number' || Number.isNaN(ms)) {
    throw new TypeError(`setWaitPolling: ms must be a number of milliseconds, got ${describe(ms)}`);
  }
  if (ms < 0 || ms > MAX_POLL_MS) throw new RangeError(`setWaitPolling: ms must be between 0 and ${MAX_POLL_MS}, got ${ms}`);
  const previous = pollMs;
  pollMs = ms;
  return previous;
}

export function getWaitPolling(): number {
  return pollMs;
}

function budgetOf(req: WaitRequest): SpinBudget {
  let perBuffer = budgets.get(req.buffer);
  if (perBuffer === undefined) {
    perBuffer = new Map();
    budgets.set(req.buffer, perBuffer);
  }
  let budget = perBuffer.get(req.byteOffset);
  if (budget === undefined) {
    if (perBuffer.size >= BUDGETS_PER_BUFFER) perBuffer.delete(perBuffer.keys().next().value as number);
    budget = new SpinBudget();
    perBuffer.set(req.byteOffset, budget);
  }
  return budget;
}

/** Sleeps this thread while the word holds `expected`. */
export function waitSync(req: WaitRequest): WaitResult {
  return native.futexWait(req.buffer, req.byteOffset, req.expected >>> 0, req.timeout);
}

/** The poll window for this wait: 0 when polling is off or this word's budget says skip. */
function windowFor(req: WaitRequest): { budget: SpinBudget | undefined; window: number } {
  if (pollMs === 0 || req.timeout === 0 || req.poll === false) return { budget: undefined, window: 0 };
  const budget = budgetOf(req);
  return { budget, window: budget.begin() ? pollMs : 0 };
}

function sameWord(a: WaitRequest, b: WaitRequest): boolean {
  return a.buffer === b.buffer && a.byteOffset === b.byteOffset;
}

/**
 * Resolves when the word is woken, changes, or the timeout passes; never blocks the event loop.
 * With `poll` > 0 it first polls the word that many ms (WaitResult.Polled: it changed meanwhile).
 */
export function waitAsync(req: WaitRequest, signal?: AbortSignal, poll = 0): Promise<WaitResult> {
  return new Promise((resolve, reject) => waitThen(req, signal, poll, resolve, reject));
}

/**
 * waitAsync with callbacks: `done` runs inside the completion's own call from the event loop,
 * with no promise in between (with a claim's value after the result, when it was made); `fail`
 * with the AbortError when `signal` aborts first. `direct`, for a request with a claim and no
 * signal: its `resolve` is called with the claim's value, instead of `done`, when the claim is
 * made while polling, and that hit is recorded in its `budget`'s state.
 */
function waitThen(
  req: WaitRequest,
  signal: AbortSignal | undefined,
  poll: number,
  done: (result: WaitResult, value?: unknown) => void,
  fail: (err: unknown) => void,
  direct?: { resolve: (value: unknown) => void; budget: SpinBudget | undefined },
): void {
  const claim = req.claim;
  let onAbort: (() => void) | undefined;
  const told = signal === undefined ? done : (result: WaitResult, value?: unknown): void => {
    signal.removeEventListener('abort', onAbort!);
    done(result, value);
  };
  const id = claim === undefined
    ? native.futexWaitAsync(req.buffer, req.byteOffset, req.expected >>> 0, req.timeout, poll, told)
    : native.futexWaitAsync(
      req.buffer, req.byteOffset, req.expected >>> 0, req.timeout, poll, told,
      claim.kind, claim.value, claim.markByteOffset, claim.markValue, direct?.resolve, direct?.budget?.state,
    );
  if (signal === undefined) return;
  onAbort = (): void => {
    native.futexCancel(id);
    fail(abortError(signal));
  };
  signal.addEventListener('abort', onAbort, { once: true });
}

export function wake(buffer: ArrayBuffer, byteOffset: number, count: number): number {
  return native.futexWake(buffer, byteOffset, count);
}

// Sync waits sleep at once: spinning first (the same budget, in C) gained nothing measurable for
// a blocked producer or a contended lock on 2 cores, and took CPU from the JIT's threads.
export function runSync<T>(plan: WaitPlan<T>): T {
  let step = plan.next();
  while (!step.done) step = plan.next(waitSync(step.value));
  return step.value;
}

/** How a call's outcome is made of its plan's: its value of the plan's, its error of the plan's. */
export interface Outcome<T, U> {
  value(planValue: T): U;
  error?(planError: unknown): unknown;
}

/**
 * Drives a plan on the event loop. When `signal` aborts, the plan is resumed with an AbortError
 * thrown at its wait, so its `finally` blocks (re-acquiring a condition's lock, say) still run,
 * without the signal, before the call rejects. With `outcome`, the call resolves with
 * `outcome.value` of the plan's value and rejects with `outcome.error` of its error.
 *
 * Each wait's completion drives the plan on from inside its own call from the loop, and the plan's
 * end resolves the returned promise there: the caller's `await` resumes at that call's microtask
 * checkpoint, with no promise and no async function between (each was a microtask more on every
 * wake-up; a `.then` for the outcome would be one more).
 */
export function runAsync<T>(plan: WaitPlan<T>, signal?: AbortSignal): Promise<T>;
export function runAsync<T, U>(plan: WaitPlan<T>, signal: AbortSignal | undefined, outcome: Outcome<T, U>): Promise<U>;
export function runAsync<T, U>(plan: WaitPlan<T>, signal?: AbortSignal, outcome?: Outcome<T, U>): Promise<U> {
  if (signal?.aborted) {
    plan.return(undefined as never);
    return Promise.reject(failed(abortError(signal), outcome));
  }
  return new Promise<U>((resolve, reject) => {
    const proceed = (next: () => IteratorResult<WaitRequest, T>): void => {
      let step: IteratorResult<WaitRequest, T>;
      try {
        step = next();
        while (!step.done) {
          const req = step.value;
          // A claimed wait ends with `true` (WaitClaim); without a signal to unhook, one claimed
          // while polling resolves the promise from native code, which records the hit.
          const direct = req.claim !== undefined && signal === undefined;
          const { budget, window } = windowFor(req);
          try {
            waitThen(
              req,
              signal,
              window,
              (result, value) => {
                if ((result & WaitResult.Claimed) === 0) {
                  proceed(() => afterWait(plan, req, budget, window, result));
                  return;
                }
                // Finished natively: the plan is dropped (WaitClaim); it ended, so a poll hit.
                if ((result & ~WaitResult.Claimed) === WaitResult.Polled) budget?.hit();
                else if (window > 0) budget?.missed();
                resolve(value as U);
              },
              // An abort goes on in a microtask, as before: not inside the caller's abort().
              (err) => {
                signal = undefined;
                queueMicrotask(() => proceed(() => plan.throw(err)));
              },
              direct ? { resolve: resolve as (value: unknown) => void, budget } : undefined,
            );
            return;
          } catch (err) {
            signal = undefined;
            step = plan.throw(err);
          }
        }
      } catch (err) {
        reject(failed(err, outcome));
        return;
      }
      if (outcome === undefined) {
        resolve(step.value as unknown as U);
        return;
      }
      try {
        resolve(outcome.value(step.value));
      } catch (err) {
        reject(failed(err, outcome));
      }
    };
    proceed(() => plan.next());
  });
}

function failed(err: unknown, outcome: Outcome<never, unknown> | undefined): unknown {
  return outcome?.error === undefined ? err : outcome.error(err);
}

/** The plan's next step after a wait, and what that wait teaches the word's budget. */
function afterWait<T>(plan: WaitPlan<T>, req: WaitRequest, budget: SpinBudget | undefined, window: number, result: WaitResult): IteratorResult<WaitRequest, T> {
  if (result !== WaitResult.Polled) {
    if (window > 0) budget?.missed();
    return plan.next(result);
  }
  // The word changed while we polled. A hit only if the plan got what it waited for: it ends,
  // or waits on something else next. Waiting on the same word again means another process
  // took it (several consumers of one queue all see each put): that counts as a miss, or a
  // herd of pollers would keep every core busy for one winner.
  const step = plan.next(WaitResult.Woken);
  if (!step.done && sameWord(step.value, req)) budget?.missed();
  else budget?.hit();
  return step;
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
