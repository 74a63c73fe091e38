// Pool: Python's multiprocessing.Pool on worker Processes of ours.
//
// Each worker has a task queue of its own; all put their outcomes into one result queue (every
// queue is a ring in shared memory, lib/ring.ts). The pool keeps a few tasks queued ahead in each
// worker, so a worker never waits for the parent between short tasks, and takes queued tasks back
// for a worker that runs dry (work stealing), so long tasks do not leave stragglers.
//
// What a worker held when it died is read off its queue: a task message still in it was never
// started (it goes to another worker); the one it had taken and not answered was running, and only
// that task rejects with WorkerLostError. Python's Pool hangs here instead (python/cpython#96062).
import * as path from 'path';
import { performance } from 'perf_hooks';

import { AsyncResult, AsyncResultCallbacks, checkCallbacks } from './async-result';
import { cpuCount } from './context';
import { describe, optionsOf } from './describe';
import { abortError, Empty, Full, TimeoutError, WorkerLostError } from './errors';
import { Definition, Mode, Outcome, TaskMessage, WorkerConfig } from './pool-worker';
import { AnyFunction, Process } from './process';
import { NOTHING, Queue } from './queues';
import { decodeValue, encodeMessage, headerField } from './pool-codec';
import { captureCallSite, ErrorInfo, rebuildError } from './remote-error';
import { encode, serialize } from './shared';
import { task, Task, TaskSpec, toTaskSpec } from './task';
import { checkSignal } from './wait';

/** The function a worker runs: a self-contained function, or a module task (mp.task / mp.tasks). */
export type PoolTask<F extends AnyFunction> = F | Task<F>;
/** What a task's promise resolves to. */
export type TaskResult<F extends AnyFunction> = Awaited<ReturnType<F>>;
/** Inputs of map/imap: an array, any iterable, or an async iterable. */
export type Items<T> = Iterable<T> | AsyncIterable<T>;

