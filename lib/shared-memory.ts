// Python's multiprocessing.shared_memory.SharedMemory: a named POSIX segment any process of the
// same user can attach to by name.
//
// A tracked name lives as long as the process tree it was made in (lib/tracker.ts), or until
// unlink(); `track: false` makes it outlive the tree. An attacher never unlinks: only unlink() does.
import { native } from './native';
import { Segment } from './segment';
import { kShare, registerKind, ShareDescription } from './shared';
import { forget, track, treeName, untrackedName } from './tracker';
import { describe } from './describe';

export interface SharedMemoryOptions {
  /** Without a leading '/'. Generated (unguessable) when creating without one. */
  name?: string;
  create?: boolean;
  /** Bytes; required (> 0) when creating. */
  size?: number;
  /** false: the segment outlives its creator until someone calls unlink() (Python 3.13's track). */
  track?: boolean;
}

const MAX_NAME = 255;

function checkName(name: unknown): string {
  if (typeof name !== 'string') throw new TypeError(`SharedMemory(): name must be a string, got ${describe(name)}`);
  const bare = name.startsWith('/') ? name.slice(1) : name;
  if (bare.length === 0 || bare.length > MAX_NAME || bare.includes('/') || bare.includes('\0') || bare === '.' || bare === '..') {
    throw new TypeError(`SharedMemory(): invalid name ${describe(name)}: 1 to ${MAX_NAME} characters, no '/'`);
  }
  return bare;
}

function detachedView(): Uint8Array {
  const view = new Uint8Array(0);
  structuredClone(view.buffer, { transfer: [view.buffer] });
  return view;
}

export class SharedMemory {
  readonly name!: string;
  readonly size!: number;
  private seg!: Segment;
  private view: Uint8Array | undefined;

  constructor(options: SharedMemoryOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(`SharedMemory(): options must be an object, got ${describe(options)}`);
    }
    const { create = false, size = 0, track: trackIt = true } = options;
    if (typeof create !== 'boolean') throw new TypeError(`SharedMemory(): create must be a boolean, got ${describe(create)}`);
    if (typeof trackIt !== 'boolean') throw new TypeError(`SharedMemory(): track must be a boolean, got ${describe(trackIt)}`);
    if (typeof size !== 'number' || !Number.isInteger(size)) {
      throw new TypeError(`SharedMemory(): size must be an integer, got ${describe(size)}`);
    }
    if (size < 0 || size > Number.MAX_SAFE_INTEGER) throw new RangeError(`SharedMemory(): size must be a positive number of bytes, got ${size}`);
    if (!create) {
      if (options.name === undefined) throw new TypeError('SharedMemory(): name is required when not creating');
      const name = checkName(options.name);
      const fd = native.openNamed(name);
      const actual = native.identify(fd)[2];
      Object.assign(this, { name, size: actual, seg: Segment.fromFd(fd, actual) });
      return;
    }
    if (size === 0) throw new RangeError("SharedMemory(): size must be a positive number of bytes when creating");
    const name = options.name === undefined ? (trackIt ? treeName() : untrackedName()) : checkName(options.name);
    const fd = native.createNamed(name, size);
    try {
      Object.assign(this, { name, size, seg: Segment.fromFd(fd, size) });
      if (trackIt) track(name);
    } catch (err) {
      native.unlink(name);
      throw err;
    }
  }

  /** @internal */
  static over(seg: Segment, name: string): SharedMemory {
    const shm = Object.create(SharedMemory.prototype) as SharedMemory;
    Object.assign(shm, { name, size: seg.size, seg });
    return shm;
  }

  /** The segment's bytes (detached, length 0, after close()). */
  get buf(): Uint8Array {
    // A detached ArrayBuffer cannot take a new view: read for the first time after close() (this
    // object's, or that of another SharedMemory of this process over the same mapping), buf is an
    // empty view of a detached buffer of its own, as an earlier read would be by now.
    return (this.view ??= this.seg.closed ? detachedView() : new Uint8Array(this.seg.buffer));
  }

  /** Unmaps it in this process; the segment lives on for the others. */
  close(): void {
    this.seg.close();
  }

  /** Removes the name for everyone; mappings stay valid until they are closed. */
  unlink(): void {
    native.unlink(this.name);
    // Whoever unlinks tells the tracker, creator or not: the name may be made again later.
    forget(this.name);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [kShare](): ShareDescription {
    return { kind: 'SharedMemory', segments: [this.seg], state: this.name };
  }

  toString(): string {
    return `SharedMemory(${JSON.stringify(this.name)}, size=${this.size})`;
  }
}

registerKind('SharedMemory', (segs, name: string) => SharedMemory.over(segs[0], name));
