import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';

import * as mp from '../dist';
import { startTimeOf } from '../dist/liveness';
import { eventually } from './helpers';

describe('Lock and RLock in one process', () => {
  test('acquire/release, non-blocking and timed acquires, too many releases', async () => {
    const lock = new mp.Lock();
    expect(lock.acquireSync()).toBe(true);
    expect(lock.locked()).toBe(true);
    expect(lock.acquireSync({ blocking: false })).toBe(false);
    expect(lock.acquireSync({ timeout: 20 })).toBe(false);
    expect(await lock.acquire({ timeout: 20 })).toBe(false);
    lock.release();
    expect(lock.locked()).toBe(false);
    expect(() => lock.release()).toThrow(/released too many times/);
    expect(await lock.acquire()).toBe(true);
    lock.release();
    lock.close();
  });

  test('an awaited acquire is granted when another holder releases, and the event loop keeps running', async () => {
    const lock = new mp.Lock();
    lock.acquireSync();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    const waiting = lock.acquire();
    let granted = false;
    void waiting.then(() => (granted = true));
    // The loop runs on while the acquire waits: bounded by ticks, not by a fixed time, so that a
    // loaded machine's slow timers do not fail it.
    await eventually(() => ticks > 3, 20000);
    expect(ticks).toBeGreaterThan(3);
    expect(granted).toBe(false);
    lock.release();
    expect(await waiting).toBe(true);
    clearInterval(ticker);
    lock.release();
    lock.close();
  });

  test('an aborted signal rejects with AbortError and leaves the lock usable', async () => {
    const lock = new mp.Lock();
    lock.acquireSync();
    const ac = new AbortController();
    const pending = lock.acquire({ signal: ac.signal });
    setTimeout(() => ac.abort(), 10);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    const already = lock.acquire({ signal: AbortSignal.abort() });
    await expect(already).rejects.toMatchObject({ name: 'AbortError' });
    lock.release();
    expect(lock.acquireSync({ blocking: false })).toBe(true);
    lock.release();
    lock.close();
  });

  test('withLock / withLockSync return what fn returns and release on throw; lockSync is Disposable', async () => {
    const lock = new mp.Lock();
    expect(lock.withLockSync(() => 42)).toBe(42);
    expect(await lock.withLock(async () => 'x')).toBe('x');
    expect(() => lock.withLockSync(() => { throw new Error('inner'); })).toThrow('inner');
    expect(lock.locked()).toBe(false);
    const held = lock.lockSync();
    expect(lock.locked()).toBe(true);
    held[Symbol.dispose]();
    expect(lock.locked()).toBe(false);
    lock.close();
  });

  test('RLock is recursive for its owner and refuses release by a non-owner', () => {
    const r = new mp.RLock();
    r.acquireSync();
    r.acquireSync();
    r.release();
    expect(r.locked()).toBe(true);
    r.release();
    expect(r.locked()).toBe(false);
    expect(() => r.release()).toThrow(/un-acquired/);
    r.close();
  });

  test('bad options are TypeErrors', async () => {
    const lock = new mp.Lock();
    expect(() => lock.acquireSync({ timeout: 'soon' as any })).toThrow(TypeError);
    expect(() => lock.acquireSync({ blocking: 1 as any })).toThrow(TypeError);
    await expect(lock.acquire({ signal: {} as any })).rejects.toThrow(TypeError);
    expect(lock.locked()).toBe(false);
    lock.close();
  });
});

