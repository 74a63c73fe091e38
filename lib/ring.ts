// A ring of messages in one shared segment: what Queue and Pipe stand on.
//
// Kill-safety comes from publication by a single store. The tail word (puts << 32 | bytes written)
// is stored once, after the frame is written; the head word (gets << 32 | bytes read) once, after
// the frame was copied out. So a put or get killed half-way has either happened or not: no half
// message is ever seen, and no message is lost or duplicated by a consumer killed between gets.
// Both happen under one mutex, the lock word of synchronize.ts, which a waiter reclaims silently
// when its holder died (the structure is consistent at every instant, so there is nothing to
// repair).
//
// Messages larger than a quarter of the ring go out of line: the producer writes them to a named
// segment registered to the queue's creator (so the producer may die before anyone reads it) and
// puts its name in the ring; the consumer copies it out and unlinks it.
import { OwnerDiedError } from './errors';
import { native } from './native';
import { Segment } from './segment';
import { Lock } from './synchronize';
import { forget, nameFor, trackFor } from './tracker';
import { deadlineAfter, remaining, wake, WaitPlan, WaitResult } from './wait';

// Int32 words of the header.
const NOT_EMPTY = 2;   // bumped by every put: consumers sleep on it
const NOT_FULL = 3;    // bumped by every get: producers sleep on it
const CLOSED = 4;
const SLEEP_GET = 5;   // consumers asleep (so producers know whether to wake anyone)
const SLEEP_PUT = 6;
const UNFINISHED = 7;  // JoinableQueue: puts not yet matched by taskDone()
const MAXSIZE = 8;
const CREATOR = 9;     // pid whose exit ends out-of-line messages' names
const WRITER = 10;     // Pipe: the process holding the sending end
// BigInt64 words (byte offsets).
const TAIL = 64;
const HEAD = 72;
const DATA = 128;

const FRAME_HEAD = 5;  // u32 length, u8 kind
const SPINS = 2000;
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

export interface Frame {
  kind: Kind;
  bytes: Uint8Array;
}

/** Thrown by get() on a ring that is closed and drained. */
export class RingClosed extends Error {
  override name = 'RingClosed';
}

const U32 = 0x100000000n;

export class Ring {
  readonly seg: Segment;
  private readonly w: Int32Array;
  private readonly big: BigInt64Array;
  private readonly bytes: Uint8Array;
  private readonly view: DataView;
  private readonly lock: Lock;
  readonly capacity: number;

  private constructor(seg: Segment) {
    this.seg = seg;
    this.w = new Int32Array(seg.buffer, 0, DATA / 4);
    this.big = new BigInt64Array(seg.buffer, 0, DATA / 8);
    this.capacity = seg.size - DATA;
    this.bytes = new Uint8Array(seg.buffer, DATA, this.capacity);
    this.view = new DataView(seg.buffer, DATA, this.capacity);
    this.lock = Lock.over(seg, 0);
  }

