// The lifetime rule (API.md §7) and no orphans (§2): whatever ends the creator, its names leave
// /dev/shm and its children die with it.
import * as fs from 'fs';

import { childrenOf, eventually, isAlive, runFixture } from './helpers';

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
