// The BullMQ backend's failure cases, each against a real redis-server and worker CLIs run as
// separate processes: a child that dies, a worker host that dies (SIGKILL of the CLI), retries,
// taskTimeout, terminate(), an aborted call, and a Redis restart during a map.
import * as fs from 'fs';
import * as path from 'path';

import * as mp from '../dist';
import { childrenOf, eventually, isAlive, poolsEndedAfterEach } from './helpers';
import {
  cleanUp, counts, describeWithRedis, JOBS, Redis, redisCliSync, redisClient, startWorker, tempDir, WorkerProcess,
} from './fixtures/bullmq-harness';

jest.setTimeout(60_000);

const jobs = mp.tasks<typeof import('./fixtures/bullmq-jobs.js')>(JOBS);
/**
 * Locks of 3 s, checked every 0.5 s: a GC or CPU pause of a second on a 2-core machine does not
 * take a healthy job for stalled.
 */
const FAST = ['--lock-duration', '3000', '--stalled-interval', '500'];
/** For the tests where a host dies: locks of 1 s, checked every 0.5 s. */
const LOCK_MS = 1000;
const STALLED_MS = 500;
const HOST_DEATH = ['--lock-duration', String(LOCK_MS), '--stalled-interval', String(STALLED_MS)];
/** docs/scale-out.md: a lost host's tasks reject within lockDuration + 2 × stalledInterval (+ the event's way back). */
const LOST_BOUND_MS = LOCK_MS + 2 * STALLED_MS + 2000;

/** Resolves to the settled outcomes if they all settle within `ms`, else to 'timed out'. */
function within<T>(ms: number, promises: Array<Promise<T>>): Promise<T[] | 'timed out'> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    Promise.all(promises),
    new Promise<'timed out'>((r) => (timer = setTimeout(() => r('timed out'), ms))),
  ]).finally(() => clearTimeout(timer));
}

const pools = poolsEndedAfterEach();
function remote(redis: Redis, queue: string, options: Partial<mp.BullMQBackendOptions> = {}, poolOptions: mp.PoolOptions<any> = {}): mp.Pool {
  const p = new mp.Pool({ processes: 2, ...poolOptions, backend: mp.backends.bullmq({ connection: redis.url, queue, stalledInterval: 500, ...options }) });
  pools.push(p);
  return p;
}

/** The pool children of a worker CLI (its name tracker is not one). */
const poolChildren = (w: WorkerProcess): number[] => childrenOf(w.pid).filter((c) => c.comm !== 'nmp-tracker').map((c) => c.pid);