export interface PoolOptions<I extends AnyFunction = AnyFunction> {
  /** Worker processes (default: mp.cpuCount()). */
  processes?: number;
  /** Runs once in each worker, before its first task. */
  initializer?: PoolTask<I>;
  /** The initializer's arguments; shared objects arrive as the same objects. */
  initargs?: Parameters<I>;
  /** Replace a worker after it has run this many tasks (chunks); default: never. */
  maxTasksPerChild?: number;
  /** ms a task may run (counted from its start, not from when it was queued); its worker is ended. */
  taskTimeout?: number;
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

const POOL_WORKER = task(path.join(__dirname, 'pool-worker.js'), 'serve');

/** Task messages queued in a worker beyond the one it runs. */
const QUEUED_AHEAD = 32;
/** Workers that die before they are up, one after another, before the pool gives up. */
const START_FAILURES = 3;
/** After a result, the parent polls for the next this long (between event-loop turns) before it sleeps. */
const PARENT_SPIN_MS = 0.1;
const WORKER_SPIN_MS = 0.1;
const TASK_RING = 256 * 1024;
const DEFINITION_RING = 64 * 1024;
const RESULT_RING = 1024 * 1024;

interface Job {
  done: boolean;
  readonly callSite: { stack?: string };
  /** A unit's outcome: its value, or the Error it failed with. */
  unitDone(unit: Unit, ok: boolean, value: unknown): void;
}

/** One task message: an apply, or a chunk of a map. */
interface Unit {
  seq: number;
  job: Job;
  /** Its place in the job. */
  index: number;
  fnId: number;
  bytes: Buffer;
  slot: Slot | null;
  /** Set when the pool ends its worker on purpose (timeout, abort): what it rejects with. */
  endedBy?: Error;
}

interface Slot {
  id: number;
  process: Process;
  tasks: Queue<TaskMessage>;
  definitions: Queue<Definition>;
  /** Sent and not answered, oldest first: the first is running once the worker is ready. */
  inFlight: Unit[];
  known: Set<number>;
  ready: boolean;
  assigned: number;
  stopping: boolean;
  exited: boolean;
  startError?: Error;
  timer?: NodeJS.Timeout;
}

/** A FIFO with O(1) shift, for a map of a million tasks. */
class Line<T> {
  private items: T[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined as T;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  push(item: T): void {
    this.items.push(item);
  }
  unshiftAll(items: T[]): void {
    this.items = [...items, ...this.items.slice(this.head)];
    this.head = 0;
  }
  drain(): T[] {
    const out = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return out;
  }
}

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

function signalName(exitCode: number | null): NodeJS.Signals | null {
  if (exitCode === null || exitCode >= 0) return null;
  const os = require('os') as typeof import('os');
  const entry = Object.entries(os.constants.signals).find(([, n]) => n === -exitCode);
  return entry === undefined ? null : (entry[0] as NodeJS.Signals);
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

type State = 'running' | 'closed' | 'terminated';

/** `I`: the initializer's type, so that `initargs` are checked against it. */
export class Pool<I extends AnyFunction = AnyFunction> {
  readonly #processes: number;
  readonly #initializer: TaskSpec | null;
  readonly #initargs: unknown[];
  readonly #maxTasks: number;
  readonly #taskTimeout: number | undefined;
  #state: State = 'running';
  #slots: Slot[] = [];
  #workerCounter = 0;
  #seq = 0;
  readonly #pending = new Line<Unit>();
  readonly #bySeq = new Map<number, Unit>();
  readonly #results: Queue<Buffer | unknown[]>;
  readonly #fnIds = new Map<string, number>();
  readonly #specs: TaskSpec[] = [];
  #startFailures = 0;
  #gaveUp = false;
  #startError: Error | undefined;
  #looping = false;
  #loopAbort: AbortController | undefined;
  #lastActivity = 0;
  /** imap/imapUnordered still reading their input: close() lets them finish. */
  #activeStreams = 0;

  constructor(options: PoolOptions<I> = {}) {
    const o = optionsOf(options, 'Pool()');
    const processes = checkOptionalInteger(o.processes, 'Pool(): processes', 1) ?? cpuCount();
    if (processes > 1024) throw new RangeError(`Pool(): processes must be at most 1024, got ${processes}`);
    this.#initializer = o.initializer === undefined || o.initializer === null ? null : toTaskSpec(o.initializer, 'Pool(): initializer');
    const initargs = o.initargs ?? [];
    if (!Array.isArray(initargs)) throw new TypeError(`Pool(): initargs must be an array, got ${describe(initargs)}`);
    this.#maxTasks = checkOptionalInteger(o.maxTasksPerChild, 'Pool(): maxTasksPerChild', 1) ?? 0;
    if (o.taskTimeout !== undefined && o.taskTimeout !== null) {
      if (typeof o.taskTimeout !== 'number' || Number.isNaN(o.taskTimeout)) throw new TypeError(`Pool(): taskTimeout must be a number of milliseconds, got ${describe(o.taskTimeout)}`);
      if (o.taskTimeout <= 0) throw new RangeError(`Pool(): taskTimeout must be positive, got ${o.taskTimeout}`);
      this.#taskTimeout = o.taskTimeout;
    }
    // Refuse uncloneable initargs here, before any worker starts.
    serialize(encode(initargs), 'Pool(): initargs');
    this.#processes = processes;
    this.#initargs = initargs;
    this.#results = new Queue<Buffer | unknown[]>({ capacity: RESULT_RING });
    try {
      this.#fill();
    } catch (err) {
      this.terminate();
      throw err;
    }
  }

  /** The number of worker processes the pool keeps. */
  get processes(): number {
    return this.#processes;
  }

  /** The pids of the workers now running (they change as workers are replaced). */
  get pids(): number[] {
    return this.#slots.map((s) => s.process.pid!);
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
  map<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<Parameters<F>[0]>, options?: MapOptions): Promise<Array<TaskResult<F>>> {
    return this.#mapPromise(fn, items, options, Mode.Map, 'Pool.map()', captureCallSite(this.map));
  }

  /** map with each item spread as the arguments: starmap(f, [[1, 2]]) calls f(1, 2). */
  starmap<F extends AnyFunction>(fn: PoolTask<F>, items: Items<Parameters<F>>, options?: MapOptions): Promise<Array<TaskResult<F>>> {
    return this.#mapPromise(fn, items, options, Mode.Starmap, 'Pool.starmap()', captureCallSite(this.starmap));
  }

  /** Python's map_async: an AsyncResult of the whole list. */
  mapAsync<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<Parameters<F>[0]>, options?: MapAsyncOptions<Array<TaskResult<F>>>): AsyncResult<Array<TaskResult<F>>> {
    return this.#mapAsyncResult(fn, items, options, Mode.Map, 'Pool.mapAsync()', captureCallSite(this.mapAsync));
  }

  /** Python's starmap_async. */
  starmapAsync<F extends AnyFunction>(fn: PoolTask<F>, items: Items<Parameters<F>>, options?: MapAsyncOptions<Array<TaskResult<F>>>): AsyncResult<Array<TaskResult<F>>> {
    return this.#mapAsyncResult(fn, items, options, Mode.Starmap, 'Pool.starmapAsync()', captureCallSite(this.starmapAsync));
  }

  /** Values in input order, as they come; the input is read lazily, a bounded distance ahead. */
  imap<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<Parameters<F>[0]>, options?: MapOptions): AsyncIterableIterator<TaskResult<F>> {
    return this.#stream(fn, items, options, true, 'Pool.imap()', captureCallSite(this.imap)) as AsyncIterableIterator<TaskResult<F>>;
  }

