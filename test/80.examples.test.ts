// Every file in examples/ runs as a user would run it (its own node process, from the repository's
// root) and prints what it says: exit code 0, nothing on stderr, the figures that matter. After
// each one, nothing of its process tree is left: no name in /dev/shm, no process.
import { execFile, spawn } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { eventually, ROOT } from './helpers';

const RUN_TIMEOUT = 60_000;

interface ExampleRun {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  lines: string[];
}

/** Names in /dev/shm made by the process tree rooted at `pid`. */
function treeNames(pid: number): string[] {
  const prefix = `nmp_${pid.toString(36)}_`;
  return fs.readdirSync('/dev/shm').filter((n) => n.startsWith(prefix));
}

/** Live processes whose environment carries `marker`: the example and everything it started. */
function processesMarked(marker: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'Z' || state === 'X') continue;
      if (fs.readFileSync(`/proc/${entry}/environ`, 'latin1').split('\0').includes(marker)) found.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/**
 * Runs `node ...args` from the repository's root, killed (SIGKILL, this pid only) after
 * RUN_TIMEOUT. Its environment carries a marker that every process of its tree inherits, so the
 * test can tell afterwards that none of them is left.
 */
async function runExample(...args: string[]): Promise<ExampleRun> {
  const marker = `NMP_EXAMPLE_RUN=${randomBytes(8).toString('hex')}`;
  const [key, value] = marker.split('=');
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, [key]: value },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.on('close', (c, s) => resolve([c, s]));
  });
  clearTimeout(timer);
  const pid = child.pid!;
  // The tree's tracker unlinks its names once every process of the tree has exited; the children
  // die with the example (PR_SET_PDEATHSIG). Both happen just after the example exits.
  await eventually(() => treeNames(pid).length === 0 && processesMarked(marker).length === 0, 5000);
  expect(treeNames(pid)).toEqual([]);
  expect(processesMarked(marker)).toEqual([]);
  return { pid, code, signal, stdout, stderr, lines: stdout.split('\n').filter((l) => l !== '') };
}

