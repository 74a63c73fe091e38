import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import * as mp from '../dist';
import { FIXTURES, ourShmNames } from './helpers';

const INT_CODES: Array<[string, number, number]> = [
  ['b', -128, 127], ['B', 0, 255], ['h', -32768, 32767], ['H', 0, 65535],
  ['i', -(2 ** 31), 2 ** 31 - 1], ['I', 0, 2 ** 32 - 1],
];

describe('Value', () => {
  test.each(INT_CODES)("'%s' holds its full range and refuses one past it", (code, min, max) => {
    const v = new mp.Value(code as mp.Typecode, max);
    expect(v.value).toBe(max);
    v.value = min;
    expect(v.value).toBe(min);
    expect(() => (v.value = max + 1)).toThrow(RangeError);
    expect(() => (v.value = min - 1)).toThrow(RangeError);
    expect(() => (v.value = 1.5)).toThrow(TypeError);
    expect(v.value).toBe(min);
    v.close();
  });

  test.each(['l', 'L', 'q', 'Q', 'int64', 'uint64'])("'%s' is 64-bit and reads as a bigint", (code) => {
    const v = new mp.Value(code as mp.Typecode, 5n);
    expect(v.value).toBe(5n);
    v.value = (v.value as bigint) + 2n ** 40n;
    expect(v.value).toBe(5n + 2n ** 40n);
    v.value = 7 as any;  // a safe integer number is accepted
    expect(v.value).toBe(7n);
    expect(() => (v.value = 2n ** 64n)).toThrow(RangeError);
    v.close();
  });

  test("'f' and 'd' are floats; 'd' defaults to 0", () => {
    const d = new mp.Value('d', 3.14);
    expect(d.value).toBe(3.14);
    const f = new mp.Value('f', 0.5);
    expect(f.value).toBe(0.5);
    expect(() => (f.value = 1e39)).toThrow(RangeError);
    expect(() => (d.value = '1' as any)).toThrow(TypeError);
    expect(new mp.Value('d').value).toBe(0);
    for (const v of [d, f]) v.close();
  });

  test("'c' and 'u' hold one character", () => {
    const c = new mp.Value('c', 'a');
    expect(c.value).toBe('a');
    c.value = 'z';
    expect(c.value).toBe('z');
    expect(() => (c.value = 'ab')).toThrow(TypeError);
    expect(() => (c.value = '€')).toThrow(RangeError);
    const u = new mp.Value('u', '€');
    expect(u.value).toBe('€');
    c.close();
    u.close();
  });

  test.each([['c', 'x'], ['u', '€'], ['i', 5], ['d', 2.5], ['q', 5n]])("a closed Value('%s') reads undefined and ignores writes", (code, value) => {
    const v = new mp.Value(code as mp.Typecode, value as never);
    v.close();
    // 'c' and 'u' used to throw RangeError: Invalid code point NaN.
    expect(v.value).toBeUndefined();
    v.value = value as never;
    expect(v.value).toBeUndefined();
    expect(String(v)).toBe(`<Value('${code}', undefined)>`);
  });

  test('names such as int32 and float64 are accepted', () => {
    const v = new mp.Value('int32', 1);
    expect(v.typecode).toBe('i');
    const d = new mp.Value('float64', 1.5);
    expect(d.typecode).toBe('d');
    v.close();
    d.close();
  });

  test('lock: true by default gives an RLock; lock: false and RawValue have none; a given Lock is used', () => {
    const v = new mp.Value('i', 0);
    expect(v.getLock()).toBeInstanceOf(mp.RLock);
    const raw = new mp.RawValue('i', 0);
    expect(() => raw.getLock()).toThrow(/lock: false/);
    const unlocked = new mp.Value('i', 0, { lock: false });
    expect(() => unlocked.getLock()).toThrow(TypeError);
    const lock = new mp.Lock();
    const withLock = new mp.Value('i', 0, { lock });
    expect(withLock.getLock()).toBe(lock);
    for (const x of [v, raw, unlocked, withLock, lock]) x.close();
  });

  test('bad input is refused before anything is allocated', () => {
    expect(() => new mp.Value('x' as any, 0)).toThrow(/unknown typecode "x"/);
    expect(() => new mp.Value('i', 1.5)).toThrow(TypeError);
    expect(() => new mp.Value('i', 2 ** 31)).toThrow(RangeError);
    expect(() => new mp.Value('i', 0, { lock: 'yes' as any })).toThrow(TypeError);
    expect(() => (mp.Value as any)('i', 0)).toThrow(TypeError);
  });
});

