// A worker host: a BullMQ Worker that takes jobs from a queue and runs each in a child process of
// a local mp.Pool, one slot per child (`npx node-multiprocessing worker ...`, lib/cli.ts).
//
// Tasks never run on this process's event loop: it only moves bytes between Redis and the
// children, so it always renews BullMQ's job locks in time, and a job is never taken for stalled
// (and run twice) because a task kept the loop busy. maxStalledCount is 0: a job whose lock
// expired (its host died) fails instead of running again; the pool re-runs it only if it opted
// in with `retries`.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { fileURLToPath } from 'url';

import { WorkerLostError } from '../errors';
import { Pool } from '../pool';
import { errorInfo, ErrorInfo } from '../remote-error';
import { task, TaskSpec } from '../task';
import { localBackendWith } from './local';
import type { RunnerTask } from './bullmq-runner';
import {
  CANCEL_TTL, DEFAULT_MAX_PAYLOAD, Failure, FailureKind, failureReason, INLINE_RESULT, ioredisOptions, JobData, jobSignatureValid, keys,
  MARK_STARTED_LUA, RedisConnection, RESULT_TTL, ResultData, signResult, STARTED_FIELD, VERSION,
} from './bullmq-wire';
import { checkEvictionPolicy, firstConnection, loadBullMQ, loadIORedis } from './bullmq-load';

const RUNNER = task(path.join(__dirname, 'bullmq-runner.js'), 'run');
/** A cancel message for a job that has not reached this host yet is kept this long. */
const EARLY_CANCEL_MS = 60_000;

export interface WorkerHostOptions {
  connection: RedisConnection;
  queue: string;
  /** BullMQ's key prefix (default 'bull'). */
  prefix?: string;
  /** Child processes, and jobs taken at once. */
  processes: number;
  /**
   * Module files, directories (every module under them, except under a node_modules below the
   * directory: packages are allowed only by their own entry) or package names whose exports may run.
   */
  allowModules: string[];
  /** Run functions sent by their source (the pool must opt in too). */
  allowSource: boolean;
  /** Accept only jobs signed with this key. */
  hmacKey?: Buffer;
  /** BullMQ's lockDuration (ms): how long a dead host's jobs stay locked. */
  lockDuration: number;
  /** BullMQ's stalledInterval (ms): how often expired locks are looked for. */
  stalledInterval: number;
  /** Replace a child after this many jobs (for every pool). */
  maxTasksPerChild?: number;
  /** The largest job payload this host takes (v8 bytes). */
  maxPayload?: number;
  /** Start even though Redis may evict keys (jobs can then be lost). */
  allowEviction?: boolean;
  /** Where progress lines go (stderr by default). */
  log?: (line: string) => void;
}

interface AllowList {
  files: Set<string>;
  dirs: string[];
}

/** Resolves the allow-list to real paths: a file, a directory (ends in / or is one), or a package name. */
export function resolveAllowList(entries: string[], cwd = process.cwd()): AllowList {
  const files = new Set<string>();
  const dirs: string[] = [];
  for (const entry of entries) {
    let p: string;
    if (entry.startsWith('file:')) p = fileURLToPath(entry);
    else if (path.isAbsolute(entry) || entry.startsWith('.') || fs.existsSync(path.resolve(cwd, entry))) p = path.resolve(cwd, entry);
    else {
      try {
        p = require.resolve(entry, { paths: [cwd] });
      } catch {
        throw new Error(`--allow-module ${entry}: no such file, and no package of that name can be resolved from ${cwd}`);
      }
    }
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch {
      throw new Error(`--allow-module ${entry}: ${p} does not exist`);
    }
    if (fs.statSync(real).isDirectory()) dirs.push(real.endsWith(path.sep) ? real : real + path.sep);
    else files.add(real);
  }
  return { files, dirs };
}

