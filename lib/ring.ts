// A ring of messages in one shared segment: what Queue and Pipe stand on.
//
// Kill-safety comes from publication by a single store. The tail word (bytes written, mod 2**32)
// is stored once, after the frame is written; the head word (bytes read) once, after the frame
// was copied out. So a put or get killed half-way has either happened or not: no half message is
// ever seen, and no message is lost or duplicated by a consumer killed between gets. The ring's
// size is a power of two, so those counters place frames right across their wrap-around. Both
// happen under one mutex, the lock word of synchronize.ts; whoever reclaims it from a dead holder
// recounts the messages (the one figure a death between two stores can leave wrong).
//
// Messages larger than a quarter of the ring go out of line: the producer writes them to a named
// segment registered with the tree's tracker (so the producer may die before anyone reads it) and
// puts its name in the ring; the consumer copies it out and unlinks it.
import { OwnerDiedError } from './errors';
import { native } from './native';
import { Segment } from './segment';
import { Lock } from './synchronize';
import { forget, trackInTree, treeName } from './tracker';
import { deadlineAfter, remaining, wake, WaitPlan, WaitResult } from './wait';

// Int32 words of the header.
const NOT_EMPTY = 2;   // bumped by every put: consumers sleep on it
const NOT_FULL = 3;    // bumped by every get: producers sleep on it
const CLOSED = 4;
const SLEEP_GET = 5;   // consumers asleep (so producers know whether to wake anyone)
const SLEEP_PUT = 6;
const UNFINISHED = 7;  // JoinableQueue: puts not yet matched by taskDone()
const MAXSIZE = 8;
const WRITER = 10;     // Pipe: the process holding the sending end
const LOCK = 12;       // the ring's mutex: a Lock's three words, 12-14
const TAIL = 16;       // bytes written, mod 2**32: the publication word of put
const HEAD = 17;       // bytes read, mod 2**32: the publication word of get
const COUNT = 18;      // messages in the ring
const DATA = 128;

const FRAME_HEAD = 5;  // u32 length, u8 kind
const SPINS = 2000;
const LOCK_SPINS = 20000;
/** A producer waiting for room looks again this often (consumers wake it only at half empty). */
const PUT_SLICE_MS = 5;
/** How often a sleeper looks at whether a Pipe's writer is still alive. */
const WRITER_CHECK_MS = 100;

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

export interface Frame {
  kind: Kind;
  /** The payload; for a Number, NUMBER_BYTES (its length) and the value in `num`. */
  bytes: Uint8Array;
  num?: number;
  /** Gives back what the message took for the shared objects in it, if it is not put after all. */
  undo?: () => void;
}

/** Stands for a number's 8 payload bytes where only their length matters. */
export const NUMBER_BYTES = new Uint8Array(8);
/** Where a number is laid out as bytes when its frame wraps around the ring's end. */
const scratchNumber = new Float64Array(1);
const scratchNumberBytes = new Uint8Array(scratchNumber.buffer);

/** Thrown by get() on a ring that is closed and drained. */
export class RingClosed extends Error {
  override name = 'RingClosed';
}

