import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { execFileSync } from 'child_process';

import * as mp from '../dist';
import { eventually } from './helpers';

describe('Semaphore and BoundedSemaphore', () => {
  test('counts down, refuses at zero, times out, and counts up on release', async () => {
    const s = new mp.Semaphore(2);
    expect(s.getValue()).toBe(2);
    expect(s.acquireSync()).toBe(true);
    expect(await s.acquire()).toBe(true);
    expect(s.acquireSync({ blocking: false })).toBe(false);
    expect(await s.acquire({ timeout: 10 })).toBe(false);
    s.release();
    expect(s.getValue()).toBe(1);
    s.release();
    s.release();
    expect(s.getValue()).toBe(3);  // unbounded, as Python's
    s.close();
  });

  test('a wait aborted right after a release woke it passes the wake on: the other sleeper gets the count', async () => {
    // Both sleep in the kernel (polling off); the release's wake goes to the first, which is
    // aborted before it hears of it. Without passing the wake on, the second slept for ever.
    const previous = mp.setWaitPolling(0);
    const s = new mp.Semaphore(0);
    try {
      const ac = new AbortController();
      const first = s.acquire({ signal: ac.signal });
      await new Promise((resolve) => setTimeout(resolve, 30));
      const second = s.acquire();  // no timeout: its plan would look at the count again after one
      await new Promise((resolve) => setTimeout(resolve, 30));
      s.release();
      ac.abort();
      await expect(first).rejects.toMatchObject({ name: 'AbortError' });
      let timer: NodeJS.Timeout | undefined;
      const asleep = new Promise((resolve) => { timer = setTimeout(resolve, 5000, 'still asleep'); });
      const got = await Promise.race([second, asleep]);
      clearTimeout(timer);
      if (got !== true) s.release();  // let it end
      await second;
      expect(got).toBe(true);
      expect(s.getValue()).toBe(0);
    } finally {
      mp.setWaitPolling(previous);
      s.close();
    }
  });

  test('BoundedSemaphore refuses to go above its initial value', () => {
    const b = new mp.BoundedSemaphore(1);
    expect(() => b.release()).toThrow(/released too many times/);
    b.acquireSync();
    b.release();
    expect(b.getValue()).toBe(1);
    b.close();
  });

  test('Semaphore(-1) and non-integers are refused', () => {
    expect(() => new mp.Semaphore(-1)).toThrow(RangeError);
    expect(() => new mp.Semaphore(1.5)).toThrow(TypeError);
    expect(() => new mp.BoundedSemaphore('2' as any)).toThrow(TypeError);
  });

  test('at most N holders across processes', async () => {
    const sem = new mp.Semaphore(2);
    const inside = new mp.Value('i', 0);
    const maxInside = new mp.Value('i', 0);
    const procs = [0, 1, 2, 3, 4].map(() => new mp.Process({
      target: (sem: any, inside: any, maxInside: any) => {
        for (let i = 0; i < 200; i++) {
          sem.withLockSync(() => {
            const now = inside.getLock().withLockSync(() => ++inside.value);
            maxInside.getLock().withLockSync(() => { if (now > maxInside.value) maxInside.value = now; });
            for (let k = 0; k < 1000; k++);
            inside.getLock().withLockSync(() => inside.value--);
          });
        }
      },
      args: [sem, inside, maxInside],
    }));
    procs.forEach((p) => p.start());
    await Promise.all(procs.map((p) => p.join(20000)));
    expect(procs.map((p) => p.exitCode)).toEqual([0, 0, 0, 0, 0]);
    expect(maxInside.value).toBeLessThanOrEqual(2);
    expect(maxInside.value).toBeGreaterThanOrEqual(1);
    expect(inside.value).toBe(0);
    expect(sem.getValue()).toBe(2);
    for (const x of [sem, inside, maxInside]) x.close();
  });
});

