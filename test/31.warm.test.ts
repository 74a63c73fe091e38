// The 'warm' start method: spare children booted ahead, handed a target by start().
import * as fs from 'fs';
import * as os from 'os';

import * as mp from '../dist';
import { childrenOf, eventually, isAlive, runFixture } from './helpers';

afterEach(() => mp.setStartMethod('spawn'));

test('start methods: spawn by default, warm on request, bad input refused', () => {
  expect(mp.getAllStartMethods()).toEqual(['spawn', 'warm']);
  expect(mp.getStartMethod()).toBe('spawn');
  expect(() => mp.setStartMethod('fork' as any)).toThrow(TypeError);
  expect(() => mp.setStartMethod('warm', { spares: 0 })).toThrow(RangeError);
  expect(() => mp.setStartMethod('warm', { spares: 1.5 })).toThrow(TypeError);
  expect(mp.getStartMethod()).toBe('spawn');
  expect(() => new mp.Process({ startMethod: 'fork' as any })).toThrow(TypeError);
});

test('a warm child runs the target with shared objects, env and cpus, and is a real child', async () => {
  mp.setStartMethod('warm', { spares: 1 });
  await mp.sparesReady();
  const spare = childrenOf(process.pid).find((c) => c.comm !== 'nmp-tracker');
  expect(spare).toBeDefined();
  const v = new mp.Value('i', 1);
  const flags = new mp.Array('i', 4);
  const p = new mp.Process({
    target: (v: any, flags: any) => {
      v.value += 41;
      flags[0] = process.env.WARM_TEST === 'yes' ? 1 : 0;
      flags[1] = process.cwd() === process.env.EXPECT_CWD ? 1 : 0;
      flags[2] = /Cpus_allowed_list:\s+0\n/.test(require('fs').readFileSync('/proc/self/status', 'utf8')) ? 1 : 0;
      flags[3] = process.pid;
    },
    args: [v, flags],
    env: { ...process.env, WARM_TEST: 'yes', EXPECT_CWD: process.cwd() },
    cpus: [0],
  });
  p.start();
  // It was the spare that was booted ahead: the same pid.
  expect(p.pid).toBe(spare!.pid);
  await p.join(10000);
  expect(p.exitCode).toBe(0);
  expect(v.value).toBe(42);
  expect([...flags]).toEqual([1, 1, 1, p.pid]);
  // A replacement comes up once the child has exited.
  await mp.sparesReady();
  expect(await eventually(() => childrenOf(process.pid).some((c) => c.comm !== 'nmp-tracker' && c.pid !== p.pid), 20000)).toBe(true);
  v.close();
  flags.close();
});

test('a warm child reports errors and exit codes like a spawned one; terminate works', async () => {
  mp.setStartMethod('warm', { spares: 1 });
  await mp.sparesReady();
  const bad = new mp.Process({ target: () => { throw new Error('warm boom'); } });
  bad.start();
  await bad.join(10000);
  expect(bad.exitCode).toBe(1);
  await mp.sparesReady();
  const long = new mp.Process({ target: () => setInterval(() => {}, 1000) });
  long.start();
  long.terminate();
  await long.join(10000);
  expect(long.exitCode).toBe(-15);
});

test('an explicit cwd takes a fresh child, so a bad one still throws ENOENT at start()', async () => {
  mp.setStartMethod('warm', { spares: 1 });
  await mp.sparesReady();
  const p = new mp.Process({ target: () => 1, cwd: '/nonexistent-dir-of-nmp' });
  expect(() => p.start()).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'chdir' }));
  const ok = new mp.Process({ target: () => 1, cwd: fs.realpathSync(os.tmpdir()) });
  ok.start();
  await ok.join(10000);
  expect(ok.exitCode).toBe(0);
});

test("setStartMethod('spawn') lets the spares go; spares never keep their parent alive", async () => {
  mp.setStartMethod('warm', { spares: 2 });
  await mp.sparesReady();
  expect(childrenOf(process.pid).filter((c) => c.comm !== 'nmp-tracker')).toHaveLength(2);
  mp.setStartMethod('spawn');
  expect(await eventually(() => childrenOf(process.pid).filter((c) => c.comm !== 'nmp-tracker').length === 0)).toBe(true);
  const run = await runFixture('warm-idle.js');
  expect(run.code).toBe(0);
  const pids = run.stdout.trim().split(' ').slice(1).map(Number);
  expect(pids).toHaveLength(2);
  expect(await eventually(() => pids.every((pid) => !isAlive(pid)), 2000)).toBe(true);
});