  static create(capacity: number, maxsize: number): Ring {
    const ring = new Ring(Segment.create(DATA + capacity));
    ring.w[MAXSIZE] = maxsize;
    ring.w[CREATOR] = process.pid;
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
    const puts = Atomics.load(this.big, TAIL / 8) >> 32n;
    const gets = Atomics.load(this.big, HEAD / 8) >> 32n;
    return Number((puts - gets + U32) % U32);
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
        yield* this.lock.acquirePlan(true, undefined);
        return;
      } catch (err) {
        if (!(err instanceof OwnerDiedError)) throw err;
      }
    }
  }

  /** True when a frame of `length` payload bytes must go out of line. */
  outOfLine(length: number): boolean {
    return FRAME_HEAD + length > this.capacity / 4;
  }

  /** Writes a message too large for the ring to a named segment and returns the frame to put. */
  spill(frame: Frame): Frame {
    const name = nameFor(this.w[CREATOR]);
    const size = 1 + frame.bytes.length;
    const fd = native.createNamed(name, size);
    try {
      trackFor(this.w[CREATOR], name);
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
    const need = FRAME_HEAD + frame.bytes.length;
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    for (;;) {
      yield* this.locked();
      if (w[CLOSED] === 1) {
        this.lock.release();
        throw new RingClosed('the queue is closed');
      }
      const tail = Atomics.load(this.big, TAIL / 8);
      const head = Atomics.load(this.big, HEAD / 8);
      const used = Number(((tail & 0xffffffffn) - (head & 0xffffffffn) + U32) % U32);
      const count = Number(((tail >> 32n) - (head >> 32n) + U32) % U32);
      const max = w[MAXSIZE];
      if (this.capacity - used >= need && (max <= 0 || count < max)) {
        this.write(Number((tail & 0xffffffffn) % BigInt(this.capacity)), frame);
        if (countTask) Atomics.add(w, UNFINISHED, 1);
        const written = ((tail & 0xffffffffn) + BigInt(need)) % U32;
        const puts = ((tail >> 32n) + 1n) % U32;
        Atomics.store(this.big, TAIL / 8, BigInt.asIntN(64, (puts << 32n) | written));
        Atomics.add(w, NOT_EMPTY, 1);
        this.lock.release();
        if (Atomics.load(w, SLEEP_GET) > 0) this.wakeWord(NOT_EMPTY, 1);
        return true;
      }
      const seen = Atomics.load(w, NOT_FULL);
      Atomics.add(w, SLEEP_PUT, 1);
      this.lock.release();
      const left = remaining(deadline);
      if (left === 0) {
        Atomics.sub(w, SLEEP_PUT, 1);
        return false;
      }
      try {
        yield this.at(NOT_FULL, seen, left);
      } finally {
        Atomics.sub(w, SLEEP_PUT, 1);
      }
    }
  }

  /**
   * Takes one frame. Returns undefined on timeout (empty); throws RingClosed once closed and
   * drained. A Pipe's reader also ends when the writer's process is gone.
   */
  *getPlan(timeout: number | undefined, watchWriter = false): WaitPlan<Frame | undefined> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    const big = this.big;
    for (;;) {
      // Spin a little without the lock: a busy producer refills before we would have slept.
      for (let n = 0; n < SPINS && Atomics.load(big, TAIL / 8) === Atomics.load(big, HEAD / 8) && w[CLOSED] === 0; n++);
      yield* this.locked();
      const tail = Atomics.load(big, TAIL / 8);
      const head = Atomics.load(big, HEAD / 8);
      if (tail !== head) {
        const read = head & 0xffffffffn;
        const pos = Number(read % BigInt(this.capacity));
        const frame = this.read(pos);
        const consumed = (read + BigInt(FRAME_HEAD + frame.bytes.length)) % U32;
        const gets = ((head >> 32n) + 1n) % U32;
        Atomics.store(big, HEAD / 8, BigInt.asIntN(64, (gets << 32n) | consumed));
        Atomics.add(w, NOT_FULL, 1);
        this.lock.release();
        if (Atomics.load(w, SLEEP_PUT) > 0) this.wakeWord(NOT_FULL, 0x7fffffff);
        return frame;
      }
      if (w[CLOSED] === 1 || (watchWriter && native.processGone(w[WRITER]))) {
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
        yield this.at(NOT_EMPTY, seen, left);
      } finally {
        Atomics.sub(w, SLEEP_GET, 1);
      }
    }
  }

  /** Waits until a get would not block (a message, or the end). True if one is there. */
  *pollPlan(timeout: number | undefined, watchWriter = false): WaitPlan<boolean> {
    const deadline = deadlineAfter(timeout);
    const w = this.w;
    for (;;) {
      if (Atomics.load(this.big, TAIL / 8) !== Atomics.load(this.big, HEAD / 8)) return true;
      if (w[CLOSED] === 1 || (watchWriter && native.processGone(w[WRITER]))) return true;
      const seen = Atomics.load(w, NOT_EMPTY);
      if (Atomics.load(this.big, TAIL / 8) !== Atomics.load(this.big, HEAD / 8)) return true;
      const left = remaining(deadline, watchWriter ? WRITER_CHECK_MS : Infinity);
      if (left === 0) return false;
      Atomics.add(w, SLEEP_GET, 1);
      try {
        yield this.at(NOT_EMPTY, seen, left);
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
    const cap = this.capacity;
    const len = frame.bytes.length;
    const head = new Uint8Array(FRAME_HEAD);
    new DataView(head.buffer).setUint32(0, len, true);
    head[4] = frame.kind;
    this.copyIn(pos, head);
    this.copyIn((pos + FRAME_HEAD) % cap, frame.bytes);
  }

  private copyIn(pos: number, src: Uint8Array): void {
    const first = Math.min(src.length, this.capacity - pos);
    this.bytes.set(first === src.length ? src : src.subarray(0, first), pos);
    if (first < src.length) this.bytes.set(src.subarray(first), 0);
  }

  private read(pos: number): Frame {
    const cap = this.capacity;
    let len: number;
    let kind: number;
    if (pos + FRAME_HEAD <= cap) {
      len = this.view.getUint32(pos, true);
      kind = this.bytes[pos + 4];
    } else {
      const head = new Uint8Array(FRAME_HEAD);
      for (let i = 0; i < FRAME_HEAD; i++) head[i] = this.bytes[(pos + i) % cap];
      len = new DataView(head.buffer).getUint32(0, true);
      kind = head[4];
    }
    // Copied out of shared memory before anyone may overwrite it (v8.deserialize would alias it).
    const out = Buffer.allocUnsafe(len);
    const start = (pos + FRAME_HEAD) % cap;
    const first = Math.min(len, cap - start);
    out.set(this.bytes.subarray(start, start + first), 0);
    if (first < len) out.set(this.bytes.subarray(0, len - first), first);
    return { kind: kind as Kind, bytes: out };
  }
}
