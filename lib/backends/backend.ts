// The seam between the Pool and what runs its tasks. lib/pool.ts owns everything a user sees:
// argument checks, chunking, ordering, imap's window, AsyncResult, signals and the
// close/terminate/join state machine. A backend owns only where units run: the local one on
// worker processes of ours (lib/backends/local.ts), the BullMQ one on worker hosts that share a
// Redis queue (lib/backends/bullmq.ts). The pool hands a backend units and reads their outcomes
// off `unit.job.unitDone`, whichever backend it drives.
import type { Mode } from '../pool-worker';
import type { TaskSpec } from '../task';

/** A call of the pool: an apply, a map (Batch) or an imap (Stream), whose units come back to it. */
export interface Job {
  /** Settled (or given up by its consumer): outcomes that still come are dropped. */
  done: boolean;
  readonly callSite: { stack?: string };
  /** A unit's outcome: its value, or the Error it failed with. Called at most once per unit. */
  unitDone(unit: Unit, ok: boolean, value: unknown): void;
}

/** One task message: an apply, or a chunk of a map. Backends extend it with what they need. */
export interface Unit {
  seq: number;
  job: Job;
  /** Its place in the job. */
  index: number;
}

export type PoolState = 'running' | 'closed' | 'terminated';

/** What the pool shares with its backend. The pool writes these fields; the backend reads them. */
export interface PoolHost {
  state: PoolState;
  /** imap/imapUnordered and async map inputs still being read: work that may still come after close(). */
  activeStreams: number;
  /** The functions of the pool's calls, by fnId. */
  readonly specs: TaskSpec[];
}

/** The pool's options, checked, as a backend gets them. */
export interface BackendConfig {
  processes: number;
  initializer: TaskSpec | null;
  initargs: unknown[];
  /** 0: no limit. */
  maxTasksPerChild: number;
  taskTimeout: number | undefined;
}

export interface PoolBackend<U extends Unit = Unit> {
  /** Pids of the worker processes this process started (none for a remote backend). */
  readonly pids: number[];
  /** How many chunks imap keeps submitted and not yet handed to its consumer. */
  readonly window: number;
  /**
   * Builds a unit. A payload that cannot be sent throws a TypeError (or RangeError) that names
   * it, before anything is sent: the pool then sends none of the job's units. `first` is the
   * input index of a chunk's first item, for messages.
   */
  unit(job: Job, index: number, fnId: number, mode: Mode, payload: unknown, what: string, first: number): U;
  /** Takes units to run. Called only while the pool is not terminated. */
  submit(units: U[]): void;
  /** A job was aborted (its signal fired): end the units of it that run now, drop the others. */
  cancel(job: Job, err: Error): void;
  /** The pool's state changed (close(), a stream ended): act on it. */
  poke(): void;
  /** Reject everything pending with `err` and stop now. */
  terminate(err: Error): void;
  /** Resolves once the backend has let everything go (close() or terminate() came first). */
  join(): Promise<void>;
}

export const kCreateBackend = Symbol('node-multiprocessing.createBackend');

/** What `mp.backends.bullmq(...)` returns: the pool creates the backend from it. */
export interface Backend {
  /** The backend's name, for messages: 'local', 'bullmq'. */
  readonly name: string;
  /** @internal */
  [kCreateBackend](host: PoolHost, config: BackendConfig): PoolBackend;
}

/** A FIFO with O(1) shift, for a map of a million tasks. */
export class Line<T> {
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

/** A worker's exit code as a signal name (-9 → 'SIGKILL'), or null for a normal exit. */
export function signalName(exitCode: number | null): NodeJS.Signals | null {
  if (exitCode === null || exitCode >= 0) return null;
  const os = require('os') as typeof import('os');
  const entry = Object.entries(os.constants.signals).find(([, n]) => n === -exitCode);
  return entry === undefined ? null : (entry[0] as NodeJS.Signals);
}