describe('Event', () => {
  test('set/clear/isSet and waits with timeouts', async () => {
    const e = new mp.Event();
    expect(e.isSet()).toBe(false);
    expect(await e.wait(10)).toBe(false);
    expect(e.waitSync(10)).toBe(false);
    e.set();
    expect(await e.wait()).toBe(true);
    expect(e.waitSync()).toBe(true);
    e.clear();
    expect(e.isSet()).toBe(false);
    e.close();
  });

  test('a child sets it; the parent awaiting it wakes', async () => {
    const e = new mp.Event();
    const p = new mp.Process({ target: (e: any) => setTimeout(() => e.set(), 50), args: [e] });
    p.start();
    expect(await e.wait(10000)).toBe(true);
    await p.join();
    e.close();
  });

  test('thousands of async waits on an Event, a Lock and a Semaphore all end when another process sets and releases', async () => {
    // Each of these waits is finished by its claim in native code, which also keeps the sleepers'
    // count: it must come back to 0, or a later set() would wake nobody it counted.
    const e = new mp.Event();
    const lock = new mp.Lock();
    const sem = new mp.Semaphore(0);
    lock.acquireSync();
    const events = Array.from({ length: 5000 }, () => e.wait(20000));
    const locks = Array.from({ length: 500 }, () => lock.acquire({ timeout: 20000 }).then((ok) => {
      if (ok) lock.release();
      return ok;
    }));
    const sems = Array.from({ length: 500 }, () => sem.acquire({ timeout: 20000 }));
    const p = new mp.Process({
      target: (e: any, lock: any, sem: any) => {
        e.set();
        lock.release();
        for (let i = 0; i < 500; i++) sem.release();
      },
      args: [e, lock, sem],
    });
    p.start();
    expect(await Promise.all(events)).toEqual(events.map(() => true));
    expect(await Promise.all(locks)).toEqual(locks.map(() => true));
    expect(await Promise.all(sems)).toEqual(sems.map(() => true));
    await p.join(10000);
    expect(Atomics.load((e as any).w, 1)).toBe(0);
    expect(Atomics.load((sem as any).w, 1)).toBe(0);
    expect(sem.getValue()).toBe(0);
    expect(lock.locked()).toBe(false);
    for (const x of [e, lock, sem]) x.close();
  });
});

describe('Condition', () => {
  test('wait/notify between processes, with the default RLock', async () => {
    const cond = new mp.Condition();
    const items = new mp.Array('i', 2);
    const consumer = new mp.Process({
      target: (cond: any, items: any) => {
        cond.withLockSync(() => {
          while (items[0] === 0) cond.waitSync();
          items[1] = items[0] * 10;
        });
      },
      args: [cond, items],
    });
    consumer.start();
    await new Promise((r) => setTimeout(r, 50));
    await cond.withLock(() => {
      items[0] = 7;
      cond.notify();
    });
    await consumer.join(10000);
    expect(consumer.exitCode).toBe(0);
    expect(items[1]).toBe(70);
    cond.close();
    items.close();
  });

  test('wait times out with false and re-acquires; waitFor returns the predicate', async () => {
    const cond = new mp.Condition(new mp.Lock());
    await cond.acquire();
    expect(await cond.wait(10)).toBe(false);
    expect(cond.waitSync(10)).toBe(false);
    expect(await cond.waitFor(() => 0, 10)).toBe(0);
    expect(cond.waitForSync(() => 'ready', 10)).toBe('ready');
    cond.release();
    expect(() => cond.notify()).toThrow(/un-acquired/);
    await expect(cond.wait(10)).rejects.toThrow(/un-acquired/);
    cond.close();
  });

  test('notifyAll wakes every waiter in every process; notify(n) wakes n', async () => {
    const cond = new mp.Condition();
    const woken = new mp.Value('i', 0);
    const waiting = new mp.Value('i', 0);
    const procs = [0, 1, 2].map(() => new mp.Process({
      target: async (cond: any, woken: any, waiting: any) => {
        await cond.acquire();
        waiting.value += 1;
        const ok = await cond.wait(10000);
        if (ok) woken.value += 1;
        cond.release();
      },
      args: [cond, woken, waiting],
    }));
    procs.forEach((p) => p.start());
    const deadline = Date.now() + 10000;
    while (waiting.value < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await cond.withLock(() => cond.notify(1));
    expect(await eventually(() => woken.value >= 1, 10000)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));  // a second wake-up would show by now
    expect(woken.value).toBe(1);
    await cond.withLock(() => cond.notifyAll());
    await Promise.all(procs.map((p) => p.join(10000)));
    expect(woken.value).toBe(3);
    for (const x of [cond, woken, waiting]) x.close();
  });

  test('Condition(lock) refuses a non-lock', () => {
    expect(() => new mp.Condition({} as any)).toThrow(TypeError);
  });
});

