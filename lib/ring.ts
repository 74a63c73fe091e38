// A ring of messages in one shared segment: what Queue and Pipe stand on.
//
// Reserve, copy, publish. A producer reserves its frame under the ring's mutex (a few stores),
// copies the payload with the mutex free, then publishes the frame by one store of its state word.
// A consumer claims the oldest frame under the mutex, copies it out with the mutex free, and marks
// it done; the space before the oldest frame not yet done is free again. So a producer's copy and
// a consumer's copy overlap, and several of each stay correct: frames are claimed in the order
// they were reserved (FIFO per producer), and each is claimed once.
//
// Kill-safety. Every frame in flight names its owner (pid and start time) in its head:
// - a producer killed mid-copy leaves a frame in WRITING whose owner is gone: the consumer that
//   reaches it skips it (the message was never sent, so a half-written frame is never read);
// - a consumer killed mid-copy leaves a frame in READING whose owner is gone: a consumer that
//   finds the ring empty takes it over and delivers it (so it is not lost, only late); so does a
//   frame whose claimer gave it up (a native take whose waiter had gone: owner pid 0);
// - a holder of the mutex killed between two of its stores is reclaimed by the next one (the
//   lock word of synchronize.ts), who recounts the messages, the one figure such a death can leave
//   wrong.
// Positions are byte counters mod 2**32 over a power-of-two ring; frames are 16-byte aligned, so
// a frame's head never wraps around the ring's end (its payload may).
//
// Messages larger than a quarter of the ring go out of line: the producer writes them to a named
// segment registered with the tree's tracker (so the producer may die before anyone reads it) and
// puts its name in the ring; the consumer copies it out and unlinks it.
import { OwnerDiedError } from './errors';
import { ownerGone, SELF_START } from './liveness';
import { native } from './native';
import { Segment } from './segment';
import { Lock, LOCK_OWNER_ID } from './synchronize';
import { forget, trackInTree, treeName } from './tracker';
import { ClaimKind, deadlineAfter, remaining, wake, WaitPlan, WaitRequest, WaitResult } from './wait';

// Int32 words of the header.
const NOT_EMPTY = 2;   // bumped by every publish: consumers sleep on it
const NOT_FULL = 3;    // bumped when a get leaves the ring half empty: producers sleep on it
const CLOSED = 4;
const UNFINISHED = 7;  // JoinableQueue: puts not yet matched by taskDone()
const MAXSIZE = 8;
const WRITER = 10;     // Pipe: the process holding the sending end
const LOCK = 12;       // the ring's mutex: a Lock's three words, 12-14
const LOCK_START = 2;  // of which the holder's start time (synchronize.ts)
const LOCK_WAITERS = 0x40000000;  // the flag in its owner word: someone sleeps on it
const RESERVE = 16;    // bytes reserved by producers, mod 2**32
const CLAIM = 17;      // bytes claimed by consumers
const COUNT = 18;      // messages reserved and not yet claimed
const HEAD = 19;       // bytes done with: everything before is free
// The newest value of NOT_EMPTY / NOT_FULL that someone sleeps on. A bump wakes only when it moves
// the word off that value: one futex wake per sleep, not one per message while the sleeper is
// still waking up (a wake costs 5-30 µs here; 64 KiB messages made ~6 per sleep).
const SLEPT_GET = 20;
const SLEPT_PUT = 21;
const DATA = 128;

// A frame's head: four Int32 words, then the payload, padded to 16 bytes.
const FRAME_HEAD = 16;
const F_LENGTH = 0;
const F_STATE = 1;     // state | kind << 8 | COUNTED
const F_PID = 2;       // the owner while WRITING or READING
const F_START = 3;     // the owner's start time
const WRITING = 1;
const READY = 2;
const READING = 3;
const DONE = 4;
/** The owner of a READING frame given up by its claimer (a native take that could not deliver). */
const ABANDONED = 0;
const STATE_MASK = 0xff;
const COUNTED = 1 << 16;  // a JoinableQueue put: taskDone() owed

/** This process: `process` is an accessor of the global object, read on every message otherwise. */
const PID = process.pid;
/** Payloads up to this size are copied under the mutex, as one step: cheaper than publishing. */
const COPY_UNDER_LOCK = 256;
/** What claim() returns when there is nothing to claim now. */
const EMPTY = -1;
const BUSY = -2;       // the oldest frame is being written by a live producer

