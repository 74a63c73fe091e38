import * as path from 'path';
import { inspect } from 'util';

import * as mp from '../dist';
import { endlessInput, eventually, FIXTURES, isAlive, poolsEndedAfterEach, runFixture } from './helpers';

const JOBS = path.join(FIXTURES, 'jobs.js');

/** Every pool a test makes is terminated and joined after it, whatever the test did. */
const pools = poolsEndedAfterEach();
function pool(options?: mp.PoolOptions<any>): mp.Pool {
  const p = new mp.Pool(options);
  pools.push(p);
  return p;
}

describe('Pool: the calls', () => {
  test("the tutorial's map, apply and applyAsync", async () => {
    const p = pool({ processes: 3 });
    const job = (x: number) => x * x;
    expect(await p.map(job, Array.from({ length: 10 }, (_, i) => i))).toEqual([0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    const r = p.applyAsync(job, [2]);
    expect(await r.get(10000)).toBe(4);
    expect(r.ready()).toBe(true);
    expect(r.successful()).toBe(true);
    const results = Array.from({ length: 5 }, (_, i) => p.applyAsync(job, [i]));
    expect(await Promise.all(results.map((x) => x.get()))).toEqual([0, 1, 4, 9, 16]);
    expect(await p.apply((a: number, b: string) => `${b}${a}`, [1, 'x'])).toBe('x1');
  });

  test('tasks run in other processes, all of them workers of this pool', async () => {
    const p = pool({ processes: 2 });
    const pids = await p.map(() => process.pid, Array.from({ length: 50 }, (_, i) => i), { chunksize: 1 });
    for (const pid of pids) expect(pid).not.toBe(process.pid);
    expect(new Set(pids).size).toBeLessThanOrEqual(2);
    for (const pid of new Set(pids)) expect(p.pids).toContain(pid);
  });

  test('map takes any iterable and async iterable; starmap spreads; imap keeps order, imapUnordered does not need to', async () => {
    const p = pool({ processes: 2 });
    const square = (x: number) => x * x;
    function* gen() {
      for (let i = 0; i < 7; i++) yield i;
    }
    async function* agen() {
      for (let i = 0; i < 7; i++) yield i;
    }
    const want = [0, 1, 4, 9, 16, 25, 36];
    expect(await p.map(square, gen())).toEqual(want);
    expect(await p.map(square, agen(), { chunksize: 2 })).toEqual(want);
    expect(await p.map(square, new Set([3, 4]))).toEqual([9, 16]);
    expect(await p.map(square, [])).toEqual([]);
    expect(await p.starmap((a: number, b: number) => a * b, [[1, 2], [3, 4]])).toEqual([2, 12]);
    expect(await p.mapAsync(square, [5]).get()).toEqual([25]);
    expect(await p.starmapAsync((a: number, b: number) => a - b, [[5, 1]]).get()).toEqual([4]);
    // Tasks that finish in reverse order still come out of imap in input order.
    const slow = (x: number) => new Promise<number>((r) => setTimeout(() => r(x), (5 - x) * 30));
    const ordered: number[] = [];
    for await (const v of p.imap(slow, agen())) ordered.push(v);
    expect(ordered).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const unordered: number[] = [];
    for await (const v of p.imapUnordered(square, gen(), { chunksize: 3 })) unordered.push(v);
    expect(unordered.sort((a, b) => a - b)).toEqual(want);
  });

  test('a map of 100,000 items is chunked: few task messages, every value right', async () => {
    const p = pool({ processes: 2 });
    const seen = new mp.Value('i', 0);
    const xs = Array.from({ length: 100_000 }, (_, i) => i);
    // Each chunk counts itself once: Python's rule gives 8 chunks for 2 workers.
    const out = await p.map((x: number, ) => x * x, xs);
    expect(out.length).toBe(100_000);
    expect(out[99_999]).toBe(99_999 * 99_999);
    expect(out.every((v, i) => v === i * i)).toBe(true);
    const chunks = await p.map(
      (x: number) => {
        const g = globalThis as any;
        if (g.lastChunkAt !== x - 1) g.chunks = (g.chunks ?? 0) + 1;
        g.lastChunkAt = x;
        return g.chunks;
      },
      xs.slice(0, 1000),
    );
    // 1000 items over 2 workers: chunks of 125, so every item of a chunk sees the same count.
    for (let i = 0; i < 1000; i += 125) expect(new Set(chunks.slice(i, i + 125)).size).toBe(1);
    seen.close();
  });

  test('imap reads its input lazily: breaking out stops reading an endless input', async () => {
    const p = pool({ processes: 2 });
    const input = endlessInput();
    const got: number[] = [];
    for await (const v of p.imap((x: number) => x + 1, input.items)) {
      got.push(v);
      if (got.length === 5) break;
    }
    expect(got).toEqual([1, 2, 3, 4, 5]);
    expect(input.finished).toBe(true);
    expect(input.read).toBeLessThan(200);
    // The pool goes on.
    expect(await p.apply((x: number) => x, [3])).toBe(3);
  });

  test('module tasks: mp.task and typed mp.tasks; the initializer sets module state the tasks see', async () => {
    const jobs = mp.tasks<typeof import('./fixtures/jobs.js')>(JOBS);
    const p = pool({ processes: 2, initializer: jobs.setBase, initargs: [100] });
    expect(await p.map(jobs.square, [1, 2, 3])).toEqual([1, 4, 9]);
    expect(await p.apply(jobs.add, [2, 3])).toBe(5);
    expect(await p.map(jobs.addBase, [1, 2])).toEqual([101, 102]);
    expect(await p.apply(mp.task(JOBS, 'square'), [7])).toBe(49);
  });

  test('async functions are awaited in the worker', async () => {
    const p = pool({ processes: 1 });
    expect(await p.apply(async (x: number) => {
      await new Promise((r) => setTimeout(r, 10));
      return x * 3;
    }, [3])).toBe(9);
  });
});

describe('Pool: shared objects', () => {
  test('Value, Array, SharedMemory and locks cross as arguments, nested, and as initargs', async () => {
    const counter = new mp.Value('i', 0);
    const lock = new mp.Lock();
    const arr = new mp.Array('d', 4);
    const shm = new mp.SharedMemory({ create: true, size: 16 });
    const p = pool({
      processes: 2,
      initargs: [{ counter, lock }],
      initializer: (box: any) => {
        (globalThis as any).box = box;
        box.lock.withLockSync(() => {
          box.counter.value += 1;
        });
      },
    });
    await p.map((i: number) => {
      const { counter, lock } = (globalThis as any).box;
      for (let k = 0; k < 100; k++) lock.withLockSync(() => { counter.value += 1; });
      return i;
    }, Array.from({ length: 20 }, (_, i) => i), { chunksize: 1 });
    // 2 initializer runs + 20 × 100 increments, under the lock.
    expect(counter.value).toBe(2 + 2000);
    await p.starmap((a: any, i: number, s: any) => {
      a[i] = i * 1.5;
      s.buf[i] = i + 1;
    }, [0, 1, 2, 3].map((i) => [arr, i, shm]));
    expect([...arr]).toEqual([0, 1.5, 3, 4.5]);
    expect([...shm.buf.subarray(0, 4)]).toEqual([1, 2, 3, 4]);
    await p.apply((nested: any) => { nested.deep[0].v.value = 77; }, [{ deep: [{ v: counter }] }]);
    expect(counter.value).toBe(77);
    for (const x of [counter, lock, arr, shm]) x.close();
    shm.unlink();
  });

  test('a Pipe end crosses into a task: the task sends, the parent receives', async () => {
    const [reader, writer] = mp.Pipe({ duplex: false });
    const p = pool({ processes: 1 });
    await p.apply(async (w: any, n: number) => {
      for (let i = 0; i < n; i++) await w.send({ i });
    }, [writer, 3]);
    expect([await reader.recv(), await reader.recv(), await reader.recv()]).toEqual([{ i: 0 }, { i: 1 }, { i: 2 }]);
  });

  test('a task puts into a Queue that the parent reads', async () => {
    const q = new mp.Queue<string>();
    const p = pool({ processes: 2 });
    await p.map((x: number, ) => x, [1]);
    await p.starmap((queue: any, x: number) => queue.putSync(`item ${x}`), [[q, 1], [q, 2], [q, 3]]);
    const got = [await q.get({ timeout: 5000 }), await q.get({ timeout: 5000 }), await q.get({ timeout: 5000 })];
    expect(got.sort()).toEqual(['item 1', 'item 2', 'item 3']);
  });
});

describe('Pool: errors', () => {
  test('a throwing task rejects with the same name and message, remoteStack and the local call site; the pool goes on', async () => {
    const p = pool({ processes: 2 });
    class Custom extends Error {}
    void Custom;
    const err = await p.apply(() => {
      const e = new RangeError('out of range here');
      (e as any).code = 'E_HERE';
      throw e;
    }).catch((e) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toBe('out of range here');
    expect(err.code).toBe('E_HERE');
    expect(err.remoteStack).toMatch(/RangeError: out of range here/);
    expect(err.stack).toMatch(/70\.pool\.test/);
    const named = await p.apply(() => {
      class ParseError extends Error {
        override name = 'ParseError';
      }
      throw new ParseError('bad token');
    }).catch((e) => e);
    expect(named.name).toBe('ParseError');
    expect(named.message).toBe('bad token');
    // One failing item rejects the map with that error; the pool still works.
    await expect(p.map((x: number) => {
      if (x === 3) throw new TypeError('three');
      return x;
    }, [1, 2, 3, 4])).rejects.toThrow(/three/);
    expect(await p.map((x: number) => x + 1, [1, 2])).toEqual([2, 3]);
    // imap raises at the failing item's place.
    const got: number[] = [];
    await expect((async () => {
      for await (const v of p.imap((x: number) => {
        if (x === 2) throw new Error('two');
        return x;
      }, [0, 1, 2, 3])) got.push(v);
    })()).rejects.toThrow('two');
    expect(got).toEqual([0, 1]);
    // applyAsync keeps its error until asked, then calls errorCallback.
    const seen: Error[] = [];
    const r = p.applyAsync(() => {
      throw new Error('later');
    }, [], { errorCallback: (e) => seen.push(e) });
    await r.wait(10000);
    expect(r.successful()).toBe(false);
    expect(seen.map((e) => e.message)).toEqual(['later']);
    await expect(r.get()).rejects.toThrow('later');
  });

  test('a closure gets a hint; a result that cannot be cloned rejects that task', async () => {
    const p = pool({ processes: 1 });
    const outer = 5;
    await expect(p.apply((x: number) => x + outer, [1])).rejects.toThrow(/self-contained/);
    await expect(p.apply(() => () => 1)).rejects.toThrow(/cannot be sent back/);
    expect(await p.apply(() => 'still here')).toBe('still here');
  });

  test('bad input is refused at the call, before anything is sent, and the pool stays usable', async () => {
    const p = pool({ processes: 1 });
    const bound = ((x: number) => x).bind(null);
    await expect(p.apply(bound, [1])).rejects.toThrow(TypeError);
    await expect(p.apply(bound, [1])).rejects.toThrow(/bound function/);
    await expect(p.apply(Math.max as any, [1])).rejects.toThrow(/native function/);
    await expect(p.apply(42 as any)).rejects.toThrow(TypeError);
    await expect(p.apply((x: unknown) => x, [() => 1])).rejects.toThrow(/cannot be sent/);
    await expect(p.map((x: unknown) => x, [1, Symbol('s')])).rejects.toThrow(TypeError);
    await expect(p.map((x: number) => x, [1], { chunksize: 0 })).rejects.toThrow(RangeError);
    await expect(p.map((x: number) => x, 5 as any)).rejects.toThrow(TypeError);
    await expect(p.starmap((x: number) => x, [5 as any])).rejects.toThrow(/array of arguments/);
    expect(() => p.applyAsync(42 as any)).toThrow(TypeError);
    expect(() => p.imap((x: number) => x, [1], { chunksize: 1.5 })).toThrow(TypeError);
    expect(() => p.applyAsync((x: number) => x, [1], { callback: 3 as any })).toThrow(TypeError);
    expect(() => new mp.Pool({ processes: 0 })).toThrow(RangeError);
    expect(() => new mp.Pool({ processes: 1.5 })).toThrow(TypeError);
    expect(() => new mp.Pool({ maxTasksPerChild: 0 })).toThrow(RangeError);
    expect(() => new mp.Pool({ taskTimeout: -1 })).toThrow(RangeError);
    expect(() => new mp.Pool({ initializer: 'x' as any })).toThrow(TypeError);
    expect(() => new mp.Pool({ initargs: [() => 1] as any })).toThrow(/cannot be sent/);
    expect(await p.apply((x: number) => x * 2, [21])).toBe(42);
  });

  test('a module task that fails to import rejects its tasks; the pool goes on', async () => {
    const p = pool({ processes: 1 });
    await expect(p.apply(mp.task(path.join(FIXTURES, 'no-such-module.js'), 'f'))).rejects.toThrow(/Cannot find module|no-such-module/);
    await expect(p.apply(mp.task(JOBS, 'notAFunction'))).rejects.toThrow(/no exported function/);
    expect(await p.apply(mp.task(JOBS, 'square'), [4])).toBe(16);
  });
});

describe('Pool: crashes and time', () => {
  const sleep = (ms: number) => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return ms;
  };

  test('a worker killed mid-map rejects only the task it held; every other task completes; the pool keeps its size', async () => {
    const p = pool({ processes: 2 });
    const pidsBefore = p.pids;
    const job = (x: number) => {
      if (x === 13) process.kill(process.pid, 'SIGKILL');
      return x * 2;
    };
    const outcomes = await Promise.allSettled(Array.from({ length: 40 }, (_, x) => p.apply(job, [x])));
    for (let x = 0; x < 40; x++) {
      if (x === 13) {
        expect(outcomes[x].status).toBe('rejected');
        const err = (outcomes[x] as PromiseRejectedResult).reason;
        expect(err).toBeInstanceOf(mp.WorkerLostError);
        expect(err.exitCode).toBe(-9);
        expect(err.signal).toBe('SIGKILL');
        expect(pidsBefore).toContain(err.pid);
        expect(isAlive(err.pid)).toBe(false);
      } else {
        expect(outcomes[x]).toEqual({ status: 'fulfilled', value: x * 2 });
      }
    }
    expect(await eventually(() => p.pids.length === 2)).toBe(true);
    // A map that loses a chunk rejects with WorkerLostError.
    await expect(p.map(job, [12, 13, 14], { chunksize: 1 })).rejects.toBeInstanceOf(mp.WorkerLostError);
    expect(await p.map((x: number) => x, [1, 2, 3])).toEqual([1, 2, 3]);
  });

  test('a worker killed from outside, process.exit and a native crash each lose only their task', async () => {
    const p = pool({ processes: 2 });
    const pid = new mp.Value('i', 0);
    const held = p.apply((v: any, ms: number) => {
      v.value = process.pid;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    }, [pid, 20000]);
    expect(await eventually(() => pid.value !== 0, 10000)).toBe(true);
    const others = Array.from({ length: 6 }, (_, i) => p.apply((x: number) => x + 1, [i]));
    process.kill(pid.value, 'SIGKILL');
    const err = await held.catch((e) => e);
    expect(err).toBeInstanceOf(mp.WorkerLostError);
    expect(err.pid).toBe(pid.value);
    expect(await Promise.all(others)).toEqual([1, 2, 3, 4, 5, 6]);
    const exited = await p.apply(() => process.exit(7)).catch((e) => e);
    expect(exited).toBeInstanceOf(mp.WorkerLostError);
    expect(exited.exitCode).toBe(7);
    expect(exited.signal).toBeNull();
    const crashed = await p.apply(() => process.kill(process.pid, 'SIGSEGV')).catch((e) => e);
    expect(crashed.signal).toBe('SIGSEGV');
    expect(await p.apply((x: number) => x, [5])).toBe(5);
    expect(await eventually(() => p.pids.length === 2)).toBe(true);
    pid.close();
  });

  test('an initializer that keeps throwing rejects the pending tasks with its error instead of respawning for ever', async () => {
    const starts = new mp.Value('i', 0);
    const p = pool({
      processes: 2,
      initargs: [starts],
      initializer: (s: any) => {
        s.getLock().withLockSync(() => { s.value += 1; });
        throw new SyntaxError('bad config');
      },
    });
    const err = await p.apply((x: number) => x, [1]).catch((e) => e);
    expect(err.name).toBe('SyntaxError');
    expect(err.message).toMatch(/bad config/);
    expect(starts.value).toBeGreaterThanOrEqual(3);
    expect(starts.value).toBeLessThanOrEqual(4);
    // No respawn loop: the count stays put while nothing is pending.
    const settled = starts.value;
    await new Promise((r) => setTimeout(r, 300));
    expect(starts.value).toBe(settled);
    starts.close();
  });

  test('taskTimeout counts from the start of the task, not from when it was queued', async () => {
    const p = pool({ processes: 1, taskTimeout: 1500 });
    // Three 600 ms tasks on one worker: the last waits 1200 ms in line, runs 600 ms. None times out.
    const ok = await Promise.all([600, 600, 600].map((ms) => p.apply(sleep, [ms])));
    expect(ok).toEqual([600, 600, 600]);
    const err = await p.apply(sleep, [20000]).catch((e) => e);
    expect(err).toBeInstanceOf(mp.TimeoutError);
    expect(await p.apply((x: number) => x, [1])).toBe(1);
  });

  test('an aborted signal rejects with AbortError and ends that task; the pool goes on', async () => {
    const p = pool({ processes: 1 });
    const ac = new AbortController();
    const running = p.apply(sleep, [20000], { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    const err = await running.catch((e) => e);
    expect(err.name).toBe('AbortError');
    // Aborted while it waits behind another task in the worker's queue: it never runs to the end.
    const flag = new mp.Value('i', 0);
    const first = p.apply(sleep, [300]);
    const ac3 = new AbortController();
    const queued = p.apply((f: any) => {
      f.value = 1;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20000);
      f.value = 2;
    }, [flag], { signal: ac3.signal });
    ac3.abort();
    expect((await queued.catch((e) => e)).name).toBe('AbortError');
    expect(await first).toBe(300);
    expect(await p.apply((x: number) => x, [3])).toBe(3);
    expect(flag.value).not.toBe(2);
    flag.close();
    const ac2 = new AbortController();
    ac2.abort();
    await expect(p.map(sleep, [1], { signal: ac2.signal })).rejects.toHaveProperty('name', 'AbortError');
    expect(await p.apply((x: number) => x, [2])).toBe(2);
  });
});

describe('Pool: lifecycle', () => {
  test('maxTasksPerChild rotates workers; the initializer runs once per worker', async () => {
    const inits = new mp.Value('i', 0);
    const p = pool({ processes: 2, maxTasksPerChild: 2, initargs: [inits], initializer: (v: any) => v.getLock().withLockSync(() => { v.value += 1; }) });
    const pids = await p.map(() => process.pid, Array.from({ length: 10 }, (_, i) => i), { chunksize: 1 });
    const distinct = new Set(pids);
    expect(distinct.size).toBeGreaterThanOrEqual(5);
    for (const pid of distinct) expect(pids.filter((x) => x === pid).length).toBeLessThanOrEqual(2);
    expect(inits.value).toBeGreaterThanOrEqual(distinct.size);
    expect(await eventually(() => p.pids.length === 2)).toBe(true);
    inits.close();
  });

  test('close refuses new work and lets queued work finish; join resolves when the workers are gone', async () => {
    const p = pool({ processes: 2 });
    const pids = p.pids;
    const queued = p.map((ms: number) => {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      return ms;
    }, [100, 100, 100], { chunksize: 1 });
    p.close();
    await expect(p.apply((x: number) => x, [1])).rejects.toThrow(/closed/);
    expect(() => p.applyAsync((x: number) => x, [1])).toThrow(/closed/);
    expect(await queued).toEqual([100, 100, 100]);
    await p.join();
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    expect(p.pids).toEqual([]);
  });

  test('terminate rejects what is pending and kills the workers; join needs close or terminate first', async () => {
    const p = pool({ processes: 1 });
    await expect(p.join()).rejects.toThrow(/close\(\) or terminate\(\)/);
    const pids = p.pids;
    const pending = p.map((ms: number) => {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      return ms;
    }, [20000, 20000], { chunksize: 1 });
    await new Promise((r) => setTimeout(r, 100));
    p.terminate();
    await expect(pending).rejects.toThrow(/terminated/);
    await p.join();
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
  });

  test('await using: close and join on dispose', async () => {
    let pids: number[] = [];
    {
      const p = new mp.Pool({ processes: 1 });
      pids = p.pids;
      expect(await p.apply((x: number) => x, [1])).toBe(1);
      await p[Symbol.asyncDispose]();
    }
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
  });

  test('an idle pool does not keep the process alive; pending work does', async () => {
    const idle = await runFixture('pool-script.js');
    expect(idle.stderr).toBe('');
    expect(idle.stdout).toBe('[1,4,9]\n42\n');
    expect(idle.code).toBe(0);
    const pending = await runFixture('pool-pending.js');
    expect(pending.stdout).toBe('late 300\n');
    expect(pending.code).toBe(0);
    const rotating = await runFixture('pool-rotate.js');
    expect(rotating.stdout).toBe('[10,20,30]\n');
    expect(rotating.code).toBe(0);
  });

  test('work accepted before close() finishes: an async input still being read, an imap read later', async () => {
    const p = pool({ processes: 2 });
    async function* slowly() {
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 20));
        yield i;
      }
    }
    const all = p.mapAsync((x: number) => x + 1, slowly());
    const later = p.imap((x: number) => x * 2, [1, 2, 3]);
    p.close();
    expect(await all.get(10000)).toEqual([1, 2, 3, 4]);
    const got: number[] = [];
    for await (const v of later) got.push(v);
    expect(got).toEqual([2, 4, 6]);
    await p.join();
    expect(p.pids).toEqual([]);
  });
});

