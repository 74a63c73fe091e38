// Client of the name tracker (native/tracker.h): registers the named segments made in this
// process tree, so they are unlinked once the whole tree has exited, whatever ended it.
//
// The root of a tree (the first process of ours that needs a tracker: it creates a named segment
// or starts a child) starts the tracker; every child inherits its pipe, so one tracker serves the
// whole tree and a name outlives the child that made it. Generated names carry the root's pid:
// if the tracker itself is killed, the next tracker started anywhere sweeps the names of dead roots.
import * as fs from 'fs';

import { native } from './native';

const SHM_DIR = '/dev/shm';
/** Names we generate: nmp_<tree root pid in base 36>_<64 random bits>. */
export const TRACKED_NAME = /^nmp_([0-9a-z]+)_[0-9a-f]{16}$/;

const inherited = adoptInherited();
let trackerFd: number | undefined = inherited?.fd;
/** The pid of the process that started our tracker: the tree's root. */
let treeRoot: number | undefined = inherited?.root;
const registered = new Set<string>();

/**
 * The tracker this process was started with. The variables stay in the environment, so that a
 * worker thread (which loads its own copy of this module) reports to the same tracker; the fd must
 * be the tracker's socket, since a process started by other means may have the variables and not
 * the fd.
 */
function adoptInherited(): { fd: number; root: number } | undefined {
  const fd = Number(process.env.NMP_TRACKER_FD);
  const root = Number(process.env.NMP_TREE_ROOT);
  if (!Number.isInteger(fd) || fd <= 2 || !Number.isInteger(root) || root <= 0) return undefined;
  return native.isTrackerSocket(fd) ? { fd, root } : undefined;
}

/** Starts this tree's tracker if none serves this process yet. */
function ensureTracker(): number {
  if (trackerFd === undefined) {
    sweepDeadRoots();
    trackerFd = native.startTracker().fd;
    treeRoot = process.pid;
  }
  return trackerFd;
}

/**
 * The tracker's fd and the tree's root, for the spawner to hand on to a child. Starts the tracker
 * first: a child must report to its tree's tracker, not start one that dies with it.
 */
export function trackerForChildren(): { fd: number; root: number } {
  const fd = ensureTracker();
  return { fd, root: treeRoot! };
}

/**
 * Unlinks names of ours whose tree's root is gone: their tracker was killed with SIGKILL, so
 * nobody was left to unlink them. Runs before this process starts its own tracker.
 */
function sweepDeadRoots(): void {
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

/** Starts a new tracker after the old one was killed by hand, and tells it our names again. */
function restartTracker(): number {
  if (trackerFd !== undefined) native.closeFd(trackerFd);
  trackerFd = undefined;
  const fd = ensureTracker();
  // One record per line: a record is read whole, into a buffer of 8 KiB.
  for (const n of registered) fs.writeSync(fd, `R ${process.pid} ${n}\n`);
  return fd;
}

function send(line: string): void {
  const fd = ensureTracker();
  try {
    fs.writeSync(fd, line);
  } catch {
    if (line.startsWith('R')) restartTracker();  // the line is in `registered` when it matters
    else fs.writeSync(restartTracker(), line);
  }
}

/**
 * Deposits a segment's descriptor with the tracker, for a message that carries it: the receiver
 * withdraws it, so it needs neither the sender alive nor /proc.
 */
export function deposit(dev: number, ino: number, fd: number): void {
  try {
    native.trackerDeposit(ensureTracker(), dev, ino, fd);
  } catch {
    // The tracker was killed: a new one takes the deposit (a receiver without it falls back to /proc).
    try {
      native.trackerDeposit(restartTracker(), dev, ino, fd);
    } catch {
      // nothing more to try: the receiver falls back to /proc
    }
  }
}

/** Counts one deposit of (dev, ino) off; with `wantFd`, returns a new fd for it (or -1). */
export function withdraw(dev: number, ino: number, wantFd: boolean): number {
  if (trackerFd === undefined) return -1;
  try {
    return native.trackerWithdraw(trackerFd, dev, ino, wantFd);
  } catch {
    return -1;  // the tracker is gone: the caller falls back to /proc
  }
}

/** Registers a name this process made: it lives until unlink() or until the tree has exited. */
export function track(name: string): void {
  registered.add(name);
  send(`R ${process.pid} ${name}\n`);
}

/**
 * Registers a name whose segment another process will consume and unlink (a queue's item too
 * large for its ring): not kept for re-registration here, since it is not ours to remember.
 */
export function trackInTree(name: string): void {
  send(`R ${process.pid} ${name}\n`);
}

/** Tells the tracker a name is gone (unlinked by whoever consumed it, in any process of the tree). */
export function forget(name: string): void {
  registered.delete(name);
  if (trackerFd !== undefined) send(`U ${process.pid} ${name}\n`);
}

// crypto costs a child ~2 ms to load: only when a name is made.
function randomHex(): string {
  return (require('crypto') as typeof import('crypto')).randomBytes(8).toString('hex');
}

/** A name for a segment of this tree (TRACKED_NAME): swept once the tree's root is dead. */
export function treeName(): string {
  ensureTracker();
  return `nmp_${treeRoot!.toString(36)}_${randomHex()}`;
}

/** A name no tracker or sweep ever removes (`track: false`). */
export function untrackedName(): string {
  return `nmpu_${randomHex()}`;
}
