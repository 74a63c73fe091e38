// Process: a real OS process, fork+exec'd by the native spawner, running a function of ours.
//
// The child is `node [execArgv] dist/bootstrap.js`, given a Unix socket (fd 3), the name
// tracker's socket (fd 4) and the fds of every shared object in its arguments.
// Its exit is watched through a pidfd; wait4 gives the status and the resource usage.
import { readFileSync } from 'fs';
import { isMainThread } from 'worker_threads';

import { Channel } from './channel';
import { self, StartMessage } from './context';
import { describe } from './describe';
import { inheritableExecArgv, launch, Launched, offExit, onExit } from './launch';
import { native } from './native';
import { Segment } from './segment';
import { encode, serialize, serializeMessage } from './shared';
import { getStartMethod, spareChildExited, StartMethod, takeSpare } from './start-method';
import { Task, toTaskSpec } from './task';
import { checkSignal, checkTimeout } from './wait';

/** Any function that can be a target or a task. */
export type AnyFunction = (...args: any[]) => unknown;

export interface ProcessOptions<F extends AnyFunction = AnyFunction> {
  target?: F | Task<F>;
  /** The target's arguments, checked against its parameters. */
  args?: Parameters<F>;
  name?: string;
  daemon?: boolean;
  /** The child's whole environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Node flags for the child (default: process.execArgv, so a TS loader carries over). */
  execArgv?: string[];
  /** CPU indices the child may run on (its affinity). */
  cpus?: number[];
  /** Aborting it terminates the child. */
  signal?: AbortSignal;
  /** 'spawn' (a fresh Node) or 'warm' (a spare booted ahead); default: mp.getStartMethod(). */
  startMethod?: StartMethod;
}

export interface ResourceUsage {
  /** µs */
  userCPUTime: number;
  /** µs */
  systemCPUTime: number;
  /** KiB */
  maxRSS: number;
}

let childCounter = 0;
const running = new Set<Process>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Python terminates daemonic children when the parent exits; children die with us anyway
  // (PR_SET_PDEATHSIG), but SIGTERM first lets them run their own exit handlers.
  process.on('exit', () => {
    for (const p of running) if (p.daemon) p.terminate();
  });
}

/**
 * The CPUs this process may run on (its affinity, which `taskset` or a container's cpuset sets),
 * as the kernel lists them in /proc/self/status: `0-3,8,10-11`. null if it cannot say.
 */
function allowedCpus(): { list: string; cpus: Set<number> } | null {
  let status: string;
  try {
    status = readFileSync('/proc/self/status', 'latin1');
  } catch {
    return null;
  }
  const list = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status)?.[1];
  if (list === undefined) return null;
  const cpus = new Set<number>();
  for (const part of list.split(',')) {
    const [lo, hi = lo] = part.split('-').map(Number);
    if (!Number.isInteger(lo) || !Number.isInteger(hi)) return null;
    for (let c = lo; c <= hi && c < 1024; c++) cpus.add(c);
  }
  return { list, cpus };
}

/**
 * A CPU this process may not use would make the child's sched_setaffinity fail (EINVAL), or be
 * dropped silently next to one it may: refused here, by its index, before anything starts.
 */
function checkCpusAllowed(cpus: readonly number[]): void {
  const allowed = allowedCpus();
  if (allowed === null) return;
  for (const c of cpus) {
    if (!allowed.cpus.has(c)) {
      throw new RangeError(`Process(): CPU ${c} is not one this process may run on (its CPUs: ${allowed.list})`);
    }
  }
}

function checkStringArray(value: unknown, what: string): string[] {
  if (!Array.isArray(value) || value.some((x) => typeof x !== 'string')) {
    throw new TypeError(`Process(): ${what} must be an array of strings, got ${describe(value)}`);
  }
  return value as string[];
}

export class Process<F extends AnyFunction = AnyFunction> {
  name: string;
  #daemon: boolean;
  readonly #target: ProcessOptions<F>['target'];
  readonly #args: unknown[];
  readonly #options: ProcessOptions<F>;
  #exitListeners: Array<() => void> = [];
  #pid: number | undefined;
  #pidfd = -1;
  #exitCode: number | null = null;
  #usage: ResourceUsage | null = null;
  #channel: Channel | undefined;
  #joiners: Array<() => void> = [];
  #closed = false;
  #identity: number[];
  #fromSpare = false;