describe('Pool: the message encoding', () => {
  test('values come back equal, by the fast path or by v8.serialize', () => {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { roundTrip } = require('../dist/pool-codec');
    const values: unknown[] = [0, -0, 1, -1, 2 ** 31, -(2 ** 31) - 1, 1.5, NaN, Infinity, 2 ** 53, '', 'héllo wörld ✓', 'x'.repeat(70000),
      true, false, null, undefined, [], [1, [2, ['three', [null]]]], [1, , 3], new Map([[1, 2]]), { a: 1 }, 10n, new Date(3),
      Array.from({ length: 20000 }, (_, i) => i * 1.5)];
    for (const v of values) {
      const back = roundTrip(v);
      if (typeof v === 'number' && Object.is(v, -0)) expect(Object.is(back, -0)).toBe(true);
      // A hole takes the v8 path, which gives it back as undefined.
      else if (Array.isArray(v) && v.length === 3 && !(1 in v)) expect(back).toEqual([1, undefined, 3]);
      // Objects are compared through util.inspect: v8.deserialize builds them in another realm than jest's.
      else if (typeof v === 'object' && v !== null) expect(inspect(back, { depth: 9, maxArrayLength: null })).toBe(inspect(v, { depth: 9, maxArrayLength: null }));
      else expect(back).toStrictEqual(v);
    }
  });
});
