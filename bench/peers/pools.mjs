#!/usr/bin/env node
// The npm worker pools, in their worker-thread modes, on the pool workloads:
//
//   node --expose-gc bench/peers/pools.mjs piscina|workerpool|tinypool [W2,W3,W3.chunk12500,W4,W8,W9]
//
// Each pool has 2 workers from the start (min = max = 2). Tasks are the functions of tasks.js,
// run by name. These pools have no map(): W3's chunksize 1 is one run() per item under
// Promise.all, and its chunked row is the caller slicing the items into W3_CHUNK-sized tasks.
// `W3.chunk12500` runs that chunked row alone: 100k run() calls take several seconds here.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const { SIZES: N, emitter, now, sleep, selected, memoryOf, cpuSpeedup, roundTrips, mapByRuns, poolStartups } = require('../common');

const here = path.dirname(fileURLToPath(import.meta.url));
const TASKS = path.join(here, 'tasks.js');
const lib = process.argv[2];

/** new pool() → { run(task, arg), close() }, the same face over the three APIs. */
const POOLS = {
  async piscina() {
    const { Piscina } = await import('piscina');
    return () => {
      const pool = new Piscina({ filename: TASKS, minThreads: 2, maxThreads: 2 });
      return { run: (task, arg) => pool.run(arg, { name: task }), close: () => pool.destroy() };
    };
  },
  async workerpool() {
    const { default: workerpool } = await import('workerpool');
    return () => {
      const pool = workerpool.pool(path.join(here, 'workerpool_worker.js'), { minWorkers: 2, maxWorkers: 2, workerType: 'thread' });
      return { run: (task, arg) => pool.exec(task, [arg]), close: () => pool.terminate() };
    };
  },
  async tinypool() {
    const { Tinypool } = await import('tinypool');
    return () => {
      const pool = new Tinypool({ filename: TASKS, minThreads: 2, maxThreads: 2, runtime: 'worker_threads' });
      return { run: (task, arg) => pool.run(arg, { name: task }), close: () => pool.destroy() };
    };
  },
};
if (!POOLS[lib]) throw new Error(`pools.mjs: the first argument is one of ${Object.keys(POOLS).join('|')}`);
const emit = emitter(lib);

// W9: threads have no RSS of their own, so this is the growth of this process's RSS per idle
// worker, after both ran a short task. It runs first, on a heap that the others have not grown.
async function w9(newPool) {
  global.gc?.();
  await sleep(200);
  const before = memoryOf([process.pid]).rss;
  const pool = newPool();
  await Promise.all([pool.run('nap', N.W9_TASK_MS), pool.run('nap', N.W9_TASK_MS)]);
  await sleep(N.W9_IDLE_MS);
  emit('W9.idle_worker_rss', (memoryOf([process.pid]).rss - before) / 2, 'MiB', 2);
  await pool.close();
}

async function w2(newPool) {
  await poolStartups(emit, newPool);
}

async function w4(pool) {
  await roundTrips(emit, (i) => pool.run('identity', i));
}

async function w3(pool, chunk1 = true) {
  await mapByRuns(emit, (name, arg) => pool.run(name, arg), chunk1);
}

async function w8(pool) {
  // Worker threads: their CPU is this process's own.
  await cpuSpeedup(emit, (n, tasks) => Promise.all(Array.from({ length: tasks }, () => pool.run('cpu', n))), () => [process.pid]);
}

async function main() {
  const t0 = now();
  const want = selected(['W2', 'W3', 'W3.chunk12500', 'W4', 'W8', 'W9'], process.argv[3]);
  const newPool = await POOLS[lib]();
  if (want('W9')) await w9(newPool);
  if (want('W2')) await w2(newPool);
  if (['W4', 'W3', 'W3.chunk12500', 'W8'].some(want)) {
    const pool = newPool();
    try {
      await Promise.all([pool.run('nap', 10), pool.run('nap', 10)]);
      if (want('W4')) await w4(pool);
      if (want('W3') || want('W3.chunk12500')) await w3(pool, want('W3'));
      if (want('W8')) await w8(pool);
    } finally {
      await pool.close();
    }
  }
  emit('runner.wall', (now() - t0) / 1e3, 's', 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