  constructor(options: ProcessOptions<F> = {}) {
    if (typeof options !== 'object' || options === null) throw new TypeError(`Process(): options must be an object, got ${describe(options)}`);
    const { target, args = [], name, daemon, env, cwd, execArgv, cpus, signal } = options;
    if (target !== undefined) toTaskSpec(target, 'Process()');
    if (!Array.isArray(args)) throw new TypeError(`Process(): args must be an array, got ${describe(args)}`);
    if (name !== undefined && typeof name !== 'string') throw new TypeError(`Process(): name must be a string, got ${describe(name)}`);
    if (daemon !== undefined && typeof daemon !== 'boolean') throw new TypeError(`Process(): daemon must be a boolean, got ${describe(daemon)}`);
    if (env !== undefined && (typeof env !== 'object' || env === null)) throw new TypeError(`Process(): env must be an object, got ${describe(env)}`);
    if (cwd !== undefined && typeof cwd !== 'string') throw new TypeError(`Process(): cwd must be a string, got ${describe(cwd)}`);
    if (execArgv !== undefined) checkStringArray(execArgv, 'execArgv');
    if (cpus !== undefined) {
      if (!Array.isArray(cpus) || cpus.length === 0) throw new TypeError(`Process(): cpus must be a non-empty array of CPU indices, got ${describe(cpus)}`);
      for (const c of cpus) {
        if (typeof c !== 'number' || !Number.isInteger(c)) throw new TypeError(`Process(): cpus must hold integers, got ${describe(c)}`);
        if (c < 0 || c >= 1024) throw new RangeError(`Process(): CPU index ${c} is out of range (0..1023)`);
      }
      checkCpusAllowed(cpus);
    }
    checkSignal(signal);
    if (options.startMethod !== undefined && options.startMethod !== 'spawn' && options.startMethod !== 'warm') {
      throw new TypeError(`Process(): startMethod must be 'spawn' or 'warm', got ${describe(options.startMethod)}`);
    }
    this.#target = target;
    this.#args = args;
    this.#options = options;
    this.#identity = [...self.identity, ++childCounter];
    this.name = name ?? `Process-${this.#identity.join(':')}`;
    this.#daemon = daemon ?? self.daemon;
  }

  get pid(): number | undefined {
    return this.#pid;
  }

  get daemon(): boolean {
    return this.#daemon;
  }