/** Whether a task may run here; a reason if not. */
function refusal(spec: TaskSpec, allow: AllowList, allowSource: boolean, what: string): string | undefined {
  const s = spec as Partial<Record<string, unknown>> | null;
  const wellFormed = typeof s === 'object' && s !== null && (s.kind === 'source'
    ? typeof s.source === 'string' && typeof s.name === 'string'
    : s.kind === 'module' && typeof s.url === 'string' && typeof s.exportName === 'string');
  if (!wellFormed) return `${what} is not a task description of node-multiprocessing`;
  if (spec.kind === 'source') {
    if (!allowSource) return `${what} is a function sent by its source, and this worker was not started with --allow-source`;
    // The name goes into a //# sourceURL comment: a line break there would end the comment.
    return /^[^\x00-\x1f\x7f]{0,200}$/.test(spec.name) ? undefined : `${what} has a name with control characters: refused`;
  }
  if (!spec.url.startsWith('file:')) return `${what} is the module ${spec.url}, which is not a file: module tasks must name a file on the worker's allow-list`;
  let real: string;
  try {
    real = fs.realpathSync(fileURLToPath(spec.url));
  } catch {
    return `${what} is the module ${fileURLToPath(spec.url)}, which does not exist on this worker (deploy the same files at the same paths on every machine)`;
  }
  if (allow.files.has(real)) return undefined;
  // A directory allows the modules of the application in it, not every package installed under
  // it: --allow-module /srv/app must not let a job call graceful-fs's readFileSync.
  if (allow.dirs.some((d) => real.startsWith(d) && !real.slice(d.length).split(path.sep).includes('node_modules'))) return undefined;
  if (allow.dirs.some((d) => real.startsWith(d))) {
    return `${what} is the module ${real}, in a node_modules under an allowed directory: a directory does not allow the packages installed under it; ` +
      'name the package or its file with --allow-module';
  }
  return `${what} is the module ${real}, which is not on this worker's allow-list (--allow-module)`;
}

interface Running {
  pool: string;
  abort: AbortController;
}

export class WorkerHost {
  readonly name = `${os.hostname()}:${process.pid}`;
  #pool: Pool;
  #worker: any;
  #redis: any;
  #subscriber: any;
  readonly #running = new Map<string, Running>();
  /** Pools terminated: their jobs are refused. Pool id → when it may be forgotten. */
  readonly #cancelledPools = new Map<string, number>();
  /** Jobs whose call was aborted before they reached this host. Job id → when to forget. */
  readonly #cancelledJobs = new Map<string, number>();
  #closing: Promise<void> | undefined;

  private constructor(private readonly o: Required<Omit<WorkerHostOptions, 'hmacKey' | 'maxTasksPerChild'>> & WorkerHostOptions, private readonly allow: AllowList) {
    this.#pool = new Pool({ processes: o.processes, maxTasksPerChild: o.maxTasksPerChild, backend: localBackendWith({ spin: false }) });
  }

  /** Connects, checks Redis, starts the children and the BullMQ worker. */
  static async start(options: WorkerHostOptions): Promise<WorkerHost> {
    const o = {
      ...options,
      prefix: options.prefix ?? 'bull',
      maxPayload: options.maxPayload ?? DEFAULT_MAX_PAYLOAD,
      allowEviction: options.allowEviction ?? false,
      log: options.log ?? ((line: string) => void process.stderr.write(`${line}\n`)),
    };
    const allow = resolveAllowList(o.allowModules);
    const { Worker, UnrecoverableError } = loadBullMQ('the worker');
    const IORedis = loadIORedis('the worker');
    const host = new WorkerHost(o, allow);
    const k = keys(o.prefix, o.queue);
    const conn = ioredisOptions(o.connection);
    const make = (extra: Record<string, unknown>): any => {
      const { url, ...rest } = conn as { url?: string };
      return url === undefined ? new IORedis({ ...rest, ...extra }) : new IORedis(url, { ...rest, ...extra });
    };
    try {
      host.#redis = make({ maxRetriesPerRequest: null });
      host.#redis.on('error', () => undefined);
      host.#redis.defineCommand('nmpMarkStarted', { numberOfKeys: 2, lua: MARK_STARTED_LUA });
      await firstConnection(host.#redis, 30_000, 'the worker');
      await checkEvictionPolicy(host.#redis, o.allowEviction, 'the worker');
      // Cancellations: a terminated pool's id, or aborted calls' job ids, published by pools.
      host.#subscriber = make({ maxRetriesPerRequest: null });
      host.#subscriber.on('error', () => undefined);
      host.#subscriber.on('message', (_channel: string, message: string) => host.#onCancel(message));
      // On every (re)connection: resubscribe is ioredis's; the terminated pools are read again,
      // since a message published while we were away is not kept.
      host.#subscriber.on('ready', () => void host.#loadCancelled(k.cancelled));
      await host.#subscriber.subscribe(k.cancel);
      await host.#loadCancelled(k.cancelled);

      const processor = (job: any, token: string): Promise<ResultData> => host.#process(job, token, UnrecoverableError, k);
      host.#worker = new Worker(o.queue, processor, {
        connection: conn,
        prefix: o.prefix,
        concurrency: o.processes,
        lockDuration: o.lockDuration,
        stalledInterval: o.stalledInterval,
        maxStalledCount: 0,
        name: host.name,
        // After a lost connection, retry finishing a job soon: its lock is running out meanwhile.
        runRetryDelay: Math.min(1000, o.lockDuration / 4),
        autorun: false,
      });
      host.#worker.on('error', (err: Error) => o.log(`node-multiprocessing worker: ${err.message}`));
      void host.#worker.run();
      await host.#worker.waitUntilReady();
    } catch (err) {
      await host.close(0);
      throw err;
    }
    return host;
  }

