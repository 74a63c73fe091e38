// Who this process is: MainProcess, or a child started by node-multiprocessing (set by the bootstrap).
import type { TaskSpec } from './task';

/** The first fd a child is given: its end of the channel. */
export const CHANNEL_FD = 3;

/** What a child's bootstrap receives first. */
export interface StartMessage {
  type: 'start';
  name: string;
  identity: number[];
  daemon: boolean;
  parent: { pid: number; name: string };
  /** fds the child was started with, by the identity of their segments. */
  inherited: Array<{ fd: number; dev: number; ino: number }>;
  target: TaskSpec | null;
  args: Buffer;
  /** For a warm child, started before it was needed: its environment and cwd. */
  env?: Record<string, string | undefined>;
  cwd?: string;
}


export interface ProcessInfo {
  name: string;
  /** Python's _identity: (1,) for Process-1, (1, 2) for its second child, Process-1:2. */
  identity: number[];
  daemon: boolean;
  parent: { pid: number; name: string } | null;
}

export const self: ProcessInfo = { name: 'MainProcess', identity: [], daemon: false, parent: null };

export interface CurrentProcess {
  readonly name: string;
  readonly pid: number;
  readonly daemon: boolean;
  readonly ident: number;
}

/** mp.currentProcess(): this process's name and pid. */
export function currentProcess(): CurrentProcess {
  return { name: self.name, pid: process.pid, daemon: self.daemon, ident: process.pid };
}

export interface ParentProcess {
  readonly name: string;
  readonly pid: number;
  isAlive(): boolean;
}

/** mp.parentProcess(): the process that started this one, or null in the main process. */
export function parentProcess(): ParentProcess | null {
  const parent = self.parent;
  if (parent === null) return null;
  return {
    name: parent.name,
    pid: parent.pid,
    isAlive: () => !(require('./native') as typeof import('./native')).native.processGone(parent.pid),
  };
}

/** mp.cpuCount(): the CPUs this process may run on. */
export function cpuCount(): number {
  const os = require('os') as typeof import('os');
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}