/** Polls an async check every 50 ms until it is true or `ms` pass. */
async function until(check: () => Promise<boolean>, ms = 10000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits (bounded) for `n` files in `dir`; returns their contents by name. */
async function reports(dir: string, n: number): Promise<Map<string, [number, number]>> {
  expect(await eventually(() => fs.readdirSync(dir).length >= n, 20000)).toBe(true);
  const out = new Map<string, [number, number]>();
  for (const name of fs.readdirSync(dir)) {
    const [pid, ppid] = fs.readFileSync(path.join(dir, name), 'utf8').split(' ').map(Number);
    out.set(name, [pid, ppid]);
  }
  return out;
}

describeWithRedis('Pool on BullMQ: a child process dies, a worker host dies', () => {
  let redis: Redis;
  beforeAll(async () => {
    redis = await Redis.start();
  });
  afterAll(cleanUp);

  test("a task whose child dies rejects with WorkerLostError at once; the others complete; the host replaces the child", async () => {
    const w = await startWorker(redis, 'child', ['--processes', '2', '--allow-module', JOBS, ...FAST]);
    const p = remote(redis, 'child');
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, x) => p.apply(jobs.dieOn, [x, 5])));
    for (let x = 0; x < 12; x++) {
      if (x !== 5) {
        expect(outcomes[x]).toEqual({ status: 'fulfilled', value: x * 2 });
        continue;
      }
      const err = (outcomes[x] as PromiseRejectedResult).reason;
      expect(err).toBeInstanceOf(mp.WorkerLostError);
      expect(err.exitCode).toBe(-9);
      expect(err.signal).toBe('SIGKILL');
      expect(w.children).toContain(err.pid);
      expect(isAlive(err.pid)).toBe(false);
      expect(err.message).toMatch(/died while running the task/);
    }
    // The host keeps its size, and a map that loses a chunk rejects with the same error.
    expect(await eventually(() => poolChildren(w).length === 2, 10000)).toBe(true);
    await expect(p.starmap(jobs.dieOn, [[1, 5], [5, 5], [6, 5]], { chunksize: 1 })).rejects.toBeInstanceOf(mp.WorkerLostError);
    expect(await p.map(jobs.square, [1, 2, 3])).toEqual([1, 4, 9]);
  });

  test('SIGKILL of a worker host: its tasks reject with WorkerLostError (stalled-job check), the other host finishes its own', async () => {
    const [a, b] = await Promise.all([
      startWorker(redis, 'hosts', ['--processes', '1', '--allow-module', JOBS, ...HOST_DEATH]),
      startWorker(redis, 'hosts', ['--processes', '1', '--allow-module', JOBS, ...HOST_DEATH]),
    ]);
    const p = remote(redis, 'hosts');
    const dir = tempDir();
    const calls = [1, 2].map((x) => p.apply(jobs.reportThenSleep, [dir, x, 4000]).then((v) => ({ ok: v }), (e) => ({ err: e })));
    const where = await reports(dir, 2);
    const onA = [...where].find(([, [, ppid]]) => ppid === a.pid)!;
    const onB = [...where].find(([, [, ppid]]) => ppid === b.pid)!;
    expect(onA).toBeDefined();
    expect(onB).toBeDefined();
    await a.kill('SIGKILL');
    // Within the documented bound (the wait is the bound itself).
    const settled = await within(LOST_BOUND_MS + 4000, calls);
    expect(settled).not.toBe('timed out');
    const [first, second] = settled as Array<{ ok: number } | { err: any }>;
    const lost = (onA[0] === '1' ? first : second) as { err: any };
    const done = (onA[0] === '1' ? second : first) as { ok: number };
    expect(lost.err).toBeInstanceOf(mp.WorkerLostError);
    expect(lost.err.message).toMatch(new RegExp(`worker host .*:${a.pid} was lost while running the task`));
    expect(lost.err.pid).toBe(a.pid);
    expect(done.ok).toBe(Number(onB[0]));
    // Its child died with it (PR_SET_PDEATHSIG).
    expect(await eventually(() => !isAlive(onA[1][0]), 5000)).toBe(true);
    // The queue goes on with the host that is left.
    expect(await p.map(jobs.square, [1, 2, 3], { chunksize: 1 })).toEqual([1, 4, 9]);
  });

  test('the only worker host dies: the pool\'s own stalled-job check finds its tasks', async () => {
    const a = await startWorker(redis, 'alone', ['--processes', '2', '--allow-module', JOBS, ...HOST_DEATH]);
    const p = remote(redis, 'alone');
    const dir = tempDir();
    const held = [1, 2].map((x) => p.apply(jobs.reportThenSleep, [dir, x, 30000]).catch((e) => e));
    await reports(dir, 2);
    await a.kill('SIGKILL');
    // Within the documented bound: lockDuration + 2 × stalledInterval, and the way back.
    const settled = await within(LOST_BOUND_MS, held);
    expect(settled).not.toBe('timed out');
    for (const err of settled as any[]) {
      expect(err).toBeInstanceOf(mp.WorkerLostError);
      expect(err.pid).toBe(a.pid);
    }
    // The lost jobs are taken out of the queue, not left for the next worker to fail.
    const client = redisClient(redis.url);
    try {
      expect(await until(async () => {
        const c = await counts(client, 'alone');
        return c.wait === 0 && c.active === 0;
      })).toBe(true);
    } finally {
      client.disconnect();
    }
  });

  test('a job taken but never started (the reply that handed it over was lost in a Redis restart) runs once, within the bound', async () => {
    const p = remote(redis, 'orphan');
    const dir = tempDir();
    const call = p.apply(jobs.markRun, [dir, 7, 0]);
    // A stand-in takes the job as a host whose reply was lost leaves it: active, locked with a
    // token nobody renews, never started. Without the started mark this was a WorkerLostError.
    const { Worker } = require('bullmq');
    const taker = new Worker('orphan', null, { connection: { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null }, lockDuration: LOCK_MS, autorun: false });
    try {
      expect(await until(async () => (await taker.getNextJob('lost-reply', { block: false })) !== undefined)).toBe(true);
    } finally {
      await taker.close();
    }
    await startWorker(redis, 'orphan', ['--processes', '1', '--allow-module', JOBS, ...HOST_DEATH]);
    expect(await within(LOST_BOUND_MS + 2000, [call])).toEqual([49]);
    expect(fs.readdirSync(dir).length).toBe(1);
  });

  test('retries: n re-runs a failed task, and a lost host\'s task on another worker (at-least-once)', async () => {
    const [a, b] = await Promise.all([
      startWorker(redis, 'retry', ['--processes', '1', '--allow-module', JOBS, ...HOST_DEATH]),
      startWorker(redis, 'retry', ['--processes', '1', '--allow-module', JOBS, ...HOST_DEATH]),
    ]);
    const dir = tempDir();
    const once = remote(redis, 'retry');
    await expect(once.apply(jobs.failOnce, [path.join(dir, 'f1'), 'ok'])).rejects.toThrow('the first run fails');
    const twice = remote(redis, 'retry', { retries: 1 });
    expect(await twice.apply(jobs.failOnce, [path.join(dir, 'f2'), 'ok'])).toBe('ok');
    // hangOnce: the first run writes its pid and hangs; its host is killed; the re-run answers.
    const marker = path.join(dir, 'hang');
    const call = twice.apply(jobs.hangOnce, [marker]);
    expect(await eventually(() => fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') !== '', 20000)).toBe(true);
    const pid = Number(fs.readFileSync(marker, 'utf8'));
    const host = a.children.includes(pid) ? a : b;
    await host.kill('SIGKILL');
    expect(await call).toBe('rerun');
  });

  test('a worker host stopped by SIGTERM whose grace runs out: its task fails as lost (WorkerLostError), and retries run it again', async () => {
    const [a, b] = await Promise.all([
      startWorker(redis, 'graceful', ['--processes', '1', '--allow-module', JOBS, '--grace', '300', ...FAST]),
      startWorker(redis, 'graceful', ['--processes', '1', '--allow-module', JOBS, '--grace', '300', ...FAST]),
    ]);
    const dir = tempDir();
    const once = remote(redis, 'graceful');
    const marker = path.join(dir, 'hang1');
    const call = once.apply(jobs.hangOnce, [marker]).catch((e) => e);
    expect(await eventually(() => fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') !== '', 20000)).toBe(true);
    const first = a.children.includes(Number(fs.readFileSync(marker, 'utf8'))) ? a : b;
    await first.kill('SIGTERM');
    const err = await call;
    expect(err).toBeInstanceOf(mp.WorkerLostError);
    expect(err.message).toMatch(/was stopped \(SIGTERM or SIGINT\) and its grace period ran out/);
    expect(err.pid).toBe(first.pid);
    // With retries, the other host runs it again.
    const other = first === a ? b : a;
    const twice = remote(redis, 'graceful', { retries: 1 });
    const marker2 = path.join(dir, 'hang2');
    const call2 = twice.apply(jobs.hangOnce, [marker2]);
    expect(await eventually(() => fs.existsSync(marker2) && fs.readFileSync(marker2, 'utf8') !== '', 20000)).toBe(true);
    expect(other.children).toContain(Number(fs.readFileSync(marker2, 'utf8')));
    const w = await startWorker(redis, 'graceful', ['--processes', '1', '--allow-module', JOBS, '--grace', '300', ...FAST]);
    await other.kill('SIGTERM');
    expect(await call2).toBe('rerun');
    await w.kill();
  });
});

describeWithRedis('Pool on BullMQ: taskTimeout, terminate(), abort', () => {
  let redis: Redis;
  let a: WorkerProcess;
  let b: WorkerProcess;
  beforeAll(async () => {
    redis = await Redis.start();
    [a, b] = await Promise.all([
      startWorker(redis, 'time', ['--processes', '1', '--allow-module', JOBS, ...FAST]),
      startWorker(redis, 'time', ['--processes', '1', '--allow-module', JOBS, ...FAST]),
    ]);
  });
  afterAll(cleanUp);

  test("taskTimeout kills the task's child and rejects with TimeoutError; the pool goes on", async () => {
    const p = remote(redis, 'time', {}, { taskTimeout: 1000 });
    const dir = tempDir();
    const file = path.join(dir, 'pid');
    const err = await p.apply(jobs.pidThenSleep, [file, 30000]).catch((e) => e);
    expect(err).toBeInstanceOf(mp.TimeoutError);
    expect(err.message).toMatch(/taskTimeout \(1000 ms\)/);
    expect(await eventually(() => !isAlive(Number(fs.readFileSync(file, 'utf8'))), 5000)).toBe(true);
    expect(await p.map(jobs.sleep, [100, 200], { chunksize: 1 })).toEqual([100, 200]);
  });

  test("terminate() removes the pool's waiting jobs and stops its running ones; the workers serve on", async () => {
    const p = remote(redis, 'time');
    const dir = tempDir();
    const pending = p.starmap(jobs.pidThenSleep, Array.from({ length: 6 }, (_, i) => [path.join(dir, String(i)), 30000]), { chunksize: 1 });
    expect(await eventually(() => fs.readdirSync(dir).length === 2, 20000)).toBe(true);
    const running = fs.readdirSync(dir).map((f) => Number(fs.readFileSync(path.join(dir, f), 'utf8')));
    p.terminate();
    await expect(pending).rejects.toThrow(/terminated/);
    await p.join();
    for (const pid of running) expect(await eventually(() => !isAlive(pid), 10000)).toBe(true);
    const client = redisClient(redis.url);
    try {
      expect(await until(async () => {
        const c = await counts(client, 'time');
        return c.wait === 0 && c.active === 0;
      })).toBe(true);
    } finally {
      client.disconnect();
    }
    // No task of it started after terminate().
    expect(fs.readdirSync(dir).length).toBe(2);
    expect(isAlive(a.pid) && isAlive(b.pid)).toBe(true);
    const q = remote(redis, 'time');
    expect(await q.map(jobs.square, [1, 2], { chunksize: 1 })).toEqual([1, 4]);
  });

  test('an aborted call rejects with AbortError and ends its running task; the pool goes on', async () => {
    const p = remote(redis, 'time');
    const dir = tempDir();
    const file = path.join(dir, 'pid');
    const ac = new AbortController();
    const call = p.apply(jobs.pidThenSleep, [file, 30000], { signal: ac.signal });
    expect(await eventually(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8') !== '', 20000)).toBe(true);
    ac.abort();
    expect((await call.catch((e) => e)).name).toBe('AbortError');
    expect(await eventually(() => !isAlive(Number(fs.readFileSync(file, 'utf8'))), 10000)).toBe(true);
    expect(await p.apply(jobs.square, [8])).toBe(64);
  });

  test('a large map is added in slices of 1,000 jobs, not in one batch that holds Redis (and memory) up', async () => {
    // A queue no worker serves: the jobs stay where they were added.
    const p = remote(redis, 'slices');
    const client = redisClient(redis.url);
    // The pool's bullmq is this file's: its Queue's addBulk is watched.
    const addBulk = jest.spyOn(require('bullmq').Queue.prototype, 'addBulk');
    try {
      const ac = new AbortController();
      const call = p.map(jobs.square, Array.from({ length: 2500 }, (_, i) => i), { chunksize: 1, signal: ac.signal }).catch((e) => e);
      expect(await until(async () => (await client.llen('bull:slices:wait')) === 2500, 20000)).toBe(true);
      expect(addBulk.mock.calls.map(([jobs]) => (jobs as unknown[]).length)).toEqual([1000, 1000, 500]);
      ac.abort();
      expect((await call).name).toBe('AbortError');
      expect(await until(async () => (await client.llen('bull:slices:wait')) === 0, 20000)).toBe(true);
    } finally {
      addBulk.mockRestore();
      client.disconnect();
    }
  });

  test('a call aborted while its jobs are being added: the jobs that land afterwards are taken back out', async () => {
    const p = remote(redis, 'abort-add');
    const client = redisClient(redis.url);
    try {
      const ac = new AbortController();
      const call = p.map(jobs.square, Array.from({ length: 5000 }, (_, i) => i), { chunksize: 1, signal: ac.signal }).catch((e) => e);
      // The first slice is in; the next is on its way.
      expect(await until(async () => (await client.llen('bull:abort-add:wait')) > 0, 20000)).toBe(true);
      ac.abort();
      expect((await call).name).toBe('AbortError');
      expect(await until(async () => (await client.llen('bull:abort-add:wait')) === 0, 20000)).toBe(true);
      // And none is added later.
      await new Promise((r) => setTimeout(r, 300));
      expect(await client.llen('bull:abort-add:wait')).toBe(0);
    } finally {
      client.disconnect();
    }
  });
});

describeWithRedis('Pool on BullMQ: Redis restarts during a map', () => {
  afterAll(cleanUp);

  test('on the same data directory (AOF): the map finishes, every item run once, no result lost or duplicated', async () => {
    const redis = await Redis.start();
    // Locks that outlast the restart: a host keeps its jobs across it.
    const args = ['--processes', '2', '--allow-module', JOBS, '--lock-duration', '15000', '--stalled-interval', '5000'];
    await Promise.all([startWorker(redis, 'restart', args), startWorker(redis, 'restart', args)]);
    const p = remote(redis, 'restart', { stalledInterval: 5000 }, { processes: 4 });
    const dir = tempDir();
    const n = 60;
    const done: number[] = [];
    const all = p.starmap(jobs.markRun, Array.from({ length: n }, (_, x) => [dir, x, 60]), { chunksize: 1 });
    const progress = (async () => {
      for await (const v of p.imap(jobs.square, Array.from({ length: 20 }, (_, i) => i))) done.push(v);
    })();
    expect(await eventually(() => fs.readdirSync(dir).length >= 10, 20000)).toBe(true);
    await redis.restart();
    const out = await all;
    await progress;
    expect(out).toEqual(Array.from({ length: n }, (_, x) => x * x));
    expect(done).toEqual(Array.from({ length: 20 }, (_, i) => i * i));
    const runs = new Map<number, number>();
    for (const f of fs.readdirSync(dir)) runs.set(Number(f.split('-')[0]), (runs.get(Number(f.split('-')[0])) ?? 0) + 1);
    expect([...runs.keys()].sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, x) => x));
    expect([...runs.values()].every((c) => c === 1)).toBe(true);
    expect(await p.apply(jobs.square, [9])).toBe(81);
  });

  test('connections cut and events lost meanwhile: the pool looks its jobs up, and the map finishes', async () => {
    const redis = await Redis.start();
    const args = ['--processes', '2', '--allow-module', JOBS, '--lock-duration', '15000', '--stalled-interval', '5000'];
    await startWorker(redis, 'cut', args);
    const p = remote(redis, 'cut', { stalledInterval: 5000 });
    const dir = tempDir();
    const all = p.starmap(jobs.markRun, Array.from({ length: 30 }, (_, x) => [dir, x, 50]), { chunksize: 1 });
    expect(await eventually(() => fs.readdirSync(dir).length >= 4, 20000)).toBe(true);
    const admin = redisClient(redis.url);
    try {
      // The pool's event reader and its own connection are cut (the workers' are not); what
      // completes while they are away leaves no event.
      const list: string = await admin.call('CLIENT', 'LIST');
      const ours = list.split('\n').filter((l) => / name=(nmp-pool|\S+:qe) /.test(l)).map((l) => /id=(\d+)/.exec(l)![1]);
      expect(ours.length).toBe(2);
      for (const id of ours) await admin.call('CLIENT', 'KILL', 'ID', id);
      const before = fs.readdirSync(dir).length;
      const end = Date.now() + 600;
      while (Date.now() < end) {
        await admin.xtrim('bull:cut:events', 'MAXLEN', 0);
        await new Promise((r) => setTimeout(r, 20));
      }
      // Tasks did complete meanwhile: their events are gone.
      expect(fs.readdirSync(dir).length).toBeGreaterThan(before);
    } finally {
      admin.disconnect();
    }
    expect(await all).toEqual(Array.from({ length: 30 }, (_, x) => x * x));
  });

  test('no reconnection, but the pool was busy while its events were trimmed away: it finds the outcomes anyway', async () => {
    const redis = await Redis.start();
    await startWorker(redis, 'busy', ['--processes', '2', '--allow-module', JOBS, ...FAST]);
    const p = remote(redis, 'busy');
    const dir = tempDir();
    const all = p.starmap(jobs.markRun, Array.from({ length: 40 }, (_, x) => [dir, x, 40]), { chunksize: 1 });
    expect(await eventually(() => fs.readdirSync(dir).length >= 4, 20000)).toBe(true);
    // This process (and so the pool) is busy while tasks complete; then the stream is trimmed
    // before the pool's reader reads on, as BullMQ's ~10,000-entry cap does to a slow reader.
    const before = fs.readdirSync(dir).length;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
    redisCliSync(redis, ['XTRIM', 'bull:busy:events', 'MAXLEN', '0']);
    expect(fs.readdirSync(dir).length).toBeGreaterThan(before + 2);
    const settled = await within(20000, [all]);
    expect(settled).toEqual([Array.from({ length: 40 }, (_, x) => x * x)]);
  });

  test('a large (out-of-line) result read across a Redis restart comes back whole', async () => {
    const redis = await Redis.start();
    const args = ['--processes', '2', '--allow-module', JOBS, '--lock-duration', '15000', '--stalled-interval', '5000'];
    await startWorker(redis, 'big', args);
    const p = remote(redis, 'big', { stalledInterval: 5000 });
    const calls = Array.from({ length: 6 }, (_, i) => p.apply(jobs.bytesAfter, [200 * i, 512 * 1024]));
    await new Promise((r) => setTimeout(r, 300));
    await redis.restart();
    for (const back of await Promise.all(calls)) {
      expect(Buffer.isBuffer(back) && back.length === 512 * 1024 && back.every((x: number) => x === 7)).toBe(true);
    }
    const client = redisClient(redis.url);
    try {
      expect(await until(async () => (await client.keys('bull:big:nmp:result:*')).length === 0)).toBe(true);
    } finally {
      client.disconnect();
    }
  });

  test('without persistence the data is gone: the map rejects with an error that says so', async () => {
    const redis = await Redis.start({ persist: false });
    const args = ['--processes', '1', '--allow-module', JOBS, ...FAST];
    await startWorker(redis, 'gone', args);
    const p = remote(redis, 'gone', {}, { processes: 1 });
    const dir = tempDir();
    const all = p.starmap(jobs.markRun, Array.from({ length: 40 }, (_, x) => [dir, x, 100]), { chunksize: 1 }).catch((e) => e);
    expect(await eventually(() => fs.readdirSync(dir).length >= 3, 20000)).toBe(true);
    await redis.restart();
    const err = await all;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/is gone from Redis: Redis lost its data/);
  });
});
