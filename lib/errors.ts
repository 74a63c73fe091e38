// The error classes of the public API. Names follow Python's multiprocessing where it has one.

/** A wait that was given a timeout ran out of time (Python's multiprocessing.TimeoutError). */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/** The holder of a Lock died while holding it. The caller does NOT hold the lock; it is free again. */
export class OwnerDiedError extends Error {
  override name = 'OwnerDiedError';
  constructor(message: string, readonly ownerPid: number) {
    super(message);
  }
}

/** A Barrier was aborted or broken while (or before) this party waited (threading.BrokenBarrierError). */
export class BrokenBarrierError extends Error {
  override name = 'BrokenBarrierError';
}

/** Queue.get on an empty queue timed out, or getNowait found nothing (queue.Empty). */
export class Empty extends Error {
  override name = 'Empty';
}

/** Queue.put on a full queue timed out, or putNowait found no room (queue.Full). */
export class Full extends Error {
  override name = 'Full';
}

/** Connection.recv() found the other end closed (Python's EOFError). */
export class EOFError extends Error {
  override name = 'EOFError';
}

/**
 * recvBytesInto() got a message larger than the room in the buffer (Python's BufferTooShort).
 * The message was taken off the pipe: it is in `bytes`.
 */
export class BufferTooShort extends Error {
  override name = 'BufferTooShort';
  constructor(message: string, readonly bytes: Buffer) {
    super(message);
  }
}

/** A pool worker died while it held the task (Python's pool would hang here instead). */
export class WorkerLostError extends Error {
  override name = 'WorkerLostError';
  constructor(
    message: string,
    readonly pid: number,
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
  ) {
    super(message);
  }
}

/** The rejection of a call whose AbortSignal fired, as Node's own APIs make it. */
export function abortError(signal?: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal?.reason });
  err.name = 'AbortError';
  (err as NodeJS.ErrnoException).code = 'ABORT_ERR';
  return err;
}

/** Python's ValueError on a lock released too many times. */
export function releasedTooManyTimes(what: string): Error {
  return new Error(`${what} released too many times`);
}
