// Process-shared locks and their kin over shared memory.
//
// Every uncontended path is a JS Atomics operation on the shared words, with no native call
// (one Node-API call costs more than a whole acquire+release). Contended paths spin briefly,
// then sleep on a futex: on this thread for the ...Sync forms, on a native waiter thread for the
// Promise forms, so an await never blocks the event loop.
//
// Lock word: 0 when free, else the owner's id (pid in bits 0-21, worker thread id in 22-29) with
// bit 30 set when somebody may be sleeping on it. A waiter that finds the owner's pid gone frees
// the lock and throws OwnerDiedError: the next acquirer sees the death, and the lock is usable.
// The owner also stores its process's start time (in the word after the RLock count), so that a
// pid reused by a new process does not pass for the dead owner.
import { threadId } from 'worker_threads';

import { adopted, allocate, Block, release, releaseOnCollect, retain, setChunkLock } from './arena';
import { BrokenBarrierError, OwnerDiedError, releasedTooManyTimes } from './errors';
import { native } from './native';
import { SELF_START } from './liveness';
import { Segment } from './segment';
import { kShare, registerKind, ShareDescription } from './shared';
import { compileSource, toTaskSpec } from './task';
import { describe, optionsOf } from './describe';
import {
  checkSignal, checkTimeout, ClaimKind, deadlineAfter, remaining, runAsync, runSync, wake, WaitPlan, WaitRequest,
  WaitResult,
} from './wait';

const WAITERS = 0x40000000;
const PID_MASK = 0x3fffff;
const OWNER_MASK = 0x3fffffff;
/** This thread's owner id. */
const SELF = (process.pid & PID_MASK) | ((threadId & 0xff) << 22);
/** @internal The id this thread writes into a lock word it takes (for the ring's native paths). */
export const LOCK_OWNER_ID = SELF;
const SPINS = 200;
/** How often a sleeping waiter looks at whether the owner is still alive. */
const OWNER_CHECK_MS = 100;
const ALL = 0x7fffffff;
/** Words of a lock: the owner word, an RLock's depth, the owner's start time. */
const LOCK_WORDS = 3;
const START = 2;

/** What a closed primitive's words become: a view of nothing, so any use of it throws. */
const CLOSED_WORDS = ((): Int32Array => {
  const words = new Int32Array(4);
  structuredClone(words.buffer, { transfer: [words.buffer] });
  return words;
})();

/** The public members a closed primitive refuses, by name; those that return a Promise reject. */
const CLOSED_MEMBERS = [
  'acquire', 'acquireSync', 'release', 'lockSync', 'withLock', 'withLockSync', 'locked', 'tryAcquire', 'isMine',
  'getValue', 'set', 'clear', 'isSet', 'wait', 'waitSync', 'waitFor', 'waitForSync', 'notify', 'notifyAll',
  'abort', 'reset', 'parties', 'nWaiting', 'broken',
];
const ASYNC_MEMBERS = new Set(['acquire', 'withLock', 'wait', 'waitFor']);
/** Each class's prototype for its closed objects, by the class's prototype. */
const closedPrototypes = new Map<object, object>();

/**
 * Makes a closed primitive say so (`Lock is closed`) instead of V8's error about a detached
 * buffer: it takes a prototype whose members throw. The open ones are not touched, so the
 * uncontended paths stay one Atomics operation with no check added.
 */
function becomeClosed(primitive: object): void {
  const proto = Object.getPrototypeOf(primitive) as object;
  if (closedPrototypes.get(Object.getPrototypeOf(proto) as object) === proto) return;  // closed already
  let closed = closedPrototypes.get(proto);
  if (closed === undefined) {
    closed = Object.create(proto) as object;
    const kind = (proto.constructor as Function).name;
    const fail = (): Error => new Error(`${kind} is closed`);
    for (const name of CLOSED_MEMBERS) {
      let owner = proto as object | null;
      while (owner !== null && !Object.prototype.hasOwnProperty.call(owner, name)) owner = Object.getPrototypeOf(owner) as object | null;
      if (owner === null) continue;
      const member = ASYNC_MEMBERS.has(name) ? () => Promise.reject(fail()) : () => { throw fail(); };
      const getter = Object.getOwnPropertyDescriptor(owner, name)!.get !== undefined;
      Object.defineProperty(closed, name, getter ? { get: member } : { value: member, writable: true });
    }
    Object.defineProperty(closed, 'toString', { value: () => `<${kind} closed>`, writable: true });
    closedPrototypes.set(proto, closed);
  }
  Object.setPrototypeOf(primitive, closed);
}