describe('a closed Lock or RLock', () => {
  test.each([['Lock'], ['RLock']])('%s: every use says "<kind> is closed"; a Promise form rejects with it', async (kind) => {
    const lock = kind === 'Lock' ? new mp.Lock() : new mp.RLock();
    lock.close();
    lock.close();
    const closed = new Error(`${kind} is closed`);
    expect(() => lock.acquireSync()).toThrow(closed);
    expect(() => lock.acquireSync({ blocking: false })).toThrow(closed);
    expect(() => lock.release()).toThrow(closed);
    expect(() => lock.locked()).toThrow(closed);
    expect(() => lock.lockSync()).toThrow(closed);
    expect(() => lock.withLockSync(() => 1)).toThrow(closed);
    // Not V8's "Cannot perform Atomics.compareExchange on a detached ArrayBuffer".
    expect(() => lock.acquireSync()).not.toThrow(/detached/);
    const pending = [lock.acquire(), lock.acquire({ timeout: 10 }), lock.withLock(() => 1)];
    for (const p of pending) await expect(p).rejects.toThrow(closed);
    expect(String(lock)).toBe(`<${kind} closed>`);
    expect(lock).toBeInstanceOf(mp.Lock);
    expect(() => new mp.Queue().putSync(lock)).toThrow('this shared object is closed');
  });

  test('closing one does not touch another of the same kind, here or in a child', async () => {
    const a = new mp.Lock();
    const b = new mp.Lock();
    const done = new mp.Value('i', 0);
    a.close();
    const p = new mp.Process({
      target: (b: any, done: any) => {
        b.acquireSync();
        done.value = b.locked() ? 1 : 2;
        b.release();
      },
      args: [b, done],
    });
    p.start();
    await p.join(10000);
    expect(p.exitCode).toBe(0);
    expect(done.value).toBe(1);
    expect(b.acquireSync()).toBe(true);
    b.release();
    expect(String(b)).toBe('<Lock(owner=None)>');
    b.close();
    done.close();
  });
});