export class Ring {
  readonly seg: Segment;
  private readonly w: Int32Array;
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
    this.bytes = new Uint8Array(seg.buffer, DATA, this.capacity);
    this.view = new DataView(seg.buffer, DATA, this.capacity);
    this.lock = Lock.over(seg, 4 * LOCK);
  }

  /** `capacity` is rounded up to a power of two. */
  static create(capacity: number, maxsize: number): Ring {
    const ring = new Ring(Segment.create(DATA + 2 ** Math.ceil(Math.log2(capacity)), true));
    ring.w[MAXSIZE] = maxsize;
    ring.w[WRITER] = process.pid;
    return ring;
  }

  static over(seg: Segment): Ring {
    return new Ring(seg);
  }

  get maxsize(): number {
    return this.w[MAXSIZE];
  }

  /** Messages in the ring (exact at the instant of the two loads, as Python's is approximate). */
  qsize(): number {
    return Atomics.load(this.w, TAIL) === Atomics.load(this.w, HEAD) ? 0 : Math.max(1, Atomics.load(this.w, COUNT));
  }

  private isEmpty(): boolean {
    return Atomics.load(this.w, TAIL) === Atomics.load(this.w, HEAD);
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
    Atomics.store(this.w, WRITER, process.pid);
  }

  private wakeWord(i: number, count: number): void {
    wake(this.seg.buffer, 4 * i, count);
  }

  private at(i: number, expected: number, timeout: number | undefined) {
    return { buffer: this.seg.buffer, byteOffset: 4 * i, expected, timeout };
  }

  /** The queue's mutex: a holder that died is reclaimed without troubling the caller. */
  private *locked(): WaitPlan<void> {
    if (this.lock.tryAcquire()) return;
    for (;;) {
      try {
        // Held for a frame's copy (64 KiB take ~5 µs): spin past that rather than sleep and pay a
        // wake-up (~30 µs) per message.
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
    for (let at = w[HEAD]; at !== w[TAIL]; n++) {
      const pos = at & this.mask;
      const len = this.frameLength(pos);
      at = (at + FRAME_HEAD + len) | 0;
    }
    w[COUNT] = n;
  }

  private frameLength(pos: number): number {
    if (pos + 4 <= this.capacity) return this.view.getUint32(pos, true);
    let len = 0;
    for (let i = 3; i >= 0; i--) len = len * 256 + this.bytes[(pos + i) & this.mask];
    return len;
  }

  // The uncontended paths: one CAS for the mutex, no plan, no waiting.

  /** Puts now if the mutex is free and there is room: true; false to take the slow path. */
  tryPut(frame: Frame, countTask: boolean): boolean {
    if (!this.lock.tryAcquire()) return false;
    return this.putLocked(frame, countTask);
  }

  /** Takes a frame now if the mutex is free and one is there; null to take the slow path. */
  tryGet(): Frame | null {
    if (this.isEmpty() || !this.lock.tryAcquire()) return null;
    if (this.isEmpty()) {
      this.lock.release();
      return null;
    }
    return this.getLocked();
  }

  /** With the mutex held: writes and publishes if there is room (and releases), else keeps it. */
  private putLocked(frame: Frame, countTask: boolean): boolean {
    const w = this.w;
    if (w[CLOSED] === 1) {
      this.lock.release();
      throw new RingClosed('the queue is closed');
    }
    const need = FRAME_HEAD + frame.bytes.length;
    const tail = w[TAIL];
    const used = (tail - w[HEAD]) >>> 0;
    const max = w[MAXSIZE];
    if (this.capacity - used < need || (max > 0 && w[COUNT] >= max)) {
      this.lock.release();
      return false;
    }
    this.write(tail & this.mask, frame);
    if (countTask) Atomics.add(w, UNFINISHED, 1);
    w[COUNT]++;
    Atomics.store(w, TAIL, (tail + need) | 0);
    Atomics.add(w, NOT_EMPTY, 1);
    this.lock.release();
    if (Atomics.load(w, SLEEP_GET) > 0) this.wakeWord(NOT_EMPTY, 1);
    return true;
  }

  /** With the mutex held and a frame there: copies it out, publishes, releases. */
  private getLocked(into?: Destination): Frame {
    const w = this.w;
    const head = w[HEAD];
    const frame = this.read(head & this.mask, into);
    const count = --w[COUNT];
    const newHead = (head + FRAME_HEAD + frame.bytes.length) | 0;
    Atomics.store(w, HEAD, newHead);
    Atomics.add(w, NOT_FULL, 1);
    this.lock.release();
    // Producers wait for room: wake them once half the ring is free, not after every get (a full
    // ring otherwise ping-pongs one message per wake-up: 64 KiB messages went 2x slower). A
    // producer whose frame fits sooner finds out itself: it sleeps in PUT_SLICE_MS slices.
    if (Atomics.load(w, SLEEP_PUT) > 0) {
      const used = (Atomics.load(w, TAIL) - newHead) >>> 0;
      const max = w[MAXSIZE];
      if (used <= this.capacity / 2 || (max > 0 && count < max)) this.wakeWord(NOT_FULL, 0x7fffffff);
    }
    return frame;
  }

  /** True when a frame of `length` payload bytes must go out of line. */
  outOfLine(length: number): boolean {
    return FRAME_HEAD + length > this.capacity / 4;
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
      let n = 0;
      while (n++ < SPINS && Atomics.load(w, NOT_FULL) === seen && w[CLOSED] === 0);
      if (Atomics.load(w, NOT_FULL) !== seen) continue;
      Atomics.add(w, SLEEP_PUT, 1);
      try {
        yield this.at(NOT_FULL, seen, Math.min(left ?? PUT_SLICE_MS, PUT_SLICE_MS));
      } finally {
        Atomics.sub(w, SLEEP_PUT, 1);
      }
    }
  }

  /**
   * Takes one frame. Returns undefined on timeout (empty); throws RingClosed once closed and
   * drained. A Pipe's reader also ends when the writer's process is gone.
   */
  *getPlan(timeout: number | undefined, watchWriter = false, into?: Destination): WaitPlan<Frame | undefined> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    // Whether to look at the writer's process now: after a sleep slice ran out, not before every
    // sleep (a kill() and a /proc read per recv); at once only for a call that must answer now.
    let checkWriter = watchWriter && timeout === 0;
    for (;;) {
      // Spin a little without the lock: a busy producer refills before we would have slept.
      for (let n = 0; n < SPINS && this.isEmpty() && w[CLOSED] === 0; n++);
      yield* this.locked();
      if (!this.isEmpty()) return this.getLocked(into);
      if (w[CLOSED] === 1 || (checkWriter && native.processGone(w[WRITER]))) {
        this.lock.release();
        throw new RingClosed('the queue is closed');
      }
      const seen = Atomics.load(w, NOT_EMPTY);
      Atomics.add(w, SLEEP_GET, 1);
      this.lock.release();
      const left = remaining(deadline, watchWriter ? WRITER_CHECK_MS : Infinity);
      if (left === 0) {
        Atomics.sub(w, SLEEP_GET, 1);
        return undefined;
      }
      try {
        const result = yield this.at(NOT_EMPTY, seen, left);
        checkWriter = watchWriter && result === WaitResult.TimedOut;
      } finally {
        Atomics.sub(w, SLEEP_GET, 1);
      }
    }
  }

  /** Waits until a get would not block (a message, or the end). True if one is there. */
  *pollPlan(timeout: number | undefined, watchWriter = false): WaitPlan<boolean> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    let checkWriter = watchWriter && timeout === 0;  // as in getPlan
    for (;;) {
      if (!this.isEmpty()) return true;
      if (w[CLOSED] === 1 || (checkWriter && native.processGone(w[WRITER]))) return true;
      const seen = Atomics.load(w, NOT_EMPTY);
      if (!this.isEmpty()) return true;
      const left = remaining(deadline, watchWriter ? WRITER_CHECK_MS : Infinity);
      if (left === 0) return false;
      Atomics.add(w, SLEEP_GET, 1);
      try {
        const result = yield this.at(NOT_EMPTY, seen, left);
        checkWriter = watchWriter && result === WaitResult.TimedOut;
      } finally {
        Atomics.sub(w, SLEEP_GET, 1);
      }
    }
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

  private write(pos: number, frame: Frame): void {
    const len = frame.bytes.length;
    if (pos + FRAME_HEAD <= this.capacity) {
      this.view.setUint32(pos, len, true);
      this.bytes[pos + 4] = frame.kind;
    } else {
      for (let i = 0; i < 4; i++) this.bytes[(pos + i) & this.mask] = (len >>> (8 * i)) & 0xff;
      this.bytes[(pos + 4) & this.mask] = frame.kind;
    }
    const start = (pos + FRAME_HEAD) & this.mask;
    if (frame.kind === Kind.Number) {
      if (start + 8 <= this.capacity) {
        this.view.setFloat64(start, frame.num!, true);
      } else {
        scratchNumber[0] = frame.num!;  // little-endian, as DataView writes it above
        this.copyIn(start, scratchNumberBytes);
      }
      return;
    }
    this.copyIn(start, frame.bytes);
  }

  private copyIn(pos: number, src: Uint8Array): void {
    const first = Math.min(src.length, this.capacity - pos);
    this.bytes.set(first === src.length ? src : src.subarray(0, first), pos);
    if (first < src.length) this.bytes.set(src.subarray(first), 0);
  }

  private read(pos: number, into?: Destination): Frame {
    const len = this.frameLength(pos);
    const kind = this.bytes[(pos + 4) & this.mask] as Kind;
    const start = (pos + FRAME_HEAD) & this.mask;
    if (kind === Kind.Number && start + 8 <= this.capacity) {
      return { kind, bytes: NUMBER_BYTES, num: this.view.getFloat64(start, true) };
    }
    // Copied out of shared memory before anyone may overwrite it (v8.deserialize would alias it):
    // into the caller's buffer when it asked for bytes and they fit, else into a new one.
    const fits = into !== undefined && kind === Kind.Bytes && len <= into.target.length - into.offset;
    const out = fits ? into.target.subarray(into.offset, into.offset + len) : Buffer.allocUnsafe(len);
    const first = Math.min(len, this.capacity - start);
    out.set(this.bytes.subarray(start, start + first), 0);
    if (first < len) out.set(this.bytes.subarray(0, len - first), first);
    if (kind === Kind.Number) return { kind, bytes: out, num: new DataView(out.buffer, out.byteOffset, 8).getFloat64(0, true) };
    return { kind, bytes: out };
  }
}
