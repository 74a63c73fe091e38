// Pool: Python's multiprocessing.Pool, on worker processes of ours (the local backend) or on
// worker hosts that share a Redis queue (mp.backends.bullmq).
//
// This file is everything a user sees and both backends share: argument checks, Python's
// chunking, ordering, imap's bounded window, AsyncResult, signals and the close/terminate/join
// state machine. Where the units run is the backend's business (lib/backends/backend.ts): the
// pool hands it units and hears of each outcome once, through unit.job.unitDone.
import { AsyncResult, AsyncResultCallbacks, checkCallbacks } from './async-result';
import { Backend, Job, kCreateBackend, PoolBackend, PoolHost, Unit } from './backends/backend';
import { localBackend } from './backends/local';
import { cpuCount } from './context';
import { describe, optionsOf } from './describe';
import { abortError } from './errors';
import { Mode } from './pool-worker';
import { AnyFunction } from './process';
import { captureCallSite } from './remote-error';
import { Task, TaskSpec, toTaskSpec } from './task';
import { checkSignal } from './wait';

/** The function a worker runs: a self-contained function, or a module task (mp.task / mp.tasks). */
export type PoolTask<F extends AnyFunction> = F | Task<F>;
/** What a task's promise resolves to. */
export type TaskResult<F extends AnyFunction> = Awaited<ReturnType<F>>;
/** Inputs of map/imap: an array, any iterable, or an async iterable. */
export type Items<T> = Iterable<T> | AsyncIterable<T>;

/** What map() passes to `F`: its parameter, or anything to a function that takes none. */
type ItemOf<F extends (item: any) => unknown> = Parameters<F> extends [] ? unknown : Parameters<F>[0];

export interface PoolOptions<I extends AnyFunction = AnyFunction> {
  /** Worker processes (default: mp.cpuCount()). With a remote backend: the slots of all its workers, for chunking. */
  processes?: number;
  /** Runs once in each worker, before its first task. */
  initializer?: PoolTask<I>;
  /** The initializer's arguments; shared objects arrive as the same objects. */
  initargs?: Parameters<I>;
  /** Replace a worker after it has run this many tasks (chunks); default: never. */
  maxTasksPerChild?: number;
  /** ms a task may run (counted from its start, not from when it was queued); its worker is ended. */
  taskTimeout?: number;
  /** Where the tasks run: worker processes of this machine (default), or `mp.backends.bullmq({...})`. */
  backend?: Backend;
}

export interface ApplyOptions {
  /** Aborting it rejects the call with an AbortError and ends the worker that runs the task. */
  signal?: AbortSignal;
}

export interface MapOptions extends ApplyOptions {
  /** Items per task message; default: Python's rule for map, 1 for imap. */
  chunksize?: number;
}

export type ApplyAsyncOptions<T> = ApplyOptions & AsyncResultCallbacks<T>;
export type MapAsyncOptions<T> = MapOptions & AsyncResultCallbacks<T>;

function checkOptionalInteger(value: unknown, what: string, min: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`${what} must be an integer, got ${describe(value)}`);
  if (value < min) throw new RangeError(`${what} must be at least ${min}, got ${value}`);
  return value;
}