  /** Values in the order they complete. */
  imapUnordered<F extends (item: any) => unknown>(fn: PoolTask<F>, items: Items<Parameters<F>[0]>, options?: MapOptions): AsyncIterableIterator<TaskResult<F>> {
    return this.#stream(fn, items, options, false, 'Pool.imapUnordered()', captureCallSite(this.imapUnordered)) as AsyncIterableIterator<TaskResult<F>>;
  }

  /** No new work; queued work finishes, then the workers exit. */
  close(): void {
    if (this.#state === 'running') this.#state = 'closed';
    this.#dispatch();
  }

  /** Rejects everything pending and kills the workers now. */
  terminate(): void {
    if (this.#state === 'terminated') return;
    this.#state = 'terminated';
    const err = new Error('the pool was terminated');
    for (const unit of this.#pending.drain()) if (!unit.job.done) unit.job.unitDone(unit, false, err);
    for (const slot of this.#slots) {
      clearTimeout(slot.timer);
      slot.process.kill();
      for (const unit of slot.inFlight.splice(0)) {
        this.#bySeq.delete(unit.seq);
        if (!unit.job.done) unit.job.unitDone(unit, false, err);
      }
    }
    this.#loopAbort?.abort();
  }

  /** Resolves once every worker has exited; call close() or terminate() first. */
  async join(): Promise<void> {
    if (this.#state === 'running') throw new Error('Pool.join(): call close() or terminate() first');
    while (this.#slots.length > 0) await Promise.all(this.#slots.map((s) => s.process.join()));
  }

  /** `await using pool = new mp.Pool()`: close, then join. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.join();
  }

  toString(): string {
    return `<Pool state=${this.#state} pool_size=${this.#processes}>`;
  }

  // ---------------------------------------------------------------------------------------------
  // Submitting

  #checkRunning(caller: string): void {
    if (this.#state !== 'running') throw new Error(`${caller}: the pool is ${this.#state === 'closed' ? 'closed' : 'terminated'}; no new work is accepted`);
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

  /** Builds a unit; a payload that cannot be cloned throws a TypeError that names it. */
  #unit(job: Job, index: number, fnId: number, mode: Mode, payload: unknown, what: string): Unit {
    const seq = ++this.#seq;
    const bytes = encodeMessage([seq, fnId, mode], payload, what);
    return { seq, job, index, fnId, bytes, slot: null };
  }

  #enqueue(units: Unit[]): void {
    if (this.#state === 'terminated') {
      const err = new Error('the pool was terminated');
      for (const u of units) if (!u.job.done) u.job.unitDone(u, false, err);
      return;
    }
    if (this.#gaveUp) {
      // The workers kept failing at start-up and the pool let its pending work go: new work
      // gets a fresh try.
      this.#gaveUp = false;
      this.#startFailures = 0;
    }
    for (const u of units) this.#pending.push(u);
    // Work accepted before close() may come after the workers stopped (an imap read late).
    try {
      this.#fill();
    } catch (err) {
      return this.#giveUp(err as Error);
    }
    this.#dispatch();
  }

  #watchSignal(signal: AbortSignal | undefined, job: Batch | Stream): () => void {
    if (signal === undefined) return () => undefined;
    const onAbort = (): void => {
      const err = abortError(signal);
      if (job instanceof Batch) job.finish(false, err);
      else job.fail(err);
      this.#endUnitsOf(job, err);
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
      unit = this.#unit(job, 0, fnId, Mode.Apply, a, `${caller} args`);
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
      // Every chunk is serialized before the first is sent: bad input sends nothing.
      const units: Unit[] = [];
      for (let i = 0; i < count; i++) units.push(this.#unit(job, i, fnId, mode, list.slice(i * size, (i + 1) * size), `${caller} item`));
      if (signal?.aborted) return job.finish(false, abortError(signal));
      unwatch = this.#watchSignal(signal, job);
      this.#enqueue(units);
    };
    if (Array.isArray(items)) {
      submit(items);
      return;
    }
    // Reading the input is work accepted now: close() waits for it as for an imap.
    this.#activeStreams++;
    collect(items as Items<unknown>).then(submit).catch((err) => settle(false, err)).finally(() => {
      this.#activeStreams--;
      this.#dispatch();
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
    this.#activeStreams++;
    // How many chunks may be submitted and not yet handed to the consumer.
    const window = Math.max(4, this.#processes * (QUEUED_AHEAD + 1));
    let submitted = 0;
    let taken = 0;
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
          }
          if (chunk.length > 0) fresh.push(this.#unit(job, submitted++, fnId, Mode.Map, chunk, `${caller} item`));
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
      this.#activeStreams--;
      this.#dispatch();
      if (!inputDone) await it.return?.();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Workers

  #fill(): void {
    while (this.#slots.length < this.#processes && !this.#gaveUp) {
      try {
        this.#spawn();
      } catch (err) {
        if (this.#state !== 'running' || ++this.#startFailures >= START_FAILURES) throw err;
      }
    }
  }

  #spawn(): void {
    const id = ++this.#workerCounter;
    const tasks = new Queue<TaskMessage>({ capacity: TASK_RING });
    const definitions = new Queue<Definition>({ capacity: DEFINITION_RING });
    const config: WorkerConfig = {
      id,
      initializer: this.#initializer,
      maxTasks: this.#maxTasks,
      spinMs: cpuCount() > 1 ? WORKER_SPIN_MS : 0,
    };
    const process = new Process({
      target: POOL_WORKER,
      args: [config, tasks, definitions, this.#results, this.#initargs],
      daemon: true,
      name: `PoolWorker-${id}`,
    });
    const slot: Slot = { id, process, tasks, definitions, inFlight: [], known: new Set(), ready: false, assigned: 0, stopping: false, exited: false };
    try {
      process.start();
    } catch (err) {
      tasks.release();
      definitions.release();
      throw err;
    }
    this.#slots.push(slot);
    process.whenExited(() => this.#workerExited(slot));
  }

  #pickSlot(): Slot | undefined {
    let best: Slot | undefined;
    for (const s of this.#slots) {
      if (s.stopping || s.exited || s.inFlight.length > QUEUED_AHEAD) continue;
      if (this.#maxTasks > 0 && s.assigned >= this.#maxTasks) continue;
      if (best === undefined || s.inFlight.length < best.inFlight.length) best = s;
    }
    return best;
  }

  /** Puts a unit into a worker's queue; false if there is no room there now. */
  #send(slot: Slot, unit: Unit): boolean {
    try {
      if (!slot.known.has(unit.fnId)) {
        slot.definitions.putSync([unit.fnId, this.#specs[unit.fnId]], { timeout: 0 });
        slot.known.add(unit.fnId);
      }
      slot.tasks.putSync(unit.bytes, { timeout: 0 });
    } catch (err) {
      if (err instanceof Full) return false;
      throw err;
    }
    unit.slot = slot;
    slot.inFlight.push(unit);
    slot.assigned++;
    this.#lastActivity = performance.now();
    this.#bySeq.set(unit.seq, unit);
    if (slot.inFlight.length === 1) this.#startTimer(slot);
    return true;
  }

  #dispatch(): void {
    if (this.#state === 'terminated') return;
    for (;;) {
      const unit = this.#pending.peek();
      if (unit === undefined) break;
      if (unit.job.done) {
        this.#pending.shift();
        continue;
      }
      const slot = this.#pickSlot();
      if (slot === undefined) break;
      let sent: boolean;
      try {
        sent = this.#send(slot, unit);
      } catch (err) {
        // Not a full queue (ENOSPC writing a large message out of line, say): that task fails.
        this.#pending.shift();
        unit.job.unitDone(unit, false, err);
        continue;
      }
      if (!sent) break;
      this.#pending.shift();
    }
    if (this.#pending.length === 0) this.#steal();
    if (this.#state === 'closed' && this.#pending.length === 0 && this.#activeStreams === 0) {
      for (const s of this.#slots) {
        if (s.inFlight.length === 0 && !s.stopping) {
          s.stopping = true;
          // A full queue cannot happen here (nothing is in it), but a dead worker's can: it is gone anyway.
          try {
            s.tasks.putSync(null, { timeout: 0 });
          } catch {
            s.process.kill();
          }
        }
      }
    }
    if (!this.#hasWork()) this.#loopAbort?.abort();
    else this.#ensureLoop();
  }

  /** A worker that runs dry takes a task still queued in a busy worker. */
  #steal(): void {
    for (const idle of this.#slots) {
      if (idle.inFlight.length > 0 || idle.stopping || idle.exited || !idle.ready) continue;
      if (this.#maxTasks > 0 && idle.assigned >= this.#maxTasks) continue;
      const victim = this.#slots.find((s) => s.inFlight.length >= 2 && s !== idle);
      if (victim === undefined) return;
      const message = victim.tasks.takeNow();
      if (message === NOTHING || message === null) continue;
      const unit = this.#bySeq.get(headerField(message, 0));
      if (unit === undefined) continue;
      this.#forget(unit);
      // It will never run it: its count towards maxTasksPerChild must not include it.
      victim.assigned--;
      if (!unit.job.done && !this.#send(idle, unit)) this.#pending.unshiftAll([unit]);
    }
  }

  /** Takes a unit off its worker's books. */
  #forget(unit: Unit): void {
    const slot = unit.slot!;
    const i = slot.inFlight.indexOf(unit);
    if (i >= 0) slot.inFlight.splice(i, 1);
    this.#bySeq.delete(unit.seq);
    unit.slot = null;
    if (i === 0) this.#startTimer(slot);
  }

  #startTimer(slot: Slot): void {
    if (slot.timer !== undefined) {
      clearTimeout(slot.timer);
      slot.timer = undefined;
    }
    const unit = slot.inFlight[0];
    if (slot.exited || unit === undefined || !slot.ready) return;
    // Its call was aborted while it waited in this worker's queue: the worker is taking it now.
    if (unit.endedBy !== undefined && unit.job.done) return this.#endWorker(slot, unit, unit.endedBy);
    const timeout = this.#taskTimeout;
    if (timeout === undefined) return;
    // The worker runs its tasks in order: the first it has not answered is the one running now.
    slot.timer = setTimeout(() => {
      if (slot.inFlight[0] === unit) this.#endWorker(slot, unit, new TimeoutError(`the task ran longer than taskTimeout (${timeout} ms); its worker (pid ${slot.process.pid}) was ended`));
    }, timeout);
    slot.timer.unref();
  }

  #endWorker(slot: Slot, unit: Unit, err: Error): void {
    unit.endedBy = err;
    slot.stopping = true;
    slot.process.kill();
  }

  /**
   * An aborted job: a worker running one of its units is ended now; a unit queued in a worker is
   * marked, and its worker is ended if it comes to run it (#startTimer).
   */
  #endUnitsOf(job: Job, err: Error): void {
    for (const s of this.#slots) {
      for (const unit of s.inFlight) {
        if (unit.job !== job) continue;
        unit.endedBy = err;
        if (unit === s.inFlight[0] && s.ready) this.#endWorker(s, unit, err);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Results

  /** Units sent and unanswered, or waiting to be sent: while there are any, the process stays alive. */
  #hasWork(): boolean {
    return this.#bySeq.size > 0 || this.#pending.length > 0;
  }

  #ensureLoop(): void {
    if (this.#looping || !this.#hasWork()) return;
    this.#looping = true;
    this.#lastActivity = performance.now();
    void this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        this.#drainResults();
        if (!this.#hasWork() || this.#state === 'terminated') break;
        if (performance.now() - this.#lastActivity < PARENT_SPIN_MS) {
          // Poll between event-loop turns (I/O and timers still run): a short task's result
          // is usually here within microseconds, sooner than a wake-up from sleep.
          await new Promise(setImmediate);
          continue;
        }
        const abort = new AbortController();
        this.#loopAbort = abort;
        try {
          // A pending get keeps the event loop alive: pending work keeps the process alive.
          this.#handle(await this.#results.get({ signal: abort.signal }));
        } catch (err) {
          if ((err as Error).name !== 'AbortError') throw err;
        } finally {
          this.#loopAbort = undefined;
        }
      }
    } finally {
      this.#looping = false;
    }
  }

  #drainResults(): void {
    let any = false;
    for (;;) {
      const message = this.#results.takeNow();
      if (message === NOTHING) break;
      this.#handle(message, false);
      any = true;
    }
    if (any) this.#dispatch();
  }

  #handle(message: Buffer | unknown[], dispatch = true): void {
    this.#lastActivity = performance.now();
    if (Buffer.isBuffer(message)) {
      // A value: [seq] and the value (pool-codec).
      const unit = this.#bySeq.get(headerField(message, 0));
      if (unit !== undefined) {
        this.#forget(unit);
        let ok = true;
        let value: unknown;
        try {
          value = decodeValue(message, 1);
        } catch (err) {
          // A shared object in the result that cannot be reached any more, say.
          ok = false;
          value = err;
        }
        if (!unit.job.done) unit.job.unitDone(unit, ok, value);
      }
      if (dispatch) this.#dispatch();
      return;
    }
    const [kind, a, b] = message as [Outcome, number, unknown];
    if (kind === Outcome.Failed) {
      const unit = this.#bySeq.get(a);
      if (unit !== undefined) {
        this.#forget(unit);
        if (!unit.job.done) unit.job.unitDone(unit, false, rebuildError(b as ErrorInfo, unit.job.callSite));
      }
    } else {
      // Ready or StartFailed, from a worker that may have exited since.
      const slot = this.#slots.find((s) => s.id === a);
      if (slot !== undefined && kind === Outcome.Ready) {
        slot.ready = true;
        this.#startFailures = 0;
        this.#startTimer(slot);
      } else if (slot !== undefined) {
        slot.startError = rebuildError(b as ErrorInfo, undefined);
      }
    }
    if (dispatch) this.#dispatch();
  }

  #workerExited(slot: Slot): void {
    if (slot.exited) return;
    slot.exited = true;
    clearTimeout(slot.timer);
    // Everything it answered is in the result queue by now: take it all, waiting for the queue's
    // lock if another worker holds it (takeNow would stop there).
    for (;;) {
      let message: Buffer | unknown[];
      try {
        message = this.#results.getNowait();
      } catch (err) {
        if (err instanceof Empty) break;
        throw err;
      }
      this.#handle(message, false);
    }
    this.#slots.splice(this.#slots.indexOf(slot), 1);
    // What is still in its queue was never started: it goes back to the head of the line.
    const unstarted: Unit[] = [];
    for (;;) {
      let message: TaskMessage;
      try {
        message = slot.tasks.getNowait();
      } catch (err) {
        if (err instanceof Empty) break;
        throw err;
      }
      if (message === null) continue;
      const unit = this.#bySeq.get(headerField(message, 0));
      if (unit !== undefined) unstarted.push(unit);
    }
    for (const unit of unstarted) this.#forget(unit);
    // What it had taken and not answered died with it.
    const exitCode = slot.process.exitCode;
    const signal = signalName(exitCode);
    for (const unit of slot.inFlight.splice(0)) {
      this.#bySeq.delete(unit.seq);
      unit.slot = null;
      const err = unit.endedBy ?? new WorkerLostError(
        `the pool worker (pid ${slot.process.pid}) died while running the task (${signal !== null ? `signal ${signal}` : `exit code ${exitCode}`})`,
        slot.process.pid!, exitCode, signal,
      );
      if (!unit.job.done) unit.job.unitDone(unit, false, err);
    }
    // A definition spilled out of line has a name: take them all, so none is left behind.
    for (;;) {
      try {
        slot.definitions.getNowait();
      } catch {
        break;
      }
    }
    slot.tasks.release();
    slot.definitions.release();
    const live = unstarted.filter((u) => !u.job.done);
    if (live.length > 0) this.#pending.unshiftAll(live);
    this.#rejectIfNoWorker();

    if (this.#state === 'terminated') {
      if (this.#bySeq.size === 0) this.#loopAbort?.abort();
      return;
    }
    if (!slot.ready && !slot.stopping) {
      // It died before it was up: an initializer that throws, a crash at start.
      this.#startFailures++;
      const cause = slot.startError ?? new WorkerLostError(
        `a pool worker (pid ${slot.process.pid}) exited during start-up (${signal !== null ? `signal ${signal}` : `exit code ${exitCode}`})`,
        slot.process.pid!, exitCode, signal,
      );
      if (this.#startFailures >= START_FAILURES) return this.#giveUp(cause);
    }
    if (this.#state === 'running' || this.#pending.length > 0 || this.#activeStreams > 0) {
      try {
        this.#fill();
      } catch (err) {
        return this.#giveUp(err as Error);
      }
    }
    this.#dispatch();
  }

  /** Workers keep dying at start-up: the pending work rejects with why, and no worker is respawned until new work comes. */
  #giveUp(cause: Error): void {
    this.#gaveUp = true;
    this.#startError = cause;
    // Workers still starting would fail the same way: end them now. Their queued tasks come back
    // to the line when they exit.
    for (const s of this.#slots) {
      if (!s.ready) {
        s.stopping = true;
        s.process.kill();
      }
    }
    this.#rejectIfNoWorker();
    this.#dispatch();
  }

  /** Given up on starting workers, and none is up: what waits for one rejects with why. */
  #rejectIfNoWorker(): void {
    if (!this.#gaveUp || this.#slots.some((s) => s.ready && !s.stopping)) return;
    for (const unit of this.#pending.drain()) if (!unit.job.done) unit.job.unitDone(unit, false, this.#startError);
  }
}
