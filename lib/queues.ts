// Queue, SimpleQueue, JoinableQueue and Pipe over a shared-memory ring (lib/ring.ts).
//
// Items cross by v8.serialize, except numbers, strings, Buffers, booleans, null and undefined,
// which have a faster encoding of their own. A producer's items arrive in the order it put them,
// also when several puts wait for room at once: each queue object keeps its blocked puts in line.
import { describe, optionsOf } from './describe';
import { abortError, BufferTooShort, EOFError, Empty, Full } from './errors';
import { copyInto, Destination, Frame, Kind, NUMBER_BYTES, Ring, RingClosed, roomIn, trueLength } from './ring';
import { Segment } from './segment';
import { decode, kShare, registerKind, serializeMessage, ShareDescription } from './shared';
import { checkSignal, checkTimeout, Outcome, runAsync, runSync } from './wait';
import * as v8 from 'v8';

const EMPTY_BYTES = new Uint8Array(0);
const RESOLVED = Promise.resolve();
/** What Queue.takeNow() returns when nothing is there. */
export const NOTHING: unique symbol = Symbol('nothing');
const DEFAULT_CAPACITY = 4 * 1024 * 1024;

function encodeItem(item: unknown, what: string): Frame {
  switch (typeof item) {
    case 'number':
      // Written into the ring in place: no buffer per message.
      return { kind: Kind.Number, bytes: NUMBER_BYTES, num: item };
    case 'string':
      return { kind: Kind.String, bytes: Buffer.from(item, 'utf8') };
    case 'undefined':
      return { kind: Kind.Undefined, bytes: EMPTY_BYTES };
    case 'boolean':
      return { kind: item ? Kind.True : Kind.False, bytes: EMPTY_BYTES };
    default:
      if (item === null) return { kind: Kind.Null, bytes: EMPTY_BYTES };
      if (Buffer.isBuffer(item)) return { kind: Kind.Bytes, bytes: bytesToSend(item, 0, trueLength(item), what) };
      return serializedFrame(item, what);
  }
}

function serializedFrame(item: unknown, what: string): Frame {
  let undo: (() => void) | undefined;
  const bytes = serializeMessage(item, what, (u) => (undo = u));
  return { kind: Kind.Serialized, bytes, undo };
}

function decodeFrame(frame: Frame): unknown {
  switch (frame.kind) {
    case Kind.Number:
      return frame.num;
    case Kind.String:
      return Buffer.from(frame.bytes.buffer, frame.bytes.byteOffset, frame.bytes.length).toString('utf8');
    case Kind.Bytes:
      return frame.bytes;
    case Kind.Undefined:
      return undefined;
    case Kind.Null:
      return null;
    case Kind.True:
      return true;
    case Kind.False:
      return false;
    default:
      return decode(v8.deserialize(frame.bytes));
  }
}

function checkCapacity(capacity: unknown, caller: string): number {
  if (capacity === undefined) return DEFAULT_CAPACITY;
  if (typeof capacity !== 'number' || !Number.isInteger(capacity)) {
    throw new TypeError(`${caller}: capacity must be an integer number of bytes, got ${describe(capacity)}`);
  }
  if (capacity < 4096 || capacity > 2 ** 30) throw new RangeError(`${caller}: capacity must be between 4096 and 2**30 bytes, got ${capacity}`);
  return capacity;
}

/**
 * One sending side (a queue object, or a Connection): encodes, spills what is too large for the
 * ring, and keeps blocked puts in their order.
 */
class Sender {
  private line: Promise<unknown> = Promise.resolve();
  private waiting = 0;

  /** `closedMessage`: what a put on the closed ring says, in its owner's terms. */
  constructor(private readonly ring: Ring, private readonly countTask: boolean, private readonly closedMessage: string) {}

  /** A RingClosed becomes the owner's own error (a Queue's, a Connection's); others pass as they are. */
  private closedError(err: unknown): unknown {
    return err instanceof RingClosed ? new Error(this.closedMessage) : err;
  }

  /** An encoded frame, made ready for the ring: spilled out of line if too large for it. */
  private prepare(frame: Frame): Frame {
    if (!this.ring.outOfLine(frame.bytes.length)) return frame;
    try {
      return { ...this.ring.spill(frame), undo: frame.undo };
    } catch (err) {
      frame.undo?.();
      throw err;
    }
  }