/** How long to spin for a frame or for room before sleeping, µs: a sleep and its wake cost 20-70. */
const SPIN_US = 10;
/** How long to spin for a frame being written, µs: a 64 KiB copy takes ~5-10. */
const BUSY_SPIN_US = 50;
const LOCK_SPINS = 20000;
/** A producer waiting for room looks again this often (consumers wake it only at half empty). */
const PUT_SLICE_MS = 5;
/** How often a sleeper looks at whether a Pipe's writer is still alive. */
const WRITER_CHECK_MS = 100;
/** How often a sleeper looks at whether the owner of a frame in flight is still alive... */
const OWNER_CHECK_MS = 100;
/** ...and, with none in flight when it went to sleep, whether one was claimed and left since. */
const IDLE_CHECK_MS = 1000;

export const enum Kind {
  Serialized = 0,
  Number = 1,
  String = 2,
  Bytes = 3,
  Undefined = 4,
  Null = 5,
  True = 6,
  False = 7,
  OutOfLine = 8,
}

/** Where a get may copy a bytes payload straight to (recvBytesInto), instead of a new Buffer. */
export interface Destination {
  target: Uint8Array;
  offset: number;
}

// The caller's array is measured and written only through these, never through its own
// properties, and measured again at each take (an await earlier, it may have been resized or
// transferred): a subclass, an own `length` or `set`, or a stale length would pass the JS check
// and make the copy throw with the frame already claimed, stuck for good.
const lengthGetter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), 'length')!.get!;
const intrinsicSet = Uint8Array.prototype.set;

/** Bytes from the destination's offset to its end, now (negative if it shrank below the offset). */
export function roomIn(into: Destination): number {
  return trueLength(into.target) - into.offset;
}

/** Copies `bytes` to a destination that has room for them. */
export function copyInto(into: Destination, bytes: Uint8Array): void {
  intrinsicSet.call(into.target, bytes, into.offset);
}

/** A typed array's element count, whatever it claims. */
export function trueLength(array: ArrayBufferView): number {
  return lengthGetter.call(array) as number;
}

export interface Frame {
  kind: Kind;
  /** The payload; for a Number, NUMBER_BYTES (its length) and the value in `num`. */
  bytes: Uint8Array;
  num?: number;
  /** Gives back what the message took for the shared objects in it, if it is not put after all. */
  undo?: () => void;
  /**
   * Set by a get given a Destination that the payload fitted: it was copied there, at its offset,
   * and is this many bytes long (`bytes` is then the destination's whole buffer).
   */
  copied?: number;
}

/** Stands for a number's 8 payload bytes where only their length matters. */
export const NUMBER_BYTES = new Uint8Array(8);

// Statuses of the native fast paths (native/ring.h).
const NATIVE_OK = 0;
const NATIVE_SHUT = -3;
/** ringTryClaim's answer: position, length, kind, number. */
const claimed = new Float64Array(4);

/** Thrown by get() on a ring that is closed and drained. */
export class RingClosed extends Error {
  override name = 'RingClosed';
}

/**
 * Whether a payload goes straight to the caller's buffer: it asked for bytes and they fit. Else
 * the get copies it to a new Buffer. (Copied at the destination's offset, with no view of it made:
 * a subarray per message was the largest code V8 compiled on this path.)
 */
function fitsInto(into: Destination | undefined, kind: Kind, len: number): boolean {
  return into !== undefined && kind === Kind.Bytes && len !== 0 && len <= roomIn(into);
}

function frameSize(length: number): number {
  return FRAME_HEAD + ((length + 15) & ~15);
}

export class Ring {
  readonly seg: Segment;
  private readonly w: Int32Array;
  /** The data area as words, for frame heads. */
  private readonly fw: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly view: DataView;
  private readonly lock: Lock;
  readonly capacity: number;
  private readonly mask: number;

  private constructor(seg: Segment) {
    this.seg = seg;
    this.w = new Int32Array(seg.buffer, 0, DATA / 4);
    this.capacity = seg.size - DATA;
    this.mask = this.capacity - 1;
    this.fw = new Int32Array(seg.buffer, DATA, this.capacity / 4);
    this.bytes = new Uint8Array(seg.buffer, DATA, this.capacity);
    this.view = new DataView(seg.buffer, DATA, this.capacity);
    this.lock = Lock.over(seg, 4 * LOCK);
  }

  /** `capacity` is rounded up to a power of two. */
  static create(capacity: number, maxsize: number): Ring {
    const ring = new Ring(Segment.create(DATA + 2 ** Math.ceil(Math.log2(Math.max(capacity, 64))), true));
    ring.w[MAXSIZE] = maxsize;
    ring.w[WRITER] = PID;
    return ring;
  }

  static over(seg: Segment): Ring {
    return new Ring(seg);
  }

  get maxsize(): number {
    return this.w[MAXSIZE];
  }

  /** Messages not yet taken (exact at the instant of the loads, as Python's is approximate). */
  qsize(): number {
    return Atomics.load(this.w, RESERVE) === Atomics.load(this.w, CLAIM) ? 0 : Math.max(1, Atomics.load(this.w, COUNT));
  }