describe('Lock across processes', () => {
  test('4 processes × 5000 locked increments come out exact', async () => {
    const v = new mp.Value('i', 0, { lock: false });
    const lock = new mp.Lock();
    const procs = [0, 1, 2, 3].map(() => new mp.Process({
      target: (v: any, lock: any, n: number) => {
        for (let i = 0; i < n; i++) lock.withLockSync(() => { v.value += 1; });
      },
      args: [v, lock, 5000],
    }));
    procs.forEach((p) => p.start());
    await Promise.all(procs.map((p) => p.join(20000)));
    expect(procs.map((p) => p.exitCode)).toEqual([0, 0, 0, 0]);
    expect(v.value).toBe(20000);
    v.close();
    lock.close();
  });

  test('async acquirers in children come out exact too (futex wake-ups across processes)', async () => {
    const v = new mp.Value('i', 0);
    const procs = [0, 1].map(() => new mp.Process({
      target: async (v: any) => {
        for (let i = 0; i < 2000; i++) await v.getLock().withLock(() => { v.value += 1; });
      },
      args: [v],
    }));
    procs.forEach((p) => p.start());
    for (let i = 0; i < 2000; i++) await v.getLock().withLock(() => { v.value += 1; });
    await Promise.all(procs.map((p) => p.join(20000)));
    expect(v.value).toBe(6000);
    v.close();
  });

  test('a holder killed with SIGKILL: the next acquirer gets OwnerDiedError, then the lock is free', async () => {
    const lock = new mp.Lock();
    const ready = new mp.Event();
    const holder = new mp.Process({
      target: (lock: any, ready: any) => {
        lock.acquireSync();
        ready.set();
        setInterval(() => {}, 1000);
      },
      args: [lock, ready],
    });
    holder.start();
    expect(await ready.wait(10000)).toBe(true);
    expect(lock.acquireSync({ blocking: false })).toBe(false);
    const waiter = lock.acquire();
    holder.kill();
    await holder.join(5000);
    expect(holder.exitCode).toBe(-9);
    await expect(waiter).rejects.toMatchObject({ name: 'OwnerDiedError', ownerPid: holder.pid });
    // The error told us the lock is free again, but not held by us:
    expect(lock.locked()).toBe(false);
    expect(await lock.acquire({ timeout: 1000 })).toBe(true);
    lock.release();
    lock.close();
    ready.close();
  });

  test('an async acquire woken by a release in another process owns the lock: kept while alive, OwnerDiedError once killed', async () => {
    // The wake-up's last step (taking the word, recording the owner's start time) is done in
    // native code (WaitClaim): a wrong start time would pass the live owner for a dead one.
    const lock = new mp.Lock();
    const waiting = new mp.Event();
    const holds = new mp.Event();
    lock.acquireSync();
    const taker = new mp.Process({
      target: async (lock: any, waiting: any, holds: any) => {
        const acquired = lock.acquire();
        waiting.set();
        await acquired;
        holds.set();
        setInterval(() => {}, 1000);
      },
      args: [lock, waiting, holds],
    });
    taker.start();
    expect(await waiting.wait(10000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 20));
    lock.release();
    expect(await holds.wait(10000)).toBe(true);
    expect(lock.locked()).toBe(true);
    expect(Atomics.load((lock as any).w, 2)).toBe(startTimeOf(taker.pid!));  // the owner's start time
    expect(await lock.acquire({ timeout: 250 })).toBe(false);  // through two owner checks
    taker.kill();
    await taker.join(5000);
    await expect(lock.acquire({ timeout: 5000 })).rejects.toMatchObject({ name: 'OwnerDiedError', ownerPid: taker.pid });
    expect(await lock.acquire({ timeout: 1000 })).toBe(true);
    lock.release();
    for (const x of [lock, waiting, holds]) x.close();
  });

  test('a dead holder is noticed by an acquirer that arrives after the death, sync form too', async () => {
    const lock = new mp.RLock();
    const holder = new mp.Process({ target: (lock: any) => { lock.acquireSync(); process.kill(process.pid, 'SIGKILL'); }, args: [lock] });
    holder.start();
    await holder.join(10000);
    expect(holder.exitCode).toBe(-9);
    let err: any;
    try {
      lock.acquireSync();
    } catch (e) {
      err = e;
    }
    expect(err?.name).toBe('OwnerDiedError');
    expect(lock.acquireSync({ timeout: 1000 })).toBe(true);
    lock.release();
    lock.close();
  });

  test('a dead holder is noticed even when a new process has taken its pid before anyone looked', async () => {
    const lock = new mp.Lock();
    const holder = new mp.Process({ target: (lock: any) => { lock.acquireSync(); process.kill(process.pid, 'SIGKILL'); }, args: [lock] });
    holder.start();
    await holder.join(10000);
    expect(holder.exitCode).toBe(-9);
    const dead = holder.pid!;
    // Make the kernel hand the dead holder's pid to a new process: the next pid it gives is
    // ns_last_pid + 1. Other processes may take it first, so try a few times.
    let reuser: ChildProcess | undefined;
    for (let attempt = 0; attempt < 20 && reuser === undefined; attempt++) {
      try {
        fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(dead - 1));
      } catch (err) {
        console.log(`skipped: /proc/sys/kernel/ns_last_pid cannot be written here (${(err as Error).message})`);
        lock.close();
        return;
      }
      const child = spawn('sleep', ['30'], { stdio: 'ignore' });
      if (child.pid === dead) reuser = child;
      else child.kill('SIGKILL');
    }
    if (reuser === undefined) {
      console.log(`skipped: pid ${dead} could not be reused in 20 tries`);
      lock.close();
      return;
    }
    try {
      const err = await lock.acquire({ timeout: 5000 }).catch((e) => e);
      expect(err).toBeInstanceOf(mp.OwnerDiedError);
      expect(err.ownerPid).toBe(dead);
      expect(await lock.acquire({ timeout: 1000 })).toBe(true);
      lock.release();
    } finally {
      reuser.kill('SIGKILL');
      await new Promise((r) => reuser!.once('exit', r));
      lock.close();
    }
  });

  test('eight pending async waits do not park on the libuv threadpool: fs still works', async () => {
    const locks = Array.from({ length: 8 }, () => new mp.Lock());
    locks.forEach((l) => l.acquireSync());
    const waits = locks.map((l) => l.acquire());
    const content = await fs.promises.readFile(__filename, 'utf8');
    expect(content.length).toBeGreaterThan(0);
    locks.forEach((l) => l.release());
    expect(await Promise.all(waits)).toEqual(Array(8).fill(true));
    locks.forEach((l) => { l.release(); l.close(); });
  });
});
