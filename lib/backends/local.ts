// The local backend: the pool's units run on worker Processes of ours, on this machine.
//
// Each worker has a task queue of its own; all put their outcomes into one result queue (every
// queue is a ring in shared memory, lib/ring.ts). The backend keeps a few tasks queued ahead in
// each worker, so a worker never waits for the parent between short tasks, and takes queued tasks
// back for a worker that runs dry (work stealing), so long tasks do not leave stragglers.
//
// What a worker held when it died is read off its queue: a task message still in it was never
// started (it goes to another worker); the one it had taken and not answered was running, and only
// that task rejects with WorkerLostError. Python's Pool hangs here instead (python/cpython#96062).
import * as path from 'path';
import { performance } from 'perf_hooks';

import { cpuCount } from '../context';
import { Empty, Full, TimeoutError, WorkerLostError } from '../errors';
import { decodeValue, encodeMessage, headerField } from '../pool-codec';
import { Definition, Mode, Outcome, TaskMessage, WorkerConfig } from '../pool-worker';
import { Process } from '../process';
import { NOTHING, Queue } from '../queues';
import { ErrorInfo, rebuildError } from '../remote-error';
import { SpinBudget } from '../spin';
import { encode, serialize } from '../shared';
import { task } from '../task';
import { Backend, BackendConfig, Job, kCreateBackend, Line, PoolBackend, PoolHost, signalName, Unit } from './backend';

const POOL_WORKER = task(path.join(__dirname, '..', 'pool-worker.js'), 'serve');

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

interface LocalUnit extends Unit {
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
  inFlight: LocalUnit[];
  known: Set<number>;
  ready: boolean;
  assigned: number;
  stopping: boolean;
  exited: boolean;
  startError?: Error;
  timer?: NodeJS.Timeout;
}

/**
 * Worker processes on this machine. `spin: false` never polls for a result or a task (the worker
 * host of the BullMQ backend: its time between tasks goes to Redis round trips, and polling then
 * only takes CPU from Redis and the other hosts).
 */
export function localBackendWith(options: { spin: boolean }): Backend {
  return {
    name: 'local',
    [kCreateBackend]: (host, config) => new LocalBackend(host, config, options.spin),
  };
}

/** The default backend: worker processes on this machine. */
export const localBackend: Backend = localBackendWith({ spin: true });

class LocalBackend implements PoolBackend<LocalUnit> {
  readonly #host: PoolHost;
  readonly #processes: number;
  readonly #initializer: BackendConfig['initializer'];
  readonly #initargs: unknown[];
  readonly #maxTasks: number;
  readonly #taskTimeout: number | undefined;
  #terminated = false;
  #slots: Slot[] = [];
  #workerCounter = 0;
  #seq = 0;
  readonly #pending = new Line<LocalUnit>();
  readonly #bySeq = new Map<number, LocalUnit>();
  readonly #results: Queue<Buffer | unknown[]>;
  #startFailures = 0;
  #gaveUp = false;
  #startError: Error | undefined;
  #looping = false;
  #loopAbort: AbortController | undefined;
  #lastActivity = 0;

  readonly window: number;

  /** After a result, how long the parent polls for the next before it sleeps (ms). */
  readonly #parentSpin: number;
  readonly #spin = new SpinBudget();
  readonly #workerSpin: number;

  constructor(host: PoolHost, config: BackendConfig, spin: boolean) {
    // Refuse uncloneable initargs here, before any worker starts.
    serialize(encode(config.initargs), 'Pool(): initargs');
    this.#host = host;
    this.#processes = config.processes;
    this.#initializer = config.initializer;
    this.#initargs = config.initargs;
    this.#maxTasks = config.maxTasksPerChild;
    this.#taskTimeout = config.taskTimeout;
    this.window = Math.max(4, config.processes * (QUEUED_AHEAD + 1));
    this.#parentSpin = spin ? PARENT_SPIN_MS : 0;
    this.#workerSpin = spin && cpuCount() > 1 ? WORKER_SPIN_MS : 0;
    this.#results = new Queue<Buffer | unknown[]>({ capacity: RESULT_RING });
    try {
      this.#fill();
    } catch (err) {
      this.terminate(new Error('the pool was terminated'));
      throw err;
    }
  }

  get pids(): number[] {
    return this.#slots.map((s) => s.process.pid!);
  }

  unit(job: Job, index: number, fnId: number, mode: Mode, payload: unknown, what: string): LocalUnit {
    const seq = ++this.#seq;
    const bytes = encodeMessage([seq, fnId, mode], payload, what);
    return { seq, job, index, fnId, bytes, slot: null };
  }

  submit(units: LocalUnit[]): void {
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

  poke(): void {
    this.#dispatch();
  }

  /** Rejects everything pending and kills the workers now. */
  terminate(err: Error): void {
    if (this.#terminated) return;
    this.#terminated = true;
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

  async join(): Promise<void> {
    while (this.#slots.length > 0) await Promise.all(this.#slots.map((s) => s.process.join()));
  }

  /**
   * An aborted job: a worker running one of its units is ended now; a unit queued in a worker is
   * marked, and its worker is ended if it comes to run it (#startTimer).
   */
  cancel(job: Job, err: Error): void {
    for (const s of this.#slots) {
      for (const unit of s.inFlight) {
        if (unit.job !== job) continue;
        unit.endedBy = err;
        if (unit === s.inFlight[0] && s.ready) this.#endWorker(s, unit, err);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Workers

  #fill(): void {
    while (this.#slots.length < this.#processes && !this.#gaveUp) {
      try {
        this.#spawn();
      } catch (err) {
        if (this.#host.state !== 'running' || ++this.#startFailures >= START_FAILURES) throw err;
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
      spinMs: this.#workerSpin,
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
  #send(slot: Slot, unit: LocalUnit): boolean {
    try {
      if (!slot.known.has(unit.fnId)) {
        slot.definitions.putSync([unit.fnId, this.#host.specs[unit.fnId]], { timeout: 0 });
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
    if (this.#terminated) return;
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
    if (this.#host.state === 'closed' && this.#pending.length === 0 && this.#host.activeStreams === 0) {
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
  #forget(unit: LocalUnit): void {
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

  #endWorker(slot: Slot, unit: LocalUnit, err: Error): void {
    unit.endedBy = err;
    slot.stopping = true;
    slot.process.kill();
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
    let polling = false;
    try {
      for (;;) {
        if (this.#drainResults() && polling) this.#spin.hit();
        if (!this.#hasWork() || this.#terminated) break;
        if (performance.now() - this.#lastActivity < this.#parentSpin && (polling || this.#spin.begin())) {
          // Poll between event-loop turns (I/O and timers still run): a short task's result
          // is usually here within microseconds, sooner than a wake-up from sleep.
          polling = true;
          await new Promise(setImmediate);
          continue;
        }
        if (polling) this.#spin.missed();
        polling = false;
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

  /** Handles every result there is now; true if there was one. */
  #drainResults(): boolean {
    let any = false;
    for (;;) {
      const message = this.#results.takeNow();
      if (message === NOTHING) break;
      this.#handle(message, false);
      any = true;
    }
    if (any) this.#dispatch();
    return any;
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
    const unstarted: LocalUnit[] = [];
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

    if (this.#terminated) {
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
    if (this.#host.state === 'running' || this.#pending.length > 0 || this.#host.activeStreams > 0) {
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
