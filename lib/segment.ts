// A mapped shared-memory file: the memory under every Value, Array and lock.
//
// Segments are anonymous (memfd): no name exists, so none can leak when a process dies. Another
// process reaches one by its handle: it inherited the fd at spawn (a Process's arguments), or it
// withdraws the descriptor that the sender deposited with the tree's tracker before the message
// left (a queue item, a pool task, a warm child's arguments), through SCM_RIGHTS: the sender may
// be gone by then. Only when neither works does it re-open the sender's fd through
// /proc/<pid>/fd (checked by device and inode, never trusted by number).
// Each process maps a given segment once, however many messages or objects refer to it.
import { native } from './native';
import { withdraw } from './tracker';

export interface SegmentHandle {
  /** A process that holds the fd (the creator, or whoever passed it on). */
  pid: number;
  fd: number;
  dev: number;
  ino: number;
  size: number;
  /** Map every page at attach too (a queue's ring). */
  populate?: boolean;
  /** Deposited with the tree's tracker for this message: the receiver withdraws it. */
  kept?: boolean;
}

const byIdentity = new Map<string, WeakRef<Segment>>();
/** fds inherited at spawn, by identity, waiting for their first attach. */
const inherited = new Map<string, number>();
const closeOnCollect = new FinalizationRegistry<number>((fd) => native.closeFd(fd));

function identity(dev: number, ino: number): string {
  return `${dev}:${ino}`;
}

export class Segment {
  readonly buffer: ArrayBuffer;
  readonly fd: number;
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly populate: boolean;
  #closed = false;

  private constructor(fd: number, size: number, populate = false) {
    const [dev, ino] = native.identify(fd);
    this.fd = fd;
    this.dev = dev;
    this.ino = ino;
    this.size = size;
    this.populate = populate;
    try {
      this.buffer = native.map(fd, size, populate);
    } catch (err) {
      native.closeFd(fd);
      throw err;
    }
    byIdentity.set(identity(dev, ino), new WeakRef(this));
    closeOnCollect.register(this, fd, this);
  }

  /**
   * A fresh zero-filled segment; its pages are reserved now (ENOSPC here, never SIGBUS later).
   * `populate`: map every page now (for memory that will all be cycled through, a queue's ring).
   */
  static create(size: number, populate = false): Segment {
    return new Segment(native.createAnonymous(size), size, populate);
  }

  /** Takes over an fd this process opened (a named segment) and maps `size` bytes of it. */
  static fromFd(fd: number, size: number): Segment {
    return new Segment(fd, size);
  }

  /** Maps a segment of another process (or finds our mapping of it). */
  static attach(handle: SegmentHandle): Segment {
    const key = identity(handle.dev, handle.ino);
    const known = byIdentity.get(key)?.deref();
    if (known !== undefined && !known.closed) {
      // Mapped here already: the deposit is only counted off.
      if (handle.kept === true) withdraw(handle.dev, handle.ino, false);
      return known;
    }
    let fd = -1;
    const passed = inherited.get(key);
    if (passed !== undefined) {
      inherited.delete(key);
      fd = native.checkOwnFd(passed, handle.dev, handle.ino);
    }
    if (handle.kept === true) {
      const kept = withdraw(handle.dev, handle.ino, fd < 0);
      if (fd < 0) fd = kept;
    }
    if (fd < 0) fd = native.openFromProcess(handle.pid, handle.fd, handle.dev, handle.ino);
    return new Segment(fd, handle.size, handle.populate === true);
  }

  /** Records fds this process was started with, so attaching them opens nothing. */
  static adoptInherited(list: Array<{ fd: number; dev: number; ino: number }>): void {
    for (const { fd, dev, ino } of list) inherited.set(identity(dev, ino), fd);
  }

  /** The same for every mapping of this segment in any process. */
  get key(): string {
    return identity(this.dev, this.ino);
  }

  get closed(): boolean {
    return this.#closed;
  }

  handle(): SegmentHandle {
    if (this.#closed) throw new Error('this shared object is closed');
    return { pid: process.pid, fd: this.fd, dev: this.dev, ino: this.ino, size: this.size, populate: this.populate };
  }

  /** Unmaps now (the garbage collector cannot see mapped bytes) and closes the fd. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeOnCollect.unregister(this);
    if (byIdentity.get(this.key)?.deref() === this) byIdentity.delete(this.key);
    native.unmap(this.buffer);
    native.closeFd(this.fd);
  }
}