  /** A frame that was not put after all: its spilled segment and its shared objects' references go. */
  private drop(frame: Frame): void {
    if (frame.kind === Kind.OutOfLine) this.ring.unspill(frame.bytes);
    frame.undo?.();
  }

  /**
   * Puts a number, boolean, null or undefined now (Ring.tryPutValue) if nothing is in line: true;
   * false, having done nothing, for the full path (options, encoding, waiting for room).
   */
  putNow(item: unknown): boolean {
    return this.waiting === 0 && this.ring.tryPutValue(item, this.countTask);
  }

  putSync(item: unknown, timeout: number | undefined, what: string): void {
    const frame = this.prepare(encodeItem(item, what));
    let ok: boolean;
    try {
      ok = (this.waiting === 0 && this.ring.tryPut(frame, this.countTask)) || runSync(this.ring.putPlan(frame, timeout, this.countTask));
    } catch (err) {
      this.drop(frame);
      throw this.closedError(err);
    }
    if (!ok) {
      this.drop(frame);
      throw new Full('the queue is full');
    }
  }

  put(item: unknown, timeout: number | undefined, signal: AbortSignal | undefined, what: string): Promise<void> {
    let encoded: Frame;
    try {
      if (signal?.aborted) throw abortError(signal);
      encoded = encodeItem(item, what);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.putFrame(encoded, timeout, signal);
  }

  /** put() of an encoded frame (sendBytes makes its own: raw bytes, with no Buffer made of them). */
  putFrame(encoded: Frame, timeout: number | undefined, signal: AbortSignal | undefined): Promise<void> {
    let prepared: Frame | undefined;
    try {
      prepared = this.prepare(encoded);
      // Nothing in line, the mutex free and room now: done before this call returns. Anything else
      // waits on the event loop (a sync try would block it while another process holds the mutex).
      if (this.waiting === 0 && this.ring.tryPut(prepared, this.countTask)) {
        return Promise.resolve();
      }
    } catch (err) {
      if (prepared !== undefined) this.drop(prepared);
      return Promise.reject(this.closedError(err));
    }
    const frame = prepared;
    this.waiting++;
    const attempt = async (): Promise<void> => {
      try {
        if (!(await runAsync(this.ring.putPlan(frame, timeout, this.countTask), signal))) throw new Full('the queue is full');
      } catch (err) {
        this.drop(frame);
        throw this.closedError(err);
      } finally {
        this.waiting--;
      }
    };
    const result = this.line.then(attempt, attempt);
    this.line = result.catch(() => undefined);
    return result;
  }
}

function takeFrame(ring: Ring, frame: Frame): unknown {
  return decodeFrame(frame.kind === Kind.OutOfLine ? ring.unspill(frame.bytes) : frame);
}

export interface QueueOptions {
  /** Most items held at once; 0 (the default) or less: no limit but the ring's bytes. */
  maxsize?: number;
  /** Bytes of the shared ring (default 4 MiB). Items larger than a quarter of it go out of line. */
  capacity?: number;
}

export interface PutOptions {
  timeout?: number;
  signal?: AbortSignal;
}

export interface GetOptions {
  timeout?: number;
  signal?: AbortSignal;
}

export class Queue<T = unknown> {
  protected ring!: Ring;
  private sender!: Sender;
  /** What get() resolves or rejects with, of its plan's outcome. */
  private gotten!: Outcome<Frame | undefined, T>;

  constructor(opts?: QueueOptions) {
    const o = optionsOf(opts, `${new.target.name}()`);
    const maxsize = o.maxsize ?? 0;
    if (typeof maxsize !== 'number' || !Number.isInteger(maxsize)) {
      throw new TypeError(`${new.target.name}(): maxsize must be an integer, got ${describe(maxsize)}`);
    }
    const capacity = checkCapacity(o.capacity, `${new.target.name}()`);
    this.bind(Ring.create(capacity, Math.max(0, Math.min(maxsize, 0x7fffffff))));
  }

  /** @internal */
  static over<Q extends Queue>(this: Function & { prototype: Q }, seg: Segment): Q {
    const q = Object.create(this.prototype) as Q;
    q.bind(Ring.over(seg));
    return q;
  }

  private bind(ring: Ring): void {
    this.ring = ring;
    this.sender = new Sender(ring, this instanceof JoinableQueue, 'Queue is closed');
    this.gotten = {
      value: (frame) => this.item(frame),
      error: (err) => (err instanceof RingClosed ? new Error('Queue is closed and empty') : err),
    };
  }