  async #loadCancelled(key: string): Promise<void> {
    try {
      const now = Date.now();
      await this.#redis.zremrangebyscore(key, 0, now);
      const ids: string[] = await this.#redis.zrangebyscore(key, now, '+inf');
      for (const id of ids) this.#cancelPool(id, now + CANCEL_TTL);
    } catch {
      // Redis is away: the next 'ready' reads them.
    }
  }

  #onCancel(message: string): void {
    let m: { pool?: unknown; jobs?: unknown };
    try {
      m = JSON.parse(message);
    } catch {
      return;
    }
    if (typeof m.pool !== 'string') return;
    if (Array.isArray(m.jobs)) {
      const until = Date.now() + EARLY_CANCEL_MS;
      for (const id of m.jobs) {
        if (typeof id !== 'string') continue;
        const r = this.#running.get(id);
        if (r !== undefined && r.pool === m.pool) r.abort.abort('cancelled');
        else this.#cancelledJobs.set(id, until);
      }
      this.#forgetOld();
    } else {
      this.#cancelPool(m.pool, Date.now() + CANCEL_TTL);
    }
  }

  #cancelPool(pool: string, until: number): void {
    this.#cancelledPools.set(pool, until);
    for (const r of this.#running.values()) if (r.pool === pool) r.abort.abort('cancelled');
  }

  #forgetOld(): void {
    const now = Date.now();
    for (const [id, until] of this.#cancelledJobs) if (until < now) this.#cancelledJobs.delete(id);
    for (const [id, until] of this.#cancelledPools) if (until < now) this.#cancelledPools.delete(id);
  }

  async #process(job: any, token: string, UnrecoverableError: new (message: string) => Error, k: ReturnType<typeof keys>): Promise<ResultData> {
    const o = this.o;
    const jobId = String(job.id);
    const fail = (kind: FailureKind, info: ErrorInfo, extra: Partial<Failure> = {}): Error => {
      const reason = failureReason({ kind, info, host: this.name, ...extra }, o.hmacKey, o.queue, jobId);
      // Refused and cancelled jobs would fail the same way again: no retry for them.
      return kind === 'refused' || kind === 'cancelled' ? new UnrecoverableError(reason) : new Error(reason);
    };
    const refuse = (message: string, name = 'Error'): Error =>
      fail('refused', { name, message: `worker ${this.name} refused the task: ${message}`, stack: undefined, props: undefined });

    const d = job.data as JobData;
    if (typeof d !== 'object' || d === null || d.v !== VERSION || typeof d.p !== 'string' || typeof d.pool !== 'string' || typeof d.fn !== 'object') {
      throw refuse(`job ${jobId} is not a node-multiprocessing job of version ${VERSION}`, 'TypeError');
    }
    if (o.hmacKey !== undefined && !jobSignatureValid(o.hmacKey, o.queue, jobId, d)) {
      throw refuse(d.s === undefined
        ? 'the job is not signed, and this worker takes only jobs signed with its HMAC key (give the pool the same hmacKey)'
        : 'the job\'s signature does not match this worker\'s HMAC key');
    }
    this.#forgetOld();
    if (this.#cancelledPools.has(d.pool) || this.#cancelledJobs.has(jobId)) {
      throw fail('cancelled', { name: 'Error', message: 'the pool was terminated or the call aborted', stack: undefined, props: undefined });
    }
    const why = refusal(d.fn, this.allow, o.allowSource, 'the task') ?? (d.init === undefined ? undefined : refusal(d.init.fn, this.allow, o.allowSource, 'the initializer'));
    if (why !== undefined) throw refuse(why);
    const payload = Buffer.from(d.p, 'base64');
    if (payload.length > o.maxPayload) throw refuse(`its arguments are ${payload.length} bytes, over this worker's limit of ${o.maxPayload} (--max-payload)`, 'RangeError');

    // The job is marked started, while this host still holds its lock, before any of it runs. A
    // job whose lock expires unmarked never ran, and the pool runs it again (a taker that never
    // got it: BullMQ's reply that handed it over was lost in a Redis restart). If the lock is
    // gone already, the job is no longer ours: the stalled-job check has handed it to the pool.
    if (await this.#redis.nmpMarkStarted(k.lock(jobId), k.job(jobId), token, STARTED_FIELD, this.name) !== 1) {
      throw new Error(`job ${jobId}: its lock expired before the task started on worker ${this.name}; not run here`);
    }

    const abort = new AbortController();
    this.#running.set(jobId, { pool: d.pool, abort });
    let timer: NodeJS.Timeout | undefined;
    if (typeof d.t === 'number' && d.t > 0) timer = setTimeout(() => abort.abort('timeout'), d.t);
    const runnerTask: RunnerTask = {
      pool: d.pool,
      fn: d.fn,
      mode: d.mode,
      payload,
      init: d.init === undefined ? null : { fn: d.init.fn, args: Buffer.from(d.init.args, 'base64') },
      maxTasks: typeof d.m === 'number' ? d.m : 0,
      maxResult: Math.min(typeof d.x === 'number' ? d.x : DEFAULT_MAX_PAYLOAD, o.maxPayload),
    };
    let bytes: Buffer;
    try {
      bytes = await this.#pool.apply(RUNNER, [runnerTask], { signal: abort.signal }) as Buffer;
    } catch (err) {
      if (abort.signal.aborted && abort.signal.reason === 'timeout') {
        throw fail('timeout', { name: 'TimeoutError', message: `the task ran longer than taskTimeout (${d.t} ms) on worker ${this.name}; its child process was killed`, stack: undefined, props: undefined });
      }
      if (abort.signal.aborted && abort.signal.reason === 'shutdown') {
        throw fail('lost', {
          name: 'WorkerLostError',
          message: `worker ${this.name} was stopped (SIGTERM or SIGINT) and its grace period ran out before the task finished; its child process was killed`,
          stack: undefined, props: undefined,
        }, { pid: process.pid, exitCode: null, signal: null });
      }
      if (abort.signal.aborted) throw fail('cancelled', { name: 'Error', message: 'the pool was terminated or the call aborted', stack: undefined, props: undefined });
      if (err instanceof WorkerLostError) {
        throw fail('lost', { name: 'WorkerLostError', message: `${err.message}, on worker ${this.name}`, stack: undefined, props: undefined }, { pid: err.pid, exitCode: err.exitCode, signal: err.signal });
      }
      const info = errorInfo(err);
      // The child's stack, not where the host awaited it.
      info.stack = (err as { remoteStack?: string }).remoteStack ?? info.stack;
      throw fail('error', info);
    } finally {
      clearTimeout(timer);
      this.#running.delete(jobId);
    }
    const base64 = Buffer.from(bytes).toString('base64');
    const s = o.hmacKey === undefined ? undefined : signResult(o.hmacKey, o.queue, jobId, base64);
    if (base64.length <= INLINE_RESULT) return { v: VERSION, r: base64, s };
    await this.#redis.set(k.result(jobId), base64, 'PX', RESULT_TTL);
    return { v: VERSION, k: 1, s };
  }

  /** The pid of each child process now (for tests and logs). */
  get childPids(): number[] {
    return this.#pool.pids;
  }

  /**
   * Stops taking jobs, lets the running ones finish (up to `graceMs`; then they are killed and
   * fail), and lets everything go.
   */
  close(graceMs = 30_000): Promise<void> {
    this.#closing ??= (async () => {
      const worker = this.#worker;
      if (worker !== undefined) {
        const closed = worker.close();
        // Not 'cancelled': the task did nothing wrong, and its pool may run it again (retries).
        const timer = setTimeout(() => {
          for (const r of this.#running.values()) r.abort.abort('shutdown');
        }, graceMs);
        try {
          await closed;
        } catch {
          // Redis is away: nothing more to say to it.
        } finally {
          clearTimeout(timer);
        }
      }
      this.#pool.terminate();
      await this.#pool.join();
      for (const c of [this.#subscriber, this.#redis]) {
        if (c === undefined) continue;
        try {
          await Promise.race([c.quit(), new Promise((r) => setTimeout(r, 2000).unref())]);
        } catch {
          // already closed
        }
        c.disconnect();
      }
    })();
    return this.#closing;
  }
}
