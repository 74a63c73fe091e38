// Start methods. 'spawn' (the default) starts a fresh Node for every Process.start(), as Python's
// spawn does. 'warm' keeps spare children booted ahead of time, each blocked reading its start
// message, so start() hands the target to a process that is already up.
//
// 'warm' is NOT a fork: a warm child is a fresh Node started earlier, sharing nothing with the
// parent but what is passed to it (Python 3.14 changing its default method silently hurt users
// who relied on fork's inherited state; nothing here is inherited that way).
import { describe } from './describe';
import { inheritableExecArgv, Launched, launch, offExit, onExit } from './launch';
import { native } from './native';

export type StartMethod = 'spawn' | 'warm';

export interface WarmOptions {
  /** How many spares to keep ready (default 1). */
  spares?: number;
}

interface Spare extends Launched {
  ready: boolean;
  readyPromise: Promise<void>;
  execArgv: string[];
}

let method: StartMethod = 'spawn';
let wanted = 0;
const spares: Spare[] = [];
let exitHookInstalled = false;

export function getAllStartMethods(): StartMethod[] {
  return ['spawn', 'warm'];
}

export function getStartMethod(): StartMethod {
  return method;
}

/** `mp.setStartMethod('warm', { spares: 2 })`; 'spawn' lets the spares go. */
export function setStartMethod(m: StartMethod, options: WarmOptions = {}): void {
  if (m !== 'spawn' && m !== 'warm') throw new TypeError(`setStartMethod(): unknown start method ${describe(m)}; use 'spawn' or 'warm'`);
  if (typeof options !== 'object' || options === null) throw new TypeError(`setStartMethod(): options must be an object, got ${describe(options)}`);
  const n = options.spares ?? 1;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw new TypeError(`setStartMethod(): spares must be an integer, got ${describe(n)}`);
  if (n < 1 || n > 64) throw new RangeError(`setStartMethod(): spares must be between 1 and 64, got ${n}`);
  method = m;
  wanted = m === 'warm' ? n : 0;
  while (spares.length > wanted) retire(spares.pop()!);
  fill();
}

/** Resolves once every spare that setStartMethod('warm') asked for is up. */
export async function sparesReady(): Promise<void> {
  // While someone waits for them, the spares' channels keep the event loop alive.
  const booting = spares.filter((s) => !s.ready);
  for (const s of booting) s.channel.ref();
  try {
    await Promise.all(booting.map((s) => s.readyPromise));
  } finally {
    for (const s of booting) s.channel.unref();
  }
}

function retire(spare: Spare): void {
  offExit(spare.pidfd);
  try {
    process.kill(spare.pid, 'SIGKILL');
  } catch {
    // gone already
  }
  native.waitExit(spare.pidfd, 1000);
  native.tryReap(spare.pid);
  native.closeFd(spare.pidfd);
  spare.channel.close();
}

function startSpare(): void {
  let markReady!: () => void;
  const readyPromise = new Promise<void>((resolve) => (markReady = resolve));
  const execArgv = inheritableExecArgv(process.execArgv);
  const launched = launch({ env: process.env, execArgv, segments: [], label: 'spare', spare: true }, (message) => {
    if (message?.type === 'ready') {
      spare.ready = true;
      markReady();
    }
  });
  const spare: Spare = { ...launched, ready: false, readyPromise, execArgv };
  spares.push(spare);
  // A spare never keeps the event loop alive; if it dies unclaimed, it is simply replaced.
  onExit(spare.pidfd, () => {
    const i = spares.indexOf(spare);
    if (i >= 0) spares.splice(i, 1);
    native.tryReap(spare.pid);
    native.closeFd(spare.pidfd);
    spare.channel.close();
    markReady();
  }, false);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const s of spares) {
        try {
          process.kill(s.pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    });
  }
}

function fill(): void {
  while (spares.length < wanted) startSpare();
}

/**
 * A spare for a child that would be started with `execArgv`, or undefined. A ready one first;
 * the caller owns it from here (its exit handler is the caller's to replace).
 */
export function takeSpare(execArgv: string[]): Launched | undefined {
  const fits = (s: Spare): boolean => s.execArgv.length === execArgv.length && s.execArgv.every((a, i) => a === execArgv[i]);
  const i = spares.findIndex((s) => s.ready && fits(s));
  const j = i >= 0 ? i : spares.findIndex(fits);
  if (j < 0) return undefined;
  const [spare] = spares.splice(j, 1);
  // The replacement boots when the child we hand out has exited (a boot takes a core for ~40 ms:
  // beside a running child it made start+join 2-3x slower), or after REFILL_MS at the latest.
  refillTimer ??= setTimeout(refill, REFILL_MS).unref();
  return spare;
}

/** Process calls this when a child that came from a spare has exited. */
export function spareChildExited(): void {
  refill();
}

const REFILL_MS = 100;
let refillTimer: NodeJS.Timeout | undefined;

function refill(): void {
  if (refillTimer !== undefined) clearTimeout(refillTimer);
  refillTimer = undefined;
  fill();
}
