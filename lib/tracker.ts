// Client of the name tracker (native/tracker.h): registers the named segments this process
// creates, so they are unlinked when it exits, whatever kills it.
import * as fs from 'fs';

import { native } from './native';

const SHM_DIR = '/dev/shm';
/** Names we generate: nmp_<creator pid in base 36>_<64 random bits>. */
export const TRACKED_NAME = /^nmp_([0-9a-z]+)_[0-9a-f]{16}$/;

let trackerFd: number | undefined = adoptInherited();
const registered = new Set<string>();

function adoptInherited(): number | undefined {
  const fd = Number(process.env.NMP_TRACKER_FD);
  delete process.env.NMP_TRACKER_FD;
  return Number.isInteger(fd) && fd > 2 ? fd : undefined;
}

/** The tracker's fd, for the spawner to hand on (undefined if none was started yet). */
export function trackerFdForChildren(): number | undefined {
  return trackerFd;
}

/**
 * Unlinks names of ours whose creator died while no tracker watched it (the tracker itself was
 * killed with SIGKILL). Runs once, before this process starts its own tracker.
 */
function sweepDeadCreators(): void {
  let names: string[];
  try {
    names = fs.readdirSync(SHM_DIR);
  } catch {
    return;
  }
  for (const name of names) {
    const m = TRACKED_NAME.exec(name);
    if (m === null) continue;
    const pid = parseInt(m[1], 36);
    if (pid === process.pid || !native.processGone(pid)) continue;
    try {
      native.unlink(name);
    } catch {
      // someone else swept it first
    }
  }
}

function send(line: string): void {
  if (trackerFd === undefined) {
    sweepDeadCreators();
    trackerFd = native.startTracker().fd;
  }
  try {
    fs.writeSync(trackerFd, line);
  } catch {
    // The tracker is gone (killed by hand): start a new one and tell it everything again.
    trackerFd = native.startTracker().fd;
    const again = [...registered].map((n) => `R ${process.pid} ${n}\n`).join('') + (line.startsWith('U') ? line : '');
    if (again.length > 0) fs.writeSync(trackerFd, again);
  }
}

export function track(name: string): void {
  registered.add(name);
  send(`R ${process.pid} ${name}\n`);
}

export function untrack(name: string): void {
  if (!registered.delete(name)) return;
  send(`U ${process.pid} ${name}\n`);
}

/**
 * Registers a name on behalf of another process (a queue's creator): it is unlinked when that
 * process exits, unless someone unlinks it first and calls forget().
 */
export function trackFor(pid: number, name: string): void {
  send(`R ${pid} ${name}\n`);
}

/** Tells the tracker a name is gone (unlinked by whoever consumed it). */
export function forget(name: string): void {
  registered.delete(name);
  send(`U ${process.pid} ${name}\n`);
}

// crypto costs a child ~2 ms to load: only when a name is made.
function randomHex(): string {
  return (require('crypto') as typeof import('crypto')).randomBytes(8).toString('hex');
}

/** A name for a segment that lives on behalf of `pid` (TRACKED_NAME): swept if that pid is dead. */
export function nameFor(pid: number): string {
  return `nmp_${pid.toString(36)}_${randomHex()}`;
}

/** A name no tracker or sweep ever removes (`track: false`). */
export function untrackedName(): string {
  return `nmpu_${randomHex()}`;
}
