// Who this process is: MainProcess, or a child started by node-multiprocessing (set by the bootstrap).
import * as os from 'os';

import { native } from './native';

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
  return { name: parent.name, pid: parent.pid, isAlive: () => !native.processGone(parent.pid) };
}

/** mp.cpuCount(): the CPUs this process may run on. */
export function cpuCount(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}