  get closed(): boolean {
    return Atomics.load(this.w, CLOSED) === 1;
  }

  /** Ends put() for everyone; get() drains what is left, then ends. */
  close(): void {
    Atomics.store(this.w, CLOSED, 1);
    Atomics.add(this.w, NOT_EMPTY, 1);
    Atomics.add(this.w, NOT_FULL, 1);
    this.wakeWord(NOT_EMPTY, 0x7fffffff);
    this.wakeWord(NOT_FULL, 0x7fffffff);
  }

  /** Pipe: this process now holds the sending end. */
  claimWriter(): void {
    Atomics.store(this.w, WRITER, PID);
  }

  private wakeWord(i: number, count: number): void {
    wake(this.seg.buffer, 4 * i, count);
  }

  /** Bumps a sleep word; wakes its sleepers only if the newest one sleeps on the value it had. */
  private bump(word: number, slept: number, count: number): void {
    const old = Atomics.add(this.w, word, 1);
    if (Atomics.load(this.w, slept) === old) this.wakeWord(word, count);
  }

  /**
   * Records that this process is about to sleep on `seen` (the newest such value wins). Stored
   * before the sleep, a bump after it sees it (and wakes); a bump before it changed the word, so
   * the sleep returns at once.
   */
  private sleepingOn(slept: number, seen: number): void {
    const word = slept === SLEPT_GET ? NOT_EMPTY : NOT_FULL;
    for (;;) {
      const cur = Atomics.load(this.w, slept);
      // Newest judged against the live word, not by sign: after 2**31 bumps with nobody asleep,
      // an old record must still count as older.
      const now = Atomics.load(this.w, word);
      if (((now - seen) >>> 0) > ((now - cur) >>> 0)) return;
      if (cur === seen || Atomics.compareExchange(this.w, slept, cur, seen) === cur) return;
    }
  }

  private at(i: number, expected: number, timeout: number | undefined): WaitRequest {
    return { buffer: this.seg.buffer, byteOffset: 4 * i, expected, timeout };
  }

  /**
   * The wait of a get for a message, with the claim that does what the rest of getPlan would once
   * NOT_EMPTY moves: take the oldest message and make its value (WaitClaim), for the messages
   * whose value is made natively (all but v8-serialized and out-of-line ones).
   */
  private takeAt(seen: number, timeout: number | undefined): WaitRequest {
    const req = this.at(NOT_EMPTY, seen, timeout);
    req.claim = { kind: ClaimKind.RingGet, value: LOCK_OWNER_ID, markByteOffset: 0, markValue: SELF_START };
    return req;
  }

  /** The queue's mutex: a holder that died is reclaimed without troubling the caller. */
  private *locked(): WaitPlan<void> {
    if (this.lock.tryAcquire()) return;
    for (;;) {
      try {
        // Held for a few stores: spin past that rather than sleep and pay a wake-up.
        yield* this.lock.acquirePlan(true, undefined, LOCK_SPINS);
        return;
      } catch (err) {
        if (!(err instanceof OwnerDiedError)) throw err;
        // The holder died: if between two of its stores, COUNT may be off. Recount once.
        yield* this.lock.acquirePlan(true, undefined);
        this.recount();
        return;
      }
    }
  }

  private recount(): void {
    const w = this.w;
    let n = 0;
    for (let at = w[CLAIM]; at !== w[RESERVE]; n++) at = (at + frameSize(this.fw[(at & this.mask) >>> 2])) | 0;
    w[COUNT] = n;
  }

  /** A hint, read without the mutex: is the oldest unclaimed frame ready to be claimed? */
  private readyHint(): boolean {
    const at = Atomics.load(this.w, CLAIM);
    if (at === Atomics.load(this.w, RESERVE)) return false;
    return (Atomics.load(this.fw, ((at & this.mask) >>> 2) + F_STATE) & STATE_MASK) !== WRITING;
  }

  // Producers.

  /**
   * With the mutex held: reserves the frame and writes its head (and, for a small one, its
   * payload). Returns its position, or -1 when there is no room (the mutex still held).
   */
  private reserve(frame: Frame, countTask: boolean): number {
    const w = this.w;
    if (w[CLOSED] === 1) {
      this.lock.release();
      throw new RingClosed('the queue is closed');
    }
    const length = frame.bytes.length;
    const need = frameSize(length);
    const max = w[MAXSIZE];
    if (max > 0 && w[COUNT] >= max) return -1;
    const at = w[RESERVE];
    if (this.capacity - ((at - Atomics.load(w, HEAD)) >>> 0) < need) {
      this.advanceHead();  // a consumer killed between its two last steps may have left it behind
      if (this.capacity - ((at - Atomics.load(w, HEAD)) >>> 0) < need) return -1;
    }
    const pos = at & this.mask;
    const i = pos >>> 2;
    const fw = this.fw;
    fw[i + F_LENGTH] = length;
    fw[i + F_PID] = PID;
    fw[i + F_START] = SELF_START;
    const tag = (frame.kind << 8) | (countTask ? COUNTED : 0);
    if (length <= COPY_UNDER_LOCK) {
      this.writePayload(pos, frame);
      Atomics.store(fw, i + F_STATE, READY | tag);
    } else {
      Atomics.store(fw, i + F_STATE, WRITING | tag);
    }
    if (countTask) Atomics.add(w, UNFINISHED, 1);
    w[COUNT]++;
    Atomics.store(w, RESERVE, (at + need) | 0);
    return pos;
  }

