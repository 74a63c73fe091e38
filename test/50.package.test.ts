// The package as users meet it: ESM and CommonJS entry points, types, the README's example, and
// the walkthrough behind `npm start`.
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { ROOT } from './helpers';

function node(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, timeout: 30000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('the README example runs as ESM (`import * as mp`) and prints 5000', async () => {
  const run = await node(['examples/readme.mjs']);
  expect(run.stderr).toBe('');
  expect(run.stdout.trim()).toBe('5000');
});

test('require() and import() give the same API, with types', async () => {
  const run = await node(['-e', `
    const cjs = require('node-multiprocessing');
    import('node-multiprocessing').then((esm) => {
      const names = ['Process', 'Value', 'Array', 'RawValue', 'RawArray', 'SharedMemory', 'Lock', 'RLock', 'Semaphore',
        'BoundedSemaphore', 'Condition', 'Event', 'Barrier', 'OwnerDiedError', 'BrokenBarrierError', 'TimeoutError',
        'currentProcess', 'parentProcess', 'activeChildren', 'cpuCount', 'task', 'tasks'];
      console.log(names.every((n) => typeof cjs[n] === 'function' && esm[n] === cjs[n]));
    });`]);
  expect(run.stdout.trim()).toBe('true');
  expect(fs.existsSync(path.join(ROOT, 'dist', 'index.d.ts'))).toBe(true);
});

test('npm start: the walkthrough, from a thread and a process to a pool and a Value with a Lock', async () => {
  const run = await node(['examples/tutorial.js']);
  expect(run.code).toBe(0);
  // Section 1: the thread and the process print the same line; section 2: the child prints `1 2`.
  expect(run.stdout.match(/^aaaaa 1 2$/gm)).toHaveLength(2);
  expect(run.stdout).toMatch(/===\n1 2\nProcess-\d+ \(pid \d+\) exited with code 0/);
  expect(run.stdout).toContain('249833583000 249833583000');
  // Section 4, for mp.Pool() and mp.Pool({ processes: 3 }): map, applyAsync(job, [2]).get(), applyAsync in a loop.
  const squares = '[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]';
  expect(run.stdout).toContain(`mp.Pool({ processes: 3 }):\n${squares}\n4\n${squares}\n`);
  expect(run.stdout.split(`${squares}\n4\n${squares}\n`)).toHaveLength(3);
  expect(run.stdout).toContain('value1=42 value2=6.28 array=[10,20,30,40]');
  // With the lock, one process's five additions come before the other's: the sum is exact.
  const finals = [...run.stdout.matchAll(/final value: (\d+)/g)].map((m) => Number(m[1]));
  expect(finals).toHaveLength(2);
  expect(finals[1]).toBe(25);
  expect(finals[0]).toBeLessThanOrEqual(25);
});