describe('Array', () => {
  test('IS a typed array of its typecode over shared memory', () => {
    const a = new mp.Array('i', [1, 2, 3, 4]);
    expect(a).toBeInstanceOf(Int32Array);
    expect(a).toBeInstanceOf(mp.Array);
    expect(a.length).toBe(4);
    expect(a[2]).toBe(3);
    expect([...a]).toEqual([1, 2, 3, 4]);
    let sum = 0;
    for (const x of a) sum += x;
    expect(sum).toBe(10);
    expect(a.typecode).toBe('i');
    a.close();
  });

  test('subarray() is a zero-copy view of the same memory', () => {
    const a = new mp.Array('d', 8);
    const tail = a.subarray(4);
    expect(tail).toBeInstanceOf(Float64Array);
    expect(tail.buffer).toBe(a.buffer);
    tail[0] = 2.5;
    expect(a[4]).toBe(2.5);
    a.close();
  });

  test('a size gives a zero-filled array; 64-bit typecodes give BigInt64Array', () => {
    const z = new mp.Array('d', 1000);
    expect(z.length).toBe(1000);
    expect(z.every((x) => x === 0)).toBe(true);
    const q = new mp.Array('q', [1n, 2n]);
    expect(q).toBeInstanceOf(BigInt64Array);
    expect(q[1]).toBe(2n);
    const e = new mp.Array('i', 0);
    expect(e.length).toBe(0);
    for (const x of [z, q, e]) x.close();
  });

  test('getLock() is an RLock unless lock: false; RawArray has none', () => {
    const a = new mp.Array('i', 3);
    expect(a.getLock()).toBeInstanceOf(mp.RLock);
    a.getLock().withLockSync(() => (a[0] = 1));
    const raw = new mp.RawArray('d', 3);
    expect(() => raw.getLock()).toThrow(TypeError);
    a.close();
    raw.close();
  });

  test('close() detaches the view at once', () => {
    const a = new mp.Array('i', [1, 2, 3]);
    a.close();
    expect(a.length).toBe(0);
  });

  test("'c' arrays take a string", () => {
    const c = new mp.Array('c', 'hello');
    expect(Buffer.from(c).toString('latin1')).toBe('hello');
    c.close();
  });

  test('a nested list is refused with TypeError, as in Python; so are bad elements and sizes', () => {
    const before = ourShmNames();
    expect(() => new mp.Array('i', [[1, 2], [3, 4]] as any)).toThrow(TypeError);
    expect(() => new mp.Array('i', [[1, 2], [3, 4]] as any)).toThrow(/one-dimensional/);
    expect(() => new mp.Array('i', [1, 2.5])).toThrow(/element \[1\]/);
    expect(() => new mp.Array('B', [1, 256])).toThrow(RangeError);
    expect(() => new mp.Array('i', -1)).toThrow(RangeError);
    expect(() => new mp.Array('d', 1e18)).toThrow(RangeError);
    expect(() => new mp.Array('i', 1.5)).toThrow(TypeError);
    expect(() => new mp.Array('i', {} as any)).toThrow(TypeError);
    expect(() => new mp.Array('z' as any, 3)).toThrow(TypeError);
    expect(() => new mp.Array('i', 'abc' as any)).toThrow(TypeError);
    expect(ourShmNames()).toEqual(before);
  });
});