  /** With the mutex held: reserves, releases the mutex, copies, publishes. False: no room. */
  private putLocked(frame: Frame, countTask: boolean): boolean {
    const pos = this.reserve(frame, countTask);
    this.lock.release();
    if (pos < 0) return false;
    const state = (pos >>> 2) + F_STATE;
    const word = this.fw[state];
    if ((word & STATE_MASK) === WRITING) {
      this.writePayload(pos, frame);
      Atomics.store(this.fw, state, (word & ~STATE_MASK) | READY);
    }
    // Everyone asleep on that value: a bump after it matches nothing, so a sleeper left out here
    // would sleep beside a ready frame (with two consumers asleep, the second put woke nobody).
    this.bump(NOT_EMPTY, SLEPT_GET, 0x7fffffff);
    return true;
  }

  // Consumers.

  /**
   * With the mutex held: claims the oldest frame and returns its position; or EMPTY, or BUSY while
   * its producer is still writing it. With `checkOwners`, skips frames whose producer died
   * mid-copy and, on an empty ring, takes over a frame whose consumer died mid-copy. Looking at an
   * owner costs a kill() and two /proc reads, so callers ask only once a wait has run out.
   */
  private claim(checkOwners: boolean): number {
    const w = this.w;
    const fw = this.fw;
    for (;;) {
      const at = w[CLAIM];
      if (at === w[RESERVE]) return checkOwners ? this.takeOverFromDeadReader() : EMPTY;
      const i = (at & this.mask) >>> 2;
      const word = Atomics.load(fw, i + F_STATE);
      const next = (at + frameSize(fw[i + F_LENGTH])) | 0;
      if ((word & STATE_MASK) === WRITING) {
        if (!checkOwners || !ownerGone(fw[i + F_PID], fw[i + F_START])) return BUSY;
        // Its producer died mid-copy: the message was never sent.
        this.skipFrame(at, i, word, next);
        continue;
      }
      if ((word & STATE_MASK) === DONE) {
        // Skipped by a holder that died before it moved CLAIM on (COUNT was recounted).
        Atomics.store(w, CLAIM, next);
        continue;
      }
      // READY; or READING, left by a consumer that died holding the mutex: ours now either way.
      fw[i + F_PID] = PID;
      fw[i + F_START] = SELF_START;
      Atomics.store(fw, i + F_STATE, (word & ~STATE_MASK) | READING);
      w[COUNT]--;
      Atomics.store(w, CLAIM, next);
      return at & this.mask;
    }
  }

  /** With the mutex held: drops the frame at CLAIM, whose producer died mid-copy. */
  private skipFrame(at: number, i: number, word: number, next: number): void {
    const w = this.w;
    Atomics.store(this.fw, i + F_STATE, (word & ~STATE_MASK) | DONE);
    w[COUNT]--;
    Atomics.store(w, CLAIM, next);
    // The put it matched never happened: give back its count, never below zero (a taskDone() too
    // many must not throw here, with the mutex held).
    if (word & COUNTED) {
      const n = Atomics.sub(w, UNFINISHED, 1);
      if (n <= 0) Atomics.add(w, UNFINISHED, 1);
      else if (n === 1) this.wakeWord(UNFINISHED, 0x7fffffff);
    }
    this.advanceHead();
  }

  /** A claimed frame whose consumer died before finishing it, made this process's; or EMPTY. */
  private takeOverFromDeadReader(): number {
    const w = this.w;
    const fw = this.fw;
    const end = w[CLAIM];
    for (let at = Atomics.load(w, HEAD); at !== end;) {
      const i = (at & this.mask) >>> 2;
      const word = Atomics.load(fw, i + F_STATE);
      if ((word & STATE_MASK) === READING && (fw[i + F_PID] === ABANDONED || ownerGone(fw[i + F_PID], fw[i + F_START]))) {
        fw[i + F_PID] = PID;
        fw[i + F_START] = SELF_START;
        return at & this.mask;
      }
      at = (at + frameSize(fw[i + F_LENGTH])) | 0;
    }
    return EMPTY;
  }