describe('Barrier', () => {
  test('three processes pass together; indices are 0..2; the action runs once', async () => {
    // The action crosses by source, so it names its file by a literal.
    const file = path.join(os.tmpdir(), `nmp-barrier-${process.pid}`);
    fs.rmSync(file, { force: true });
    const action = eval(`() => require('fs').appendFileSync(${JSON.stringify(file)}, 'x')`);
    const barrier = new mp.Barrier(3, { action });
    expect(barrier.parties).toBe(3);
    const indices = new mp.Array('i', [-1, -1, -1]);
    const procs = [0, 1].map((k) => new mp.Process({
      target: async (b: any, indices: any, k: number) => { indices[k] = await b.wait(10000); },
      args: [barrier, indices, k],
    }));
    procs.forEach((p) => p.start());
    indices[2] = await barrier.wait(10000);
    await Promise.all(procs.map((p) => p.join(10000)));
    expect([...indices].sort()).toEqual([0, 1, 2]);
    expect(barrier.broken).toBe(false);
    expect(barrier.nWaiting).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
    fs.rmSync(file);
    for (const x of [barrier, indices]) x.close();
  });

  test('a timeout breaks it; abort() and reset()', async () => {
    const b = new mp.Barrier(2);
    await expect(b.wait(20)).rejects.toMatchObject({ name: 'BrokenBarrierError' });
    expect(b.broken).toBe(true);
    await expect(b.wait()).rejects.toMatchObject({ name: 'BrokenBarrierError' });
    b.reset();
    expect(b.broken).toBe(false);
    b.abort();
    expect(() => b.waitSync()).toThrow(expect.objectContaining({ name: 'BrokenBarrierError' }));
    b.close();
  });

  test('Barrier(0) and bad options are refused', () => {
    expect(() => new mp.Barrier(0)).toThrow(RangeError);
    expect(() => new mp.Barrier(1.5)).toThrow(TypeError);
    expect(() => new mp.Barrier(2, { action: 5 as any })).toThrow(TypeError);
  });
});

describe('closed primitives', () => {
  test('a closed Semaphore, Event, Condition or Barrier says "<kind> is closed"; a Promise form rejects with it', async () => {
    const sem = new mp.Semaphore(2);
    const bounded = new mp.BoundedSemaphore(1);
    const event = new mp.Event();
    const cond = new mp.Condition();
    const barrier = new mp.Barrier(2);
    for (const o of [sem, bounded, event, cond, barrier]) {
      o.close();
      o.close();
    }
    const fails = async (kind: string, sync: Array<() => unknown>, promised: Array<() => Promise<unknown>>): Promise<void> => {
      for (const f of sync) expect(f).toThrow(new Error(`${kind} is closed`));
      for (const f of promised) await expect(f()).rejects.toThrow(new Error(`${kind} is closed`));
    };
    for (const [kind, s] of [['Semaphore', sem], ['BoundedSemaphore', bounded]] as const) {
      await fails(kind, [() => s.acquireSync(), () => s.release(), () => s.getValue(), () => s.withLockSync(() => 1)], [() => s.acquire(), () => s.withLock(() => 1)]);
    }
    await fails('Event', [() => event.set(), () => event.clear(), () => event.isSet(), () => event.waitSync(10)], [() => event.wait(10)]);
    await fails('Condition',
      [() => cond.acquireSync(), () => cond.release(), () => cond.notify(), () => cond.notifyAll(), () => cond.waitSync(10), () => cond.waitForSync(() => true)],
      [() => cond.acquire(), () => cond.wait(10), () => cond.waitFor(() => true), () => cond.withLock(() => 1)]);
    await fails('Barrier',
      [() => barrier.waitSync(10), () => barrier.abort(), () => barrier.reset(), () => barrier.parties, () => barrier.nWaiting, () => barrier.broken],
      [() => barrier.wait(10)]);
    expect([String(sem), String(event), String(barrier)]).toEqual(['<Semaphore closed>', '<Event closed>', '<Barrier closed>']);
  });
});

/** This environment without NMP_WAIT_POLL_MS, so that a child starts with the default window. */
function envWithoutPolling(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NMP_WAIT_POLL_MS;
  return env;
}

/** What a fixture of test/fixtures prints as JSON, run with the default poll window. */
function fixtureJson(name: string): any {
  return JSON.parse(execFileSync(process.execPath, [path.join(__dirname, 'fixtures', name)], {
    env: envWithoutPolling(),
    encoding: 'utf8',
    timeout: 30000,
  }));
}

