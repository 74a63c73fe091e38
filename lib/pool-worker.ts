// A pool worker, as a Process target: it takes task messages from a queue of its own, runs them
// one at a time, and puts each outcome into the pool's result queue. It exits after a stop
// message or after maxTasksPerChild tasks.
//
// Kill-safety comes from the queues: a task message is either still in the worker's queue (never
// started: the pool hands it to another worker) or taken (held: lost with the worker), and a
// result is either wholly in the result queue or not there at all.
import { performance } from 'perf_hooks';

import { decodeValue, encodeMessage, headerField, warmUp } from './pool-codec';
import { NOTHING, Queue } from './queues';
import { errorInfo } from './remote-error';
import { SpinBudget } from './spin';
import { resolveTask, TaskSpec, withClosureHint } from './task';

/** Modes of a task message: how the payload is applied to the function. */
export const enum Mode {
  /** payload is the argument list: fn(...payload) */
  Apply = 0,
  /** payload is a chunk of items: [fn(x) for x in payload] */
  Map = 1,
  /** payload is a chunk of argument lists: [fn(...a) for a in payload] */
  Starmap = 2,
}

/** Kinds of result messages other than a value: [kind, a, b]. A value is a Buffer (pool-codec) of [seq] and the value. */
export const enum Outcome {
  /** [Failed, seq, ErrorInfo] */
  Failed = 1,
  /** [Ready, workerId, pid]: the initializer has run; tasks may be timed from here */
  Ready = 2,
  /** [StartFailed, workerId, ErrorInfo]: the initializer threw; the worker exits */
  StartFailed = 3,
}

export interface WorkerConfig {
  id: number;
  initializer: TaskSpec | null;
  /** 0: no limit */
  maxTasks: number;
  /** How long to poll for the next task before sleeping (0 on a single CPU). */
  spinMs: number;
}

/** A task message is a pool-codec message of [seq, fnId, mode] and the payload; null stops the worker. */
export type TaskMessage = Buffer | null;
/** A definition message: [fnId, spec], sent before the first task that uses the function. */
export type Definition = [number, TaskSpec];

const WARM_UP_AFTER_MS = 20;

let retireRequested = false;

/**
 * Ends this worker once the task that calls it has sent its outcome, as maxTasksPerChild does:
 * the pool replaces it, and tasks queued in it go to the others. The BullMQ runner
 * (lib/backends/bullmq-runner.ts) calls it for a remote pool's maxTasksPerChild.
 */
export function retireAfterThisTask(): void {
  retireRequested = true;
}
/** Yield to the event loop at least this often while tasks keep coming (timers, I/O of tasks). */
const YIELD_MS = 10;

export async function serve(
  config: WorkerConfig,
  tasks: Queue<TaskMessage>,
  definitions: Queue<Definition>,
  results: Queue<Buffer | unknown[]>,
  initargs: unknown[],
): Promise<void> {
  if (config.initializer !== null) {
    try {
      const init = await resolveTask(config.initializer);
      await init(...initargs);
    } catch (err) {
      withClosureHint(err, config.initializer);
      results.putSync([Outcome.StartFailed, config.id, errorInfo(err)]);
      process.exit(1);
    }
  }
  results.putSync([Outcome.Ready, config.id, process.pid]);

  const specs = new Map<number, TaskSpec>();
  const functions = new Map<number, Promise<Function>>();
  const functionOf = (fnId: number): Promise<Function> => {
    let fn = functions.get(fnId);
    if (fn === undefined) {
      // Definitions are put before the first task that needs them, so they are there by now.
      while (!specs.has(fnId)) {
        const def = definitions.getNowait();
        specs.set(def[0], def[1]);
      }
      fn = resolveTask(specs.get(fnId)!);
      fn.catch(() => undefined);
      functions.set(fnId, fn);
    }
    return fn;
  };

  let done = 0;
  const spin = new SpinBudget();
  let warm = config.maxTasks === 1;
  let lastYield = performance.now();
  for (;;) {
    let message = tasks.takeNow();
    if (message === NOTHING && config.spinMs > 0 && spin.begin()) {
      // The pool often sends the next task within microseconds of a result: look for it a
      // moment before paying for a sleep and a wake-up.
      const until = performance.now() + config.spinMs;
      while (message === NOTHING && performance.now() < until) message = tasks.takeNow();
      if (message === NOTHING) spin.missed();
      else spin.hit();
    }
    if (message === NOTHING) {
      // The first idle moment after a first task warms the codec up (pool-codec's warmUp), unless
      // a task comes within WARM_UP_AFTER_MS: a pool that is busy from the start never pays for it.
      const timer = warm ? undefined : setTimeout(() => {
        warm = true;
        warmUp();
      }, WARM_UP_AFTER_MS);
      message = await tasks.get();
      clearTimeout(timer);
      lastYield = performance.now();
    } else if (performance.now() - lastYield > YIELD_MS) {
      await new Promise(setImmediate);
      lastYield = performance.now();
    }
    if (message === null) break;
    const seq = headerField(message, 0);
    const fnId = headerField(message, 1);
    let outcome: Buffer | unknown[];
    try {
      const value = await run(await functionOf(fnId), headerField(message, 2), decodeValue(message, 3));
      try {
        outcome = encodeMessage([seq], value, 'the result');
      } catch (err) {
        // The value could not be cloned (a function, a socket...): that task fails, the worker goes on.
        const info = errorInfo(err);
        info.name = 'TypeError';
        info.message = `the result of the task cannot be sent back to the pool: ${info.message}`;
        outcome = [Outcome.Failed, seq, info];
      }
    } catch (err) {
      const spec = specs.get(fnId);
      if (spec !== undefined) withClosureHint(err, spec);
      outcome = [Outcome.Failed, seq, errorInfo(err)];
    }
    try {
      results.putSync(outcome);
    } catch (err) {
      // The value could not be cloned (a function, a socket...): that task fails, the worker goes on.
      const info = errorInfo(err);
      info.name = 'TypeError';
      info.message = `the result of the task cannot be sent back to the pool: ${info.message}`;
      results.putSync([Outcome.Failed, seq, info]);
    }
    if (config.maxTasks > 0 && ++done >= config.maxTasks) break;
    if (retireRequested) break;
  }
  // Exit even if a task left a timer or a socket behind: the pool counts on this worker ending.
  setTimeout(() => process.exit(0), 1000).unref();
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

async function run(fn: Function, mode: Mode, payload: unknown): Promise<unknown> {
  if (mode === Mode.Apply) return fn(...(payload as unknown[]));
  const items = payload as unknown[];
  const out = new Array<unknown>(items.length);
  for (let i = 0; i < items.length; i++) {
    const r = mode === Mode.Map ? fn(items[i]) : fn(...(items[i] as unknown[]));
    out[i] = isThenable(r) ? await r : r;
  }
  return out;
}