  /** Copies a claimed frame out (the mutex free), marks it done, and frees what it can. */
  private take(pos: number, into?: Destination): Frame {
    const i = pos >>> 2;
    const len = this.fw[i + F_LENGTH];
    const kind = ((this.fw[i + F_STATE] >>> 8) & 0xff) as Kind;
    if (len > COPY_UNDER_LOCK && kind !== Kind.Number) return this.takeNative(pos, len, kind, into);
    const frame = this.read(pos, into);
    const state = (pos >>> 2) + F_STATE;
    Atomics.store(this.fw, state, (this.fw[state] & ~STATE_MASK) | DONE);
    this.advanceHead();
    // Producers wait for room: tell them once half the ring is free, not after every get (a full
    // ring otherwise ping-pongs one message per wake-up: 64 KiB messages went 2x slower). A
    // producer whose frame fits sooner finds out itself: it sleeps in PUT_SLICE_MS slices.
    const w = this.w;
    const used = (Atomics.load(w, RESERVE) - Atomics.load(w, HEAD)) >>> 0;
    const max = w[MAXSIZE];
    if (used <= this.capacity / 2 || (max > 0 && Atomics.load(w, COUNT) < max)) this.bump(NOT_FULL, SLEPT_PUT, 0x7fffffff);
    return frame;
  }

  /**
   * Moves HEAD past the frames that are done. Lock-free: consumers finish out of order, and each
   * one that finishes tries; a CAS lets one win each step, and the others look again.
   */
  private advanceHead(): void {
    const w = this.w;
    const fw = this.fw;
    for (;;) {
      const h = Atomics.load(w, HEAD);
      if (h === Atomics.load(w, CLAIM)) return;
      const i = (h & this.mask) >>> 2;
      if ((Atomics.load(fw, i + F_STATE) & STATE_MASK) !== DONE) return;
      Atomics.compareExchange(w, HEAD, h, (h + frameSize(fw[i + F_LENGTH])) | 0);
    }
  }

  // The uncontended paths: one CAS for the mutex, no plan, no waiting. A put of a Frame is native
  // (ring.h: the same stores in the same order as reserve/putLocked here): a large one spares V8
  // compiling the large JS around a copy, and a small one is one call instead of those layers.
  // A put of a number, boolean, null or undefined is tryPutValue, flat JS (see there). A take of
  // a small frame stays in JS, where the call across costs more than the work.

  /** Puts now if the mutex is free and there is room: true; false to take the slow path. */
  tryPut(frame: Frame, countTask: boolean): boolean {
    const payload = frame.kind === Kind.Number ? frame.num! : frame.bytes;
    const status = native.ringTryPut(this.seg.buffer, payload, frame.kind, countTask, LOCK_OWNER_ID, SELF_START, PID);
    if (status === NATIVE_OK) return true;
    if (status === NATIVE_SHUT) throw new RingClosed('the queue is closed');
    return false;
  }

  /**
   * tryPut of a number, boolean, null or undefined, the item itself, with no Frame made: false,
   * having done nothing, for any other item, or when the mutex is held, there is no room, or the
   * ring is closed (the caller's full path reports that).
   *
   * The put that wakes a waiting get, so written flat: the same words in the same order as
   * reserve() and putLocked(), with nothing between the call and the publish but the ring's own
   * words. After an idle moment every object, function and native entry touched costs: probes
   * put a cold call into the addon at 2-5 µs before its first instruction, and each layer of JS
   * calls on the way here at 1-2 µs. For the same reason the words written under the mutex are
   * plain stores, not Atomics calls: the mutex's release (a seq-cst exchange) orders them for
   * every claimer, which takes the mutex first, and a reader without it (readyHint, the native
   * spins) only takes a hint from them. That took 0.5-0.9 µs off the time to the bump, of 3-4.
   */
  tryPutValue(item: unknown, countTask: boolean): boolean {
    let kind: Kind;
    let length = 0;
    switch (typeof item) {
      case 'number':
        kind = Kind.Number;
        length = 8;
        break;
      case 'boolean':
        kind = item ? Kind.True : Kind.False;
        break;
      case 'undefined':
        kind = Kind.Undefined;
        break;
      default:
        if (item !== null) return false;
        kind = Kind.Null;
    }
    const w = this.w;
    if (Atomics.compareExchange(w, LOCK, 0, LOCK_OWNER_ID) !== 0) return false;
    w[LOCK + LOCK_START] = SELF_START;
    const at = w[RESERVE];
    const max = w[MAXSIZE];
    const need = frameSize(length);
    // HEAD moves without the mutex (advanceHead): a stale value only understates the room.
    if (w[CLOSED] === 1 || (max > 0 && w[COUNT] >= max) || this.capacity - ((at - w[HEAD]) >>> 0) < need) {
      this.lock.release();
      return false;
    }
    const pos = at & this.mask;
    const i = pos >>> 2;
    const fw = this.fw;
    fw[i + F_LENGTH] = length;
    fw[i + F_PID] = PID;
    fw[i + F_START] = SELF_START;
    if (length !== 0) this.view.setFloat64((pos + FRAME_HEAD) & this.mask, item as number, true);  // 8 bytes, 16-aligned: whole
    fw[i + F_STATE] = READY | (kind << 8) | (countTask ? COUNTED : 0);
    if (countTask) Atomics.add(w, UNFINISHED, 1);
    w[COUNT]++;
    w[RESERVE] = (at + need) | 0;
    // The mutex's release and the publish's bump, as Lock.release() and bump() do them.
    w[LOCK + LOCK_START] = 0;
    const held = Atomics.exchange(w, LOCK, 0);
    const bumped = Atomics.add(w, NOT_EMPTY, 1);
    if ((held & LOCK_WAITERS) !== 0) this.wakeWord(LOCK, 1);
    if (Atomics.load(w, SLEPT_GET) === bumped) this.wakeWord(NOT_EMPTY, 0x7fffffff);
    return true;
  }

