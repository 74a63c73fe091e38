// The Pool on the BullMQ backend, against a real redis-server and worker CLIs run as separate
// processes (test/fixtures/bullmq-harness.ts): the calls, chunks, the initializer, limits, what
// cannot cross machines, and security. Failures are in 91.bullmq-failures.test.ts.
import * as fs from 'fs';
import * as path from 'path';

import * as mp from '../dist';
import { endlessInput, poolsEndedAfterEach } from './helpers';
import { signJob } from '../dist/backends/bullmq-wire';
import {
  cleanUp, counts, describeWithRedis, eventsSince, JOBS, lastEventId, Redis, redisClient, runWorkerToEnd, startWorker, tempDir, WorkerProcess,
} from './fixtures/bullmq-harness';

jest.setTimeout(60_000);

const jobs = mp.tasks<typeof import('./fixtures/bullmq-jobs.js')>(JOBS);
const FAST = ['--lock-duration', '2000', '--stalled-interval', '500'];

const pools = poolsEndedAfterEach();
function remote(redis: Redis | string, queue: string, options: Partial<mp.BullMQBackendOptions> = {}, poolOptions: mp.PoolOptions<any> = {}): mp.Pool {
  const url = typeof redis === 'string' ? redis : redis.url;
  const p = new mp.Pool({ processes: 4, ...poolOptions, backend: mp.backends.bullmq({ connection: url, queue, stalledInterval: 500, ...options }) });
  pools.push(p);
  return p;
}