/** Where a shared primitive's words are, as its description carries it. */
export interface WordsState {
  offset: number;
  /** In an arena block (lib/arena.ts): the revived object takes over the message's reference. */
  arena: boolean;
}

export interface AcquireOptions {
  timeout?: number;
  signal?: AbortSignal;
}

export interface AcquireSyncOptions {
  blocking?: boolean;
  timeout?: number;
}

function checkBlocking(blocking: unknown): boolean {
  if (blocking === undefined) return true;
  if (typeof blocking !== 'boolean') throw new TypeError(`blocking must be a boolean, got ${describe(blocking)}`);
  return blocking;
}

/** Words of one primitive inside a segment: an arena block, or part of another object's memory. */
abstract class Primitive {
  protected seg!: Segment;
  protected w!: Int32Array;
  protected off!: number;
  /** The arena block the words are in, if they are in one. */
  protected block: Block | undefined;
  /** Whether this object holds one of the block's references (given back by close() or the GC). */
  protected owns = false;
  /** The object whose block these words are in, when this one holds no reference itself. */
  protected holder: object | undefined;
  /** Closed, or its holder was: it must not be sent. */
  protected dead = false;

  /** A view of words at byteOffset: takes no reference (a ring's mutex, a Value's lock). */
  protected bind(seg: Segment, byteOffset: number, words: number): void {
    this.seg = seg;
    this.off = byteOffset;
    this.w = new Int32Array(seg.buffer, byteOffset, words);
  }

  /** A new primitive: its words in a fresh arena block, with the block's first reference. */
  protected bindNew(words: number): void {
    const block = allocate();
    this.bind(block.seg, block.offset, words);
    this.adopt(block);
  }

  /** A revived primitive: it takes over the reference that its message carried. */
  protected bindRevived(seg: Segment, state: WordsState, words: number): void {
    this.bind(seg, state.offset, words);
    if (!state.arena) return;
    const block = { seg, offset: state.offset };
    this.adopt(block);
    adopted(block);
  }

  private adopt(block: Block): void {
    this.block = block;
    this.owns = true;
    releaseOnCollect.register(this, block, this);
  }

  /**
   * @internal Words inside a block that another object holds (a Value's or a small Array's own
   * RLock): sendable, not owned. It keeps its holder alive (the holder's reference keeps the
   * block), and dies when the holder is closed (dieWithHolder).
   */
  inBlock(block: Block, holder: object): this {
    this.block = block;
    this.holder = holder;
    return this;
  }

  /** @internal The holder of this lock's block was closed: the words may go to another object. */
  dieWithHolder(): void {
    this.dead = true;
    this.w = CLOSED_WORDS;
    becomeClosed(this);
  }

  /** The description every kind shares: where its words are, and the reference a message takes. */
  protected describe(kind: string, extra?: Record<string, unknown>): ShareDescription {
    if (this.dead) throw new Error('this shared object is closed');
    const block = this.block;
    const state: WordsState & Record<string, unknown> = { offset: this.off, arena: block !== undefined, ...extra };
    if (block === undefined) return { kind, segments: [this.seg], state };
    return {
      kind, segments: [this.seg], state,
      retain: () => {
        retain(block);
        return () => release(block);
      },
    };
  }

  /** Futex address of word `i`, for wait requests. */
  protected at(i: number, expected: number, timeout: number | undefined): WaitRequest {
    return { buffer: this.seg.buffer, byteOffset: this.off + 4 * i, expected, timeout };
  }

  /**
   * The wait on word 0 (holding 0) of a plan whose sleepers are counted in word 1, with the claim
   * that does the rest of that plan natively (WaitClaim): for a plan run on its own only.
   */
  protected sleepAt(kind: ClaimKind, value: number, timeout: number | undefined): WaitRequest {
    const req = this.at(0, 0, timeout);
    req.claim = { kind, value, markByteOffset: this.off + 4, markValue: -1 };
    return req;
  }

  protected wake(i: number, count: number): void {
    wake(this.seg.buffer, this.off + 4 * i, count);
  }

  /** Lets this process's object go now (any use of it throws afterwards). Other processes are not affected. */
  close(): void {
    if (this.block === undefined) {
      this.seg.close();
      becomeClosed(this);
      return;
    }
    if (this.owns) {
      this.owns = false;
      releaseOnCollect.unregister(this);
      release(this.block);
    }
    this.dead = true;
    this.w = CLOSED_WORDS;
    becomeClosed(this);
  }
}

