// Starting a child: the native spawner, the fds it is handed, and the watch on its exit.
// Process (a child per start) and the warm spares (children started ahead) both start this way.
import * as path from 'path';

import { Channel } from './channel';
import { CHANNEL_FD, StartMessage } from './context';
import { native, packageRoot } from './native';
import { Segment } from './segment';
import { trackerForChildren } from './tracker';

export const BOOTSTRAP = path.join(packageRoot, 'dist', 'bootstrap.js');

const exitHandlers = new Map<number, () => void>();
let dispatchInstalled = false;

function installExitDispatch(): void {
  if (dispatchInstalled) return;
  dispatchInstalled = true;
  native.setExitCallback((pidfd) => {
    // Called from native code, which must not see a JS exception: report it as uncaught instead.
    try {
      exitHandlers.get(pidfd)?.();
    } catch (err) {
      process.nextTick(() => {
        throw err;
      });
    }
  });
}

/** Calls `handler` once the child behind `pidfd` has exited (replacing any earlier handler). */
export function onExit(pidfd: number, handler: () => void, keepAlive: boolean): void {
  installExitDispatch();
  exitHandlers.set(pidfd, handler);
  native.watchExit(pidfd, keepAlive);
}

export function offExit(pidfd: number): void {
  exitHandlers.delete(pidfd);
  native.unwatchExit(pidfd);
}

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

export interface LaunchOptions {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  execArgv: string[];
  cpus?: number[];
  /** Segments in the arguments: the child inherits their fds (a spare has none yet). */
  segments: Iterable<Segment>;
  /** Shown in `ps` after the bootstrap's path. */
  label: string;
  /** A warm spare: it reports when it is up, then waits for its start message. */
  spare?: boolean;
}

export interface Launched {
  pid: number;
  pidfd: number;
  channel: Channel;
  inherited: StartMessage['inherited'];
}

/** Starts `node [execArgv] dist/bootstrap.js <label>` with our fds at 3, 4, ... */
export function launch(o: LaunchOptions, onMessage: (message: any) => void = () => {}): Launched {
  const [parentEnd, childEnd] = native.socketPair();
  const passFds = [childEnd];
  const env: NodeJS.ProcessEnv = { ...o.env, NMP_CHANNEL_FD: String(CHANNEL_FD) };
  if (o.spare) env.NMP_SPARE = '1';
  // The child reports to this tree's tracker: a name it makes outlives it, until the tree ends.
  const tracker = trackerForChildren();
  env.NMP_TRACKER_FD = String(CHANNEL_FD + passFds.length);
  env.NMP_TREE_ROOT = String(tracker.root);
  passFds.push(tracker.fd);
  const inherited: StartMessage['inherited'] = [];
  for (const s of o.segments) {
    inherited.push({ fd: CHANNEL_FD + passFds.length, dev: s.dev, ino: s.ino });
    passFds.push(s.fd);
  }
  let spawned: { pid: number; pidfd: number };
  try {
    spawned = native.spawn({
      file: process.execPath,
      argv: [process.execPath, ...o.execArgv, BOOTSTRAP, o.label],
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
  const channel = new Channel(parentEnd, onMessage);
  channel.unref();
  return { pid: spawned.pid, pidfd: spawned.pidfd, channel, inherited };
}
