// Shared helpers: real processes, bounded waits, and what /dev/shm and /proc say.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..');

/** A list for the pools a test file makes: each is terminated and joined after every test. */
export function poolsEndedAfterEach(): Array<{ terminate(): void; join(): Promise<void> }> {
  const pools: Array<{ terminate(): void; join(): Promise<void> }> = [];
  afterEach(async () => {
    for (const p of pools.splice(0)) {
      p.terminate();
      await p.join();
    }
  });
  return pools;
}
export const FIXTURES = path.join(__dirname, 'fixtures');

/**
 * Names in /dev/shm that this test process may have made: its tree's tracked names (they carry
 * the root's pid, this process's) and untracked ones. Tracked names of other trees (the other jest
 * worker, a fixture) are theirs, and live as long as their tree does.
 */
export function ourShmNames(): string[] {
  const tree = `nmp_${process.pid.toString(36)}_`;
  return fs.readdirSync('/dev/shm').filter((n) => n.startsWith(tree) || n.startsWith('nmpu_') || n.startsWith('nmptest_'));
}

/** 0, 1, 2 … for ever, counting how many were read and whether the reader closed it. */
export function endlessInput(): { items: Generator<number>; read: number; finished: boolean } {
  const counts = { read: 0, finished: false };
  function* items(): Generator<number> {
    try {
      for (let i = 0; ; i++) {
        counts.read++;
        yield i;
      }
    } finally {
      counts.finished = true;
    }
  }
  return Object.assign(counts, { items: items() });
}

/** Live (non-zombie) children of `pid`, from /proc. */
export function childrenOf(pid: number): Array<{ pid: number; comm: string }> {
  const out: Array<{ pid: number; comm: string }> = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const close = stat.lastIndexOf(')');
    const fields = stat.slice(close + 2).split(' ');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    if (Number(fields[1]) === pid && fields[0] !== 'Z' && fields[0] !== 'X') out.push({ pid: Number(entry), comm });
  }
  return out;
}

export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Polls `check` every 10 ms until it is true or `ms` pass; returns its last answer. */
export async function eventually(check: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a fixture script in its own node process (so it can be killed like a user's program).
 * `onLine` sees its stdout line by line and may kill it. Bounded by `timeoutMs`.
 */
export function runFixture(
  file: string,
  args: string[] = [],
  onLine?: (line: string, child: ReturnType<typeof spawn>) => void,
  timeoutMs = 20000,
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(FIXTURES, file), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pendingLine = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      pendingLine += d;
      let nl: number;
      while ((nl = pendingLine.indexOf('\n')) >= 0) {
        const line = pendingLine.slice(0, nl);
        pendingLine = pendingLine.slice(nl + 1);
        onLine?.(line, child);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