describe('async waits', () => {
  // Linux 6.7 brought IORING_OP_FUTEX_WAIT; before it (or with io_uring refused), a thread waits.
  const [major, minor] = os.release().split('.').map(Number);
  const uring = major > 6 || (major === 6 && minor >= 7);
  const fixture = path.join(__dirname, 'fixtures', 'async-waits.js');
  const run = (env: NodeJS.ProcessEnv): Record<string, unknown> =>
    JSON.parse(execFileSync(process.execPath, [fixture], { env: { ...envWithoutPolling(), ...env }, encoding: 'utf8', timeout: 30000 }));
  const expected = { woken: true, item: 'from the child', timedOut: false, aborted: 'AbortError' };

  // NMP_WAIT_POLL_MS=1000: the wake, the timeout and the abort all land while the waits poll;
  // 0: they land on waits the kernel holds from the start.
  test.each([
    ['by default', {}, uring ? ['io_uring', 'thread'] : ['thread']],
    ['with NMP_NO_IO_URING=1', { NMP_NO_IO_URING: '1' }, ['thread']],
    ['while polling', { NMP_WAIT_POLL_MS: '1000' }, uring ? ['io_uring', 'thread'] : ['thread']],
    ['with polling off', { NMP_WAIT_POLL_MS: '0' }, uring ? ['io_uring', 'thread'] : ['thread']],
    ['while polling, on the thread backend', { NMP_WAIT_POLL_MS: '1000', NMP_NO_IO_URING: '1' }, ['thread']],
  ])('wake from another process, timeout and abort all work %s', (_, env, backends) => {
    const got = run(env);
    expect(backends).toContain(got.backend);
    expect(got).toEqual({ ...expected, backend: got.backend });
  });

  test.each([['io_uring where the kernel has it', {}], ['the thread backend', { NMP_NO_IO_URING: '1' }]])(
    'worker threads ended while their waits are woken do not take the process down (%s)',
    (_, env) => {
      // Before: "FATAL ERROR: Error::Error napi_define_properties" and SIGABRT, in most runs.
      const out = execFileSync(process.execPath, [path.join(__dirname, 'fixtures', 'workers-ended-mid-wait.js')], {
        env: { ...envWithoutPolling(), ...env }, encoding: 'utf8', timeout: 60000,
      });
      expect(JSON.parse(out)).toEqual({ ended: 12 });
    },
  );
});

describe('claims: a wait that finishes its plan natively', () => {
  test('made once the word moves, right before the waiter is told; undone when it cannot be told; never for a cancelled wait', () => {
    const got = fixtureJson('wait-claims.js');
    const told = (claimed: boolean, words: number[]) => ({ told: 'done', claimed, words });
    const each = {
      take: told(true, [77, 9]),          // the lock word taken, its mark (the start time) stored
      takeNotTold: told(true, [0, 0]),    // its callback threw: freed again
      takeLost: { ...told(false, [6, 0]), backoff: 8 },  // another owner got it first: the plan runs on
      seen: told(true, [1, 2]),           // the flag seen: one sleeper fewer
      seenNotTold: told(true, [1, 3]),
      count: told(true, [1, 0]),          // one of the count taken, one sleeper fewer
      countNotTold: told(true, [2, 1]),
      cancelledBefore: { told: 'nothing', claimed: false, words: [0, 0] },
      cancelledAfterWake: { told: 'nothing', claimed: false, words: [0, 0] },  // woken, not yet told
    };
    // Claimed while polling, a wait given its promise's resolve has it called with true, no JS
    // of ours runs, and the binding records the hit in the wait's budget (back-off 1). Woken by
    // the kernel, it is told through `done`, which leaves the budget to JS.
    expect(got.polled).toEqual({ ...each, takeResolved: { told: 'resolve(true)', claimed: true, words: [77, 9], backoff: 1 } });
    expect(got.kernel).toEqual({ ...each, takeResolved: { ...told(true, [77, 9]), backoff: 8 } });
    expect(got.refused).toEqual({
      badKind: 'RangeError: claim kind must be 1 (take), 2 (seen), 3 (count) or 4 (ring take)',
      ringGetOnPlainWords: 'RangeError: futexWaitAsync: a ring take needs a ring segment',
      noDone: 'TypeError: futexWaitAsync: done must be a function',
      resolveWithoutClaim: 'TypeError: futexWaitAsync: resolve needs a claim',
      badBudget: 'TypeError: futexWaitAsync: budgetState must be an Int32Array of 2',
    });
  });
});

