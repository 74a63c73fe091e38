// API.md §7, second paragraph: a shared object in flight outlives its maker. Its descriptor goes
// through the tree's tracker (SCM_RIGHTS), not /proc, so the sender may be gone when it arrives.
import * as fs from 'fs';

import * as mp from '../dist';
import { childrenOf, eventually, ROOT } from './helpers';

/** A child that makes one shared object of every kind, puts them into `q` and exits (or is killed). */
function makeEverything(q: any, root: string, die: string): void {
  const m = require(root);
  const shm = new m.SharedMemory({ create: true, size: 16 });
  shm.buf[0] = 9;
  const lock = new m.Lock();
  const inner = new m.Queue();
  inner.putSync('inside');
  const [reader, writer] = m.Pipe({ duplex: false });
  const items = {
    value: new m.Value('i', 41),
    raw: new m.RawValue('d', 1.5),
    array: new m.Array('i', [1, 2, 3]),
    shm,
    name: shm.name,
    lock,
    rlock: new m.RLock(),
    semaphore: new m.Semaphore(2),
    event: new m.Event(),
    condition: new m.Condition(lock),
    barrier: new m.Barrier(1),
    queue: inner,
    reader,
  };
  writer.send('through the pipe').then(() => {
    q.putSync(items);
    if (die === 'kill') process.kill(process.pid, 'SIGKILL');
  });
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

describe.each(['exit', 'kill'])('a child that made shared objects, put them into a queue and ended (%s)', (die) => {
  test('has still sent working objects of every kind', async () => {
    const q = new mp.Queue<any>();
    const p = new mp.Process({ target: makeEverything, args: [q, ROOT, die] });
    p.start();
    await p.join(10000);
    expect(p.exitCode).toBe(die === 'kill' ? -9 : 0);
    const got = await q.get({ timeout: 5000 });
    got.value.value += 1;
    expect(got.value.value).toBe(42);
    expect(got.raw.value).toBe(1.5);
    expect([...got.array]).toEqual([1, 2, 3]);
    expect(got.shm.buf[0]).toBe(9);
    const byName = new mp.SharedMemory({ name: got.name });
    expect(byName.buf[0]).toBe(9);
    expect(got.lock.acquireSync({ timeout: 1000 })).toBe(true);
    got.lock.release();
    expect(got.rlock.acquireSync({ timeout: 1000 })).toBe(true);
    got.rlock.release();
    expect(got.semaphore.getValue()).toBe(2);
    got.event.set();
    expect(got.event.isSet()).toBe(true);
    expect(await got.barrier.wait()).toBe(0);
    expect(got.condition.acquireSync()).toBe(true);
    got.condition.release();
    expect(await got.queue.get({ timeout: 1000 })).toBe('inside');
    expect(await got.reader.recv()).toBe('through the pipe');
    byName.unlink();
  });
});

test('a pool task may return a shared object, even from a worker rotated out right after', async () => {
  process.env.NMP_TEST_ROOT = ROOT;
  const pool = new mp.Pool({ processes: 1, maxTasksPerChild: 1 });
  try {
    const made = await pool.map((i: number) => {
      const m = require(process.env.NMP_TEST_ROOT!);
      const v = new m.Value('i', i * 10);
      return { v, pid: process.pid };
    }, [1, 2, 3], { chunksize: 1 });
    expect(made.map((x) => x.v.value)).toEqual([10, 20, 30]);
    expect(new Set(made.map((x) => x.pid)).size).toBe(3);
    made[0].v.value = 7;
    expect(made[0].v.value).toBe(7);
  } finally {
    pool.terminate();
    await pool.join();
  }
});

test('a warm child gets shared objects made after it booted, through the tracker', async () => {
  mp.setStartMethod('warm', { spares: 1 });
  try {
    await mp.sparesReady();
    const v = new mp.Value('i', 1);
    const p = new mp.Process({ target: (v: any) => { v.value = 99; }, args: [v] });
    p.start();
    await p.join(10000);
    expect(p.exitCode).toBe(0);
    expect(v.value).toBe(99);
    v.close();
  } finally {
    mp.setStartMethod('spawn');
  }
});

test('objects from many short-lived children leave no descriptors behind, here or in the tracker', async () => {
  const N = 100;
  const q = new mp.Queue<any>();
  const tracker = (): number | undefined => childrenOf(process.pid).find((c) => c.comm === 'nmp-tracker')?.pid;
  // A first round starts the tracker and loads everything, so the counts below are steady ones.
  const warm = new mp.Process({ target: (q: any, root: string) => q.putSync(new (require(root).Value)('i', 0)), args: [q, ROOT] });
  warm.start();
  await warm.join(10000);
  (await q.get({ timeout: 5000 })).close();
  const trackerPid = tracker()!;
  expect(trackerPid).toBeDefined();
  const oursBefore = fdCount(process.pid);
  const trackerBefore = fdCount(trackerPid);
  for (let batch = 0; batch < N / 10; batch++) {
    const ps = Array.from({ length: 10 }, () => new mp.Process({
      target: (q: any, root: string) => {
        const m = require(root);
        q.putSync({ v: new m.Value('i', 5), a: new m.Array('d', 4) });
      },
      args: [q, ROOT],
    }));
    ps.forEach((p) => p.start());
    await Promise.all(ps.map((p) => p.join(10000)));
    for (let i = 0; i < 10; i++) {
      const got = await q.get({ timeout: 5000 });
      expect(got.v.value).toBe(5);
      got.v.close();
      got.a.close();
    }
  }
  expect(await eventually(() => fdCount(trackerPid) <= trackerBefore, 2000)).toBe(true);
  expect(fdCount(process.pid)).toBeLessThanOrEqual(oursBefore + 5);
  q.close();
});

test('a put that fails gives back what its message took: the tracker lets go once the object is delivered', async () => {
  const q = new mp.Queue<any>({ maxsize: 1 });
  // A first round trip starts the tracker: count its descriptors from there.
  const warm = new mp.Array('d', 1000);
  q.putSync(warm);
  q.getSync().close();
  warm.close();
  const tracker = childrenOf(process.pid).find((c) => c.comm === 'nmp-tracker')!.pid;
  const before = fdCount(tracker);
  q.putSync('filler');
  const big = new mp.Array('d', 1000);   // a segment of its own: the tracker holds its fd while it is in flight
  const v = new mp.Value('i', 3);        // an arena block: each message in flight takes a reference
  big[0] = 1;
  for (let i = 0; i < 50; i++) {
    expect(() => q.putNowait({ big, v })).toThrow(mp.Full);
    await expect(q.put({ big, v }, { timeout: 0 })).rejects.toBeInstanceOf(mp.Full);
  }
  // One put that succeeds, delivered: nothing of the 100 that failed may keep the fd in the tracker.
  expect(q.getSync()).toBe('filler');
  q.putSync({ big, v });
  const got = q.getSync();
  expect(got.v.value).toBe(3);
  expect(got.big[0]).toBe(1);
  for (const x of [got.v, got.big, v, big]) x.close();
  expect(await eventually(() => fdCount(tracker) === before, 2000)).toBe(true);
  q.close();
});