  set daemon(value: boolean) {
    if (this.#pid !== undefined) throw new Error('process has already started');
    if (typeof value !== 'boolean') throw new TypeError(`daemon must be a boolean, got ${describe(value)}`);
    this.#daemon = value;
  }

  /** null while running (or not started), the exit code, or -SIGNAL (-9 for SIGKILL) as in Python. */
  get exitCode(): number | null {
    return this.#exitCode;
  }

  /** Forks and execs the child. Throws at once (ENOENT, EACCES, ...) if it cannot be started. */
  start(): void {
    if (this.#closed) throw new Error('process object is closed');
    if (this.#pid !== undefined) throw new Error('cannot start a process twice');
    if (!isMainThread) {
      throw new Error('Process.start() must be called on the main thread: a child forked from a worker thread would die with that thread (PR_SET_PDEATHSIG)');
    }
    const o = this.#options;
    const target = this.#target === undefined ? null : toTaskSpec(this.#target, 'Process.start()');
    // Everything that can fail on bad input fails here, before any fork.
    const segments = new Map<string, Segment>();
    const retains: Array<() => () => void> = [];
    const encoded = encode(this.#args, { segment: (s) => segments.set(s.key, s), retain: (r) => retains.push(r) }, 'Process args');
    const args = serialize(encoded, 'Process args');

    installExitHook();
    const execArgv = o.execArgv ?? inheritableExecArgv(process.execArgv);
    // An explicit cwd takes a fresh child: a bad one must throw here (ENOENT from chdir), as it
    // does at exec, not kill a warm child after start() returned.
    const warm = (o.startMethod ?? getStartMethod()) === 'warm' && o.cwd === undefined;
    let child: Launched | undefined = warm ? takeSpare(execArgv) : undefined;
    const fromSpare = child !== undefined;
    this.#fromSpare = fromSpare;
    if (child !== undefined && o.cpus !== undefined) {
      try {
        native.setAffinity(child.pid, o.cpus);
      } catch (err) {
        child.channel.close();
        process.kill(child.pid, 'SIGKILL');
        throw err;
      }
    }
    // A warm child takes its environment and cwd from the start message; a fresh one gets them
    // at exec, with the fds of the shared objects in its arguments.
    child ??= launch({ env: o.env ?? process.env, cwd: o.cwd, execArgv, cpus: o.cpus, segments: segments.values(), label: this.name });
    this.#pid = child.pid;
    this.#pidfd = child.pidfd;
    this.#channel = child.channel;
    running.add(this);
    onExit(this.#pidfd, () => this.reapNow(), !this.#daemon);
    // A warm child was started before these arguments existed: their descriptors reach it through
    // the tracker, as a queue item's do, instead of being inherited. Either way the child's objects
    // take over one reference each of the arena blocks in the arguments.
    const payload = fromSpare && segments.size > 0 ? serializeMessage(this.#args, 'Process args') : args;
    if (payload === args) for (const retain of retains) retain();
    const start: StartMessage = {
      type: 'start',
      name: this.name,
      identity: this.#identity,
      daemon: this.#daemon,
      parent: { pid: process.pid, name: self.name },
      inherited: child.inherited,
      target,
      args: payload,
      ...(fromSpare ? { env: { ...(o.env ?? process.env) }, cwd: o.cwd ?? process.cwd() } : {}),
    };
    this.#channel.send(start);

    if (o.signal !== undefined) {
      const onAbort = (): void => this.terminate();
      if (o.signal.aborted) onAbort();
      else o.signal.addEventListener('abort', onAbort, { once: true });
    }
  }

  /** @internal Collects the exit status once the pidfd says the child has exited. */
  reapNow(): boolean {
    if (this.#exitCode !== null) return true;
    if (this.#pid === undefined) return false;
    const status = native.tryReap(this.#pid);
    if (status === null) return false;
    this.#exitCode = status.exitCode;
    this.#usage = { userCPUTime: status.userCPUTime, systemCPUTime: status.systemCPUTime, maxRSS: status.maxRSS };
    offExit(this.#pidfd);
    running.delete(this);
    native.closeFd(this.#pidfd);
    this.#pidfd = -1;
    this.#channel?.close();
    if (this.#fromSpare) spareChildExited();
    for (const listener of this.#exitListeners.splice(0)) listener();
    const joiners = this.#joiners;
    this.#joiners = [];
    for (const resolve of joiners) resolve();
    return true;
  }

  /** @internal Calls `listener` once the child has exited and was reaped; keeps nothing alive. */
  whenExited(listener: () => void): void {
    if (this.#exitCode !== null) listener();
    else this.#exitListeners.push(listener);
  }

  /** Resolves when the child has exited, or when the timeout passes (check exitCode). */
  join(timeout?: number): Promise<void> {
    try {
      if (this.#pid === undefined) throw new Error('can only join a started process');
      const t = checkTimeout(timeout);
      if (this.#exitCode !== null) return Promise.resolve();
      return new Promise((resolve) => {
        // While someone joins, the child keeps the event loop alive even if it is a daemon.
        onExit(this.#pidfd, () => this.reapNow(), true);
        let timer: NodeJS.Timeout | undefined;
        const done = (): void => {
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        this.#joiners.push(done);
        if (t !== undefined) {
          timer = setTimeout(() => {
            this.#joiners = this.#joiners.filter((j) => j !== done);
            if (this.#joiners.length === 0 && this.#exitCode === null) onExit(this.#pidfd, () => this.reapNow(), !this.#daemon);
            resolve();
          }, t);
        }
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Blocks this thread until the child exits or the timeout passes. */
  joinSync(timeout?: number): void {
    if (this.#pid === undefined) throw new Error('can only join a started process');
    const t = checkTimeout(timeout);
    if (this.#exitCode !== null) return;
    if (native.waitExit(this.#pidfd, t === undefined ? -1 : Math.ceil(t))) this.reapNow();
  }

  isAlive(): boolean {
    if (this.#pid === undefined || this.#exitCode !== null) return false;
    return !this.reapNow();
  }

  /** SIGTERM. */
  terminate(): void {
    this.signal('SIGTERM');
  }

  /** SIGKILL. */
  kill(): void {
    this.signal('SIGKILL');
  }

  private signal(sig: NodeJS.Signals): void {
    // Until we reap it, the pid cannot be reused, so it still names our child.
    if (this.#pid === undefined || this.#exitCode !== null) return;
    try {
      process.kill(this.#pid, sig);
    } catch {
      // exited meanwhile
    }
  }

  /** Releases the process object's resources; it must have exited. */
  close(): void {
    if (this.#pid !== undefined && this.#exitCode === null && !this.reapNow()) {
      throw new Error('Cannot close a process while it is still running. You should first call join() or terminate().');
    }
    this.#closed = true;
  }

  /** CPU time (µs) and peak RSS (KiB) of the exited child, from wait4(2); null before it exits. */
  resourceUsage(): ResourceUsage | null {
    return this.#usage;
  }

  toString(): string {
    const state = this.#pid === undefined ? 'initial' : this.#exitCode === null ? 'started' : `stopped exitcode=${this.#exitCode}`;
    return `<Process name='${this.name}' pid=${this.#pid ?? 'None'} ${state}${this.#daemon ? ' daemon' : ''}>`;
  }
}

/** mp.activeChildren(): the children started here that are still running (reaping those that are not). */
export function activeChildren(): Process[] {
  return [...running].filter((p) => p.isAlive());
}
