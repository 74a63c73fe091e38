// Process: a real OS process, fork+exec'd by the native spawner, running a function of ours.
//
// The child is `node [execArgv] dist/bootstrap.js`, given a Unix socket (fd 3), the name
// tracker's pipe (fd 4, when there is one) and the fds of every shared object in its arguments.
// Its exit is watched through a pidfd; wait4 gives the status and the resource usage.
import * as path from 'path';
import { isMainThread } from 'worker_threads';

import { Channel } from './channel';
import { CHANNEL_FD, self, StartMessage } from './context';
import { native, packageRoot } from './native';
import { Segment } from './segment';
import { encode, serialize } from './shared';
import { Task, toTaskSpec } from './task';
import { trackerFdForChildren } from './tracker';
import { describe } from './describe';
import { checkSignal, checkTimeout } from './wait';

export interface ProcessOptions {
  target?: ((...args: any[]) => unknown) | Task;
  args?: unknown[];
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
}

export interface ResourceUsage {
  /** µs */
  userCPUTime: number;
  /** µs */
  systemCPUTime: number;
  /** KiB */
  maxRSS: number;
}

export const BOOTSTRAP = path.join(packageRoot, 'dist', 'bootstrap.js');

/**
 * The parent's Node flags that a child should share: loaders, --require, memory limits... but not
 * the ones that name the parent's own program (`-e code`, `-p`, `--test`, `--watch`) or would
 * collide on a port (`--inspect`). Python's spawn does the same with its interpreter flags.
 */
export function inheritableExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (['-e', '--eval', '-p', '--print', '-pe', '-ep'].includes(a)) {
      i++;
      continue;
    }
    if (/^--(eval|print)=/.test(a)) continue;
    if (['-i', '--interactive', '-c', '--check', '--test', '--watch'].includes(a)) continue;
    if (/^--(test|watch|inspect|debug)(-[a-z-]+)?(=|$)/.test(a)) continue;
    out.push(a);
  }
  return out;
}

let childCounter = 0;
const byPidfd = new Map<number, Process>();
const running = new Set<Process>();
let exitHooksInstalled = false;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  native.setExitCallback((pidfd) => {
    // Called from native code, which must not see a JS exception: report it as uncaught instead.
    try {
      byPidfd.get(pidfd)?.reapNow();
    } catch (err) {
      process.nextTick(() => {
        throw err;
      });
    }
  });
  // Python terminates daemonic children when the parent exits; children die with us anyway
  // (PR_SET_PDEATHSIG), but SIGTERM first lets them run their own exit handlers.
  process.on('exit', () => {
    for (const p of running) if (p.daemon) p.terminate();
  });
}

function checkStringArray(value: unknown, what: string): string[] {
  if (!Array.isArray(value) || value.some((x) => typeof x !== 'string')) {
    throw new TypeError(`Process(): ${what} must be an array of strings, got ${describe(value)}`);
  }
  return value as string[];
}

export class Process {
  name: string;
  #daemon: boolean;
  readonly #target: ProcessOptions['target'];
  readonly #args: unknown[];
  readonly #options: ProcessOptions;
  #pid: number | undefined;
  #pidfd = -1;
  #exitCode: number | null = null;
  #usage: ResourceUsage | null = null;
  #channel: Channel | undefined;
  #joiners: Array<() => void> = [];
  #closed = false;
  #identity: number[];

  constructor(options: ProcessOptions = {}) {
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
    }
    checkSignal(signal);
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
    const encoded = encode(this.#args, (s) => segments.set(`${s.dev}:${s.ino}`, s));
    const args = serialize(encoded, 'Process args');

    installExitHooks();
    const [parentEnd, childEnd] = native.socketPair();
    const passFds = [childEnd];
    const env: NodeJS.ProcessEnv = { ...(o.env ?? process.env), NMP_CHANNEL_FD: String(CHANNEL_FD) };
    const trackerFd = trackerFdForChildren();
    if (trackerFd !== undefined) {
      env.NMP_TRACKER_FD = String(CHANNEL_FD + passFds.length);
      passFds.push(trackerFd);
    }
    const inherited: StartMessage['inherited'] = [];
    for (const s of segments.values()) {
      inherited.push({ fd: CHANNEL_FD + passFds.length, dev: s.dev, ino: s.ino });
      passFds.push(s.fd);
    }
    const execArgv = o.execArgv ?? inheritableExecArgv(process.execArgv);
    let spawned: { pid: number; pidfd: number };
    try {
      spawned = native.spawn({
        file: process.execPath,
        argv: [process.execPath, ...execArgv, BOOTSTRAP, this.name],
        env: Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`),
        cwd: o.cwd,
        cpus: o.cpus,
        passFds,
      });
    } catch (err) {
      native.closeFd(parentEnd);
      native.closeFd(childEnd);
      throw err;
    }
    native.closeFd(childEnd);
    this.#pid = spawned.pid;
    this.#pidfd = spawned.pidfd;
    byPidfd.set(this.#pidfd, this);
    running.add(this);
    native.watchExit(this.#pidfd, !this.#daemon);

    this.#channel = new Channel(parentEnd, () => {});
    this.#channel.unref();
    const start: StartMessage = {
      type: 'start',
      name: this.name,
      identity: this.#identity,
      daemon: this.#daemon,
      parent: { pid: process.pid, name: self.name },
      inherited,
      target,
      args,
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
    native.unwatchExit(this.#pidfd);
    byPidfd.delete(this.#pidfd);
    running.delete(this);
    native.closeFd(this.#pidfd);
    this.#pidfd = -1;
    this.#channel?.close();
    const joiners = this.#joiners;
    this.#joiners = [];
    for (const resolve of joiners) resolve();
    return true;
  }

  /** Resolves when the child has exited, or when the timeout passes (check exitCode). */
  join(timeout?: number): Promise<void> {
    try {
      if (this.#pid === undefined) throw new Error('can only join a started process');
      const t = checkTimeout(timeout);
      if (this.#exitCode !== null) return Promise.resolve();
      return new Promise((resolve) => {
        // While someone joins, the child keeps the event loop alive even if it is a daemon.
        native.watchExit(this.#pidfd, true);
        let timer: NodeJS.Timeout | undefined;
        const done = (): void => {
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        this.#joiners.push(done);
        if (t !== undefined) {
          timer = setTimeout(() => {
            this.#joiners = this.#joiners.filter((j) => j !== done);
            if (this.#joiners.length === 0 && this.#exitCode === null) native.watchExit(this.#pidfd, !this.#daemon);
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