  /** Takes a frame now if the mutex is free and one is ready; null to take the slow path. */
  tryGet(into?: Destination): Frame | null {
    // Which way to go, by the oldest frame's length, read without the mutex: only a guess (it may
    // be taken meanwhile), and either way serves any frame.
    const at = Atomics.load(this.w, CLAIM);
    if (at === Atomics.load(this.w, RESERVE)) return null;
    if (this.fw[((at & this.mask) >>> 2) + F_LENGTH] <= COPY_UNDER_LOCK) return this.tryGetHere(into);
    if (native.ringTryClaim(this.seg.buffer, LOCK_OWNER_ID, SELF_START, PID, claimed) !== NATIVE_OK) return null;
    // Into locals at once: `claimed` is shared, and the caller's buffer (a subclass, a Proxy)
    // may run code below that takes from another ring.
    const pos = claimed[0];
    const len = claimed[1];
    const kind = claimed[2] as Kind;
    if (kind === Kind.Number) return { kind, bytes: NUMBER_BYTES, num: claimed[3] };
    return this.takeNative(pos, len, kind, into);
  }

  /** take() of a claimed frame over 256 bytes, in C++: the copy, then the same stores as take(). */
  private takeNative(pos: number, len: number, kind: Kind, into: Destination | undefined): Frame {
    if (fitsInto(into, kind, len)) {
      native.ringTake(this.seg.buffer, pos, into!.target, into!.offset, len, PID);
      return { kind, bytes: into!.target, copied: len };
    }
    if (len < Buffer.poolSize >>> 1) {
      // Carved from Node's shared pool, as Buffer.allocUnsafe does below half its size (a new
      // backing store per payload costs more this small).
      const out = Buffer.allocUnsafe(len);
      native.ringTake(this.seg.buffer, pos, out, 0, len, PID);
      return { kind, bytes: out };
    }
    return { kind, bytes: native.ringTakeCopy(this.seg.buffer, pos, len, PID) };
  }

  private tryGetHere(into?: Destination): Frame | null {
    if (!this.readyHint() || !this.lock.tryAcquire()) return null;
    let pos: number;
    try {
      pos = this.claim(false);
    } finally {
      this.lock.release();
    }
    return pos < 0 ? null : this.take(pos, into);
  }

  /** True when a frame of `length` payload bytes must go out of line. */
  outOfLine(length: number): boolean {
    return frameSize(length) > this.capacity / 4;
  }

  /** Writes a message too large for the ring to a named segment and returns the frame to put. */
  spill(frame: Frame): Frame {
    const name = treeName();
    const size = 1 + frame.bytes.length;
    const fd = native.createNamed(name, size);
    try {
      trackInTree(name);
      const seg = Segment.fromFd(fd, size);
      const out = new Uint8Array(seg.buffer);
      out[0] = frame.kind;
      out.set(frame.bytes, 1);
      seg.close();
    } catch (err) {
      native.unlink(name);
      throw err;
    }
    return { kind: Kind.OutOfLine, bytes: Buffer.from(name, 'latin1') };
  }

  /** Reads back a spilled message and removes its name. */
  unspill(nameBytes: Uint8Array): Frame {
    const name = Buffer.from(nameBytes).toString('latin1');
    const fd = native.openNamed(name);
    const size = native.identify(fd)[2];
    const seg = Segment.fromFd(fd, size);
    try {
      const src = new Uint8Array(seg.buffer);
      const bytes = Buffer.allocUnsafe(size - 1);
      bytes.set(src.subarray(1));
      return { kind: src[0] as Kind, bytes };
    } finally {
      seg.close();
      try {
        native.unlink(name);
        forget(name);
      } catch {
        // unlinked already
      }
    }
  }

