import { execFileSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { inspect } from 'util';

import * as mp from '../dist';
import { eventually, ROOT } from './helpers';

function threads(): number {
  return Number(/Threads:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);
}

describe('Queue', () => {
  test("the tutorial: two processes put their results, the parent gets both", async () => {
    const q = new mp.Queue<number>();
    const job = (q: any) => {
      let res = 0;
      for (let i = 0; i < 1000; i++) res += i + i ** 2 + i ** 3;
      q.putSync(res);
    };
    const ps = [0, 1].map(() => new mp.Process({ target: job, args: [q] }));
    ps.forEach((p) => p.start());
    await Promise.all(ps.map((p) => p.join(10000)));
    expect([await q.get(), await q.get()]).toEqual([249833583000, 249833583000]);
    expect(q.empty()).toBe(true);
  });

  test('items of every kind come back equal; a shared object comes back as the same memory', async () => {
    const q = new mp.Queue();
    const v = new mp.Value('i', 5);
    const items: unknown[] = [0, -1.5, NaN, '', 'héllo wörld', null, undefined, true, false, Buffer.from([1, 2, 3]),
      { a: [1, { b: 'c' }], m: new Map([[1, new Set([2])]]), d: new Date(7), big: 2n ** 80n }, new Float64Array([1.5])];
    for (const item of items) await q.put(item);
    await q.put({ v });
    // Compared through util.inspect: v8.deserialize builds Maps of the main realm, which jest's
    // toEqual (in its own realm) cannot iterate.
    for (const item of items) expect(inspect(await q.get(), { depth: 9 })).toBe(inspect(item, { depth: 9 }));
    const back = (await q.get()) as { v: any };
    back.v.value = 9;
    expect(v.value).toBe(9);
    v.close();
  });

  test('a get or recv waiting for what another process puts gets every kind back equal, wherever it sits in the ring', async () => {
    // A waiting get takes a message natively when its value can be made there (not a serialized
    // one); 20 laps of a 4 KiB ring put frames across its end at many offsets.
    const items: unknown[] = [-42.5, 'héllo', `a${'é'.repeat(60)}`, Buffer.from([1, 2, 3]), Buffer.alloc(0), true, false, null,
      undefined, { a: [1] }, 7];
    const q = new mp.Queue({ capacity: 4096 });
    const go = new mp.Queue();
    const [reader, writer] = mp.Pipe<unknown>({ duplex: false });
    const laps = 20;
    const p = new mp.Process({
      target: async (q: any, go: any, writer: any, items: unknown[], laps: number) => {
        for (let lap = 0; lap < laps; lap++) {
          for (const item of items) {
            if ((await go.get()) === 'pipe') await writer.send(item);
            else q.putSync(item);
          }
        }
      },
      args: [q, go, writer, items, laps],
    });
    p.start();
    const got: string[] = [];
    const kinds: boolean[] = [];
    for (let lap = 0; lap < laps; lap++) {
      for (let i = 0; i < items.length; i++) {
        const viaPipe = (lap + i) % 3 === 0;
        const pending = viaPipe ? reader.recv() : q.get({ timeout: 10000 });  // waiting before the item is put
        go.putSync(viaPipe ? 'pipe' : 'queue');
        const item = await pending;
        got.push(inspect(item));
        kinds.push(Buffer.isBuffer(item) === Buffer.isBuffer(items[i]));
      }
    }
    await p.join(10000);
    expect(got).toEqual(Array.from({ length: laps }, () => items.map((item) => inspect(item))).flat());
    expect(kinds.every(Boolean)).toBe(true);
    expect(q.empty()).toBe(true);
  });

  test('a waiting get claims its message natively: each kind made there, a serialized one left to JS, one its waiter missed kept', () => {
    const got = JSON.parse(execFileSync(process.execPath, [path.join(__dirname, 'fixtures', 'ring-get-claims.js')], {
      env: { ...process.env, NMP_WAIT_POLL_MS: '' }, encoding: 'utf8', timeout: 60000,
    }));
    const made = (value: string, isBuffer = false) => ({ told: 'done', claimed: true, value, isBuffer, after: 'Empty' });
    const each = {
      number: made('-42.5'),
      string: made("'héllo'"),
      wrapped: made(inspect(`a${'é'.repeat(60)}`)),
      bytes: made('<Buffer 01 02 03>', true),
      empty: made('<Buffer >', true),
      true: made('true'),
      false: made('false'),
      null: made('null'),
      undefined: made('undefined'),
      // v8-serialized: not claimed; the plan runs on, and the message is still there
      serialized: { told: 'done', claimed: false, value: 'undefined', isBuffer: false, after: '{ a: [ 1 ] }' },
      // claimed for a waiter that threw: abandoned, and the next get that looks at owners has it
      notTold: { ...made('7'), after: '7' },
      notToldThenClosed: { ...made('6'), after: '[ 6 ]' },  // and a closed ring's for-await drains it
      cancelled: { told: 'nothing', claimed: false, value: 'undefined', isBuffer: false, after: '8' },
    };
    // Claimed while polling, a wait given its promise's resolve has that called with the value.
    expect(got.polled).toEqual({ ...each, resolved: { ...made('9'), told: 'resolve' } });
    expect(got.kernel).toEqual({ ...each, resolved: made('9') });
    expect(got.wrappedIntact).toBe(true);
  });

  test('Empty, Full, timeouts, qsize/empty/full, and maxsize', async () => {
    const q = new mp.Queue({ maxsize: 2 });
    expect(() => q.getNowait()).toThrow(expect.objectContaining({ name: 'Empty' }));
    await expect(q.get({ timeout: 10 })).rejects.toMatchObject({ name: 'Empty' });
    expect(() => q.getSync({ timeout: 10 })).toThrow(expect.objectContaining({ name: 'Empty' }));
    q.putNowait(1);
    q.putSync(2);
    expect([q.qsize(), q.empty(), q.full()]).toEqual([2, false, true]);
    expect(() => q.putNowait(3)).toThrow(expect.objectContaining({ name: 'Full' }));
    await expect(q.put(3, { timeout: 10 })).rejects.toMatchObject({ name: 'Full' });
    expect(() => q.putSync(3, { timeout: 10 })).toThrow(expect.objectContaining({ name: 'Full' }));
    expect(q.getNowait()).toBe(1);
    expect(q.qsize()).toBe(1);
  });

  test('a producer blocked on a full ring gets in as soon as its item fits', async () => {
    const q = new mp.Queue<string>({ capacity: 4096 });
    let n = 0;
    expect(() => {
      for (;;) {
        q.putNowait('x'.repeat(50));
        n++;
      }
    }).toThrow(expect.objectContaining({ name: 'Full' }));
    const p = new mp.Process({ target: (q: any) => q.putSync('y'.repeat(50), { timeout: 10000 }), args: [q] });
    p.start();
    await new Promise((r) => setTimeout(r, 100));
    q.getSync();
    await p.join(15000);
    expect(p.exitCode).toBe(0);
    expect(q.qsize()).toBe(n);
  });

  test('numbers and strings survive frames that wrap around the ring\'s end', () => {
    const q = new mp.Queue({ capacity: 4096 });
    const values: unknown[] = [];
    // Strings of 1-23 bytes make frames of 32 or 48: heads land on every 16th byte, the last too.
    for (let i = 0; i < 3000; i++) values.push(i % 7 === 0 ? `s${'x'.repeat(i % 23)}` : i * 1.5 - 1e6);
    const got: unknown[] = [];
    for (const v of values) {
      q.putSync(v);
      got.push(q.getSync());
    }
    expect(got).toEqual(values);
  });

  test('an aborted get rejects with AbortError and takes no item', async () => {
    const q = new mp.Queue();
    const ac = new AbortController();
    const pending = q.get({ signal: ac.signal });
    ac.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await expect(q.get({ signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    await q.put('kept');
    expect(await q.get()).toBe('kept');
  });

  test('bad input is refused before anything is sent; the queue stays usable', async () => {
    expect(() => new mp.Queue({ maxsize: 'x' as any })).toThrow(TypeError);
    expect(() => new mp.Queue({ capacity: 10 })).toThrow(RangeError);
    const q = new mp.Queue();
    await expect(q.put({ f: () => 1 })).rejects.toThrow(/Queue item\.f .*cannot be sent/);
    expect(() => q.putSync(Symbol('s') as any)).toThrow(TypeError);
    await expect(q.get({ timeout: 'x' as any })).rejects.toThrow(TypeError);
    expect(q.qsize()).toBe(0);
    await q.put(1);
    expect(await q.get()).toBe(1);
  });

  test('shared objects inside a Map, a Set or a class instance cross a queue both ways as the same objects', async () => {
    const q = new mp.Queue<Map<string, unknown>>();
    const back = new mp.Queue<Set<unknown>>();
    const v = new mp.Value('i', 1);
    const lock = new mp.Lock();
    class Box {
      constructor(readonly lock: mp.Lock, readonly n: number) {}
    }
    lock.acquireSync();  // held here: the child's lock must be this one to find it held
    await q.put(new Map<string, unknown>([['v', v], ['box', new Box(lock, 3)], ['set', new Set([v])]]));
    const p = new mp.Process({
      target: async (q: any, back: any) => {
        const m = await q.get({ timeout: 10000 });
        m.get('v').value = 7;
        const same = m.get('set').has(m.get('v'));  // one object, however often the message holds it
        const held = m.get('box').lock.acquireSync({ blocking: false }) === false;
        const made = new (m.get('v').constructor)('i', 5);
        // Put, and exit at once: the Value in flight still arrives.
        await back.put(new Set([made, { same, held, n: m.get('box').n }]));
      },
      args: [q, back],
    });
    p.start();
    const got = [...(await back.get({ timeout: 10000 }))] as [mp.Value<'i'>, Record<string, unknown>];
    await p.join(10000);
    expect(p.exitCode).toBe(0);
    expect(v.value).toBe(7);
    expect(got[0]).toBeInstanceOf(mp.Value);
    expect(got[0].value).toBe(5);
    expect([got[1].same, got[1].held, got[1].n]).toEqual([true, true, 3]);
    lock.release();
    for (const x of [v, lock, got[0]]) x.close();
  });

  test("a shared object in an Error's cause is refused with a TypeError that says where; nothing is sent", async () => {
    const q = new mp.Queue();
    const event = new mp.Event();
    await expect(q.put({ err: new Error('x', { cause: { event } }) })).rejects.toThrow(
      /^Queue item\.err\.cause\.event: an Event inside an Error cannot be sent to another process/,
    );
    expect(() => q.putSync([new Error('x', { cause: event })])).toThrow(TypeError);
    expect(q.qsize()).toBe(0);
    await q.put(new Error('fine', { cause: 'plain data' }));
    expect(((await q.get({ timeout: 5000 })) as Error).cause).toBe('plain data');
    event.close();
  });

  test('FIFO per producer, and nothing lost or duplicated with 3 producers and 3 consumers', async () => {
    const q = new mp.Queue<[number, number]>({ capacity: 16384 });
    const N = 2000;
    const seen = new mp.Array('i', 3 * N);
    const producers = [0, 1, 2].map((k) => new mp.Process({
      target: async (q: any, k: number, n: number) => {
        for (let i = 0; i < n; i++) await q.put([k, i]);
      },
      args: [q, k, N],
    }));
    // Two consumers in children, one here; each checks its own view of every producer is in order.
    const consumers = [0, 1].map(() => new mp.Process({
      target: (q: any, seen: any, total: number) => {
        const last = [-1, -1, -1];
        for (;;) {
          let item: [number, number];
          try {
            item = q.getSync({ timeout: 2000 });
          } catch {
            return;
          }
          if (item[0] < 0) return;
          if (item[1] <= last[item[0]]) process.exit(3);
          last[item[0]] = item[1];
          Atomics.add(seen, item[0] * total + item[1], 1);
        }
      },
      args: [q, seen, N],
    }));
    [...producers, ...consumers].forEach((p) => p.start());
    const last = [-1, -1, -1];
    let inOrder = true;
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      let item: [number, number];
      try {
        item = await q.get({ timeout: 500 });
      } catch {
        if (producers.every((p) => p.exitCode !== null)) break;
        continue;
      }
      if (item[1] <= last[item[0]]) inOrder = false;
      last[item[0]] = item[1];
      Atomics.add(seen, item[0] * N + item[1], 1);
    }
    await Promise.all(producers.map((p) => p.join(10000)));
    await q.put([-1, 0]);
    await q.put([-1, 0]);
    await Promise.all(consumers.map((p) => p.join(10000)));
    expect(inOrder).toBe(true);
    expect(consumers.map((c) => c.exitCode)).toEqual([0, 0]);
    expect([...seen].every((n) => n === 1)).toBe(true);
    seen.close();
  });

  test("a child's child puts into the parent's queue, and its name says whose child it is", async () => {
    const q = new mp.Queue<string>();
    const child = new mp.Process({
      target: async (q: any, root: string) => {
        const m = require(root);
        const grandchild = new m.Process({ target: (q: any, root: string) => q.putSync(require(root).currentProcess().name), args: [q, root] });
        grandchild.start();
        await grandchild.join();
        q.putSync(`${m.currentProcess().name} done`);
      },
      args: [q, ROOT],
    });
    child.start();
    const first = await q.get({ timeout: 20000 });
    const second = await q.get({ timeout: 20000 });
    await child.join(20000);
    expect(first).toBe(`${child.name}:1`);
    expect(second).toBe(`${child.name} done`);
  });

  test('a 256 MiB Buffer goes through a 4 MiB ring, checked by hash', async () => {
    const q = new mp.Queue();
    const size = 256 * 1024 * 1024;
    const p = new mp.Process({
      target: (q: any, size: number) => {
        const crypto = require('crypto');
        const buf = crypto.randomBytes(size);
        q.putSync(crypto.createHash('sha256').update(buf).digest('hex'));
        q.putSync(buf);
      },
      args: [q, size],
    });
    p.start();
    const hash = await q.get({ timeout: 60000 });
    const buf = (await q.get({ timeout: 60000 })) as Buffer;
    await p.join(60000);
    expect(buf.length).toBe(size);
    expect(createHash('sha256').update(buf).digest('hex')).toBe(hash);
  }, 120000);

  test('close() in one process ends put for all and ends for-await everywhere once drained', async () => {
    const q = new mp.Queue<number>();
    const counted = new mp.Value('i', 0);
    const reader = new mp.Process({
      target: async (q: any, counted: any) => {
        for await (const x of q) counted.value += x;
      },
      args: [q, counted],
    });
    reader.start();
    const closer = new mp.Process({
      target: async (q: any) => {
        for (let i = 1; i <= 10; i++) await q.put(i);
        q.close();
      },
      args: [q],
    });
    closer.start();
    await Promise.all([reader.join(10000), closer.join(10000)]);
    expect(reader.exitCode).toBe(0);
    expect(counted.value).toBe(55);
    expect(q.closed).toBe(true);
    await expect(q.put(1)).rejects.toThrow(/closed/);
    await expect(q.get()).rejects.toThrow(/closed/);
    counted.close();
  });

  test('a consumer killed between two gets loses nothing and duplicates nothing', async () => {
    const q = new mp.Queue<number>();
    const N = 200;
    for (let i = 0; i < N; i++) await q.put(i);
    const taken = new mp.Array('i', N);
    const ready = new mp.Event();
    const consumer = new mp.Process({
      target: (q: any, taken: any, ready: any) => {
        for (let i = 0; i < 50; i++) taken[q.getSync()] += 1;
        ready.set();
        setInterval(() => {}, 1000);
      },
      args: [q, taken, ready],
    });
    consumer.start();
    expect(await ready.wait(10000)).toBe(true);
    consumer.kill();
    await consumer.join(10000);
    while (!q.empty()) taken[q.getNowait()] += 1;
    expect([...taken].every((n) => n === 1)).toBe(true);
    for (const x of [taken, ready]) x.close();
  });

  test('producers killed mid-put leave no half message and no lock held', async () => {
    const q = new mp.Queue<Buffer>({ capacity: 1 << 20 });
    const procs = [0, 1].map(() => new mp.Process({
      target: (q: any) => {
        const crypto = require('crypto');
        for (;;) {
          const body = crypto.randomBytes(8000);
          const item = Buffer.concat([crypto.createHash('sha256').update(body).digest(), body]);
          try {
            q.putSync(item, { timeout: 1000 });
          } catch {
            // full: the parent drains below
          }
        }
      },
      args: [q],
    }));
    procs.forEach((p) => p.start());
    let checked = 0;
    const end = Date.now() + 400;
    while (Date.now() < end) {
      try {
        const item = await q.get({ timeout: 50 });
        expect(createHash('sha256').update(item.subarray(32)).digest().equals(item.subarray(0, 32))).toBe(true);
        checked++;
      } catch (err) {
        if ((err as Error).name !== 'Empty') throw err;
      }
    }
    procs.forEach((p) => p.kill());
    await Promise.all(procs.map((p) => p.join(10000)));
    while (!q.empty()) {
      const item = q.getNowait();
      expect(createHash('sha256').update(item.subarray(32)).digest().equals(item.subarray(0, 32))).toBe(true);
      checked++;
    }
    expect(checked).toBeGreaterThan(0);
    // Whatever a producer held when it died, the queue works:
    q.putSync(Buffer.from('after'), { timeout: 2000 });
    expect(q.getSync({ timeout: 2000 }).toString()).toBe('after');
  });

  // The two tests below kill a process in the middle of a large copy, outside the ring's mutex:
  // the parent watches the frame's state word and kills the owner the moment it sees the copy
  // under way, then checks the frame was indeed left half-done before asserting what follows.
  const BIG = 3 << 19;  // 1.5 MiB: a copy of a few hundred µs, in line in an 8 MiB ring
  const pattern = (seq: number): Buffer => {
    const b = Buffer.alloc(BIG, seq & 0xff);
    b.writeUInt32LE(seq, 0);
    return b;
  };
  const intact = (b: Buffer): number => {
    const seq = b.readUInt32LE(0);
    expect(b.equals(pattern(seq))).toBe(true);
    return seq;
  };
  type Flight = { state: string; pid: number }[];
  const inFlight = (q: unknown): Flight => (q as { ring: { framesInFlight(): Flight } }).ring.framesInFlight();

  test('a producer killed in the middle of a large copy: its frame is never read, and the queue goes on', async () => {
    let hit = false;
    for (let attempt = 0; attempt < 20 && !hit; attempt++) {
      const q = new mp.Queue<Buffer>({ capacity: 8 << 20 });
      const producer = new mp.Process({
        target: (q: any, big: number) => {
          for (let seq = 0; ; seq++) {
            const b = Buffer.alloc(big, seq & 0xff);
            b.writeUInt32LE(seq, 0);
            q.putSync(b);
          }
        },
        args: [q, BIG],
      });
      producer.start();
      const pid = producer.pid!;
      const got: number[] = [];
      const end = Date.now() + 3000;
      while (Date.now() < end) {
        const frames = inFlight(q);
        if (frames.some((f) => f.state === 'writing' && f.pid === pid)) {
          process.kill(pid, 'SIGKILL');
          break;
        }
        // The ring full: take one so that the producer copies again.
        if (frames.length >= 5) got.push(intact(q.getNowait()));
      }
      await producer.join(10000);
      hit = inFlight(q).some((f) => f.state === 'writing' && f.pid === pid);
      // Every message that was published comes out whole, in order; the half one never does.
      for (;;) {
        let item: Buffer;
        try {
          item = await q.get({ timeout: 200 });
        } catch (err) {
          expect((err as Error).name).toBe('Empty');
          break;
        }
        got.push(intact(item));
      }
      expect(got).toEqual(got.map((_, i) => i));
      await q.put(pattern(777));
      expect(intact(await q.get({ timeout: 2000 }))).toBe(777);
      expect(inFlight(q)).toEqual([]);
      q.close();
    }
    expect(hit).toBe(true);
  }, 60000);

  test('a consumer killed in the middle of a large copy: its message is delivered again, whole, once', async () => {
    let hit = false;
    for (let attempt = 0; attempt < 20 && !hit; attempt++) {
      const q = new mp.Queue<Buffer>({ capacity: 8 << 20 });
      const n = 4;
      for (let seq = 0; seq < n; seq++) q.putSync(pattern(seq));
      const done = new mp.Value('i', 0);
      const consumer = new mp.Process({
        target: (q: any, done: any) => {
          for (;;) {
            q.getSync();
            done.value++;
          }
        },
        args: [q, done],
      });
      consumer.start();
      const pid = consumer.pid!;
      const end = Date.now() + 3000;
      while (Date.now() < end && done.value < n) {
        if (inFlight(q).some((f) => f.state === 'reading' && f.pid === pid)) {
          process.kill(pid, 'SIGKILL');
          break;
        }
      }
      await consumer.join(10000);
      hit = inFlight(q).some((f) => f.state === 'reading' && f.pid === pid);
      const got: number[] = [];
      while (got.length < n - done.value) got.push(intact(await q.get({ timeout: 2000 })));
      expect(q.qsize()).toBe(0);
      // What the consumer had not finished comes back, each message once.
      expect(got.sort((a, b) => a - b)).toEqual(Array.from({ length: n - done.value }, (_, i) => done.value + i));
      expect(inFlight(q)).toEqual([]);
      done.close();
      q.close();
    }
    expect(hit).toBe(true);
  }, 60000);

  test('getBytesInto reads byte items into one reused buffer; too short is BufferTooShort, not bytes a TypeError', async () => {
    const q = new mp.Queue<Buffer | string>();
    const producer = new mp.Process({
      target: (q: any) => {
        for (let i = 0; i < 100; i++) q.putSync(Buffer.alloc(1000 + i, i));
        q.putSync(Buffer.alloc(5000, 7));
        q.putSync('not bytes');
        q.putSync(Buffer.alloc(3 << 20, 9));  // out of line (over a quarter of the 4 MiB ring)
      },
      args: [q],
    });
    producer.start();
    const into = Buffer.alloc(4096);
    for (let i = 0; i < 100; i++) {
      const n = i % 2 ? await q.getBytesInto(into, 8, { timeout: 10000 }) : q.getBytesIntoSync(into, 8, { timeout: 10000 });
      expect(n).toBe(1000 + i);
      expect(into.subarray(8, 8 + n).equals(Buffer.alloc(n, i))).toBe(true);
    }
    const short = await q.getBytesInto(into, 0, { timeout: 10000 }).catch((e) => e);
    expect(short).toBeInstanceOf(mp.BufferTooShort);
    expect(short.bytes.equals(Buffer.alloc(5000, 7))).toBe(true);
    await expect(q.getBytesInto(into, 0, { timeout: 10000 })).rejects.toThrow(TypeError);
    const big = Buffer.alloc(3 << 20);
    expect(await q.getBytesInto(big, 0, { timeout: 10000 })).toBe(3 << 20);
    expect(big.every((x) => x === 9)).toBe(true);
    await producer.join(10000);
    await expect(q.getBytesInto(into, 0, { timeout: 10 })).rejects.toThrow(mp.Empty);
    // Bad arguments are refused before anything is taken.
    await q.put(Buffer.from('kept'));
    await expect(q.getBytesInto('nope' as never)).rejects.toThrow(TypeError);
    expect(() => q.getBytesIntoSync(into, 5000)).toThrow(RangeError);
    expect(() => q.getBytesIntoSync(into, 1.5)).toThrow(TypeError);
    expect(q.getSync({ timeout: 1000 })).toEqual(Buffer.from('kept'));
    q.close();
  });

  test('a destination whose subarray() takes from another queue: each get keeps its own message', () => {
    // A take of more than 256 bytes is two native calls (claim, then copy) with JS between them:
    // the second must copy this queue's claimed frame whatever that JS did.
    const a = new mp.Queue();
    const b = new mp.Queue();
    a.putSync(Buffer.alloc(400, 1));
    b.putSync(Buffer.alloc(300, 2));
    a.putSync(Buffer.alloc(400, 3));
    let fromB: unknown;
    class Snooping extends Uint8Array {
      override subarray(begin?: number, end?: number) {
        if (fromB === undefined) fromB = b.getSync();
        return super.subarray(begin, end);
      }
    }
    const into = new Snooping(1000);
    expect(a.getBytesIntoSync(into)).toBe(400);
    expect([...into.subarray(0, 400)].every((x) => x === 1)).toBe(true);
    expect(Buffer.from(fromB as Buffer).equals(Buffer.alloc(300, 2))).toBe(true);
    const next = a.getSync() as Buffer;
    expect(next.length === 400 && next[0] === 3).toBe(true);
    a.close();
    b.close();
  });

  test('a destination that lies about its length, or shrinks or goes away while a get waits: the item is not stuck', async () => {
    // A frame claimed and then not finished would hold the ring's head for good: the puts below,
    // three times the ring's capacity, would meet Full.
    const q = new mp.Queue({ capacity: 16384 });
    const cycle = (): void => {
      for (let i = 0; i < 120; i++) {
        q.putNowait(Buffer.alloc(400, i & 0xff));
        expect(q.getNowait()).toEqual(Buffer.alloc(400, i & 0xff));
      }
    };
    class Boasting extends Uint8Array {
      override get length(): number {
        return 1 << 20;
      }
    }
    q.putSync(Buffer.alloc(400, 1));
    let boasting: any;
    try {
      q.getBytesIntoSync(new Boasting(100));
    } catch (err) {
      boasting = err;
    }
    expect(boasting).toBeInstanceOf(mp.BufferTooShort);
    expect(boasting.bytes).toEqual(Buffer.alloc(400, 1));
    const ownLength = new Uint8Array(100);
    Object.defineProperty(ownLength, 'length', { value: 1 << 20 });
    q.putSync(Buffer.alloc(400, 2));
    expect(() => q.getBytesIntoSync(ownLength)).toThrow(mp.BufferTooShort);
    cycle();
    // Measured when the item comes, not when the get was called.
    const ab = new (ArrayBuffer as any)(1000, { maxByteLength: 4096 }) as ArrayBuffer & { resize(n: number): void };
    const pending = q.getBytesInto(new Uint8Array(ab), 0, { timeout: 20000 });
    ab.resize(100);
    q.putSync(Buffer.alloc(400, 3));
    const shrunk = await pending.catch((e) => e);
    expect(shrunk).toBeInstanceOf(mp.BufferTooShort);
    expect(shrunk.bytes).toEqual(Buffer.alloc(400, 3));
    const moved = new Uint8Array(1000);
    const waiting = q.getBytesInto(moved, 0, { timeout: 20000 });
    structuredClone(moved.buffer, { transfer: [moved.buffer] });
    q.putSync(Buffer.alloc(400, 4));
    expect(await waiting.catch((e) => e)).toBeInstanceOf(mp.BufferTooShort);
    cycle();
    q.close();
  });

  test('two consumers asleep: each of two puts, made apart, wakes one of them', async () => {
    const q = new mp.Queue<number>();
    const got = new mp.RawArray('i', 2);
    const consumers = [0, 1].map((k) => new mp.Process({
      target: (q: any, got: any, k: number) => {
        got[k] = q.getSync({ timeout: 20000 });
      },
      args: [q, got, k],
    }));
    consumers.forEach((c) => c.start());
    // Both asleep in the kernel, in their get's futex wait.
    const asleep = (pid: number): boolean => /futex/.test(fs.readFileSync(`/proc/${pid}/wchan`, 'utf8'));
    await eventually(() => consumers.every((c) => asleep(c.pid!)), 20000);
    await q.put(1);
    await eventually(() => got[0] + got[1] === 1, 20000);
    await q.put(2);  // the other consumer, still asleep, must get it
    await Promise.all(consumers.map((c) => c.join(20000)));
    expect(consumers.map((c) => c.exitCode)).toEqual([0, 0]);
    expect([got[0], got[1]].sort()).toEqual([1, 2]);
    q.close();
  }, 60000);

  test("an async put does not block the event loop while another process holds the queue's mutex", async () => {
    const q = new mp.Queue<string>();
    const loopRan = new mp.Event();
    const held = new mp.Event();
    const saw = new mp.Value('i', -1);
    const holder = new mp.Process({
      target: (q: any, held: any, loopRan: any, saw: any) => {
        q.ring.lock.acquireSync();
        held.set();
        // Released once the parent's event loop has run while its put was pending, or after 5 s.
        saw.value = loopRan.waitSync(5000) ? 1 : 0;
        q.ring.lock.release();
      },
      args: [q, held, loopRan, saw],
    });
    holder.start();
    expect(await held.wait(20000)).toBe(true);
    const put = q.put('x');
    setImmediate(() => loopRan.set());
    await put;
    await holder.join(20000);
    expect(saw.value).toBe(1);
    expect(await q.get({ timeout: 1000 })).toBe('x');
    q.close();
  }, 60000);

  test('a thousand pending gets cost no thread each, leave fs alone, and each gets one item', async () => {
    const q = new mp.Queue<number>();
    const before = threads();
    const gets = Array.from({ length: 1000 }, () => q.get({ timeout: 30000 }));
    await new Promise((r) => setTimeout(r, 20));
    expect(threads() - before).toBeLessThan(8);
    const text = await fs.promises.readFile(__filename, 'utf8');
    expect(text.length).toBeGreaterThan(0);
    const producer = new mp.Process({
      target: async (q: any) => {
        for (let i = 0; i < 1000; i++) await q.put(i);
      },
      args: [q],
    });
    producer.start();
    const got = await Promise.all(gets);
    await producer.join(10000);
    expect(new Set(got).size).toBe(1000);
  }, 60000);
});

describe('JoinableQueue and SimpleQueue', () => {
  test('join() waits until a child has marked every item done; taskDone() once too often throws', async () => {
    const jq = new mp.JoinableQueue<number>();
    for (let i = 0; i < 5; i++) await jq.put(i);
    const done = new mp.Value('i', 0);
    const worker = new mp.Process({
      target: async (jq: any, done: any) => {
        for (let i = 0; i < 5; i++) {
          await jq.get();
          await new Promise((r) => setTimeout(r, 10));
          done.value += 1;
          jq.taskDone();
        }
      },
      args: [jq, done],
    });
    worker.start();
    await jq.join();
    expect(done.value).toBe(5);
    await worker.join(10000);
    expect(() => jq.taskDone()).toThrow(/too many times/);
    jq.joinSync();
    done.close();
  });

  test('SimpleQueue puts and gets', async () => {
    const sq = new mp.SimpleQueue<string>();
    await sq.put('a');
    expect(sq.empty()).toBe(false);
    expect(await sq.get()).toBe('a');
  });
});

describe('Pipe', () => {
  test('duplex: both ends send and receive across processes, bytes too', async () => {
    const [a, b] = mp.Pipe<any>();
    const p = new mp.Process({
      target: async (conn: any) => {
        for await (const x of conn) {
          if (x === 'stop') break;
          await conn.send(x * 2);
        }
        await conn.sendBytes(Buffer.from('abcdef'), 1, 3);
        conn.close();
      },
      args: [b],
    });
    p.start();
    for (let i = 1; i <= 3; i++) {
      await a.send(i);
      expect(await a.recv()).toBe(i * 2);
    }
    await a.send('stop');
    expect((await a.recvBytes()).toString()).toBe('bcd');
    await expect(a.recv()).rejects.toMatchObject({ name: 'EOFError' });
    await p.join(10000);
  });

  test('duplex: false gives [reader, writer]; poll; EOF when the writer\'s process dies', async () => {
    const [reader, writer] = mp.Pipe({ duplex: false });
    expect([reader.readable, reader.writable, writer.readable, writer.writable]).toEqual([true, false, false, true]);
    await expect(reader.send(1)).rejects.toThrow(/read-only/);
    expect(await reader.poll()).toBe(false);
    expect(reader.pollSync(10)).toBe(false);
    const p = new mp.Process({
      target: async (w: any) => {
        await w.send('hello');
        setInterval(() => {}, 1000);
      },
      args: [writer],
    });
    p.start();
    expect(await reader.poll(10000)).toBe(true);
    expect(reader.recvSync()).toBe('hello');
    p.kill();
    await p.join(10000);
    await expect(reader.recv()).rejects.toMatchObject({ name: 'EOFError' });
  });

  test('sending on an end that another process closed says the connection is closed; a Queue says Queue is closed', async () => {
    const [reader, writer] = mp.Pipe({ duplex: false });
    const p = new mp.Process({ target: (w: any) => w.close(), args: [writer] });
    p.start();
    await p.join(10000);
    expect(p.exitCode).toBe(0);
    // This object was not closed: its direction was, by the child's copy of the same end.
    expect(writer.closed).toBe(false);
    await expect(writer.send('x')).rejects.toThrow(new Error('the connection is closed'));
    await expect(writer.sendBytes(Buffer.from('x'))).rejects.toThrow(new Error('the connection is closed'));
    writer.close();
    await expect(writer.send('x')).rejects.toThrow(new Error('the connection is closed'));
    await expect(reader.recv()).rejects.toMatchObject({ name: 'EOFError' });
    const q = new mp.Queue();
    q.close();
    await expect(q.put(1)).rejects.toThrow(new Error('Queue is closed'));
    expect(() => q.putSync(1)).toThrow(new Error('Queue is closed'));
  });

  test('recvBytesInto reads bytes into one reused buffer; too short is BufferTooShort, not bytes a TypeError', async () => {
    const [reader, writer] = mp.Pipe({ duplex: false, capacity: 64 * 1024 });
    const p = new mp.Process({
      target: async (w: any) => {
        for (let i = 0; i < 100; i++) await w.sendBytes(Buffer.alloc(1000 + i, i));
        await w.sendBytes(Buffer.alloc(40 * 1024, 7));   // larger than a quarter of the ring: out of line
        await w.sendBytes(Buffer.from('too long for the room'));
        await w.send({ not: 'bytes' });
        w.close();
      },
      args: [writer],
    });
    p.start();
    const buf = Buffer.alloc(64 * 1024);
    const firstView = buf.buffer;
    for (let i = 0; i < 100; i++) {
      const n = i % 2 === 0 ? await reader.recvBytesInto(buf, 8) : reader.recvBytesIntoSync(buf, 8);
      expect(n).toBe(1000 + i);
      expect(buf[8]).toBe(i);
      expect(buf[8 + n - 1]).toBe(i);
    }
    expect(buf.buffer).toBe(firstView);
    expect(await reader.recvBytesInto(new Uint32Array(buf.buffer), 0)).toBe(40 * 1024);
    expect(buf[40 * 1024 - 1]).toBe(7);
    const short = await reader.recvBytesInto(buf.subarray(0, 4)).catch((e) => e);
    expect(short).toBeInstanceOf(mp.BufferTooShort);
    expect(short.bytes.toString()).toBe('too long for the room');
    await expect(reader.recvBytesInto(buf)).rejects.toThrow(/not bytes/);
    await expect(reader.recvBytesInto(buf)).rejects.toMatchObject({ name: 'EOFError' });
    await p.join(10000);
    await expect(reader.recvBytesInto('x' as any)).rejects.toThrow(TypeError);
    await expect(reader.recvBytesInto(buf, buf.length + 1)).rejects.toThrow(RangeError);
  });

  test('sendBytes takes any Uint8Array, whole or a part of it, and the reader gets just those bytes', async () => {
    const [reader, writer] = mp.Pipe({ duplex: false });
    // Over the 256 bytes copied under the ring's mutex: the native put and take.
    const big = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
    await writer.sendBytes(big);
    await writer.sendBytes(big, 1000, 500);
    await writer.sendBytes(new Uint8Array([1, 2, 3]));
    const whole = await reader.recvBytes();
    expect(Buffer.isBuffer(whole)).toBe(true);
    expect(whole.equals(Buffer.from(big))).toBe(true);
    expect(reader.recvBytesSync().equals(Buffer.from(big.subarray(1000, 1500)))).toBe(true);
    expect([...(await reader.recvBytes())]).toEqual([1, 2, 3]);
    // Once the send has resolved, the array is not held: changing it then changes nothing received.
    await writer.sendBytes(big);
    big.fill(0);
    expect((await reader.recvBytes())[1]).toBe(7);
  });

  test('sendBytes waiting for room sends the bytes asked for, even if the array lies or grows meanwhile', async () => {
    // A 16 KiB pipe filled by five 3000-byte messages (in the ring: a quarter of it or less), so
    // the sends after them wait for room, and the arrays change while they wait.
    const [reader, writer] = mp.Pipe({ duplex: false, capacity: 16384 });
    for (let i = 0; i < 5; i++) await writer.sendBytes(Buffer.alloc(3000, i));
    class Modest extends Uint8Array {
      override get length(): number {
        return 10;
      }
    }
    const modest = new Modest(3000).fill(5);
    const ab = new (ArrayBuffer as any)(3000, { maxByteLength: 1 << 20 }) as ArrayBuffer & { resize(n: number): void };
    const growing = new Uint8Array(ab).fill(6);
    const shrinking = new Uint8Array(3000).fill(7);
    Object.defineProperty(shrinking, 'length', { value: 3000, writable: true });
    let settled = 0;
    const sent = [writer.sendBytes(modest), writer.sendBytes(growing), writer.sendBytes(shrinking)].map((p) => p.then(() => settled++));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(0);  // all three wait for room
    // Past a quarter of the ring, and past all of it: sent as it is now, it could never fit.
    ab.resize(1 << 19);
    // Sent as it says now, 3000 bytes would be copied into a 100-byte frame.
    (shrinking as { length: number }).length = 100;
    for (let i = 0; i < 5; i++) expect(await reader.recvBytes()).toEqual(Buffer.alloc(3000, i));
    expect(await reader.recvBytes()).toEqual(Buffer.alloc(3000, 5));
    expect(await reader.recvBytes()).toEqual(Buffer.alloc(3000, 6));
    expect(await reader.recvBytes()).toEqual(Buffer.alloc(3000, 7));
    await Promise.all(sent);
    const moved = new Uint8Array(10);
    structuredClone(moved.buffer, { transfer: [moved.buffer] });
    await expect(writer.sendBytes(moved)).rejects.toThrow(/detached/);
    await writer.sendBytes(Buffer.from('still open'));
    expect((await reader.recvBytes()).toString()).toBe('still open');
    reader.close();
    writer.close();
  });

  test('bad input', async () => {
    expect(() => mp.Pipe({ duplex: 'yes' as any })).toThrow(TypeError);
    const [a] = mp.Pipe();
    await expect(a.sendBytes('x' as any)).rejects.toThrow(TypeError);
    await expect(a.sendBytes(Buffer.from('ab'), 5)).rejects.toThrow(RangeError);
    a.close();
    await expect(a.send(1)).rejects.toThrow(/closed/);
  });
});
