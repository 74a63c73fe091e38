// The module task that a worker host's local pool runs for each BullMQ job, in a child process:
// it runs the pool's initializer before this child's first task of that pool (and again when the
// child comes back to that pool after another pool's initializer ran), then the task, and
// returns the result as v8 bytes. The host (lib/backends/bullmq-worker.ts) has checked the job's
// signature and its allow-list before it got here.
//
// The initializer and the tasks are loaded by one resolveTask, so a module they share is the same
// module instance: state the initializer sets is what the tasks see (Ray's pool loses it,
// ray-project/ray#37705).
import * as v8 from 'v8';

import { Mode, retireAfterThisTask } from '../pool-worker';
import { resolveTask, TaskSpec, withClosureHint } from '../task';
import { refuseShared } from './bullmq-wire';

export interface RunnerTask {
  pool: string;
  fn: TaskSpec;
  mode: Mode;
  /** v8.serialize of the arguments or the chunk. */
  payload: Buffer;
  init: { fn: TaskSpec; args: Buffer } | null;
  /** maxTasksPerChild of the pool: 0 for none. */
  maxTasks: number;
  /** The largest result the pool takes, in bytes. */
  maxResult: number;
}

/**
 * The pool whose initializer ran last in this child. Pools share the child's module instances, so
 * another pool's initializer may have changed the state this pool's initializer set: when the
 * child switches to a pool with an initializer, that initializer runs again.
 */
let initializedFor: string | undefined;
/** Tasks run in this child, per pool (for its maxTasksPerChild); the most recent pools only. */
const done = new Map<string, number>();
const MAX_POOLS_COUNTED = 1000;
const functions = new Map<string, Promise<Function>>();

function functionOf(spec: TaskSpec): Promise<Function> {
  const key = spec.kind === 'module' ? `m${spec.url}#${spec.exportName}` : `s${spec.source}`;
  let fn = functions.get(key);
  if (fn === undefined) {
    fn = resolveTask(spec);
    // A module that fails to import fails each task that uses it; a later task tries again.
    fn.catch(() => functions.delete(key));
    functions.set(key, fn);
  }
  return fn;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

export async function run(task: RunnerTask): Promise<Buffer> {
  if (task.init !== null && initializedFor !== task.pool) {
    initializedFor = undefined;
    try {
      const init = await functionOf(task.init.fn);
      await init(...(v8.deserialize(task.init.args) as unknown[]));
    } catch (err) {
      throw withClosureHint(err, task.init.fn);
    }
    initializedFor = task.pool;
  }
  let value: unknown;
  try {
    const fn = await functionOf(task.fn);
    const payload = v8.deserialize(task.payload) as unknown[];
    if (task.mode === Mode.Apply) {
      value = await fn(...payload);
    } else {
      const out = new Array<unknown>(payload.length);
      for (let i = 0; i < payload.length; i++) {
        const r = task.mode === Mode.Map ? fn(payload[i]) : fn(...(payload[i] as unknown[]));
        out[i] = isThenable(r) ? await r : r;
      }
      value = out;
    }
  } catch (err) {
    throw withClosureHint(err, task.fn);
  } finally {
    if (task.maxTasks > 0) {
      const n = (done.get(task.pool) ?? 0) + 1;
      done.delete(task.pool);
      done.set(task.pool, n);
      // A Map keeps insertion order: the first key is the pool seen least recently.
      if (done.size > MAX_POOLS_COUNTED) done.delete(done.keys().next().value as string);
      if (n >= task.maxTasks) retireAfterThisTask();
    }
  }
  let bytes: Buffer;
  try {
    refuseShared(value, 'the result');
    bytes = v8.serialize(value);
  } catch (err) {
    throw new TypeError(`the result of the task cannot be sent back to the pool: ${(err as Error).message}`);
  }
  if (bytes.length > task.maxResult) {
    throw new RangeError(`the result of the task is ${bytes.length} bytes, over the pool's limit of ${task.maxResult} bytes (maxPayload)`);
  }
  return bytes;
}