function expectClean(run: ExampleRun): void {
  expect({ code: run.code, signal: run.signal, stderr: run.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
}

const TEST_TIMEOUT = RUN_TIMEOUT + 15_000;

test('tutorial.js (npm start): every section, the thread and the process of section 1 included', async () => {
  const run = await runExample('examples/tutorial.js');
  expectClean(run);
  const out = run.stdout;
  for (const section of ['1. A thread and a process', '2. A process with arguments', '3. A Queue', '4. A Pool', '5. Shared memory', '6a. Without a lock', '6b. With a Lock']) {
    expect(out).toContain(`=== ${section}`);
  }
  // Section 1: the worker thread and the process run the same function and print the same line.
  expect(out.match(/^aaaaa 1 2$/gm)).toHaveLength(2);
  expect(out).toMatch(/^1 2\nProcess-2 \(pid \d+\) exited with code 0$/m);
  expect(out).toContain('249833583000 249833583000');
  expect(out.match(/^\[0, 1, 4, 9, 16, 25, 36, 49, 64, 81\]$/gm)).toHaveLength(4);
  expect(out).toContain('value1=42 value2=6.28 array=[10,20,30,40]');
  expect(out).toContain('a 2-D list is refused, as in Python: TypeError');
  // Without the lock the two read-add-writes may overlap and lose an addition, as in Python.
  const finals = [...out.matchAll(/^final value: (\d+) /gm)].map((m) => Number(m[1]));
  expect(finals).toHaveLength(2);
  expect(finals[0]).toBeLessThanOrEqual(25);
  expect(finals[1]).toBe(25);
  // With the lock, one process does all its additions before the other.
  expect(out.split('=== 6b.')[1]).toMatch(/\n(1\n2\n3\n4\n5\n9\n13\n17\n21\n25|4\n8\n12\n16\n20\n21\n22\n23\n24\n25)\nfinal value/);
}, TEST_TIMEOUT);

test("readme.mjs: the README's example, as ESM", async () => {
  const run = await runExample('examples/readme.mjs');
  expectClean(run);
  expect(run.lines).toEqual(['5000']);
}, TEST_TIMEOUT);

describe('pool-map (TypeScript)', () => {
  // Compiled as the examples' README says, with the repository's TypeScript, into examples/dist.
  beforeAll(async () => {
    const tsc = path.join(ROOT, 'node_modules', '.bin', 'tsc');
    const result = await new Promise<{ err: Error | null; out: string }>((resolve) => {
      execFile(tsc, ['-p', 'examples'], { cwd: ROOT, timeout: RUN_TIMEOUT }, (err, stdout, stderr) => resolve({ err, out: stdout + stderr }));
    });
    expect(result.out).toBe('');
    expect(result.err).toBeNull();
  }, TEST_TIMEOUT);

  test('a CPU-bound Pool.map over typed module tasks counts the primes below 2,000,000', async () => {
    expect(fs.existsSync(path.join(ROOT, 'examples', 'dist', 'pool-map', 'tasks.js'))).toBe(true);
    const run = await runExample('examples/dist/pool-map/main.js');
    expectClean(run);
    expect(run.lines).toEqual([
      '20 ranges, 20 counts back in order; first ranges: 9592, 8392, 8013',
      'primes below 2000000: 148933',
      'largest prime below 2000000: 1999993',
    ]);
  }, TEST_TIMEOUT);
});

test('pipeline.js: a JoinableQueue feeds three consumer processes; every result comes back once', async () => {
  const run = await runExample('examples/pipeline.js');
  expectClean(run);
  expect(run.lines).toEqual([
    '100 results from 3 consumers',
    'first squares: 1 4 9 16 25',
    'sum of squares 1..100: 338350',
    "consumers' exit codes: 0 0 0",
  ]);
}, TEST_TIMEOUT);

test('pipe-request-response.js: a server process answers over a Pipe and ends when the client closes', async () => {
  const run = await runExample('examples/pipe-request-response.js');
  expectClean(run);
  expect(run.lines).toEqual([
    'add(2, 3) -> 5',
    'add(0.5, 0.25) -> 0.75',
    "upper('pipe') -> PIPE",
    'divide(1, 0) -> error: unknown op divide',
    'server exited with code 0 after 4 requests',
  ]);
}, TEST_TIMEOUT);

test('shared-memory-by-name.js: a child makes a segment, the parent attaches by name after it exits', async () => {
  const run = await runExample('examples/shared-memory-by-name.js');
  expectClean(run);
  expect(run.lines).toEqual([
    'the child made a segment and exited with code 0',
    'attached 8000 bytes by name after the child exited',
    'sum of the 1000 numbers the child wrote: 500500',
    'after unlink() the name is gone from /dev/shm: true',
  ]);
}, TEST_TIMEOUT);

test('barrier-phases.js: three processes step together, phase by phase', async () => {
  const run = await runExample('examples/barrier-phases.js');
  expectClean(run);
  // Any cell computed from a row that was not complete would change these figures.
  expect(run.lines).toEqual([
    'phase 1: 100.0  33.3   0.0   0.0   0.0   0.0',
    'phase 2: 100.0  44.4  11.1   0.0   0.0   0.0',
    'phase 3: 100.0  51.9  18.5   3.7   0.0   0.0',
    'phase 4: 100.0  56.8  24.7   7.4   1.2   0.0',
    'phase 5: 100.0  60.5  29.6  11.1   2.9   0.4',
    'phase 6: 100.0  63.4  33.7  14.5   4.8   1.2',
    'phase 7: 100.0  65.7  37.2  17.7   6.9   2.4',
    'phase 8: 100.0  67.6  40.2  20.6   9.0   3.9',
    '3 workers finished 8 phases with exit codes 0 0 0',
  ]);
}, TEST_TIMEOUT);

test('crash-isolation.js: a crash and a hang cost one request each; the service survives', async () => {
  const run = await runExample('examples/crash-isolation.js');
  expectClean(run);
  expect(run.lines).toEqual([
    'request 1: parsed {"id":1}',
    'request 2: parsed [1,2,3]',
    'request 3: bad input (SyntaxError)',
    'request 4: the parser crashed (SIGKILL); its worker was replaced',
    'request 5: the parser hung; its worker was killed after 2 s',
    'request 6: parsed {"id":6}',
    'survived: {"after":"the crashes"} parsed by a pool of 2 live workers',
  ]);
}, TEST_TIMEOUT);

test('benchmark-harness.js: each case in fresh processes pinned to an allowed CPU, with resourceUsage()', async () => {
  const run = await runExample('examples/benchmark-harness.js');
  expectClean(run);
  const [head, ...rest] = run.lines;
  const allowed = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1];
  const lastAllowed = Number(allowed.split(/[,-]/).pop());
  expect(head).toBe(`${os.availableParallelism()} CPUs; each case runs 3 times, each time in a fresh process on CPU ${lastAllowed}`);
  const usage = /^  user \d+\.\d ms, system \d+\.\d ms, peak RSS \d+\.\d MiB \(medians of 3\)$/;
  const results: Record<string, string> = {
    'sum a loop:': '  result 89999995',
    'sort 300k numbers:': '  result 6551 .. 2147478417',
    'fill 64 MiB:': '  result 67108864 bytes, last 7',
  };
  expect(rest[0]).toBe('empty (Node start-up alone):');
  expect(rest[1]).toMatch(usage);
  let i = 2;
  for (const [name, result] of Object.entries(results)) {
    expect(rest.slice(i, i + 5)).toEqual([name, result, result, result, expect.stringMatching(usage)]);
    i += 5;
  }
  expect(rest).toHaveLength(i);
  // A 64 MiB buffer shows (most of it: some pages may be reused) in the peak RSS the kernel measured for that process.
  const rss = (line: string): number => Number(/peak RSS (\S+) MiB/.exec(line)![1]);
  expect(rss(rest[i - 1]) - rss(rest[1])).toBeGreaterThan(32);
}, TEST_TIMEOUT);