describeWithRedis('Pool on BullMQ: the calls', () => {
  let redis: Redis;
  let a: WorkerProcess;
  let b: WorkerProcess;
  beforeAll(async () => {
    redis = await Redis.start();
    [a, b] = await Promise.all([
      startWorker(redis, 'calls', ['--processes', '2', '--allow-module', JOBS, '--allow-source', '--insecure-allow-source-without-key', ...FAST]),
      startWorker(redis, 'calls', ['--processes', '2', '--allow-module', JOBS, '--allow-source', '--insecure-allow-source-without-key', ...FAST]),
    ]);
  });
  afterAll(cleanUp);

  test("the same calls as a local pool, with the local pool's results in the local pool's order", async () => {
    const p = remote(redis, 'calls', { allowSource: true });
    const local = new mp.Pool({ processes: 2 });
    pools.push(local);
    const xs = Array.from({ length: 37 }, (_, i) => i);
    async function* agen() {
      for (let i = 0; i < 9; i++) yield i;
    }
    function* gen() {
      for (let i = 0; i < 9; i++) yield i;
    }
    const slow = (x: number) => new Promise<number>((r) => setTimeout(() => r(x), (9 - x) * 15));
    for (const pool of [p, local]) {
      const got: unknown[] = [];
      got.push(await pool.map(jobs.square, xs));
      got.push(await pool.map(jobs.square, xs, { chunksize: 5 }));
      got.push(await pool.map((x: number) => x + 1, gen()));
      got.push(await pool.map(jobs.square, agen(), { chunksize: 2 }));
      got.push(await pool.map(jobs.square, []));
      got.push(await pool.starmap(jobs.add, [[1, 2], [3, 4], [5, 6]]));
      got.push(await pool.mapAsync(jobs.square, [5, 6]).get(20000));
      got.push(await pool.starmapAsync(jobs.add, [[5, 1]]).get(20000));
      got.push(await pool.apply(jobs.add, [2, 3]));
      got.push(await pool.applyAsync(jobs.square, [9]).get(20000));
      got.push(await Promise.all(Array.from({ length: 20 }, (_, i) => pool.applyAsync(jobs.square, [i]).get(20000))));
      const ordered: number[] = [];
      for await (const v of pool.imap(slow, agen())) ordered.push(v);
      got.push(ordered);
      const unordered: number[] = [];
      // imapUnordered over an iterator (ray-project/ray#24081 broke here).
      for await (const v of pool.imapUnordered(jobs.square, gen(), { chunksize: 2 })) unordered.push(v);
      got.push(unordered.sort((x, y) => x - y));
      // Values that JSON would not keep cross as they do to a local pool.
      got.push(await pool.apply(jobs.roundTrip, [{ m: new Map([[1, 'a']]), s: new Set([2]), d: new Date(5), n: 10n, u8: new Uint8Array([1, 2]) }] as any));
      (pool as any).got = got;
    }
    expect((p as any).got).toEqual((local as any).got);
    expect((p as any).got[0]).toEqual(xs.map((x) => x * x));
    expect(p.pids).toEqual([]);
  });

  test("tasks run in the workers' child processes, on both worker hosts, never in a CLI process", async () => {
    const p = remote(redis, 'calls');
    const where = await p.map(jobs.where, Array.from({ length: 40 }, () => 30), { chunksize: 1 });
    const parents = new Set(where.map(([, ppid]) => ppid));
    expect(parents).toEqual(new Set([a.pid, b.pid]));
    for (const [pid] of where) {
      expect(pid).not.toBe(a.pid);
      expect(pid).not.toBe(b.pid);
      expect(pid).not.toBe(process.pid);
    }
  });

  test('workers pull work: while one slot runs a long task, the others take every short one', async () => {
    const p = remote(redis, 'calls');
    // 4 slots; item 0 takes 2 s, 30 items take 20 ms. Dealt round-robin, the slow slot would get a quarter.
    const ms = [2000, ...Array.from({ length: 30 }, () => 20)];
    const where = await p.map(jobs.where, ms, { chunksize: 1 });
    const slowPid = where[0][0];
    const onSlow = where.slice(1).filter(([pid]) => pid === slowPid).length;
    expect(onSlow).toBeLessThanOrEqual(1);
  });

  test("a map is sent as Python's chunks, with addBulk: 100,000 items over 4 slots are 16 jobs, removed once done", async () => {
    const p = remote(redis, 'calls', { allowSource: true });
    const client = redisClient(redis.url);
    try {
      const from = await lastEventId(client, 'calls');
      const xs = Array.from({ length: 100_000 }, (_, i) => i);
      const out = await p.map((x: number) => x * x, xs);
      expect(out.length).toBe(100_000);
      expect(out.every((v, i) => v === i * i)).toBe(true);
      expect((await eventsSince(client, 'calls', from)).filter((e) => e === 'completed').length).toBe(16);
      // The pool removes each job once it has its outcome: no job's arguments stay in Redis.
      let left = -1;
      for (let i = 0; i < 200 && left !== 0; i++) {
        left = (await counts(client, 'calls')).completed;
        if (left !== 0) await new Promise((r) => setTimeout(r, 50));
      }
      expect(left).toBe(0);
    } finally {
      client.disconnect();
    }
  });

  test('close() and join() after an imap that threw: the units it had read ahead are let go, and join returns', async () => {
    const p = remote(redis, 'calls');
    const got: number[] = [];
    await expect((async () => {
      for await (const v of p.imap(jobs.failOn1, Array.from({ length: 40 }, (_, i) => i))) got.push(v);
    })()).rejects.toThrow('item 1 fails');
    expect(got).toEqual([0]);
    p.close();
    // Bounded: before the fix, join() never returned.
    const joined = await Promise.race([p.join().then(() => true), new Promise((r) => setTimeout(() => r(false), 20000))]);
    expect(joined).toBe(true);
  });

  test('imap keeps a bounded window in flight: breaking out stops reading an endless input', async () => {
    const p = remote(redis, 'calls', { allowSource: true });
    const input = endlessInput();
    const got: number[] = [];
    for await (const v of p.imap(jobs.square, input.items)) {
      got.push(v);
      if (got.length === 10) break;
    }
    expect(got).toEqual([0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    expect(input.finished).toBe(true);
    expect(input.read).toBeLessThan(100);
    expect(await p.apply(jobs.square, [3])).toBe(9);
  });

  test('the initializer runs once per worker child, in the module instance the tasks use; pools p, q, p each see their own', async () => {
    const p = remote(redis, 'calls', {}, { initializer: jobs.setBase, initargs: [100] });
    expect(await p.map(jobs.addBase, [1, 2, 3], { chunksize: 1 })).toEqual([101, 102, 103]);
    const states = await p.map(jobs.initState, Array.from({ length: 24 }, () => undefined), { chunksize: 1 });
    for (const [, inits, base] of states) {
      expect(inits).toBe(1);
      expect(base).toBe(100);
    }
    // Another pool's initializer on the same workers: its own state, also once per child.
    const q = remote(redis, 'calls', {}, { initializer: jobs.setBase, initargs: [7] });
    const xs = Array.from({ length: 40 }, (_, i) => i);
    expect(await q.map(jobs.addBase, xs, { chunksize: 1 })).toEqual(xs.map((x) => x + 7));
    // Back to p, in children where q's initializer ran last: p's initializer runs again there.
    expect(await p.map(jobs.addBase, xs, { chunksize: 1 })).toEqual(xs.map((x) => x + 100));
  });

  test('maxTasksPerChild replaces the children that ran that many of the pool\'s tasks', async () => {
    const p = remote(redis, 'calls', {}, { maxTasksPerChild: 2 });
    const where = await p.map(jobs.where, Array.from({ length: 12 }, () => 0), { chunksize: 1 });
    const pids = where.map(([pid]) => pid);
    for (const pid of new Set(pids)) expect(pids.filter((x) => x === pid).length).toBeLessThanOrEqual(2);
    expect(new Set(pids).size).toBeGreaterThanOrEqual(6);
    // The hosts keep their size: the next map still finds 2 children on each.
    const again = await p.map(jobs.where, Array.from({ length: 8 }, () => 100), { chunksize: 1 });
    expect(new Set(again.map(([, ppid]) => ppid)).size).toBe(2);
  });

  test('large arguments and results work up to maxPayload; past it a RangeError at the call, nothing enqueued', async () => {
    const p = remote(redis, 'calls', { maxPayload: 4 * 1024 * 1024 });
    const big = Buffer.alloc(3 * 1024 * 1024, 1);
    expect(await p.apply(jobs.length, [big])).toBe(big.length);
    // A result larger than the inline limit goes out of line, and comes back whole.
    const back = await p.apply(jobs.bytes, [3 * 1024 * 1024]);
    expect(Buffer.isBuffer(back) && back.length === 3 * 1024 * 1024 && back.every((x: number) => x === 7)).toBe(true);
    const client = redisClient(redis.url);
    try {
      const from = await lastEventId(client, 'calls');
      const tooBig = Buffer.alloc(5 * 1024 * 1024);
      const err = await p.apply(jobs.length, [tooBig]).catch((e) => e);
      expect(err).toBeInstanceOf(RangeError);
      expect(err.message).toMatch(/over the limit of 4194304 bytes for one job \(maxPayload\)/);
      await expect(p.map(jobs.length, [Buffer.alloc(10), tooBig])).rejects.toThrow(RangeError);
      // A result past the limit rejects that task, on the worker side.
      await expect(p.apply(jobs.bytes, [5 * 1024 * 1024])).rejects.toThrow(/over the pool's limit/);
      // Only that last call's job was added.
      expect((await eventsSince(client, 'calls', from)).filter((e) => e === 'added').length).toBe(1);
      expect(await p.apply(jobs.square, [4])).toBe(16);
      // A result key of ours is not left behind.
      expect(await client.keys('bull:calls:nmp:result:*')).toEqual([]);
    } finally {
      client.disconnect();
    }
  });

  test('errors keep their name, message, code and remote stack; the pool goes on', async () => {
    const p = remote(redis, 'calls', { allowSource: true });
    const err = await p.apply(jobs.fail, ['bad input']).catch((e) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toBe('bad input');
    expect(err.code).toBe('E_TASK');
    expect(err.remoteStack).toMatch(/bullmq-jobs\.js/);
    expect(err.stack).toMatch(/90\.bullmq\.test/);
    await expect(p.map((x: number) => {
      if (x === 3) throw new TypeError('three');
      return x;
    }, [1, 2, 3, 4], { chunksize: 1 })).rejects.toThrow(/three/);
    const outer = 5;
    await expect(p.apply((x: number) => x + outer, [1])).rejects.toThrow(/self-contained/);
    await expect(p.apply(jobs.makeValue)).rejects.toThrow(/cannot be sent back.*Value/);
    expect(await p.apply(jobs.square, [6])).toBe(36);
  });
});

describeWithRedis('Pool on BullMQ: what cannot cross machines', () => {
  let redis: Redis;
  beforeAll(async () => {
    redis = await Redis.start();
    await startWorker(redis, 'shared', ['--processes', '1', '--allow-module', JOBS, ...FAST]);
  });
  afterAll(cleanUp);

  test('a Value, Array, lock, Queue or Pipe in the arguments, nested or not, is refused before anything is enqueued', async () => {
    const p = remote(redis, 'shared');
    const v = new mp.Value('i', 1);
    const arr = new mp.Array('d', 4);
    const lock = new mp.Lock();
    const q = new mp.Queue();
    const [r, w] = mp.Pipe();
    const client = redisClient(redis.url);
    try {
      const from = await lastEventId(client, 'shared');
      const cases: Array<[unknown[], RegExp]> = [
        [[v], /args\[0\] is a Value/],
        [[{ deep: [{ x: arr }] }], /args\[0\]\.deep\[0\]\.x is an Array/],
        [[new Map([['k', lock]])], /is a Lock/],
        [[[1, [2, q]]], /args\[0\]\[1\]\[1\] is a Queue/],
        [[{ end: w }], /args\[0\]\.end is a Connection/],
      ];
      for (const [args, re] of cases) {
        const err = (await p.apply(jobs.identity, args as any).catch((e) => e)) as Error;
        expect(err).toBeInstanceOf(TypeError);
        expect(err.message).toMatch(re);
        expect(err.message).toMatch(/cannot be sent to a remote worker: shared memory, locks, queues and pipes live on one machine/);
      }
      await expect(p.map(jobs.identity, [1, 2, v])).rejects.toThrow(/item\[2\] is a Value/);
      expect(() => p.imap(jobs.identity, [v])[Symbol.asyncIterator]()).not.toThrow();
      await expect((async () => {
        for await (const x of p.imap(jobs.identity, [1, { v }])) void x;
      })()).rejects.toThrow(TypeError);
      expect(() => new mp.Pool({ backend: mp.backends.bullmq({ connection: redis.url, queue: 'shared' }), initializer: jobs.setBase, initargs: [lock] as any }))
        .toThrow(/initargs\[0\] is a Lock/);
      expect(await eventsSince(client, 'shared', from)).not.toContain('added');
      expect(await p.apply(jobs.square, [5])).toBe(25);
    } finally {
      client.disconnect();
      for (const x of [v, arr, lock]) x.close();
      q.close();
      r.close();
      w.close();
    }
  });

  test('bad options and bad calls are refused with TypeError or RangeError, and the pool stays usable', async () => {
    const b = mp.backends.bullmq;
    expect(() => b({} as any)).toThrow(TypeError);
    expect(() => b({ connection: 'http://x', queue: 'q' })).toThrow(/redis:\/\//);
    expect(() => b({ connection: redis.url, queue: 'a b' })).toThrow(/queue must be a name/);
    expect(() => b({ connection: redis.url, queue: 'q', retries: -1 })).toThrow(RangeError);
    expect(() => b({ connection: redis.url, queue: 'q', retries: 1.5 })).toThrow(TypeError);
    expect(() => b({ connection: redis.url, queue: 'q', hmacKey: 'short' })).toThrow(/at least 16 bytes/);
    expect(() => b({ connection: redis.url, queue: 'q', maxPayload: 2 ** 40 })).toThrow(RangeError);
    expect(() => b({ connection: { host: 'x', colour: 1 } as any, queue: 'q' })).toThrow(/unknown field "colour"/);
    expect(() => b({ connection: redis.url, queue: 'q', conection: 1 } as any)).toThrow(/unknown option "conection"/);
    expect(() => new mp.Pool({ backend: {} as any })).toThrow(/mp\.backends/);
    const p = remote(redis, 'shared');
    // A function by source needs allowSource on both sides.
    await expect(p.apply((x: number) => x, [1])).rejects.toThrow(/allowSource: true on mp\.backends\.bullmq\(\) and --allow-source/);
    expect(() => new mp.Pool({ backend: b({ connection: redis.url, queue: 'shared' }), initializer: () => undefined })).toThrow(/allowSource/);
    await expect(p.apply(jobs.identity, [() => 1] as any)).rejects.toThrow(/cannot be sent/);
    await expect(p.map(jobs.identity, [1], { chunksize: 0 })).rejects.toThrow(RangeError);
    expect(await p.apply(jobs.square, [7])).toBe(49);
  });

  test('close refuses new work and lets queued work finish; join releases the connections; await using does both', async () => {
    const p = remote(redis, 'shared');
    const queued = p.map(jobs.sleep, [50, 50, 50], { chunksize: 1 });
    p.close();
    await expect(p.apply(jobs.square, [1])).rejects.toThrow(/closed/);
    expect(() => p.applyAsync(jobs.square, [1])).toThrow(/closed/);
    expect(await queued).toEqual([50, 50, 50]);
    await p.join();
    // What `await using q = new mp.Pool(...)` calls on leaving its block.
    const q = new mp.Pool({ backend: mp.backends.bullmq({ connection: redis.url, queue: 'shared' }), processes: 1 });
    expect(await q.apply(jobs.square, [3])).toBe(9);
    const late = q.apply(jobs.sleep, [100]);
    await q[Symbol.asyncDispose]();
    expect(await late).toBe(100);
  });
});

describeWithRedis('Pool on BullMQ: security', () => {
  let redis: Redis;
  const KEY = 'a-test-key-of-32-bytes-0123456789';
  beforeAll(async () => {
    redis = await Redis.start({ args: ['--maxmemory-policy', 'noeviction'] });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'key'), `${KEY}\n`);
    await Promise.all([
      // Module tasks only, from the allow-list; functions by source refused.
      startWorker(redis, 'modules-only', ['--processes', '1', '--allow-module', JOBS, ...FAST]),
      // Signed jobs only.
      startWorker(redis, 'signed', ['--processes', '1', '--allow-module', path.dirname(JOBS) + '/', '--hmac-key-file', path.join(dir, 'key'), ...FAST]),
    ]);
  });
  afterAll(cleanUp);

  test('workers run only module tasks of their allow-list; a function by source only when both sides opt in', async () => {
    const p = remote(redis, 'modules-only', { allowSource: true });
    expect(await p.apply(jobs.square, [3])).toBe(9);
    const bySource = await p.apply((x: number) => x, [1]).catch((e) => e);
    expect(bySource.message).toMatch(/refused the task: the task is a function sent by its source, and this worker was not started with --allow-source/);
    const elsewhere = (await p.apply(mp.task(path.join(__dirname, 'fixtures', 'jobs.js'), 'square'), [2]).catch((e) => e)) as Error;
    expect(elsewhere.message).toMatch(/not on this worker's allow-list/);
    const missing = (await p.apply(mp.task('/nonexistent/jobs.js', 'f')).catch((e) => e)) as Error;
    expect(missing.message).toMatch(/does not exist on this worker/);
    const init = remote(redis, 'modules-only', {}, { initializer: mp.task(path.join(__dirname, 'fixtures', 'jobs.js'), 'setBase'), initargs: [1] });
    await expect(init.apply(jobs.square, [2])).rejects.toThrow(/the initializer is the module .* not on this worker's allow-list/);
    expect(await p.apply(jobs.square, [4])).toBe(16);
  });

  test('a directory on the allow-list does not allow the packages under its node_modules, nor inherited properties of a module', async () => {
    const app = tempDir();
    fs.writeFileSync(path.join(app, 'jobs.js'), 'exports.twice = (x) => 2 * x;\n');
    fs.mkdirSync(path.join(app, 'node_modules', 'pkg'), { recursive: true });
    fs.writeFileSync(path.join(app, 'node_modules', 'pkg', 'index.js'), 'exports.readFile = (f) => require("fs").readFileSync(f, "utf8");\n');
    fs.mkdirSync(path.join(app, 'node_modules', 'listed'), { recursive: true });
    fs.writeFileSync(path.join(app, 'node_modules', 'listed', 'index.js'), 'exports.one = () => 1;\n');
    await startWorker(redis, 'dir', ['--processes', '1', '--allow-module', app, '--allow-module', path.join(app, 'node_modules', 'listed') + '/', ...FAST]);
    const p = remote(redis, 'dir');
    expect(await p.apply(mp.task(path.join(app, 'jobs.js'), 'twice'), [4])).toBe(8);
    const pkg = (await p.apply(mp.task(path.join(app, 'node_modules', 'pkg', 'index.js'), 'readFile'), ['/etc/hostname']).catch((e) => e)) as Error;
    expect(pkg.message).toMatch(/in a node_modules under an allowed directory: a directory does not allow the packages installed under it/);
    // A package listed on its own is allowed.
    expect(await p.apply(mp.task(path.join(app, 'node_modules', 'listed', 'index.js'), 'one'))).toBe(1);
    // Object.prototype's properties are not exports.
    for (const name of ['constructor', 'toString', '__defineGetter__']) {
      await expect(p.apply(mp.task(path.join(app, 'jobs.js'), name), [1])).rejects.toThrow(/has no exported function/);
    }
  });

  test('--allow-source without an HMAC key is refused, unless --insecure-allow-source-without-key', async () => {
    const cli = await runWorkerToEnd(redis, 'nokey', ['--allow-source']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/--allow-source needs --hmac-key-file .*anyone who can write to Redis can run code/);
    const badQueue = await runWorkerToEnd(redis, 'a b', ['--allow-module', JOBS]);
    expect(badQueue.code).toBe(2);
    expect(badQueue.stderr).toMatch(/--queue must be a name/);
  });

  test('the signature covers each field on its own: a name and a source cannot trade characters', () => {
    const key = Buffer.from(KEY);
    const job = (name: string, source: string): any => ({ v: 2, pool: 'p', fn: { kind: 'source', name, source }, mode: 0, x: 10, p: '' });
    expect(signJob(key, 'q', '1', job('f', 'x\ny'))).not.toBe(signJob(key, 'q', '1', job('f\nx', 'y')));
    const mod = (url: string, exportName: string): any => ({ v: 2, pool: 'p', fn: { kind: 'module', url, exportName }, mode: 0, x: 10, p: '' });
    expect(signJob(key, 'q', '1', mod('file:///a#b', 'c'))).not.toBe(signJob(key, 'q', '1', mod('file:///a', 'b#c')));
  });

  test('with an HMAC key, only signed jobs run: write access to Redis alone cannot run code', async () => {
    const signed = remote(redis, 'signed', { hmacKey: KEY });
    expect(await signed.map(jobs.square, [1, 2, 3])).toEqual([1, 4, 9]);
    const unsigned = remote(redis, 'signed');
    await expect(unsigned.apply(jobs.square, [2])).rejects.toThrow(/not signed, and this worker takes only jobs signed with its HMAC key/);
    const wrong = remote(redis, 'signed', { hmacKey: 'another-key-of-32-bytes-987654321' });
    await expect(wrong.apply(jobs.square, [2])).rejects.toThrow(/signature does not match/);
    // A job written by someone with Redis access, signed with a made-up key, fails unrun.
    const { Queue } = require('bullmq');
    const q = new Queue('signed', { connection: { url: redis.url } });
    const dir = tempDir();
    const marker = path.join(dir, 'ran');
    try {
      const forged = await q.add('x', {
        v: 2, pool: 'forged', mode: 0, x: 1000, s: '00'.repeat(32),
        fn: { kind: 'module', url: `file://${JOBS}`, exportName: 'failOnce' },
        p: require('v8').serialize([marker, 1]).toString('base64'),
      });
      let state = '';
      for (let i = 0; i < 200 && state !== 'failed'; i++) {
        state = await q.getJobState(forged.id);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(state).toBe('failed');
      expect((await q.getJob(forged.id)).failedReason).toMatch(/signature does not match/);
      expect(fs.existsSync(marker)).toBe(false);
    } finally {
      await q.close();
    }
    // And the signed pool is still served.
    expect(await signed.apply(jobs.square, [5])).toBe(25);
  });

  test('a Redis that may evict keys is refused, by the pool and by the worker CLI', async () => {
    const lru = await Redis.start({ args: ['--maxmemory-policy', 'allkeys-lru'] });
    const p = remote(lru, 'lru');
    const err = await p.apply(jobs.square, [1]).catch((e) => e);
    expect(err.message).toMatch(/maxmemory-policy "allkeys-lru".*noeviction/);
    const cli = await runWorkerToEnd(lru, 'lru', ['--allow-module', JOBS]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/maxmemory-policy "allkeys-lru"/);
    // Accepted when asked for.
    await startWorker(lru, 'lru', ['--processes', '1', '--allow-module', JOBS, '--allow-eviction', ...FAST]);
    const ok = remote(lru, 'lru', { allowEviction: true });
    expect(await ok.apply(jobs.square, [3])).toBe(9);
  });

  test('TLS (rediss://) with a private CA, and a Redis ACL user, on both sides', async () => {
    const tls = await Redis.start({ tls: true });
    const admin = redisClient(tls.url, { tls: { ca: fs.readFileSync(tls.tls!.ca) } });
    try {
      // The ACL that docs/scale-out.md gives: the queue's keys and channels, no admin commands.
      await admin.call('ACL', 'SETUSER', 'nmp', 'on', '>s3cret-pass', '~bull:*', '&bull:*', '+@all', '-@admin', '+info', '+client|setname', '+client|getname');
      await admin.call('ACL', 'SETUSER', 'default', 'off');
    } finally {
      admin.disconnect();
    }
    const url = `rediss://nmp:s3cret-pass@127.0.0.1:${tls.port}`;
    await startWorker(url, 'tls', ['--processes', '1', '--allow-module', JOBS, '--tls-ca', tls.tls!.ca, ...FAST]);
    const p = new mp.Pool({
      processes: 1,
      backend: mp.backends.bullmq({
        connection: { host: '127.0.0.1', port: tls.port, username: 'nmp', password: 's3cret-pass', tls: { ca: fs.readFileSync(tls.tls!.ca) } },
        queue: 'tls',
        stalledInterval: 500,
      }),
    });
    pools.push(p);
    expect(await p.map(jobs.square, [1, 2, 3])).toEqual([1, 4, 9]);
    // A wrong password is a clear error at the call, not a hang.
    const bad = new mp.Pool({
      processes: 1,
      backend: mp.backends.bullmq({ connection: { url: `rediss://nmp:wrong@127.0.0.1:${tls.port}`, tls: { ca: fs.readFileSync(tls.tls!.ca) } }, queue: 'tls' }),
    });
    pools.push(bad);
    await expect(bad.apply(jobs.square, [1])).rejects.toThrow(/Redis refused the credentials.*(WRONGPASS|invalid username-password)/);
  });
});
