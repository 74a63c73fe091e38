// The lifetime rule (API.md §7) and no orphans (§2): whatever ends the creator, its names leave
// /dev/shm and its children die with it.
import * as fs from 'fs';

import * as mp from '../dist';
import { childrenOf, eventually, isAlive, ROOT, runFixture } from './helpers';

interface Seen {
  name: string;
  childPid: number;
  childName: string;
}

async function endCreator(mode: 'exit' | 'throw' | NodeJS.Signals): Promise<{ seen: Seen; code: number | null; signal: string | null }> {
  let seen: Seen | undefined;
  const run = await runFixture('lifetime.js', [mode === 'exit' || mode === 'throw' ? mode : 'wait'], (line, child) => {
    const m = /^ready (\S+) (\d+) (\S+)$/.exec(line);
    if (m === null) return;
    seen = { name: m[1], childPid: Number(m[2]), childName: m[3] };
    expect(fs.existsSync(`/dev/shm/${seen.name}`)).toBe(true);
    expect(fs.existsSync(`/dev/shm/${seen.childName}`)).toBe(true);
    if (mode !== 'exit' && mode !== 'throw') child.kill(mode);
  });
  if (seen === undefined) throw new Error(`the fixture never got ready: ${run.stderr}`);
  return { seen, code: run.code, signal: run.signal };
}

describe.each(['exit', 'throw', 'SIGINT', 'SIGTERM', 'SIGKILL'] as const)('when the creator ends by %s', (mode) => {
  test('its names and its child\'s names leave /dev/shm, and the child dies', async () => {
    const { seen, code, signal } = await endCreator(mode);
    if (mode === 'exit') expect(code).toBe(0);
    if (mode === 'throw') expect(code).toBe(1);
    if (mode.startsWith('SIG')) expect(signal).toBe(mode);
    expect(await eventually(() => !isAlive(seen.childPid), 1000)).toBe(true);
    expect(await eventually(() => !fs.existsSync(`/dev/shm/${seen.name}`) && !fs.existsSync(`/dev/shm/${seen.childName}`), 1000)).toBe(true);
  });
});

test('names left by a creator whose tracker was killed too are swept by the next process that tracks', async () => {
  let seen: Seen | undefined;
  await runFixture('lifetime.js', ['wait'], (line, child) => {
    const m = /^ready (\S+) (\d+) (\S+)$/.exec(line);
    if (m === null) return;
    seen = { name: m[1], childPid: Number(m[2]), childName: m[3] };
    const tracker = childrenOf(child.pid!).find((c) => c.comm === 'nmp-tracker');
    expect(tracker).toBeDefined();
    process.kill(tracker!.pid, 'SIGKILL');
    child.kill('SIGKILL');
  });
  expect(seen).toBeDefined();
  expect(await eventually(() => !isAlive(seen!.childPid), 1000)).toBe(true);
  // Nobody was left to unlink them...
  expect(fs.existsSync(`/dev/shm/${seen!.name}`)).toBe(true);
  // ...until another process starts tracking and sweeps the names of dead creators.
  const next = await runFixture('lifetime.js', ['exit']);
  expect(next.code).toBe(0);
  expect(fs.existsSync(`/dev/shm/${seen!.name}`)).toBe(false);
  expect(fs.existsSync(`/dev/shm/${seen!.childName}`)).toBe(false);
});

describe('a name made by a child lives as long as its tree', () => {
  test.each(['exit', 'kill'])('it is attachable after the child exits, and gone once the root ends (%s)', async (mode) => {
    const run = await runFixture('tree-names.js', [mode]);
    const m = /^(nmp_\S+) 42 0$/.exec(run.stdout.trim());
    expect(m).not.toBeNull();
    if (mode === 'kill') expect(run.signal).toBe('SIGKILL');
    else expect(run.code).toBe(0);
    expect(await eventually(() => !fs.existsSync(`/dev/shm/${m![1]}`), 2000)).toBe(true);
  });

  test("within the test process: a child's SharedMemory outlives the child, even a SIGKILLed one, until unlink()", async () => {
    const q = new mp.Queue<string>();
    const child = new mp.Process({
      target: (q: any, root: string) => {
        const m = require(root);
        const shm = new m.SharedMemory({ create: true, size: 64 });
        shm.buf[3] = 7;
        q.putSync(shm.name);
        process.kill(process.pid, 'SIGKILL');
      },
      args: [q, ROOT],
    });
    child.start();
    await child.join(10000);
    expect(child.exitCode).toBe(-9);
    const name = await q.get({ timeout: 5000 });
    const shm = new mp.SharedMemory({ name });
    expect(shm.buf[3]).toBe(7);
    shm.close();
    shm.unlink();
    expect(fs.existsSync(`/dev/shm/${name}`)).toBe(false);
  });
});