describe('small objects come from shared arenas', () => {
  const fds = (): number => fs.readdirSync('/proc/self/fd').length;
  const sharedMappings = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:node-multiprocessing')).length;

  test('200,000 live Values and Locks take a few dozen descriptors and mappings, and each keeps its own memory', () => {
    const fdsBefore = fds();
    const mapsBefore = sharedMappings();
    const values: any[] = [];
    const locks: any[] = [];
    for (let i = 0; i < 100_000; i++) {
      values.push(new mp.Value('i', i));
      locks.push(new mp.Lock());
    }
    expect(fds() - fdsBefore).toBeLessThan(60);
    expect(sharedMappings() - mapsBefore).toBeLessThan(60);
    expect(values[99_999].value).toBe(99_999);
    values[5].value = -1;
    expect(values[4].value).toBe(4);
    expect(values[6].value).toBe(6);
    expect(locks[7].acquireSync({ blocking: false })).toBe(true);
    expect(locks[8].acquireSync({ blocking: false })).toBe(true);
    expect(locks[7].acquireSync({ blocking: false })).toBe(false);
    locks[7].release();
    locks[8].release();
    for (const v of values) v.close();
    for (const l of locks) l.close();
  });

  test('100,000 live small Arrays do too; each is its own typed array, detached alone when closed', async () => {
    const fdsBefore = fds();
    const arrays: any[] = [];
    for (let i = 0; i < 100_000; i++) arrays.push(new mp.Array('i', [i, i + 1, i + 2]));
    const big = new mp.Array('d', 200);
    expect(fds() - fdsBefore).toBeLessThan(60);
    expect([...arrays[77_777]]).toEqual([77_777, 77_778, 77_779]);
    arrays[10].close();
    expect(arrays[10].length).toBe(0);
    expect([...arrays[9]]).toEqual([9, 10, 11]);
    expect([...arrays[11]]).toEqual([11, 12, 13]);
    // A child writes into a small Array and into a 1,600-byte one (too large for a block: a segment of its own).
    const p = new mp.Process({ target: (a: any, b: any) => { a[1] = -5; b[199] = 2.5; }, args: [arrays[42], big] });
    p.start();
    await p.join(10000);
    expect([...arrays[42]]).toEqual([42, -5, 44]);
    expect(big[199]).toBe(2.5);
    for (const a of arrays) a.close();
    big.close();
  });

  test('a closed object gives its block back: the next one reuses it, and the closed one is dead', () => {
    const a = new mp.Value('d', 1.5);
    a.close();
    expect(a.value).toBeUndefined();
    const b = new mp.Value('d');
    expect(b.value).toBe(0);
    b.value = 2.5;
    expect(a.value).toBeUndefined();
    const lock = new mp.Lock();
    lock.close();
    expect(() => lock.acquireSync()).toThrow();
    b.close();
  });

  test('a block stays taken while anything reaches it: a subarray of a collected Array, a collected Value\'s lock', async () => {
    const run = spawnSync(process.execPath, ['--expose-gc', path.join(FIXTURES, 'arena-gc.js')], { encoding: 'utf8', timeout: 20000 });
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('ok');
  });

  test('a Value\'s own lock dies with it: closed, it cannot be used or sent', () => {
    const v = new mp.Value('i', 1);
    const lock = v.getLock();
    v.close();
    expect(() => lock.acquireSync()).toThrow(new Error('RLock is closed'));
    expect(() => new mp.Queue().putSync(lock)).toThrow(/closed/);
  });

  test('Values dropped without close() in a loop never exhaust descriptors', () => {
    const fdsBefore = fds();
    for (let i = 0; i < 200_000; i++) new mp.Value('i', i);
    expect(fds() - fdsBefore).toBeLessThan(60);
  });
});
