// The one loader of the addon, and the types of everything it exports. No other module touches
// the raw binding's shape without going through these types.
import * as path from 'path';

export interface SpawnOptions {
  file: string;
  argv: string[];
  env: string[];
  cwd?: string;
  cpus?: number[];
  /** Our fds to hand on: the i-th arrives in the child as fd 3 + i. */
  passFds: number[];
}

export interface ReapResult {
  exitCode: number;
  userCPUTime: number;
  systemCPUTime: number;
  maxRSS: number;
}

/** futexWait / futexWaitAsync results. */
export const enum WaitResult {
  Woken = 0,
  TimedOut = 1,
  NotEqual = 2,
  Fault = 3,
  /** The word changed while the event loop polled it, before any sleep (async waits only). */
  Polled = 4,
  /** A flag on Woken, NotEqual or Polled: the wait's claim was made (async waits only). */
  Claimed = 8,
}

/** What futex.h's Claim does once the word has moved (see WaitClaim in wait.ts). */
export const enum ClaimKind {
  /** CAS the word from 0 to `value`, then store `markValue` at the mark. */
  Take = 1,
  /** The word holds `value`: add `markValue` to the mark. */
  Seen = 2,
  /** The word, a count above 0, made one lower; then as Seen. */
  Count = 3,
  /**
   * The buffer is a message ring (ring.ts) and the word its NOT_EMPTY: take the oldest message,
   * if its value can be made natively (not v8-serialized, not out of line), and make it; `value`
   * is the taker's lock owner id and `markValue` its start time (the mark is not used).
   */
  RingGet = 4,
}

export interface Binding {
  // shm.h
  createAnonymous(size: number): number;
  createNamed(name: string, size: number): number;
  openNamed(name: string): number;
  openFromProcess(pid: number, fd: number, dev: number, ino: number): number;
  checkOwnFd(fd: number, dev: number, ino: number): number;
  identify(fd: number): [dev: number, ino: number, size: number];
  map(fd: number, size: number, populate?: boolean): ArrayBuffer;
  unmap(buffer: ArrayBuffer): void;
  /** An ArrayBuffer over part of a mapping (no ownership): detachable alone. */
  subView(buffer: ArrayBuffer, byteOffset: number, length: number): ArrayBuffer;
  detachView(view: ArrayBuffer): void;
  closeFd(fd: number): void;
  unlink(name: string): void;
  // futex.h, waiter.h
  futexWait(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number | undefined): WaitResult;
  futexWake(buffer: ArrayBuffer, byteOffset: number, count: number): number;
  /**
   * Returns the wait's id (for futexCancel); `done` is called with its result from the event loop.
   * pollMs > 0: poll the word between event-loop turns that long before sleeping. A claim is made,
   * when the word has moved, right before `done` is called, with the claim's value after the
   * result (true; a RingGet's message); its mark is a word of the same buffer. One made while
   * polling calls `resolve(value)` instead, where given, and sets the back-off in `budgetState`
   * ([skip, back-off], SpinBudget's) to 1: a hit.
   */
  futexWaitAsync(
    buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number | undefined, pollMs: number,
    done: (result: WaitResult, value?: unknown) => void,
    claimKind?: ClaimKind, claimValue?: number, markByteOffset?: number, markValue?: number,
    resolve?: (value: unknown) => void, budgetState?: Int32Array,
  ): number;
  futexCancel(id: number): void;
  /** Exited (or a zombie); given the start time its owner recorded (startTimeOf), also a reused pid. */
  processGone(pid: number, start?: number): boolean;
  // ring.h: the uncontended put and take of ring.ts; a status below zero means "take the slow path".
  /** The payload of a number (kind 1) is the number; of any other kind, its bytes. */
  ringTryPut(segment: ArrayBuffer, payload: Uint8Array | number, kind: number, counted: boolean, lockId: number, start: number, pid: number): number;
  /** On 0, `out` holds [position, length, kind, number]; a number's frame is already finished. */
  ringTryClaim(segment: ArrayBuffer, lockId: number, start: number, pid: number, out: Float64Array): number;
  ringTake(segment: ArrayBuffer, position: number, dest: Uint8Array, destOffset: number, length: number, pid: number): void;
  /** ringTake into a new Buffer of `length` bytes. */
  ringTakeCopy(segment: ArrayBuffer, position: number, length: number, pid: number): Buffer;
  /** Spins up to `microseconds` until a frame is ready or the ring closes: whether one is ready. */
  ringSpinUntilReady(segment: ArrayBuffer, microseconds: number): boolean;
  /** Spins up to `microseconds` while the oldest frame is being written: whether it is ready now. */
  ringSpinWhileBusy(segment: ArrayBuffer, microseconds: number): boolean;
  /** Spins up to `microseconds` while header word `word` holds `seen` and the ring is open: whether it changed. */
  ringSpinWhile(segment: ArrayBuffer, word: number, seen: number, microseconds: number): boolean;
  // spawn.h, tracker.h
  spawn(options: SpawnOptions): { pid: number; pidfd: number };
  tryReap(pid: number): ReapResult | null;
  setAffinity(pid: number, cpus: number[]): void;
  waitExit(pidfd: number, timeoutMs: number): boolean;
  setExitCallback(dispatch: (pidfd: number) => void): void;
  watchExit(pidfd: number, keepAlive: boolean): void;
  unwatchExit(pidfd: number): void;
  startTracker(): { fd: number; pid: number };
  trackerDeposit(sock: number, dev: number, ino: number, fd: number): void;
  /** Whether fd is a SOCK_SEQPACKET Unix socket (our tracker's kind); sets close-on-exec on it if so. */
  isTrackerSocket(fd: number): boolean;
  /** A new fd for (dev, ino) if wantFd and the tracker holds one, else -1. */
  trackerWithdraw(sock: number, dev: number, ino: number, wantFd: boolean): number;
  socketPair(): [number, number];
}

/** The package root: dist/ is one level below it. */
export const packageRoot = path.resolve(__dirname, '..');

// node-gyp-build picks a prebuild for this platform, else build/Release.
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const native: Binding = require('node-gyp-build')(packageRoot);