  /** Resolves once the item is in the queue; rejects with mp.Full on timeout. */
  put(item: T, opts?: PutOptions): Promise<void> {
    try {
      if (opts === undefined && this.sender.putNow(item)) return RESOLVED;
      const o = optionsOf(opts, 'put');
      return this.sender.put(item, checkTimeout(o.timeout), checkSignal(o.signal), 'Queue item');
    } catch (err) {
      return Promise.reject(err);
    }
  }

  putSync(item: T, opts?: { timeout?: number }): void {
    if (opts === undefined && this.sender.putNow(item)) return;
    this.sender.putSync(item, checkTimeout(optionsOf(opts, 'putSync').timeout), 'Queue item');
  }

  /** Throws mp.Full if there is no room now. */
  putNowait(item: T): void {
    this.sender.putSync(item, 0, 'Queue item');
  }

  /** Resolves with the next item; rejects with mp.Empty on timeout. An aborted get takes no item. */
  get(opts?: GetOptions): Promise<T> {
    try {
      const o = optionsOf(opts, 'get');
      const timeout = checkTimeout(o.timeout);
      const signal = checkSignal(o.signal);
      if (!signal?.aborted) {
        const now = this.ring.tryGet();
        if (now !== null) return Promise.resolve(this.item(now));
      }
      return runAsync(this.ring.getPlan(timeout, false, undefined, true), signal, this.gotten);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  getSync(opts?: { timeout?: number }): T {
    const timeout = checkTimeout(optionsOf(opts, 'getSync').timeout);
    try {
      return this.item(this.ring.tryGet() ?? runSync(this.ring.getPlan(timeout)));
    } catch (err) {
      throw err instanceof RingClosed ? new Error('Queue is closed and empty') : err;
    }
  }

  /**
   * The next item, which must be bytes (a Buffer put into the queue), copied into
   * `buffer` at `offset` with no allocation: resolves with its length. Like Connection's
   * recvBytesInto: an item larger than the room rejects with mp.BufferTooShort, which carries it;
   * one that is not bytes, with a TypeError. Either way the item is taken. mp.Empty on timeout.
   */
  getBytesInto(buffer: ArrayBufferView, offset = 0, opts?: GetOptions): Promise<number> {
    try {
      const into = destination(buffer, offset, 'getBytesInto()');
      const o = optionsOf(opts, 'getBytesInto');
      const timeout = checkTimeout(o.timeout);
      const signal = checkSignal(o.signal);
      if (!signal?.aborted) {
        const now = this.ring.tryGet(into);
        if (now !== null) return Promise.resolve(this.bytesInto(now, into));
      }
      return runAsync(this.ring.getPlan(timeout, false, into), signal).then(
        (frame) => this.bytesInto(frame, into),
        (err) => Promise.reject(err instanceof RingClosed ? new Error('Queue is closed and empty') : err),
      );
    } catch (err) {
      return Promise.reject(err);
    }
  }

  getBytesIntoSync(buffer: ArrayBufferView, offset = 0, opts?: { timeout?: number }): number {
    const into = destination(buffer, offset, 'getBytesIntoSync()');
    const timeout = checkTimeout(optionsOf(opts, 'getBytesIntoSync').timeout);
    let frame: Frame | undefined;
    try {
      frame = this.ring.tryGet(into) ?? runSync(this.ring.getPlan(timeout, false, into));
    } catch (err) {
      throw err instanceof RingClosed ? new Error('Queue is closed and empty') : err;
    }
    return this.bytesInto(frame, into);
  }

  private bytesInto(frame: Frame | undefined, into: Destination): number {
    if (frame === undefined) throw new Empty('the queue is empty');
    return bytesInto(this.ring, frame, into, 'getBytesInto()', 'the item', 'put as a Buffer');
  }

  /** Throws mp.Empty if nothing is there now. */
  getNowait(): T {
    try {
      return this.item(this.ring.tryGet() ?? runSync(this.ring.getPlan(0)));
    } catch (err) {
      throw err instanceof RingClosed ? new Error('Queue is closed and empty') : err;
    }
  }

  /**
   * @internal The next item if one can be had without waiting, else NOTHING. No exception on
   * an empty queue: the pool polls its queues with this in a loop.
   */
  takeNow(): T | typeof NOTHING {
    const frame = this.ring.tryGet();
    return frame === null ? NOTHING : this.item(frame);
  }

  /** @internal Unmaps the queue in this process (other processes are not affected). */
  release(): void {
    this.ring.seg.close();
  }

  private item(frame: Frame | undefined): T {
    if (frame === undefined) throw new Empty('the queue is empty');
    return takeFrame(this.ring, frame) as T;
  }

  qsize(): number {
    return this.ring.qsize();
  }

  empty(): boolean {
    return this.qsize() === 0;
  }

  full(): boolean {
    const max = this.ring.maxsize;
    return max > 0 && this.qsize() >= max;
  }

  /** For every process: no more puts; readers drain what is left, then `for await` ends. */
  close(): void {
    this.ring.close();
  }

  get closed(): boolean {
    return this.ring.closed;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for (;;) {
      let frame: Frame | undefined;
      try {
        frame = this.ring.tryGet() ?? (await runAsync(this.ring.getPlan(undefined)));
      } catch (err) {
        if (err instanceof RingClosed) return;
        throw err;
      }
      yield this.item(frame);
    }
  }

  [kShare](): ShareDescription {
    return { kind: this.constructor.name, segments: [this.ring.seg] };
  }
}

/** Python's SimpleQueue: the same queue (every method of Queue works on it). */
export class SimpleQueue<T = unknown> extends Queue<T> {}

/** A Queue whose consumers report each item done, and whose producers can wait for that. */
export class JoinableQueue<T = unknown> extends Queue<T> {
  /** Marks one item taken by get() as processed; once too often is an Error. */
  taskDone(): void {
    this.ring.taskDone();
  }

  /** Resolves when every item put so far has been marked done. */
  join(): Promise<void> {
    return runAsync(this.ring.joinPlan());
  }

  joinSync(): void {
    runSync(this.ring.joinPlan());
  }
}

// ---------------------------------------------------------------------------------------------
// Pipe

const CONNECTION_CLOSED = 'the connection is closed';

/** One end of a Pipe (Python's Connection). */
export class Connection<T = unknown> {
  private reader: Ring | null = null;
  private writer: Ring | null = null;
  private sender: Sender | null = null;
  private isClosed = false;
  /** What recv() resolves or rejects with, of its plan's outcome. */
  private received!: Outcome<Frame | undefined, T>;

  /** @internal */
  static of(reader: Ring | null, writer: Ring | null): Connection {
    const c = Object.create(Connection.prototype) as Connection;
    c.isClosed = false;
    c.reader = reader;
    c.writer = writer;
    c.received = {
      value: (frame) => c.frameOrEof(frame),
      error: (err) => (err instanceof RingClosed ? new EOFError('the other end is closed') : err),
    };
    // Python says "handle is closed": the ring is closed when any holder of this end closed it.
    c.sender = writer === null ? null : new Sender(writer, false, CONNECTION_CLOSED);
    return c;
  }

  get readable(): boolean {
    return this.reader !== null;
  }

  get writable(): boolean {
    return this.writer !== null;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  private check(side: 'reader' | 'writer'): Ring {
    if (this.isClosed) throw new Error(CONNECTION_CLOSED);
    const ring = this[side];
    if (ring === null) throw new Error(side === 'reader' ? 'connection is write-only' : 'connection is read-only');
    return ring;
  }

  /** Sends an object (v8.serialize); resolves once it is in the pipe. */
  send(obj: T): Promise<void> {
    try {
      this.check('writer');
      if (this.sender!.putNow(obj)) return RESOLVED;
      return this.sender!.put(obj, undefined, undefined, 'Connection.send() value');
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Sends raw bytes: `buf.subarray(offset, offset + size)`. */
  sendBytes(buf: Uint8Array, offset = 0, size?: number): Promise<void> {
    try {
      this.check('writer');
      if (!(buf instanceof Uint8Array)) throw new TypeError(`sendBytes(): expected a Buffer or Uint8Array, got ${describe(buf)}`);
      const length = trueLength(buf);
      const end = size === undefined ? length : offset + size;
      if (!Number.isInteger(offset) || offset < 0 || offset > length) throw new RangeError(`sendBytes(): offset ${offset} is out of range`);
      if (!Number.isInteger(end) || end < offset || end > length) throw new RangeError(`sendBytes(): size ${size} is out of range`);
      return this.sender!.putFrame({ kind: Kind.Bytes, bytes: bytesToSend(buf, offset, end, 'sendBytes()') }, undefined, undefined);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private frameOrEof(frame: Frame | undefined): unknown {
    if (frame === undefined) throw new EOFError('the other end is closed');
    return takeFrame(this.reader!, frame);
  }

  /** Resolves with the next object; rejects with mp.EOFError once the other end is closed or gone. */
  recv(): Promise<T> {
    try {
      const ring = this.check('reader');
      return runAsync(ring.getPlan(undefined, true, undefined, true), undefined, this.received);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  recvSync(): T {
    const ring = this.check('reader');
    try {
      return this.frameOrEof(runSync(ring.getPlan(undefined, true))) as T;
    } catch (err) {
      throw err instanceof RingClosed ? new EOFError('the other end is closed') : err;
    }
  }

  /** Resolves with the next message's bytes (a Buffer). */
  async recvBytes(maxlength?: number): Promise<Buffer> {
    const value = await this.recv();
    return this.bytesOf(value, maxlength);
  }

  recvBytesSync(maxlength?: number): Buffer {
    return this.bytesOf(this.recvSync(), maxlength);
  }

  private bytesOf(value: unknown, maxlength: number | undefined): Buffer {
    const buf = Buffer.isBuffer(value) ? value : value instanceof Uint8Array ? Buffer.from(value) : null;
    if (buf === null) throw new TypeError(`recvBytes(): the message is ${describe(value)}, not bytes`);
    if (maxlength !== undefined && buf.length > maxlength) throw new RangeError(`recvBytes(): the message has ${buf.length} bytes, more than maxlength ${maxlength}`);
    return buf;
  }

  /**
   * Python's recv_bytes_into: the next message, sent with sendBytes(), copied into `buffer` at
   * `offset` with no allocation; resolves with its length. A message larger than the room rejects
   * with mp.BufferTooShort, which carries it; one that is not bytes, with a TypeError. Either way
   * the message is taken.
   */
  recvBytesInto(buffer: ArrayBufferView, offset = 0): Promise<number> {
    try {
      const ring = this.check('reader');
      const into = destination(buffer, offset);
      const now = ring.tryGet(into);
      if (now !== null) return Promise.resolve(this.bytesInto(now, into));
      return runAsync(ring.getPlan(undefined, true, into)).then(
        (frame) => this.bytesInto(frame, into),
        (err) => Promise.reject(err instanceof RingClosed ? new EOFError('the other end is closed') : err),
      );
    } catch (err) {
      return Promise.reject(err);
    }
  }

  recvBytesIntoSync(buffer: ArrayBufferView, offset = 0): number {
    const ring = this.check('reader');
    const into = destination(buffer, offset);
    let frame: Frame | undefined;
    try {
      frame = ring.tryGet(into) ?? runSync(ring.getPlan(undefined, true, into));
    } catch (err) {
      throw err instanceof RingClosed ? new EOFError('the other end is closed') : err;
    }
    return this.bytesInto(frame, into);
  }

  private bytesInto(taken: Frame | undefined, into: Destination): number {
    if (taken === undefined) throw new EOFError('the other end is closed');
    return bytesInto(this.reader!, taken, into, 'recvBytesInto()', 'the message', 'sent with sendBytes()');
  }

  /** Whether a recv() would not wait: resolves true when there is data (or the end), false after `timeout` ms (default 0). */
  poll(timeout = 0): Promise<boolean> {
    try {
      const ring = this.check('reader');
      return runAsync(ring.pollPlan(checkTimeout(timeout), true));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  pollSync(timeout = 0): boolean {
    return runSync(this.check('reader').pollPlan(checkTimeout(timeout), true));
  }

  /** Closes this end; the other end's recv() gets EOFError once it has read what was sent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.writer?.close();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for (;;) {
      try {
        yield await this.recv();
      } catch (err) {
        if (err instanceof EOFError) return;
        throw err;
      }
    }
  }

  [kShare](): ShareDescription {
    const segments = [this.reader, this.writer].filter((r): r is Ring => r !== null).map((r) => r.seg);
    return { kind: 'Connection', segments, state: { reader: this.reader !== null, writer: this.writer !== null } };
  }
}

/**
 * The bytes of `buf` from `offset` to `end` as the ring will read them, each time it tries, until
 * the put resolves: the caller's own array when it is sent whole and is a plain Buffer or
 * Uint8Array of fixed length with none of the properties the ring reads (`length`, `subarray` and
 * the `constructor` that `subarray` asks) of its own: no view made per message. Else a plain
 * view of fixed length. The ring reads the length to reserve and again to copy: a subclass's or
 * an own `length`, or a resizable buffer grown while the put waits, would write past the frame.
 * An empty array may be detached: the view then throws.
 */
function bytesToSend(buf: Uint8Array, offset: number, end: number, caller: string): Uint8Array {
  if (offset === 0 && end !== 0 && buf.length === end) {
    const proto = Object.getPrototypeOf(buf);
    const backing = buf.buffer as ArrayBuffer & { resizable?: boolean; growable?: boolean };
    if (
      (proto === Buffer.prototype || proto === Uint8Array.prototype) &&
      !Object.hasOwn(buf, 'length') && !Object.hasOwn(buf, 'subarray') && !Object.hasOwn(buf, 'constructor') &&
      backing.resizable !== true && backing.growable !== true
    ) {
      return buf;
    }
  }
  try {
    return new Uint8Array(buf.buffer, buf.byteOffset + offset, end - offset);
  } catch (err) {
    if (buf.buffer.byteLength === 0) throw new TypeError(`${caller}: the array's buffer is detached (it was transferred)`);
    throw err;
  }
}

function destination(buffer: unknown, offset: unknown, caller = 'recvBytesInto()'): Destination {
  if (!ArrayBuffer.isView(buffer)) throw new TypeError(`${caller}: expected a Buffer, a typed array or a DataView, got ${describe(buffer)}`);
  // A Buffer or Uint8Array is its own target: no view allocated per read.
  const target = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const length = trueLength(target);
  if (typeof offset !== 'number' || !Number.isInteger(offset)) throw new TypeError(`${caller}: offset must be an integer, got ${describe(offset)}`);
  if (offset < 0 || offset > length) throw new RangeError(`${caller}: offset ${offset} is outside the buffer (${length} bytes)`);
  return { target, offset };
}

/**
 * A taken frame's bytes, in `into` (where the ring copied them already when they fitted: `copied`):
 * their length. Not bytes: TypeError; too large: BufferTooShort, carrying them.
 */
function bytesInto(ring: Ring, taken: Frame, into: Destination, caller: string, what: string, hint: string): number {
  if (taken.copied !== undefined) return taken.copied;
  const frame = taken.kind === Kind.OutOfLine ? ring.unspill(taken.bytes) : taken;
  if (frame.kind !== Kind.Bytes) throw new TypeError(`${caller}: ${what} is ${describe(decodeFrame(frame))}, not bytes ${hint}`);
  const n = frame.bytes.length;
  if (n === 0) return 0;  // nothing to copy (into a buffer that may be detached by now)
  const room = roomIn(into);
  if (n > room) {
    throw new BufferTooShort(`${caller}: ${what} has ${n} bytes, the buffer has room for ${Math.max(0, room)}`, Buffer.from(frame.bytes));
  }
  copyInto(into, frame.bytes);
  return n;
}

export interface PipeOptions {
  /** true (default): both ends send and receive; false: [reader, writer], Python's order. */
  duplex?: boolean;
  /** Bytes of each direction's ring (default 4 MiB). */
  capacity?: number;
}

export function Pipe<T = unknown>(opts?: PipeOptions): [Connection<T>, Connection<T>] {
  const o = optionsOf(opts, 'Pipe()');
  const duplex = o.duplex ?? true;
  if (typeof duplex !== 'boolean') throw new TypeError(`Pipe(): duplex must be a boolean, got ${describe(duplex)}`);
  const capacity = checkCapacity(o.capacity, 'Pipe()');
  if (!duplex) {
    const ring = Ring.create(capacity, 0);
    return [Connection.of(ring, null) as Connection<T>, Connection.of(null, ring) as Connection<T>];
  }
  const ab = Ring.create(capacity, 0);
  const ba = Ring.create(capacity, 0);
  return [Connection.of(ba, ab) as Connection<T>, Connection.of(ab, ba) as Connection<T>];
}

registerKind('Queue', (segs) => Queue.over(segs[0]));
registerKind('SimpleQueue', (segs) => SimpleQueue.over(segs[0]));
registerKind('JoinableQueue', (segs) => JoinableQueue.over(segs[0]));
registerKind('Connection', (segs, st: { reader: boolean; writer: boolean }) => {
  const reader = st.reader ? Ring.over(segs[0]) : null;
  const writer = st.writer ? Ring.over(segs[st.reader ? 1 : 0]) : null;
  // The process that revives a sending end holds it now: its death is the reader's end of stream.
  writer?.claimWriter();
  return Connection.of(reader, writer);
});
