// Small shared objects (a Value, every lock kind, an Array of up to 992 data bytes) live in blocks
// of shared arenas: large memfd chunks, as Python's multiprocessing.heap does it. A million Values
// then take a few dozen descriptors and mappings instead of a million of each.
//
// A chunk is a Segment: a 64-byte header (the chunk's Lock, then its free list), then blocks of
// one size class (64, 256 or 1024 bytes). A block starts with its reference count (16 bytes of
// header), then the payload. A reference is a live
// object of ours over the block, in any process, or a message in flight that carries it: the
// sender retains before the message leaves, the receiver's revived object takes that reference
// over. The object gives its reference back on close() or when the garbage collector takes it.
// The last one puts the block on its chunk's free list; only the process that made a chunk
// allocates from it. A process killed holding references leaks their blocks, but only until its
// tree ends, when the chunks' memfds go with the last process that maps them.
import type { Lock } from './synchronize';
import { Segment } from './segment';

/** Block sizes; a block gives its object all but the first 16 bytes. */
const CLASSES = [64, 256, 1024];
/** The largest payload a block holds: anything larger gets a segment of its own. */
export const MAX_PAYLOAD = CLASSES[CLASSES.length - 1] - 16;
const HEADER = 64;
// Int32 words of the chunk header (0-2 are the Lock's).
const FREE = 3;      // first free block + 1 (0: none)
const BUMP = 4;      // blocks handed out at least once
const CAPACITY = 5;  // blocks in this chunk
const BLOCK_SIZE = 6;
const FIRST_CHUNK = 64 * 1024;
const MAX_CHUNK = 4 * 1024 * 1024;

/** A block of an arena: where its object's words are. */
export interface Block {
  readonly seg: Segment;
  /** Byte offset of the payload in seg. */
  readonly offset: number;
}

interface Chunk {
  seg: Segment;
  w: Int32Array;
  lock: Lock;
  block: number;
}

/** The chunks this process made, by block size, and the size of the next one of each. */
const own = new Map<number, Chunk[]>(CLASSES.map((c) => [c, []]));
const nextChunkBytes = new Map<number, number>(CLASSES.map((c) => [c, FIRST_CHUNK]));
const attached = new WeakMap<Segment, Chunk>();

/** How a chunk's lock is made: synchronize.ts, which allocates its own locks here, supplies it. */
let lockAt: ((seg: Segment) => Lock) | undefined;

/** @internal Called once by synchronize.ts as it loads. */
export function setChunkLock(make: (seg: Segment) => Lock): void {
  lockAt = make;
}

function chunkOf(seg: Segment): Chunk {
  let c = attached.get(seg);
  if (c === undefined) {
    const w = new Int32Array(seg.buffer, 0, seg.size >> 2);
    c = { seg, w, lock: lockAt!(seg), block: w[BLOCK_SIZE] };
    attached.set(seg, c);
  }
  return c;
}

function newChunk(block: number): Chunk {
  const bytes = nextChunkBytes.get(block)!;
  nextChunkBytes.set(block, Math.min(bytes * 2, MAX_CHUNK));
  const seg = Segment.create(bytes);
  const w = new Int32Array(seg.buffer, 0, HEADER >> 2);
  w[BLOCK_SIZE] = block;
  w[CAPACITY] = Math.floor((bytes - HEADER) / block);
  const c = chunkOf(seg);
  own.get(block)!.push(c);
  ownSegments.add(seg);
  return c;
}

/** Runs fn with the chunk's lock held; a holder that died leaves it to us (its step was two stores). */
function locked<T>(c: Chunk, fn: () => T): T {
  for (;;) {
    try {
      c.lock.acquireSync();
      break;
    } catch (err) {
      if ((err as Error).name !== 'OwnerDiedError') throw err;
    }
  }
  try {
    return fn();
  } finally {
    c.lock.release();
  }
}

function take(c: Chunk): number {
  return locked(c, () => {
    const w = c.w;
    const free = w[FREE];
    if (free !== 0) {
      w[FREE] = w[(HEADER + (free - 1) * c.block + 4) >> 2];
      return free - 1;
    }
    if (w[BUMP] < w[CAPACITY]) return w[BUMP]++;
    return -1;
  });
}

/** A zeroed block of at least `payload` bytes (≤ MAX_PAYLOAD) with one reference: the caller's object. */
export function allocate(payload = 48): Block {
  const block = CLASSES.find((c) => c - 16 >= payload);
  if (block === undefined) throw new RangeError(`arena: ${payload} bytes do not fit in a block`);
  const chunks = own.get(block)!;
  // The newest chunk first: the older ones are full unless blocks were given back.
  for (let i = chunks.length - 1; i >= 0; i--) {
    const index = take(chunks[i]);
    if (index >= 0) return prepare(chunks[i], index);
  }
  const c = newChunk(block);
  return prepare(c, take(c));
}

function prepare(c: Chunk, index: number): Block {
  const at = HEADER + index * c.block;
  new Uint8Array(c.seg.buffer, at, c.block).fill(0);
  Atomics.store(c.w, at >> 2, 1);
  return { seg: c.seg, offset: at + 16 };
}

/**
 * Objects of this process over blocks of chunks that other processes made. When the count of a
 * chunk drops to zero, the chunk is unmapped and its descriptor closed at once, as closing an
 * object that had a segment of its own did; waiting for the garbage collector kept one descriptor
 * per sender's chunk open.
 */
const uses = new Map<Segment, number>();
const ownSegments = new WeakSet<Segment>();

/** A revived object took over the reference its message carried. */
export function adopted(block: Block): void {
  if (!ownSegments.has(block.seg)) uses.set(block.seg, (uses.get(block.seg) ?? 0) + 1);
}

/** One more reference: a message that carries the block is about to leave. */
export function retain(block: Block): void {
  Atomics.add(chunkOf(block.seg).w, (block.offset - 16) >> 2, 1);
}

/** One reference fewer; the last one puts the block back on its chunk's free list. */
export function release(block: Block): void {
  const seg = block.seg;
  if (seg.closed) return;
  const c = chunkOf(seg);
  const at = block.offset - 16;
  if (Atomics.sub(c.w, at >> 2, 1) === 1) {
    locked(c, () => {
      const index = (at - HEADER) / c.block;
      c.w[(at + 4) >> 2] = c.w[FREE];
      c.w[FREE] = index + 1;
    });
  }
  const n = uses.get(seg);
  if (n === undefined) return;
  if (n > 1) {
    uses.set(seg, n - 1);
    return;
  }
  uses.delete(seg);
  attached.delete(seg);
  seg.close();
}

/** Gives an object's reference back when the garbage collector takes the object. */
export const releaseOnCollect = new FinalizationRegistry<Block>((block) => {
  try {
    release(block);
  } catch {
    // A finalizer must not throw; at worst the block stays taken until the tree ends.
  }
});