describe('async waits poll before they sleep', () => {
  test('polling sees a change no wake announced, hands over to the kernel, lets timers run, ends on close and abort, and backs off', () => {
    const got = fixtureJson('wait-polling.js');
    const { changedWithoutWake, windowsAfterHit, ...rest } = got;
    // Polled (4), or Woken (0) where a loaded machine kept the poller off its core; never
    // TimedOut, which is what a wait that does not poll returns here (changedWithoutWakeNoPoll).
    expect([0, 4]).toContain(changedWithoutWake);
    expect(rest).toEqual({
      changedWithoutWakeNoPoll: 1,  // TimedOut: without polling only a wake ends a wait
      wokenAfterWindow: 0,          // Woken, by the kernel after the window ran out
      timedOutWhilePolling: 1,
      timerRanMeanwhile: true,
      closedUnderPoll: 3,           // Fault, not a read of unmapped memory
      abortedWhilePolling: 'AbortError',
      windowsAfterMisses: [5, 0, 5],  // a window that ran out skips the next one on that word
      windowsAfterLostRace: [5, 0],    // a change the plan did not get: a miss too
      windowsWhenNotPolled: [0],       // a wait that asks not to poll
      lastItemAfterBytesFull: 99,
      windowsFullByBytes: [0],         // room comes back at half empty: never polled for
      lastItemAfterMaxsize: 2,
      firstWindowAtMaxsize: 5,         // room comes back with the next get: polled for
    });
    // After a hit the next wait polls again; after a contended one it does not. One hit in five
    // tries is uncontended even on a busy machine.
    for (const windows of windowsAfterHit.slice(0, -1)) expect(windows).toEqual([5, 0]);
    expect(windowsAfterHit[windowsAfterHit.length - 1]).toEqual([5, 5]);
  });

  test('a change seen by a poll that shared its core with busy processes counts as a plain wake', () => {
    // Pinned with two spinning processes to one CPU, the poll gets about a third of its wall time.
    const got = fixtureJson('wait-contended.js');
    expect(got).toEqual({ result: 0 });  // WaitResult.Woken: the budget counts it as a miss
  });

  test('a wait polling for 300 ms with nothing else to do makes next to no garbage', () => {
    // Polled one loop turn at a time, it made V8 collect about 20 times in 300 ms.
    const got = fixtureJson('gc-while-polling.js');
    expect(got.polled).toBe(false);
    expect(got.cpuMs).toBeGreaterThan(100);  // it did poll (most of the 300 ms on a core)
    expect(got.collections).toBeLessThanOrEqual(3);
  });

  test('a polling wait leaves the loop to setImmediate callbacks: they run as often as without it', () => {
    // Polling through a whole 20 µs slice on every turn ran a setImmediate chain 14 times less often.
    const got = fixtureJson('immediates-while-polling.js');
    expect(got.polled).toBe(false);
    expect(got.beside).toBeGreaterThan(got.alone / 4);
  });

  test('NMP_WAIT_POLL_MS sets the starting window; a value that is not a number of ms is ignored', () => {
    const start = (value: string | undefined): number => {
      const env = envWithoutPolling();
      if (value !== undefined) env.NMP_WAIT_POLL_MS = value;
      const dist = path.join(__dirname, '..', 'dist');
      return Number(execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(dist)}).getWaitPolling())`], { env, encoding: 'utf8' }));
    };
    expect([start(undefined), start('0'), start('0.5'), start('5000'), start('soon'), start('-1')]).toEqual([2, 0, 0.5, 1000, 2, 2]);
  });

  test('setWaitPolling takes milliseconds from 0 to 1000 and returns the previous window', () => {
    const before = mp.getWaitPolling();
    expect(mp.setWaitPolling(0.5)).toBe(before);
    expect(mp.setWaitPolling(before)).toBe(0.5);
    expect(() => mp.setWaitPolling('1' as any)).toThrow(TypeError);
    expect(() => mp.setWaitPolling(NaN)).toThrow(TypeError);
    expect(() => mp.setWaitPolling(-1)).toThrow(RangeError);
    expect(() => mp.setWaitPolling(1001)).toThrow(RangeError);
    expect(mp.getWaitPolling()).toBe(before);
  });
});
