// AsyncResult: what applyAsync/mapAsync/starmapAsync return (Python's multiprocessing.pool.AsyncResult).
// The outcome is kept, not thrown: a result nobody asks for never becomes an unhandled rejection.
import { describe } from './describe';
import { TimeoutError } from './errors';
import { checkTimeout } from './wait';

export interface AsyncResultCallbacks<T> {
  /** Called with the value once the work succeeds (Python's callback). */
  callback?: (value: T) => void;
  /** Called with the error once the work fails (Python's error_callback). */
  errorCallback?: (error: Error) => void;
}

export function checkCallbacks(o: AsyncResultCallbacks<any>, caller: string): void {
  if (o.callback !== undefined && typeof o.callback !== 'function') throw new TypeError(`${caller}: callback must be a function, got ${describe(o.callback)}`);
  if (o.errorCallback !== undefined && typeof o.errorCallback !== 'function') {
    throw new TypeError(`${caller}: errorCallback must be a function, got ${describe(o.errorCallback)}`);
  }
}

export class AsyncResult<T> {
  #state: 'pending' | 'fulfilled' | 'rejected' = 'pending';
  #value: T | undefined;
  #error: Error | undefined;
  #waiters: Array<() => void> = [];
  readonly #callbacks: AsyncResultCallbacks<T>;

  /** @internal */
  constructor(callbacks: AsyncResultCallbacks<T> = {}) {
    this.#callbacks = callbacks;
  }

  /** @internal */
  settle(ok: boolean, value: unknown): void {
    if (this.#state !== 'pending') return;
    if (ok) {
      this.#state = 'fulfilled';
      this.#value = value as T;
    } else {
      this.#state = 'rejected';
      this.#error = value as Error;
    }
    for (const wake of this.#waiters.splice(0)) wake();
    // A callback that throws must not break the pool's bookkeeping: report it as uncaught.
    const cb = ok ? this.#callbacks.callback : this.#callbacks.errorCallback;
    if (cb !== undefined) {
      try {
        cb(value as T & Error);
      } catch (err) {
        process.nextTick(() => {
          throw err;
        });
      }
    }
  }

  /** Whether the work has finished (either way). */
  ready(): boolean {
    return this.#state !== 'pending';
  }

  /** Whether it finished without an error; an Error before it is ready (Python's ValueError). */
  successful(): boolean {
    if (this.#state === 'pending') throw new Error('the result is not ready');
    return this.#state === 'fulfilled';
  }

  /** Resolves once the work has finished, or after `timeout` ms, whichever is first. */
  wait(timeout?: number): Promise<void> {
    try {
      const t = checkTimeout(timeout);
      if (this.#state !== 'pending') return Promise.resolve();
      return new Promise((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const done = (): void => {
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        this.#waiters.push(done);
        if (t !== undefined) {
          timer = setTimeout(() => {
            const i = this.#waiters.indexOf(done);
            if (i >= 0) this.#waiters.splice(i, 1);
            resolve();
          }, t);
        }
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The value, or the task's error; rejects with mp.TimeoutError if not ready within `timeout` ms. */
  async get(timeout?: number): Promise<T> {
    await this.wait(timeout);
    if (this.#state === 'fulfilled') return this.#value as T;
    if (this.#state === 'rejected') throw this.#error;
    throw new TimeoutError(`the result was not ready within ${timeout} ms`);
  }
}