/** What can be held: a lock or a semaphore, with the `with` forms built on acquire/release. */
abstract class Acquirable extends Primitive {
  abstract acquireSync(options?: AcquireSyncOptions): boolean;
  abstract acquire(options?: AcquireOptions): Promise<boolean>;
  abstract release(): void;

  /** `using held = lock.lockSync()`: acquires now, releases at the end of the block. */
  lockSync(): Disposable {
    this.acquireSync();
    return { [Symbol.dispose]: () => this.release() };
  }

  withLockSync<R>(fn: () => R): R {
    this.acquireSync();
    try {
      return fn();
    } finally {
      this.release();
    }
  }

  async withLock<R>(fn: () => R | Promise<R>): Promise<R> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Lock and RLock

/** A non-recursive lock, as Python's multiprocessing.Lock: any process may release it. */
export class Lock extends Acquirable {
  constructor() {
    super();
    this.bindNew(LOCK_WORDS);
  }

  /** @internal A lock over LOCK_WORDS words at byteOffset of memory someone else holds (no reference). */
  static over<T extends Lock>(this: new () => T, seg: Segment, byteOffset: number): T {
    const lock = Object.create(this.prototype) as T;
    lock.bind(seg, byteOffset, LOCK_WORDS);
    return lock;
  }

  /** @internal Revives a lock sent by another process. */
  static revive<T extends Lock>(this: new () => T, seg: Segment, state: WordsState): T {
    const lock = Object.create(this.prototype) as T;
    lock.bindRevived(seg, state, LOCK_WORDS);
    return lock;
  }

  /** Blocks this thread; returns false if the timeout passed (or, non-blocking, if it is held). */
  acquireSync(options?: AcquireSyncOptions): boolean {
    if (options === undefined && Atomics.compareExchange(this.w, 0, 0, SELF) === 0) {
      this.w[START] = SELF_START;
      return true;
    }
    const o = optionsOf(options, 'acquireSync');
    return runSync(this.acquirePlan(checkBlocking(o.blocking), checkTimeout(o.timeout)));
  }