function isIterable(x: unknown): x is Iterable<unknown> {
  return x !== null && x !== undefined && typeof (x as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function';
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return x !== null && x !== undefined && typeof (x as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

function checkItems(items: unknown, caller: string): void {
  if (!isIterable(items) && !isAsyncIterable(items)) {
    throw new TypeError(`${caller}: items must be an array, an iterable or an async iterable, got ${describe(items)}`);
  }
}

async function collect(items: Items<unknown>): Promise<unknown[]> {
  if (Array.isArray(items)) return items;
  if (isIterable(items)) return [...items];
  const out: unknown[] = [];
  for await (const x of items) out.push(x);
  return out;
}

/** Python's Pool._map_async rule: about four chunks per worker. */
function defaultChunksize(n: number, processes: number): number {
  if (n === 0) return 1;
  const size = Math.floor(n / (processes * 4));
  return n % (processes * 4) === 0 ? Math.max(1, size) : size + 1;
}

/** map, starmap and apply: units whose values come back together, in order. */
class Batch implements Job {
  done = false;
  private readonly parts: unknown[];
  private left: number;

  constructor(
    units: number,
    private readonly flatten: boolean,
    private readonly settle: (ok: boolean, value: unknown) => void,
    readonly callSite: { stack?: string },
  ) {
    this.parts = new Array(units);
    this.left = units;
    if (units === 0) this.finish(true, []);
  }

  unitDone(unit: Unit, ok: boolean, value: unknown): void {
    if (this.done) return;
    if (!ok) return this.finish(false, value);
    this.parts[unit.index] = value;
    if (--this.left > 0) return;
    if (!this.flatten) return this.finish(true, this.parts[0]);
    let total = 0;
    for (const part of this.parts) total += (part as unknown[]).length;
    const all = new Array<unknown>(total);
    let k = 0;
    for (const part of this.parts) for (const x of part as unknown[]) all[k++] = x;
    this.finish(true, all);
  }

  finish(ok: boolean, value: unknown): void {
    if (this.done) return;
    this.done = true;
    this.settle(ok, value);
  }
}

/** imap and imapUnordered: outcomes kept until the consumer takes them. */
class Stream implements Job {
  done = false;
  /** Outcomes by unit index, in the order they came. */
  readonly outcomes = new Map<number, { ok: boolean; value: unknown }>();
  failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(readonly callSite: { stack?: string }) {}

  unitDone(unit: Unit, ok: boolean, value: unknown): void {
    if (this.done) return;
    this.outcomes.set(unit.index, { ok, value });
    this.notify();
  }

  fail(err: Error): void {
    this.failure ??= err;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  changed(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }
}

/** `I`: the initializer's type, so that `initargs` are checked against it. */
export class Pool<I extends AnyFunction = AnyFunction> {
  readonly #processes: number;
  readonly #backend: PoolBackend;
  /** The state and the input readers, shared with the backend (it reads them). */
  readonly #host: PoolHost;
  readonly #fnIds = new Map<string, number>();
  readonly #specs: TaskSpec[] = [];

  constructor(options: PoolOptions<I> = {}) {
    const o = optionsOf(options, 'Pool()');
    const processes = checkOptionalInteger(o.processes, 'Pool(): processes', 1) ?? cpuCount();
    if (processes > 1024) throw new RangeError(`Pool(): processes must be at most 1024, got ${processes}`);
    const initializer = o.initializer === undefined || o.initializer === null ? null : toTaskSpec(o.initializer, 'Pool(): initializer');
    const initargs = o.initargs ?? [];
    if (!Array.isArray(initargs)) throw new TypeError(`Pool(): initargs must be an array, got ${describe(initargs)}`);
    const maxTasksPerChild = checkOptionalInteger(o.maxTasksPerChild, 'Pool(): maxTasksPerChild', 1) ?? 0;
    let taskTimeout: number | undefined;
    if (o.taskTimeout !== undefined && o.taskTimeout !== null) {
      if (typeof o.taskTimeout !== 'number' || Number.isNaN(o.taskTimeout)) throw new TypeError(`Pool(): taskTimeout must be a number of milliseconds, got ${describe(o.taskTimeout)}`);
      if (o.taskTimeout <= 0) throw new RangeError(`Pool(): taskTimeout must be positive, got ${o.taskTimeout}`);
      taskTimeout = o.taskTimeout;
    }
    const backend = o.backend ?? localBackend;
    if (typeof backend !== 'object' || backend === null || typeof (backend as Backend)[kCreateBackend] !== 'function') {
      throw new TypeError(`Pool(): backend must be made by mp.backends (mp.backends.bullmq({ connection, queue })), got ${describe(backend)}`);
    }
    this.#processes = processes;
    this.#host = { state: 'running', activeStreams: 0, specs: this.#specs };
    // The backend refuses initargs that it cannot send, before any worker starts.
    this.#backend = (backend as Backend)[kCreateBackend](this.#host, { processes, initializer, initargs, maxTasksPerChild, taskTimeout });
  }

  /** The number of worker processes the pool keeps. */
  get processes(): number {
    return this.#processes;
  }

  /** The pids of the workers now running (they change as workers are replaced); none for a remote backend. */
  get pids(): number[] {
    return this.#backend.pids;
  }

  // ---------------------------------------------------------------------------------------------
  // The public calls

  /** Runs fn(...args) in a worker; resolves with its value or rejects with its error. */
  apply<F extends AnyFunction>(fn: PoolTask<F>, args?: Parameters<F>, options?: ApplyOptions): Promise<TaskResult<F>> {
    const callSite = captureCallSite(this.apply);
    return new Promise((resolve, reject) => {
      this.#applyInto(fn, args, options, 'Pool.apply()', callSite, (ok, value) => (ok ? resolve(value as TaskResult<F>) : reject(value)));
    });
  }

  /** Python's apply_async: an AsyncResult, with optional callback/errorCallback. */
  applyAsync<F extends AnyFunction>(fn: PoolTask<F>, args?: Parameters<F>, options?: ApplyAsyncOptions<TaskResult<F>>): AsyncResult<TaskResult<F>> {
    const callSite = captureCallSite(this.applyAsync);
    const o = optionsOf(options, 'Pool.applyAsync()') as ApplyAsyncOptions<TaskResult<F>>;
    checkCallbacks(o, 'Pool.applyAsync()');
    const result = new AsyncResult<TaskResult<F>>(o);
    this.#applyInto(fn, args, o, 'Pool.applyAsync()', callSite, (ok, value) => result.settle(ok, value), true);
    return result;
  }

  /** Applies fn to every item, in chunks; resolves with the values in order. */
  map<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<ItemOf<F>>, options?: MapOptions): Promise<Array<TaskResult<F>>> {
    return this.#mapPromise(fn, items, options, Mode.Map, 'Pool.map()', captureCallSite(this.map));
  }

  /** map with each item spread as the arguments: starmap(f, [[1, 2]]) calls f(1, 2). */
  starmap<F extends AnyFunction>(fn: PoolTask<F>, items: Items<Parameters<F>>, options?: MapOptions): Promise<Array<TaskResult<F>>> {
    return this.#mapPromise(fn, items, options, Mode.Starmap, 'Pool.starmap()', captureCallSite(this.starmap));
  }

  /** Python's map_async: an AsyncResult of the whole list. */
  mapAsync<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<ItemOf<F>>, options?: MapAsyncOptions<Array<TaskResult<F>>>): AsyncResult<Array<TaskResult<F>>> {
    return this.#mapAsyncResult(fn, items, options, Mode.Map, 'Pool.mapAsync()', captureCallSite(this.mapAsync));
  }

  /** Python's starmap_async. */
  starmapAsync<F extends AnyFunction>(fn: PoolTask<F>, items: Items<Parameters<F>>, options?: MapAsyncOptions<Array<TaskResult<F>>>): AsyncResult<Array<TaskResult<F>>> {
    return this.#mapAsyncResult(fn, items, options, Mode.Starmap, 'Pool.starmapAsync()', captureCallSite(this.starmapAsync));
  }

  /** Values in input order, as they come; the input is read lazily, a bounded distance ahead. */
  imap<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<ItemOf<F>>, options?: MapOptions): AsyncIterableIterator<TaskResult<F>> {
    return this.#stream(fn, items, options, true, 'Pool.imap()', captureCallSite(this.imap)) as AsyncIterableIterator<TaskResult<F>>;
  }

  /** Values in the order they complete. */
  imapUnordered<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<ItemOf<F>>, options?: MapOptions): AsyncIterableIterator<TaskResult<F>> {
    return this.#stream(fn, items, options, false, 'Pool.imapUnordered()', captureCallSite(this.imapUnordered)) as AsyncIterableIterator<TaskResult<F>>;
  }

  /** No new work; queued work finishes, then the workers exit. */
  close(): void {
    if (this.#host.state === 'running') this.#host.state = 'closed';
    this.#backend.poke();
  }

  /** Rejects everything pending and kills the workers now. */
  terminate(): void {
    if (this.#host.state === 'terminated') return;
    this.#host.state = 'terminated';
    this.#backend.terminate(new Error('the pool was terminated'));
  }

  /** Resolves once every worker has exited; call close() or terminate() first. */
  async join(): Promise<void> {
    if (this.#host.state === 'running') throw new Error('Pool.join(): call close() or terminate() first');
    await this.#backend.join();
  }

  /** `await using pool = new mp.Pool()`: close, then join. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.join();
  }

  toString(): string {
    return `<Pool state=${this.#host.state} pool_size=${this.#processes}>`;
  }

  // ---------------------------------------------------------------------------------------------
  // Submitting

  #checkRunning(caller: string): void {
    const state = this.#host.state;
    if (state !== 'running') throw new Error(`${caller}: the pool is ${state === 'closed' ? 'closed' : 'terminated'}; no new work is accepted`);
  }

  #fnId(fn: unknown, caller: string): number {
    const spec = toTaskSpec(fn, caller);
    // The source itself is the key (toTaskSpec returns the same string for a function each call,
    // and its hash is computed once): no string built per apply. A module task's is short.
    const key = spec.kind === 'source' ? spec.source : `\0${spec.url}#${spec.exportName}`;
    let id = this.#fnIds.get(key);
    if (id === undefined) {
      id = this.#specs.length;
      this.#specs.push(spec);
      this.#fnIds.set(key, id);
    }
    return id;
  }

  #enqueue(units: Unit[]): void {
    if (this.#host.state === 'terminated') {
      const err = new Error('the pool was terminated');
      for (const u of units) if (!u.job.done) u.job.unitDone(u, false, err);
      return;
    }
    this.#backend.submit(units);
  }

  #watchSignal(signal: AbortSignal | undefined, job: Batch | Stream): () => void {
    if (signal === undefined) return () => undefined;
    const onAbort = (): void => {
      const err = abortError(signal);
      if (job instanceof Batch) job.finish(false, err);
      else job.fail(err);
      this.#backend.cancel(job, err);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  }

  #applyInto(
    fn: unknown, args: unknown, options: ApplyOptions | undefined, caller: string, callSite: { stack?: string },
    settle: (ok: boolean, value: unknown) => void, throwSync = false,
  ): void {
    let unit: Unit;
    let signal: AbortSignal | undefined;
    let job: Batch;
    try {
      this.#checkRunning(caller);
      const fnId = this.#fnId(fn, caller);
      const a = args ?? [];
      if (!Array.isArray(a)) throw new TypeError(`${caller}: args must be an array, got ${describe(a)}`);
      signal = checkSignal(optionsOf(options, caller).signal);
      let unwatch = (): void => undefined;
      job = new Batch(1, false, (ok, value) => {
        unwatch();
        settle(ok, value);
      }, callSite);
      unit = this.#backend.unit(job, 0, fnId, Mode.Apply, a, `${caller} args`, 0);
      if (signal?.aborted) {
        job.finish(false, abortError(signal));
        return;
      }
      unwatch = this.#watchSignal(signal, job);
    } catch (err) {
      if (throwSync) throw err;
      settle(false, err);
      return;
    }
    this.#enqueue([unit]);
  }

  #mapPromise(fn: unknown, items: unknown, options: MapOptions | undefined, mode: Mode, caller: string, callSite: { stack?: string }): Promise<any[]> {
    return new Promise((resolve, reject) => {
      try {
        this.#checkRunning(caller);
        this.#mapInto(fn, items, options, mode, caller, callSite, (ok, value) => (ok ? resolve(value as unknown[]) : reject(value)));
      } catch (err) {
        reject(err);
      }
    });
  }

  #mapAsyncResult(fn: unknown, items: unknown, options: MapAsyncOptions<any> | undefined, mode: Mode, caller: string, callSite: { stack?: string }): AsyncResult<any[]> {
    this.#checkRunning(caller);
    const o = optionsOf(options, caller) as MapAsyncOptions<unknown[]>;
    checkCallbacks(o, caller);
    const result = new AsyncResult<unknown[]>(o);
    this.#mapInto(fn, items, o, mode, caller, callSite, (ok, value) => result.settle(ok, value));
    return result;
  }

  /** Checks everything it can at once (throws), then reads the input, chunks it and submits. */
  #mapInto(
    fn: unknown, items: unknown, options: MapOptions | undefined, mode: Mode, caller: string, callSite: { stack?: string },
    settle: (ok: boolean, value: unknown) => void,
  ): void {
    const fnId = this.#fnId(fn, caller);
    checkItems(items, caller);
    const o = optionsOf(options, caller);
    const chunksize = checkOptionalInteger(o.chunksize, `${caller}: chunksize`, 1);
    const signal = checkSignal(o.signal);
    const submit = (input: unknown[]): void => {
      const list = mode !== Mode.Starmap ? input : input.map((args, i) => {
        if (!isIterable(args)) throw new TypeError(`${caller}: item ${i} must be an array of arguments, got ${describe(args)}`);
        return Array.isArray(args) ? args : [...args];
      });
      const size = chunksize ?? defaultChunksize(list.length, this.#processes);
      const count = Math.ceil(list.length / size);
      let unwatch = (): void => undefined;
      const job = new Batch(count, true, (ok, value) => {
        unwatch();
        settle(ok, value);
      }, callSite);
      if (count === 0) return;
      // Every chunk is encoded before the first is sent: bad input sends nothing.
      const units: Unit[] = [];
      for (let i = 0; i < count; i++) units.push(this.#backend.unit(job, i, fnId, mode, list.slice(i * size, (i + 1) * size), `${caller} item`, i * size));
      if (signal?.aborted) return job.finish(false, abortError(signal));
      unwatch = this.#watchSignal(signal, job);
      this.#enqueue(units);
    };
    if (Array.isArray(items)) {
      submit(items);
      return;
    }
    // Reading the input is work accepted now: close() waits for it as for an imap.
    this.#host.activeStreams++;
    collect(items as Items<unknown>).then(submit).catch((err) => settle(false, err)).finally(() => {
      this.#host.activeStreams--;
      this.#backend.poke();
    });
  }

  #stream(fn: unknown, items: unknown, options: MapOptions | undefined, ordered: boolean, caller: string, callSite: { stack?: string }): AsyncGenerator<unknown> {
    this.#checkRunning(caller);
    const fnId = this.#fnId(fn, caller);
    checkItems(items, caller);
    const o = optionsOf(options, caller);
    const chunksize = checkOptionalInteger(o.chunksize, `${caller}: chunksize`, 1) ?? 1;
    const signal = checkSignal(o.signal);
    return this.#streamRun(fnId, items as Items<unknown>, chunksize, ordered, signal, caller, callSite);
  }

  async *#streamRun(
    fnId: number, items: Items<unknown>, chunksize: number, ordered: boolean, signal: AbortSignal | undefined,
    caller: string, callSite: { stack?: string },
  ): AsyncGenerator<unknown> {
    const job = new Stream(callSite);
    const asyncInput = !isIterable(items);
    const it = asyncInput ? (items as AsyncIterable<unknown>)[Symbol.asyncIterator]() : (items as Iterable<unknown>)[Symbol.iterator]();
    const unwatch = this.#watchSignal(signal, job);
    this.#host.activeStreams++;
    // How many chunks may be submitted and not yet handed to the consumer.
    const window = this.#backend.window;
    let submitted = 0;
    let taken = 0;
    /** Items read from the input. */
    let read = 0;
    let inputDone = false;
    try {
      if (signal?.aborted) throw abortError(signal);
      for (;;) {
        // Read ahead, within the window.
        const fresh: Unit[] = [];
        while (!inputDone && submitted - taken < window) {
          const chunk: unknown[] = [];
          while (chunk.length < chunksize) {
            const r = asyncInput ? await (it as AsyncIterator<unknown>).next() : (it as Iterator<unknown>).next();
            if (r.done) {
              inputDone = true;
              break;
            }
            chunk.push(r.value);
            read++;
          }
          if (chunk.length > 0) fresh.push(this.#backend.unit(job, submitted++, fnId, Mode.Map, chunk, `${caller} item`, read - chunk.length));
          // An async input: hand over what we have before waiting for more.
          if (asyncInput && fresh.length > 0) break;
        }
        if (fresh.length > 0) this.#enqueue(fresh);
        if (job.failure !== undefined) throw job.failure;
        if (inputDone && taken === submitted) return;
        let next: { ok: boolean; value: unknown } | undefined;
        let index = -1;
        if (ordered) {
          next = job.outcomes.get(taken);
          index = taken;
        } else {
          for (const [i, outcome] of job.outcomes) {
            next = outcome;
            index = i;
            break;
          }
        }
        if (next === undefined) {
          // Nothing to hand over: wait for an outcome, unless more input can be read now.
          if (inputDone || submitted - taken >= window || !asyncInput) await job.changed();
          continue;
        }
        job.outcomes.delete(index);
        taken++;
        if (!next.ok) throw next.value;
        for (const value of next.value as unknown[]) yield value;
      }
    } finally {
      job.done = true;
      unwatch();
      this.#host.activeStreams--;
      this.#backend.poke();
      if (!inputDone) await it.return?.();
    }
  }
}