  /**
   * Puts one frame (in-ring size). Returns false on timeout (full), throws RingClosed when closed.
   */
  *putPlan(frame: Frame, timeout: number | undefined, countTask: boolean): WaitPlan<boolean> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    for (;;) {
      yield* this.locked();
      const seen = Atomics.load(w, NOT_FULL);
      if (this.putLocked(frame, countTask)) return true;
      const left = remaining(deadline);
      if (left === 0) return false;
      // Spin a little for room before sleeping: a busy consumer makes it soon.
      if (this.spinWhile(NOT_FULL, seen)) continue;
      this.sleepingOn(SLEPT_PUT, seen);
      // Full by bytes, room comes back at half empty (take()): a wait of half a ring's copies,
      // too long to poll through. At maxsize, the next get makes room: poll for it.
      const max = w[MAXSIZE];
      const poll = max > 0 && w[COUNT] >= max;
      yield { ...this.at(NOT_FULL, seen, Math.min(left ?? PUT_SLICE_MS, PUT_SLICE_MS)), poll };
    }
  }

  // The spins are native (ring.h): a JS spin loop was the first code V8 compiled, and on a
  // 2-core machine its compiler threads took the cores both ends of a busy queue needed.

  /** Spins while word `i` holds `seen` and the ring is open; true once it changed. */
  private spinWhile(i: number, seen: number): boolean {
    return native.ringSpinWhile(this.seg.buffer, i, seen, SPIN_US);
  }

  /**
   * Takes one frame. Returns undefined on timeout (empty); throws RingClosed once closed and
   * drained. A Pipe's reader also ends when the writer's process is gone. With `claim`, for a
   * plan run on its own by a call that resolves with the message's value (decodeFrame's) and has
   * no destination: its waits claim the message natively (takeAt).
   */
  *getPlan(timeout: number | undefined, watchWriter = false, into?: Destination, claim = false): WaitPlan<Frame | undefined> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    // Whether to look at the writer's process now: after a sleep slice ran out, not before every
    // sleep (a kill() and a /proc read per recv); at once only for a call that must answer now.
    let checkWriter = watchWriter && timeout === 0;
    // Likewise for the owners of frames in flight (claim()).
    let checkOwners = timeout === 0;
    for (;;) {
      // Spin a little without the mutex: a busy producer refills before we would have slept.
      native.ringSpinUntilReady(this.seg.buffer, SPIN_US);
      yield* this.locked();
      // Read before looking: a publish after the look bumps it, so the sleep below returns at once.
      const seen = Atomics.load(w, NOT_EMPTY);
      let pos: number;
      try {
        pos = this.claim(checkOwners);
      } catch (err) {
        this.lock.release();
        throw err;
      }
      if (pos >= 0) {
        this.lock.release();
        return this.take(pos, into);
      }
      if (pos === EMPTY && (w[CLOSED] === 1 || (checkWriter && native.processGone(w[WRITER])))) {
        this.lock.release();
        // Before saying so, one look for frames a dead or abandoning consumer left claimed.
        if (!checkOwners && Atomics.load(w, HEAD) !== w[CLAIM]) {
          checkOwners = true;
          continue;
        }
        throw new RingClosed('the queue is closed');
      }
      // Frames claimed by others and not done: if one of them dies, its frame comes back.
      const inFlight = Atomics.load(w, HEAD) !== w[CLAIM];
      this.lock.release();
      if (pos === BUSY && native.ringSpinWhileBusy(this.seg.buffer, BUSY_SPIN_US)) continue;
      this.sleepingOn(SLEPT_GET, seen);
      // Even with nothing in flight now: a consumer may claim a frame and die while we sleep.
      const cap = pos === BUSY || inFlight ? OWNER_CHECK_MS : watchWriter ? WRITER_CHECK_MS : IDLE_CHECK_MS;
      const left = remaining(deadline, cap);
      if (left === 0) {
        // Out of time: one last look, at the owners too, before saying empty.
        if ((pos === BUSY || inFlight) && !checkOwners) {
          checkOwners = true;
          continue;
        }
        return undefined;
      }
      const result = yield claim && into === undefined ? this.takeAt(seen, left) : this.at(NOT_EMPTY, seen, left);
      checkWriter = watchWriter && result === WaitResult.TimedOut;
      checkOwners = result === WaitResult.TimedOut;
    }
  }

  /** Waits until a get would not block (a message, or the end). True if one is there. */
  *pollPlan(timeout: number | undefined, watchWriter = false): WaitPlan<boolean> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    let checkWriter = watchWriter && timeout === 0;  // as in getPlan
    for (;;) {
      if (this.readyHint()) return true;
      if (w[CLOSED] === 1 || (checkWriter && native.processGone(w[WRITER]))) return true;
      const seen = Atomics.load(w, NOT_EMPTY);
      if (this.readyHint()) return true;
      const busy = Atomics.load(w, CLAIM) !== Atomics.load(w, RESERVE);
      const left = remaining(deadline, busy ? OWNER_CHECK_MS : watchWriter ? WRITER_CHECK_MS : IDLE_CHECK_MS);
      if (left === 0) return false;
      this.sleepingOn(SLEPT_GET, seen);
      const result = yield this.at(NOT_EMPTY, seen, left);
      checkWriter = watchWriter && result === WaitResult.TimedOut;
      // A frame stuck in WRITING: its producer may have died; a claim skips it if so.
      if (busy && result === WaitResult.TimedOut) yield* this.skipDeadWriters();
    }
  }

  /** Under the mutex: drops the frames at the front whose producer died mid-copy. */
  private *skipDeadWriters(): WaitPlan<void> {
    yield* this.locked();
    const w = this.w;
    const fw = this.fw;
    try {
      for (;;) {
        const at = w[CLAIM];
        if (at === w[RESERVE]) return;
        const i = (at & this.mask) >>> 2;
        const word = Atomics.load(fw, i + F_STATE);
        if ((word & STATE_MASK) !== WRITING || !ownerGone(fw[i + F_PID], fw[i + F_START])) return;
        this.skipFrame(at, i, word, (at + frameSize(fw[i + F_LENGTH])) | 0);
      }
    } finally {
      this.lock.release();
    }
  }

  /** @internal For tests: the frames not yet done with, oldest first (read without the mutex). */
  framesInFlight(): { state: 'writing' | 'ready' | 'reading' | 'done'; pid: number; length: number }[] {
    const names = ['', 'writing', 'ready', 'reading', 'done'] as const;
    const out = [];
    const start = Atomics.load(this.w, HEAD);
    const end = Atomics.load(this.w, RESERVE);
    for (let at = start; at !== end && out.length < this.capacity / FRAME_HEAD;) {
      const i = (at & this.mask) >>> 2;
      const length = this.fw[i + F_LENGTH];
      out.push({ state: names[Atomics.load(this.fw, i + F_STATE) & STATE_MASK] as 'writing', pid: this.fw[i + F_PID], length });
      at = (at + frameSize(length)) | 0;
    }
    return out;
  }

  // JoinableQueue.

  taskDone(): void {
    for (;;) {
      const n = Atomics.load(this.w, UNFINISHED);
      if (n <= 0) throw new Error('taskDone() called too many times');
      if (Atomics.compareExchange(this.w, UNFINISHED, n, n - 1) === n) {
        if (n === 1) this.wakeWord(UNFINISHED, 0x7fffffff);
        return;
      }
    }
  }

  *joinPlan(): WaitPlan<void> {
    for (;;) {
      const n = Atomics.load(this.w, UNFINISHED);
      if (n === 0) return;
      const result = yield this.at(UNFINISHED, n, undefined);
      void (result as WaitResult);
    }
  }

  /** The payload of a frame whose head is at `pos` (16-aligned: a number never wraps). */
  private writePayload(pos: number, frame: Frame): void {
    const start = (pos + FRAME_HEAD) & this.mask;
    if (frame.kind === Kind.Number) {
      this.view.setFloat64(start, frame.num!, true);
      return;
    }
    const src = frame.bytes;
    const first = Math.min(src.length, this.capacity - start);
    this.bytes.set(first === src.length ? src : src.subarray(0, first), start);
    if (first < src.length) this.bytes.set(src.subarray(first), 0);
  }

  private read(pos: number, into?: Destination): Frame {
    const i = pos >>> 2;
    const len = this.fw[i + F_LENGTH];
    const kind = ((this.fw[i + F_STATE] >>> 8) & 0xff) as Kind;
    const start = (pos + FRAME_HEAD) & this.mask;
    if (kind === Kind.Number) return { kind, bytes: NUMBER_BYTES, num: this.view.getFloat64(start, true) };
    // Copied out of shared memory before anyone may overwrite it (v8.deserialize would alias it).
    const fits = fitsInto(into, kind, len);
    const out = fits ? into!.target : Buffer.allocUnsafe(len);
    const at = fits ? into!.offset : 0;
    const first = Math.min(len, this.capacity - start);
    intrinsicSet.call(out, this.bytes.subarray(start, start + first), at);
    if (first < len) intrinsicSet.call(out, this.bytes.subarray(0, len - first), at + first);
    return fits ? { kind, bytes: out, copied: len } : { kind, bytes: out };
  }
}
