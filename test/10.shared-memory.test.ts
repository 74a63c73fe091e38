import * as fs from 'fs';

import * as mp from '../dist';
import { ourShmNames, runFixture } from './helpers';

describe('SharedMemory', () => {
  test('create, write, attach by name from this process, see the same bytes', () => {
    const shm = new mp.SharedMemory({ create: true, size: 4096 });
    try {
      expect(shm.name).not.toMatch(/^\//);
      expect(shm.size).toBe(4096);
      expect(shm.buf).toBeInstanceOf(Uint8Array);
      expect(shm.buf.length).toBe(4096);
      shm.buf.set([1, 2, 3], 100);
      const other = new mp.SharedMemory({ name: shm.name });
      expect(other.size).toBe(4096);
      expect([...other.buf.subarray(100, 103)]).toEqual([1, 2, 3]);
      other.buf[0] = 99;
      expect(shm.buf[0]).toBe(99);
      other.close();
    } finally {
      shm.close();
      shm.unlink();
    }
    expect(fs.existsSync(`/dev/shm/${shm.name}`)).toBe(false);
  });

  test('is created mode 0600 under an unguessable name', () => {
    const a = new mp.SharedMemory({ create: true, size: 10 });
    const b = new mp.SharedMemory({ create: true, size: 10 });
    try {
      expect(a.name).not.toBe(b.name);
      expect(a.name).toMatch(/^nmp_[0-9a-z]+_[0-9a-f]{16}$/);
      expect(fs.statSync(`/dev/shm/${a.name}`).mode & 0o777).toBe(0o600);
    } finally {
      for (const s of [a, b]) {
        s.close();
        s.unlink();
      }
    }
  });

  test('close() unmaps at once: buf is detached afterwards', () => {
    const shm = new mp.SharedMemory({ create: true, size: 64 });
    const buf = shm.buf;
    shm.close();
    expect(buf.length).toBe(0);
    expect(shm.buf.length).toBe(0);
    shm.unlink();
  });

  test('buf read for the first time after close() is a detached, empty view, not a TypeError', async () => {
    const shm = new mp.SharedMemory({ create: true, size: 64 });
    shm.close();
    const buf = shm.buf;
    expect(buf).toBeInstanceOf(Uint8Array);
    expect([buf.length, buf.byteLength, buf.buffer.byteLength]).toEqual([0, 0, 0]);
    buf[0] = 1;
    expect(buf[0]).toBeUndefined();
    expect(shm.buf).toBe(buf);
    shm.unlink();
    // A SharedMemory that came back through a queue stands on this process's one mapping of the
    // segment: closing the other object unmaps it under this one too, before its first read.
    const first = new mp.SharedMemory({ create: true, size: 64 });
    const q = new mp.Queue<mp.SharedMemory>();
    await q.put(first);
    const back = await q.get({ timeout: 5000 });
    expect(back.name).toBe(first.name);
    first.close();
    expect(back.buf.length).toBe(0);
    back.close();
    first.unlink();
  });

  test('a user-chosen name works and is refused twice with EEXIST', () => {
    const name = `nmptest_${process.pid}_named`;
    const shm = new mp.SharedMemory({ name, create: true, size: 100 });
    try {
      expect(shm.name).toBe(name);
      let err: any;
      try {
        new mp.SharedMemory({ name, create: true, size: 100 });
      } catch (e) {
        err = e;
      }
      expect(err?.name).toBe('Error');
      expect(err.code).toBe('EEXIST');
      expect(err.syscall).toBe('shm_open');
      expect(err.errno).toBeLessThan(0);
      expect(err.message).toMatch(/^shm_open: EEXIST/);
    } finally {
      shm.close();
      shm.unlink();
    }
  });

  test('attaching a missing name is a SystemError-like ENOENT', () => {
    expect(() => new mp.SharedMemory({ name: 'nmptest_does_not_exist' })).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'shm_open', path: 'nmptest_does_not_exist' }),
    );
  });

  test('bad input is refused before anything is created', () => {
    const before = ourShmNames();
    expect(() => new (mp.SharedMemory as any)()).toThrow(TypeError);
    expect(() => new mp.SharedMemory({ create: true, size: 0 })).toThrow(RangeError);
    expect(() => new mp.SharedMemory({ create: true, size: -1 })).toThrow(RangeError);
    expect(() => new mp.SharedMemory({ create: true, size: 1.5 })).toThrow(TypeError);
    expect(() => new mp.SharedMemory({ create: true, size: '10' as any })).toThrow(TypeError);
    expect(() => new mp.SharedMemory({ create: true, size: 10, name: 'a/b' })).toThrow(/invalid name/);
    expect(() => new mp.SharedMemory({ create: true, size: 10, name: '' })).toThrow(TypeError);
    expect(() => new mp.SharedMemory({} as any)).toThrow(/name is required/);
    expect(ourShmNames()).toEqual(before);
  });

  test('an absurd size fails with ENOSPC when created, not with SIGBUS later', () => {
    const before = ourShmNames();
    let err: any;
    try {
      new mp.SharedMemory({ create: true, size: 2 ** 50 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeDefined();
    expect(['ENOSPC', 'EFBIG', 'ENOMEM', 'EINVAL']).toContain(err.code);
    expect(ourShmNames()).toEqual(before);
  });

  test('an attacher that exits never unlinks', async () => {
    const shm = new mp.SharedMemory({ create: true, size: 128 });
    try {
      shm.buf[5] = 77;
      const run = await runFixture('attach-shm.js', [shm.name]);
      expect(run.stderr).toBe('');
      expect(run.stdout.trim()).toBe('77');
      expect(fs.existsSync(`/dev/shm/${shm.name}`)).toBe(true);
      expect(shm.buf[6]).toBe(78);
    } finally {
      shm.close();
      shm.unlink();
    }
  });

  test('track: false keeps the name after its creator exits, until unlink()', async () => {
    const run = await runFixture('create-untracked.js');
    const name = run.stdout.trim();
    expect(name).toMatch(/^nmpu_[0-9a-f]{16}$/);
    expect(fs.existsSync(`/dev/shm/${name}`)).toBe(true);
    const shm = new mp.SharedMemory({ name });
    expect(shm.buf[0]).toBe(42);
    shm.close();
    shm.unlink();
    expect(fs.existsSync(`/dev/shm/${name}`)).toBe(false);
  });
});