  /** Resolves true once held, false on timeout; never blocks the event loop. */
  acquire(options?: AcquireOptions): Promise<boolean> {
    if (options === undefined && Atomics.compareExchange(this.w, 0, 0, SELF) === 0) {
      this.w[START] = SELF_START;
      return Promise.resolve(true);
    }
    try {
      const o = optionsOf(options, 'acquire');
      const signal = checkSignal(o.signal);
      return runAsync(this.acquirePlan(true, checkTimeout(o.timeout), SPINS, true), signal);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  release(): void {
    this.w[START] = 0;
    const old = Atomics.exchange(this.w, 0, 0);
    if (old === 0) throw releasedTooManyTimes('semaphore or lock');
    if ((old & WAITERS) !== 0) this.wake(0, 1);
  }

  /** @internal One CAS, no waiting: the uncontended path for code that drives its own waits. */
  tryAcquire(): boolean {
    if (Atomics.compareExchange(this.w, 0, 0, SELF) !== 0) return false;
    this.w[START] = SELF_START;
    return true;
  }

  /** Held by anyone. */
  locked(): boolean {
    return Atomics.load(this.w, 0) !== 0;
  }

  /** @internal Held by this thread. */
  isMine(): boolean {
    return (Atomics.load(this.w, 0) & OWNER_MASK & ~WAITERS) === SELF;
  }

  /**
   * Tries `spins` times to take it; a function of its own so that V8 compiles this small loop
   * when it runs hot (OSR), not the whole generator around it.
   */
  private spinAcquire(spins: number): boolean {
    const w = this.w;
    for (let n = 0; n < spins; n++) {
      if (Atomics.load(w, 0) === 0 && Atomics.compareExchange(w, 0, 0, SELF) === 0) {
        w[START] = SELF_START;
        return true;
      }
    }
    return false;
  }

  /**
   * @internal The contended path, shared by both forms; `spins` before the first sleep. With
   * `claim`, an async wait takes the lock natively the moment it is free (WaitClaim): only for
   * a plan run on its own, not one inside another plan, which would be cut short.
   */
  *acquirePlan(blocking: boolean, timeout: number | undefined, spins = SPINS, claim = false): WaitPlan<boolean> {
    const w = this.w;
    if (this.spinAcquire(spins)) return true;
    const deadline = deadlineAfter(blocking ? timeout : 0);
    let checkOwner = true;
    for (;;) {
      let c = Atomics.load(w, 0);
      if (c === 0) {
        // We may have slept: others may still be sleeping, so take it with the waiters bit.
        if (Atomics.compareExchange(w, 0, 0, SELF | WAITERS) === 0) {
          w[START] = SELF_START;
          return true;
        }
        continue;
      }
      if (checkOwner) {
        checkOwner = false;
        if (this.reclaimFromDeadOwner(c)) continue;
      }
      if ((c & WAITERS) === 0) {
        if (Atomics.compareExchange(w, 0, c, c | WAITERS) !== c) continue;
        c |= WAITERS;
      }
      const left = remaining(deadline, OWNER_CHECK_MS);
      if (left === 0) return false;
      const result = yield claim ? this.takeAt(c, left) : this.at(0, c, left);
      if (result === WaitResult.TimedOut) checkOwner = true;
    }
  }

  /** A wait whose claim does what the plan does once the word is 0: take it, then record our start. */
  private takeAt(c: number, timeout: number | undefined): WaitRequest {
    const req = this.at(0, c, timeout);
    req.claim = { kind: ClaimKind.Take, value: SELF | WAITERS, markByteOffset: this.off + 4 * START, markValue: SELF_START };
    return req;
  }

  /**
   * Frees the lock if its owner process is gone, and throws OwnerDiedError to this acquirer. A
   * live process under the owner's pid that started at another time than the owner recorded is
   * a new process that reused the pid: the owner is gone too.
   */
  private reclaimFromDeadOwner(c: number): boolean {
    const pid = c & PID_MASK;
    if (pid === (process.pid & PID_MASK)) return false;
    // START holds 0 or the current owner's start time: every path that frees the word clears it
    // first, and an owner stores its own right after its CAS.
    const recorded = Atomics.load(this.w, START);
    // recorded 0: the owner is between its CAS and its store (or died there): the pid alone decides.
    if (!native.processGone(pid, recorded)) return false;
    // Look again after reading /proc: the lock may have changed hands meanwhile.
    if (Atomics.load(this.w, 0) !== c || Atomics.load(this.w, START) !== recorded) return false;
    // START first, then the word: no later owner is ever seen with the dead one's start time.
    if (Atomics.compareExchange(this.w, START, recorded, 0) !== recorded) return true;  // changed: look again
    if (Atomics.compareExchange(this.w, 0, c, 0) !== c) return true;
    this.wake(0, ALL);
    throw new OwnerDiedError(
      `the process that held this lock (pid ${pid}) died; the lock is free again but not held by this caller`,
      pid,
    );
  }

  /** @internal For Condition: give the lock up entirely, remembering how deep it was held. */
  releaseSave(): number {
    this.release();
    return 1;
  }

  /** @internal For Condition: take it back as deep as it was (a Lock is one deep). */
  *acquireRestorePlan(_depth: number): WaitPlan<void> {
    yield* this.acquirePlan(true, undefined);
  }

  [kShare](): ShareDescription {
    return this.describe(this.constructor.name === 'RLock' ? 'RLock' : 'Lock');
  }

  override toString(): string {
    const c = Atomics.load(this.w, 0);
    return `<${this.constructor.name}(owner=${c === 0 ? 'None' : c & PID_MASK})>`;
  }
}

/** A recursive lock, as Python's RLock: the owner (a process's thread) may acquire it again. */
export class RLock extends Lock {
  override acquireSync(options?: AcquireSyncOptions): boolean {
    const w = this.w;
    if ((Atomics.load(w, 0) & ~WAITERS) === SELF) {
      w[1]++;
      return true;
    }
    if (options === undefined && Atomics.compareExchange(w, 0, 0, SELF) === 0) {
      w[START] = SELF_START;
      w[1] = 1;
      return true;
    }
    const ok = super.acquireSync(options ?? {});
    if (ok) w[1] = 1;
    return ok;
  }

  override async acquire(options?: AcquireOptions): Promise<boolean> {
    const w = this.w;
    if ((Atomics.load(w, 0) & ~WAITERS) === SELF) {
      w[1]++;
      return true;
    }
    const ok = await super.acquire(options ?? {});
    if (ok) w[1] = 1;
    return ok;
  }

  override release(): void {
    const w = this.w;
    if ((Atomics.load(w, 0) & ~WAITERS) !== SELF) throw new Error('cannot release un-acquired lock');
    if (--w[1] > 0) return;
    w[START] = 0;
    const old = Atomics.exchange(w, 0, 0);
    if ((old & WAITERS) !== 0) this.wake(0, 1);
  }

  override releaseSave(): number {
    if (!this.isMine()) throw new Error('cannot release un-acquired lock');
    const depth = this.w[1];
    this.w[1] = 1;
    this.release();
    return depth;
  }

  override *acquireRestorePlan(depth: number): WaitPlan<void> {
    yield* this.acquirePlan(true, undefined);
    this.w[1] = depth;
  }

  override toString(): string {
    const c = Atomics.load(this.w, 0);
    return `<RLock(owner=${c === 0 ? 'None' : c & PID_MASK}, count=${c === 0 ? 0 : this.w[1]})>`;
  }
}

// ---------------------------------------------------------------------------------------------
// Semaphore and BoundedSemaphore

const SEM_VALUE_MAX = 0x7fffffff;

function checkCount(value: unknown, caller: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${caller}: value must be an integer, got ${describe(value)}`);
  }
  if (value < 0) throw new RangeError(`${caller}: value must be >= 0, got ${value}`);
  if (value > SEM_VALUE_MAX) throw new RangeError(`${caller}: value must be <= ${SEM_VALUE_MAX}, got ${value}`);
  return value;
}

/** Words: [0] value, [1] sleepers, [2] bound (-1: none). */
export class Semaphore extends Acquirable {
  constructor(value = 1) {
    super();
    const initial = checkCount(value, `${new.target.name}()`);
    this.bindNew(3);
    this.w[0] = initial;
    this.w[2] = new.target === BoundedSemaphore ? initial : -1;
  }

  /** @internal */
  static revive<T extends Semaphore>(this: Function & { prototype: T }, seg: Segment, state: WordsState): T {
    const sem = Object.create(this.prototype) as T;
    sem.bindRevived(seg, state, 3);
    return sem;
  }

  getValue(): number {
    return Atomics.load(this.w, 0);
  }

  acquireSync(options?: AcquireSyncOptions): boolean {
    const w = this.w;
    const v = Atomics.load(w, 0);
    if (options === undefined && v > 0 && Atomics.compareExchange(w, 0, v, v - 1) === v) return true;
    const o = optionsOf(options, 'acquireSync');
    return runSync(this.acquirePlan(checkBlocking(o.blocking), checkTimeout(o.timeout)));
  }

  acquire(options?: AcquireOptions): Promise<boolean> {
    try {
      const o = optionsOf(options, 'acquire');
      const signal = checkSignal(o.signal);
      return runAsync(this.acquirePlan(true, checkTimeout(o.timeout), true), signal);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  release(): void {
    const w = this.w;
    for (;;) {
      const v = Atomics.load(w, 0);
      const bound = w[2];
      if ((bound >= 0 && v >= bound) || v === SEM_VALUE_MAX) throw releasedTooManyTimes('semaphore or lock');
      if (Atomics.compareExchange(w, 0, v, v + 1) === v) break;
    }
    if (Atomics.load(w, 1) > 0) this.wake(0, 1);
  }

  /** @internal With `claim`, as Lock's: for a plan run on its own only. */
  *acquirePlan(blocking: boolean, timeout: number | undefined, claim = false): WaitPlan<boolean> {
    const w = this.w;
    const deadline = deadlineAfter(blocking ? timeout : 0);
    for (;;) {
      const v = Atomics.load(w, 0);
      if (v > 0) {
        if (Atomics.compareExchange(w, 0, v, v - 1) === v) return true;
        continue;
      }
      const left = remaining(deadline);
      if (left === 0) return false;
      Atomics.add(w, 1, 1);
      try {
        yield claim ? this.sleepAt(ClaimKind.Count, 0, left) : this.at(0, 0, left);
      } finally {
        Atomics.sub(w, 1, 1);
      }
    }
  }

  [kShare](): ShareDescription {
    return this.describe(this.constructor.name);
  }

  override toString(): string {
    return `<${this.constructor.name}(value=${this.getValue()})>`;
  }
}

/** A Semaphore that refuses to be released above its initial value. */
export class BoundedSemaphore extends Semaphore {}

// ---------------------------------------------------------------------------------------------
// Event

/** Words: [0] flag, [1] sleepers. */
export class Event extends Primitive {
  constructor() {
    super();
    this.bindNew(2);
  }

  /** @internal */
  static revive(seg: Segment, state: WordsState): Event {
    const ev = Object.create(Event.prototype) as Event;
    ev.bindRevived(seg, state, 2);
    return ev;
  }

  isSet(): boolean {
    return Atomics.load(this.w, 0) === 1;
  }

  set(): void {
    Atomics.store(this.w, 0, 1);
    if (Atomics.load(this.w, 1) > 0) this.wake(0, ALL);
  }

  clear(): void {
    Atomics.store(this.w, 0, 0);
  }

  /** Resolves true once set, false if the timeout passed first. */
  wait(timeout?: number, options?: { signal?: AbortSignal }): Promise<boolean> {
    if (this.isSet()) return Promise.resolve(true);
    try {
      const signal = checkSignal(optionsOf(options, 'wait').signal);
      return runAsync(this.waitPlan(checkTimeout(timeout)), signal);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  waitSync(timeout?: number): boolean {
    if (this.isSet()) return true;
    return runSync(this.waitPlan(checkTimeout(timeout)));
  }

  private *waitPlan(timeout: number | undefined): WaitPlan<boolean> {
    const w = this.w;
    const deadline = deadlineAfter(timeout);
    for (;;) {
      if (Atomics.load(w, 0) === 1) return true;
      const left = remaining(deadline);
      if (left === 0) return false;
      Atomics.add(w, 1, 1);
      try {
        // Its claim is what the rest of this plan does once the flag is set (async waits only).
        yield this.sleepAt(ClaimKind.Seen, 1, left);
      } finally {
        Atomics.sub(w, 1, 1);
      }
    }
  }

  [kShare](): ShareDescription {
    return this.describe('Event');
  }
}

// ---------------------------------------------------------------------------------------------
// Condition

/**
 * Words: [0] a sequence bumped by every notify (the futex), [1] sleepers in the low 16 bits and
 * undelivered wake-ups ("tokens") in the high 16. A waiter takes a token only if a notify came
 * after it started waiting, so a late arrival cannot steal a wake-up meant for an earlier one.
 */
export class Condition extends Primitive {
  private lock!: Lock;

  constructor(lock?: Lock) {
    super();
    if (lock !== undefined && !(lock instanceof Lock)) {
      throw new TypeError(`Condition(): lock must be a Lock or an RLock, got ${describe(lock)}`);
    }
    this.bindNew(2);
    this.lock = lock ?? new RLock();
  }

  /** @internal */
  static revive(seg: Segment, state: WordsState & { lock: Lock }): Condition {
    const cond = Object.create(Condition.prototype) as Condition;
    cond.bindRevived(seg, state, 2);
    cond.lock = state.lock;
    return cond;
  }

  acquire(options?: AcquireOptions): Promise<boolean> {
    return this.lock.acquire(options);
  }

  acquireSync(options?: AcquireSyncOptions): boolean {
    return this.lock.acquireSync(options);
  }

  release(): void {
    this.lock.release();
  }

  lockSync(): Disposable {
    return this.lock.lockSync();
  }

  withLockSync<R>(fn: () => R): R {
    return this.lock.withLockSync(fn);
  }

  withLock<R>(fn: () => R | Promise<R>): Promise<R> {
    return this.lock.withLock(fn);
  }

  /** Releases the lock, waits for a notify (or the timeout), re-acquires. True if notified. */
  wait(timeout?: number, options?: { signal?: AbortSignal }): Promise<boolean> {
    try {
      const signal = checkSignal(optionsOf(options, 'wait').signal);
      return runAsync(this.waitPlan(checkTimeout(timeout)), signal);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  waitSync(timeout?: number): boolean {
    return runSync(this.waitPlan(checkTimeout(timeout)));
  }

  /** Waits until predicate() is truthy; returns its last value (falsy on timeout). */
  async waitFor<T>(predicate: () => T | Promise<T>, timeout?: number): Promise<T> {
    const t = checkTimeout(timeout);
    const deadline = deadlineAfter(t);
    let result = await predicate();
    while (!result) {
      const left = remaining(deadline);
      if (left === 0) break;
      await this.wait(left);
      result = await predicate();
    }
    return result;
  }

  waitForSync<T>(predicate: () => T, timeout?: number): T {
    return runSync(this.waitForPlan(predicate, checkTimeout(timeout)));
  }

  notify(n = 1): void {
    if (typeof n !== 'number' || Number.isNaN(n) || n < 0) throw new TypeError(`notify(): n must be a non-negative number, got ${describe(n)}`);
    if (!this.lock.isMine()) throw new Error('cannot notify on un-acquired lock');
    const w = this.w;
    let k = 0;
    for (;;) {
      const c = Atomics.load(w, 1);
      const sleepers = c & 0xffff;
      const tokens = c >>> 16;
      k = Math.min(n, sleepers - tokens);
      if (k <= 0) return;
      if (Atomics.compareExchange(w, 1, c, c + (k << 16)) === c) break;
    }
    Atomics.add(w, 0, 1);
    this.wake(0, k);
  }

  notifyAll(): void {
    this.notify(0xffff);
  }

  /** @internal */
  *waitPlan(timeout: number | undefined): WaitPlan<boolean> {
    if (!this.lock.isMine()) throw new Error('cannot wait on un-acquired lock');
    const w = this.w;
    const deadline = deadlineAfter(timeout);
    Atomics.add(w, 1, 1);
    let seen = Atomics.load(w, 0);
    const depth = this.lock.releaseSave();
    try {
      for (;;) {
        const c = Atomics.load(w, 1);
        const seq = Atomics.load(w, 0);
        if (c >>> 16 > 0 && seq !== seen) {
          if (Atomics.compareExchange(w, 1, c, c - 1 - 0x10000) === c) return true;
          continue;
        }
        if (seq !== seen) seen = seq;  // notified, but others took the tokens: wait for the next one
        const left = remaining(deadline);
        if (left === 0) {
          if (Atomics.compareExchange(w, 1, c, c - 1) === c) return false;
          continue;
        }
        try {
          yield this.at(0, seen, left);
        } catch (err) {
          // Aborted: leave the sleepers count as we found it.
          for (;;) {
            const c2 = Atomics.load(w, 1);
            const next = c2 >>> 16 > 0 && Atomics.load(w, 0) !== seen ? c2 - 1 - 0x10000 : c2 - 1;
            if (Atomics.compareExchange(w, 1, c2, next) === c2) break;
          }
          throw err;
        }
      }
    } finally {
      yield* this.lock.acquireRestorePlan(depth);
    }
  }

  /** @internal */
  *waitForPlan<T>(predicate: () => T, timeout: number | undefined): WaitPlan<T> {
    const deadline = deadlineAfter(timeout);
    let result = predicate();
    while (!result) {
      const left = remaining(deadline);
      if (left === 0) break;
      yield* this.waitPlan(left);
      result = predicate();
    }
    return result;
  }

  /** @internal */
  get underlyingLock(): Lock {
    return this.lock;
  }

  [kShare](): ShareDescription {
    return this.describe('Condition', { lock: this.lock });
  }
}

// ---------------------------------------------------------------------------------------------
// Barrier

const FILLING = 0;
const DRAINING = 1;
const RESETTING = -1;
const BROKEN = -2;

export interface BarrierOptions {
  /** Called by one party (the last to arrive) before all are released. Sent by source. */
  action?: () => void;
  /** Default timeout of wait(), in milliseconds. */
  timeout?: number;
}

/** Python's threading.Barrier logic over a process-shared Condition. Words: [0] state, [1] count, [2] parties. */
export class Barrier extends Primitive {
  private cond!: Condition;
  private action: (() => void) | undefined;
  private defaultTimeout: number | undefined;

  constructor(parties: number, options?: BarrierOptions) {
    super();
    if (typeof parties !== 'number' || !Number.isInteger(parties)) {
      throw new TypeError(`Barrier(): parties must be an integer, got ${describe(parties)}`);
    }
    if (parties < 1 || parties > 0xffff) throw new RangeError(`Barrier(): parties must be between 1 and 65535, got ${parties}`);
    const o = optionsOf(options, 'Barrier()');
    // The action may run in any process, so it crosses by source like a Process target.
    if (o.action !== undefined) toTaskSpec(o.action, 'Barrier(): action');
    this.defaultTimeout = checkTimeout(o.timeout, 'Barrier(): timeout');
    this.action = o.action as (() => void) | undefined;
    this.bindNew(3);
    this.w[2] = parties;
    this.cond = new Condition(new Lock());
  }

  /** @internal */
  static revive(seg: Segment, state: WordsState & { cond: Condition; action?: string; timeout?: number }): Barrier {
    const b = Object.create(Barrier.prototype) as Barrier;
    b.bindRevived(seg, state, 3);
    b.cond = state.cond;
    b.defaultTimeout = state.timeout;
    b.action = state.action === undefined ? undefined : compileAction(state.action);
    return b;
  }

  get parties(): number {
    return this.w[2];
  }

  get nWaiting(): number {
    return Atomics.load(this.w, 0) === FILLING ? Atomics.load(this.w, 1) : 0;
  }

  get broken(): boolean {
    return Atomics.load(this.w, 0) === BROKEN;
  }

  /** Resolves with this party's index (0 .. parties-1) once all have arrived. */
  wait(timeout?: number): Promise<number> {
    try {
      return runAsync(this.waitPlan(timeout === undefined ? this.defaultTimeout : checkTimeout(timeout)));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  waitSync(timeout?: number): number {
    return runSync(this.waitPlan(timeout === undefined ? this.defaultTimeout : checkTimeout(timeout)));
  }

  /** Breaks the barrier: current and future waiters get BrokenBarrierError until reset(). */
  abort(): void {
    this.cond.withLockSync(() => this.breakBarrier());
  }

  reset(): void {
    runSync(this.underLock(() => {
      const w = this.w;
      if (Atomics.load(w, 1) > 0) {
        const state = Atomics.load(w, 0);
        if (state === FILLING || state === BROKEN) Atomics.store(w, 0, RESETTING);
      } else {
        Atomics.store(w, 0, FILLING);
      }
      this.cond.notifyAll();
    }));
  }

  private *underLock<T>(fn: () => T): WaitPlan<T> {
    const lock = this.cond.underlyingLock;
    yield* lock.acquirePlan(true, undefined);
    try {
      return fn();
    } finally {
      lock.release();
    }
  }

  private *waitPlan(timeout: number | undefined): WaitPlan<number> {
    const w = this.w;
    const lock = this.cond.underlyingLock;
    yield* lock.acquirePlan(true, undefined);
    try {
      // Wait for a previous cycle to drain or reset.
      while (Atomics.load(w, 0) === DRAINING || Atomics.load(w, 0) === RESETTING) {
        yield* this.cond.waitPlan(undefined);
      }
      if (Atomics.load(w, 0) < 0) throw new BrokenBarrierError('the barrier is broken');
      const index = Atomics.add(w, 1, 1);
      try {
        if (index + 1 === w[2]) {
          try {
            this.action?.();
            Atomics.store(w, 0, DRAINING);
            this.cond.notifyAll();
          } catch (err) {
            this.breakBarrier();
            throw err;
          }
        } else {
          const done = yield* this.cond.waitForPlan(() => Atomics.load(w, 0) !== FILLING, timeout);
          if (!done) {
            this.breakBarrier();
            throw new BrokenBarrierError('the barrier timed out and is now broken');
          }
          if (Atomics.load(w, 0) < 0) throw new BrokenBarrierError('the barrier is broken');
        }
        return index;
      } finally {
        // The last one out of a draining (or resetting) barrier starts the next cycle.
        if (Atomics.sub(w, 1, 1) === 1) {
          const state = Atomics.load(w, 0);
          if (state === DRAINING || state === RESETTING) {
            Atomics.store(w, 0, FILLING);
            this.cond.notifyAll();
          }
        }
      }
    } finally {
      lock.release();
    }
  }

  private breakBarrier(): void {
    Atomics.store(this.w, 0, BROKEN);
    this.cond.notifyAll();
  }

  [kShare](): ShareDescription {
    return this.describe('Barrier', { cond: this.cond, action: this.action?.toString(), timeout: this.defaultTimeout });
  }
}

function compileAction(source: string): () => void {
  return compileSource(source, 'Barrier action') as () => void;
}

registerKind('Lock', (segs, state: WordsState) => Lock.revive(segs[0], state));
registerKind('RLock', (segs, state: WordsState) => RLock.revive(segs[0], state));
registerKind('Semaphore', (segs, state: WordsState) => Semaphore.revive(segs[0], state));
registerKind('BoundedSemaphore', (segs, state: WordsState) => BoundedSemaphore.revive(segs[0], state));
registerKind('Event', (segs, state: WordsState) => Event.revive(segs[0], state));
registerKind('Condition', (segs, state) => Condition.revive(segs[0], state));
registerKind('Barrier', (segs, state) => Barrier.revive(segs[0], state));

// The arena's chunks are guarded by a Lock of ours at their start.
setChunkLock((seg) => Lock.over(seg, 0));
