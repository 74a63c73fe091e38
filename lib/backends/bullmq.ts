// The BullMQ backend: a Pool whose units are jobs of a Redis queue, run by worker hosts
// (`npx node-multiprocessing worker`, lib/backends/bullmq-worker.ts) on any machine that reaches
// that Redis. Workers pull jobs, so a slow task never holds up the chunks behind it (Ray's pool
// deals chunks out round-robin, and the slow actor's share straggles: ray-project/ray#29453).
//
// - A unit is a job, added with addBulk (a map's chunks, and applies of one tick, together), in
//   slices of ADD_SLICE jobs: one MULTI of a million jobs would hold Redis up for seconds.
// - Outcomes come back through BullMQ's own events (QueueEvents), read from the stream position
//   taken before the first job was added, so no event of ours can come before the reader.
//   After a reconnection the pool looks up each job it still waits for, so an outcome whose
//   event it missed, or a job that Redis lost, is found. It also looks them up when the stream
//   was trimmed past what its reader had read (a pool whose event loop was busy while ~10,000
//   events went by): checked every WATCH_MS while jobs are outstanding.
// - Once it has a job's outcome, the pool removes the job (and its out-of-line result): Redis
//   keeps no job's arguments longer than needed. keepJobs only bounds what a pool that went away
//   leaves behind.
// - A worker host that dies stops renewing its jobs' locks; BullMQ's stalled-job check (run by
//   the other workers, and by the pool itself) finds them. maxStalledCount is 0, so a stalled job
//   is not run again: its task rejects with WorkerLostError, unless `retries` allows another run.
//   That holds for jobs their host marked started (STARTED_FIELD). A stalled job without the mark
//   never ran (a Redis restart lost the reply that handed it to a host) and is added again.
import { randomBytes } from 'crypto';
import * as v8 from 'v8';

import { describe, optionsOf } from '../describe';
import { TimeoutError, WorkerLostError } from '../errors';
import type { Mode } from '../pool-worker';
import { ErrorInfo, rebuildError } from '../remote-error';
import { serialize } from '../shared';
import type { TaskSpec } from '../task';
import { Backend, BackendConfig, Job, kCreateBackend, PoolBackend, PoolHost, Unit } from './backend';
import { checkEvictionPolicy, firstConnection, loadBullMQ, loadIORedis, redact } from './bullmq-load';
import {
  CANCEL_TTL, checkConnection, checkQueueName, DEFAULT_MAX_PAYLOAD, Failure, ioredisOptions, JobData, keys, MAX_MAX_PAYLOAD, parseFailure,
  RedisConnection, refuseShared, resultSignatureValid, ResultData, signJob, STARTED_FIELD, VERSION,
} from './bullmq-wire';

export type { RedisConnection, RedisConnectionOptions, RedisTlsOptions } from './bullmq-wire';

export interface BullMQBackendOptions {
  /** Redis: a redis:// or rediss:// URL, or { host, port, username, password, tls, db }. */
  connection: RedisConnection;
  /** The queue's name; the workers are started with the same `--queue`. */
  queue: string;
  /** BullMQ's key prefix (default 'bull'); the workers' `--prefix` must match. */
  prefix?: string;
  /**
   * Runs of a task beyond the first when it fails, its child dies, it times out or its worker
   * host is lost (default 0). Each run may be on another worker. With retries > 0 a task may run
   * more than once, also after it had done its work: at-least-once.
   */
  retries?: number;
  /** Sign every job (HMAC-SHA256), and accept only results signed with it; the workers get the same key. */
  hmacKey?: string | Buffer;
  /** Allow functions sent by their source (the workers must be started with --allow-source too). */
  allowSource?: boolean;
  /** The largest arguments of one job (a map's chunk) and the largest result, in v8.serialize bytes (default 64 MiB, at most 256 MiB). */
  maxPayload?: number;
  /**
   * How often the pool runs BullMQ's stalled-job check too (ms, default 30,000, as BullMQ's and
   * the workers' --stalled-interval), so a lost worker host is found even when no other is up.
   */
  stalledInterval?: number;
  /**
   * Finished jobs BullMQ keeps, at most `count`, for at most `age` seconds (default 10,000 and
   * 3,600). The pool removes each job once it has read its outcome: this bounds what a pool that
   * went away first leaves behind.
   */
  keepJobs?: { age?: number; count?: number };
  /** Accept a Redis whose maxmemory-policy may evict keys (jobs could then be lost). */
  allowEviction?: boolean;
}

interface Options {
  connection: RedisConnection;
  queue: string;
  prefix: string;
  retries: number;
  hmacKey: Buffer | undefined;
  allowSource: boolean;
  maxPayload: number;
  stalledInterval: number;
  keep: { age: number; count: number };
  allowEviction: boolean;
}

function checkInteger(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`${what} must be an integer, got ${describe(value)}`);
  if (value < min || value > max) throw new RangeError(`${what} must be from ${min} to ${max}, got ${value}`);
  return value;
}

function checkOptions(options: unknown): Options {
  const caller = 'mp.backends.bullmq()';
  if (typeof options !== 'object' || options === null) throw new TypeError(`${caller}: expected { connection, queue, ... }, got ${describe(options)}`);
  const o = optionsOf(options, caller);
  const known = ['connection', 'queue', 'prefix', 'retries', 'hmacKey', 'allowSource', 'maxPayload', 'stalledInterval', 'keepJobs', 'allowEviction'];
  for (const key of Object.keys(o)) {
    if (!known.includes(key)) throw new TypeError(`${caller}: unknown option ${JSON.stringify(key)} (known: ${known.join(', ')})`);
  }
  const prefix = o.prefix ?? 'bull';
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_.{}-]{1,100}$/.test(prefix)) throw new TypeError(`${caller}: prefix must be a short name, got ${describe(prefix)}`);
  let hmacKey: Buffer | undefined;
  if (o.hmacKey !== undefined) {
    if (typeof o.hmacKey === 'string') hmacKey = Buffer.from(o.hmacKey, 'utf8');
    else if (o.hmacKey instanceof Uint8Array) hmacKey = Buffer.from(o.hmacKey);
    else throw new TypeError(`${caller}: hmacKey must be a string or a Buffer, got ${describe(o.hmacKey)}`);
    if (hmacKey.length < 16) throw new RangeError(`${caller}: hmacKey must be at least 16 bytes (a random 32-byte key is best), got ${hmacKey.length}`);
  }
  for (const key of ['allowSource', 'allowEviction']) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') throw new TypeError(`${caller}: ${key} must be a boolean, got ${describe(o[key])}`);
  }
  const keepJobs = optionsOf(o.keepJobs, `${caller}: keepJobs`);
  return {
    connection: checkConnection(o.connection, caller),
    queue: checkQueueName(o.queue, caller),
    prefix,
    retries: o.retries === undefined ? 0 : checkInteger(o.retries, `${caller}: retries`, 0, 1000),
    hmacKey,
    allowSource: o.allowSource === true,
    maxPayload: o.maxPayload === undefined ? DEFAULT_MAX_PAYLOAD : checkInteger(o.maxPayload, `${caller}: maxPayload`, 1, MAX_MAX_PAYLOAD),
    stalledInterval: o.stalledInterval === undefined ? 30_000 : checkInteger(o.stalledInterval, `${caller}: stalledInterval`, 10, 24 * 3600 * 1000),
    keep: {
      age: keepJobs.age === undefined ? 3600 : checkInteger(keepJobs.age, `${caller}: keepJobs.age`, 1, 365 * 24 * 3600),
      count: keepJobs.count === undefined ? 10_000 : checkInteger(keepJobs.count, `${caller}: keepJobs.count`, 1, 1e9),
    },
    allowEviction: o.allowEviction === true,
  };
}

/**
 * `new mp.Pool({ backend: mp.backends.bullmq({ connection: 'redis://host:6379', queue: 'jobs' }), processes: 8 })`:
 * the pool's tasks run on the worker hosts that serve that queue. bullmq and ioredis must be installed.
 */
export function bullmq(options: BullMQBackendOptions): Backend {
  const o = checkOptions(options);
  // Fail here, not at the first call, when the packages are missing.
  loadBullMQ('mp.backends.bullmq()');
  return {
    name: 'bullmq',
    [kCreateBackend]: (host: PoolHost, config: BackendConfig) => new BullMQBackend(host, config, o),
  };
}

interface RemoteUnit extends Unit {
  fnId: number;
  mode: Mode;
  /**
   * base64 v8 payload, kept until the outcome is in: a stalled job that never ran is added again
   * (under a new id), whatever `retries` says.
   */
  p: string;
  jobId: string;
  /** Added to Redis (addBulk resolved). */
  sent: boolean;
  /** Its outcome is being read (an out-of-line result, a lost host's name): events for it are ignored. */
  settling: boolean;
  /** Runs spent by earlier job ids of this unit (each run again is a job of a new id). */
  spent: number;
  /** Job ids this unit had before its current one. */
  again: number;
}

const SHUTDOWN_WAIT_MS = 5000;
/** Jobs per addBulk (one MULTI): Redis runs a MULTI without serving anyone else. */
const ADD_SLICE = 1000;
/**
 * How often the pool checks, while jobs are outstanding, whether events it had not read were
 * trimmed away. Short enough that a reader that keeps up is not ~10,000 events behind the trim
 * point by the next check (a busy queue writes a few thousand events a second).
 */
const WATCH_MS = 1000;
/** Jobs looked up per pipeline when reconciling. */
const LOOKUP_SLICE = 1000;
/** How long the pool waits for its first connection to Redis before its calls reject. */
const CONNECT_MS = 10_000;

class BullMQBackend implements PoolBackend<RemoteUnit> {
  readonly #host: PoolHost;
  readonly #o: Options;
  readonly #config: BackendConfig;
  readonly #poolId = randomBytes(8).toString('hex');
  readonly #keys: ReturnType<typeof keys>;
  readonly #init: JobData['init'];
  #seq = 0;
  /** Units in Redis or about to be, by job id. */
  readonly #byId = new Map<string, RemoteUnit>();
  #toAdd: RemoteUnit[] = [];
  #flushQueued = false;
  /** addBulk slices are added one after another, on this chain. */
  #adding: Promise<void> = Promise.resolve();
  #addsInFlight = 0;
  /** The id of the last event the QueueEvents reader handed over (any event, ours or not). */
  #lastEventId = '0-0';
  /** #lastEventId at the previous #checkTrimmed. */
  #seenAtLastCheck = '0-0';
  /** The stream was found trimmed up to this id, and the jobs were looked up then. */
  #reconciledUpTo = '0-0';
  #reconciling: Promise<void> | undefined;
  #reconcileAgain = false;
  #watchTimer: NodeJS.Timeout | undefined;
  #ready = false;
  #fatal: Error | undefined;
  #terminated = false;
  #shutdown: Promise<void> | undefined;
  #shutdownStarted: () => void = () => undefined;
  readonly #shutdownBegun = new Promise<void>((resolve) => (this.#shutdownStarted = resolve));
  #starting: Promise<void> = Promise.resolve();
  #queue: any;
  #events: any;
  #checker: any;
  #redis: any;
  readonly #bull: any;

  readonly window: number;

  constructor(host: PoolHost, config: BackendConfig, o: Options) {
    this.#host = host;
    this.#o = o;
    this.#config = config;
    this.#keys = keys(o.prefix, o.queue);
    this.window = Math.max(16, config.processes * 8);
    if (config.initializer !== null) {
      this.#checkSpec(config.initializer, 'Pool(): initializer');
      refuseShared(config.initargs, 'Pool(): initargs');
      const bytes = serialize(config.initargs, 'Pool(): initargs');
      this.#checkSize(bytes.length, 'Pool(): initargs');
      this.#init = { fn: config.initializer, args: bytes.toString('base64') };
    } else if (config.initargs.length > 0) {
      refuseShared(config.initargs, 'Pool(): initargs');
      serialize(config.initargs, 'Pool(): initargs');
    }
    this.#bull = loadBullMQ('mp.backends.bullmq()');
    this.#starting = this.#start();
    this.#starting.then(
      () => {
        this.#ready = true;
        this.#flush();
        this.#maybeFinish();
      },
      (err: Error) => this.#fail(err),
    );
  }

  get pids(): number[] {
    return [];
  }

  #checkSpec(spec: TaskSpec, caller: string): void {
    if (spec.kind === 'source' && !this.#o.allowSource) {
      throw new TypeError(
        `${caller}: ${spec.name} is a function, which a remote worker would run from its source; ` +
        'pass mp.task(module, export) of a module on the workers\' --allow-module list, or opt in on both sides: ' +
        'allowSource: true on mp.backends.bullmq() and --allow-source on the workers',
      );
    }
  }

  #checkSize(bytes: number, what: string): void {
    if (bytes > this.#o.maxPayload) {
      throw new RangeError(`${what} take ${bytes} bytes, over the limit of ${this.#o.maxPayload} bytes for one job (maxPayload); pass a smaller chunksize or raise maxPayload (at most ${MAX_MAX_PAYLOAD})`);
    }
  }

  unit(job: Job, index: number, fnId: number, mode: Mode, payload: unknown, what: string, first: number): RemoteUnit {
    this.#checkSpec(this.#host.specs[fnId], what.replace(/ (args|item)$/, ''));
    refuseShared(payload, what, first);
    const bytes = serialize(payload, what);
    this.#checkSize(bytes.length, what);
    const seq = ++this.#seq;
    return { seq, job, index, fnId, mode, p: bytes.toString('base64'), jobId: `${this.#poolId}-${seq}`, sent: false, settling: false, spent: 0, again: 0 };
  }

  submit(units: RemoteUnit[]): void {
    if (this.#fatal !== undefined) {
      for (const u of units) if (!u.job.done) u.job.unitDone(u, false, this.#fatal);
      return;
    }
    for (const u of units) {
      this.#byId.set(u.jobId, u);
      this.#toAdd.push(u);
    }
    if (!this.#flushQueued) {
      // Units of one tick go in one addBulk: a loop of applyAsync costs one round trip.
      this.#flushQueued = true;
      process.nextTick(() => {
        this.#flushQueued = false;
        this.#flush();
      });
    }
  }

  poke(): void {
    this.#maybeFinish();
  }

  cancel(job: Job): void {
    const ids: string[] = [];
    for (const [id, u] of this.#byId) {
      if (u.job !== job) continue;
      this.#byId.delete(id);
      if (u.sent) ids.push(id);
    }
    this.#toAdd = this.#toAdd.filter((u) => u.job !== job);
    if (ids.length > 0 && this.#ready) void this.#cancelJobs(ids);
    this.#maybeFinish();
  }

  terminate(err: Error): void {
    if (this.#terminated) return;
    this.#terminated = true;
    const ids: string[] = [];
    for (const [id, u] of this.#byId) {
      if (u.sent) ids.push(id);
      if (!u.job.done) u.job.unitDone(u, false, err);
    }
    this.#byId.clear();
    this.#toAdd = [];
    void this.#close(async () => {
      if (!this.#ready) return;
      // Workers refuse the pool's jobs from now on, and end those they run.
      await this.#redis.zadd(this.#keys.cancelled, Date.now() + CANCEL_TTL, this.#poolId);
      await this.#redis.publish(this.#keys.cancel, JSON.stringify({ pool: this.#poolId }));
      // Waiting jobs go; an active one is locked by its worker, which fails it.
      await Promise.all(ids.map((id) => this.#queue.remove(id).catch(() => undefined)));
    });
  }

  async join(): Promise<void> {
    await this.#shutdownBegun;
    await this.#shutdown;
  }

  // ---------------------------------------------------------------------------------------------
  // Connections

  #redisClient(extra: Record<string, unknown> = {}): any {
    const IORedis = loadIORedis('mp.backends.bullmq()');
    const { url, ...rest } = ioredisOptions(this.#o.connection) as { url?: string };
    const options = {
      ...rest,
      // Commands wait while Redis is away, and go out when it is back.
      maxRetriesPerRequest: null,
      retryStrategy: (times: number) => Math.max(Math.min(Math.exp(times), 20_000), 1000),
      ...extra,
    };
    return url === undefined ? new IORedis(options) : new IORedis(url, options);
  }

  async #start(): Promise<void> {
    const { Queue, QueueEvents, Worker } = this.#bull;
    const o = this.#o;
    const connection = ioredisOptions(o.connection);
    this.#redis = this.#redisClient({ connectionName: 'nmp-pool' });
    this.#redis.on('error', () => undefined);
    await firstConnection(this.#redis, CONNECT_MS, `the pool (${typeof o.connection === 'string' ? redact(o.connection) : 'its connection'})`);
    // Each reconnection: look up the jobs still waited for (events may have been missed, or Redis lost them).
    this.#redis.on('ready', () => void this.#reconcile());
    await checkEvictionPolicy(this.#redis, o.allowEviction, 'mp.backends.bullmq()');
    if (this.#shutdown !== undefined) return;
    // The events of our jobs all come after this position: QueueEvents reads from it.
    const last: Array<[string, string[]]> = await this.#redis.xrevrange(this.#keys.events, '+', '-', 'COUNT', 1);
    if (this.#shutdown !== undefined) return;
    const lastEventId = last.length > 0 ? last[0][0] : '0-0';
    this.#lastEventId = lastEventId;
    this.#seenAtLastCheck = lastEventId;
    this.#events = new QueueEvents(o.queue, { connection, prefix: o.prefix, lastEventId });
    this.#events.on('error', () => undefined);
    // Every event is emitted with its stream id last: the reader's position, for #checkTrimmed.
    const emit = this.#events.emit.bind(this.#events);
    this.#events.emit = (name: string, ...args: unknown[]): boolean => {
      const id = args[args.length - 1];
      if (typeof id === 'string' && /^\d+-\d+$/.test(id)) this.#lastEventId = id;
      return emit(name, ...args);
    };
    this.#events.on('completed', (e: { jobId: string; returnvalue: unknown }) => this.#onCompleted(e.jobId, e.returnvalue));
    this.#events.on('failed', (e: { jobId: string; failedReason: string }) => this.#onFailed(e.jobId, e.failedReason));
    this.#events.on('stalled', (e: { jobId: string }) => this.#onStalled(e.jobId));
    this.#queue = new Queue(o.queue, { connection, prefix: o.prefix });
    this.#queue.on('error', () => undefined);
    // BullMQ's stalled-job check, also from here: a lost host is found even if no other worker runs.
    this.#checker = new Worker(o.queue, null, { connection, prefix: o.prefix, autorun: false, stalledInterval: o.stalledInterval, maxStalledCount: 0 });
    this.#checker.on('error', () => undefined);
    await Promise.all([this.#queue.waitUntilReady(), this.#events.waitUntilReady(), this.#checker.waitUntilReady()]);
    void this.#checker.startStalledCheckTimer();
    // When the events' own connection comes back, events may have gone meanwhile (the stream is
    // trimmed to ~10,000): look the jobs up.
    const eventsClient = await this.#events.client;
    eventsClient?.on?.('ready', () => void this.#reconcile());
    this.#watchTimer = setInterval(() => void this.#checkTrimmed().catch(() => undefined), WATCH_MS).unref();
  }

  /** Redis cannot be used (refused, not noeviction, bullmq missing...): every call rejects with why. */
  #fail(err: Error): void {
    this.#fatal = err;
    for (const u of this.#byId.values()) if (!u.job.done) u.job.unitDone(u, false, err);
    this.#byId.clear();
    this.#toAdd = [];
    // Let the connections go: they would retry for ever.
    void this.#close(async () => undefined);
  }

  #flush(): void {
    if (!this.#ready || this.#toAdd.length === 0 || this.#shutdown !== undefined) return;
    const pending = this.#toAdd;
    this.#toAdd = [];
    this.#addsInFlight++;
    this.#adding = this.#adding.then(() => this.#addAll(pending)).finally(() => {
      this.#addsInFlight--;
      this.#maybeFinish();
    });
  }

  /** Adds units in slices of ADD_SLICE, one slice at a time; units whose call ended meanwhile are left out, or taken back out. */
  async #addAll(pending: RemoteUnit[]): Promise<void> {
    const o = this.#o;
    for (let i = 0; i < pending.length; i += ADD_SLICE) {
      const units: RemoteUnit[] = [];
      for (const u of pending.slice(i, i + ADD_SLICE)) {
        if (this.#byId.get(u.jobId) !== u) continue; // cancelled, or settled
        if (u.job.done) {
          // Its call ended (an imap that threw, a map that failed fast): nothing will take its outcome.
          this.#byId.delete(u.jobId);
          continue;
        }
        units.push(u);
      }
      if (units.length === 0 || this.#shutdown !== undefined) continue;
      try {
        await this.#queue.addBulk(units.map((u) => this.#jobOf(u)));
      } catch (err) {
        const e = new Error(`the pool could not add its jobs to the queue ${o.queue}: ${(err as Error).message}`, { cause: err });
        for (const u of units) this.#settle(u, false, e);
        continue;
      }
      // A call aborted (or a pool terminated) while its jobs were being added: they are in Redis
      // now, and would run. Take them back out.
      const dropped: string[] = [];
      for (const u of units) {
        if (this.#byId.get(u.jobId) === u && !u.job.done) {
          u.sent = true;
        } else {
          if (this.#byId.get(u.jobId) === u) this.#byId.delete(u.jobId);
          dropped.push(u.jobId);
        }
      }
      if (dropped.length > 0) await this.#cancelJobs(dropped);
    }
  }

  #jobOf(u: RemoteUnit): { name: string; data: JobData; opts: Record<string, unknown> } {
    const o = this.#o;
    const c = this.#config;
    const spec = this.#host.specs[u.fnId];
    const data: JobData = { v: VERSION, pool: this.#poolId, fn: spec, mode: u.mode, x: o.maxPayload, p: u.p };
    if (this.#init !== undefined) data.init = this.#init;
    if (c.taskTimeout !== undefined) data.t = c.taskTimeout;
    if (c.maxTasksPerChild > 0) data.m = c.maxTasksPerChild;
    if (o.hmacKey !== undefined) data.s = signJob(o.hmacKey, o.queue, u.jobId, data);
    return {
      name: spec.kind === 'module' ? spec.exportName : spec.name,
      data,
      opts: {
        jobId: u.jobId,
        // One run per job id: the pool runs a task again under a new id (#runAgain), so a job's
        // started mark (STARTED_FIELD) always speaks of its only run.
        attempts: 1,
        // The pool removes each job once it has its outcome; these bound what a pool that went away leaves.
        removeOnComplete: o.keep,
        removeOnFail: o.keep,
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Outcomes

  #settle(u: RemoteUnit, ok: boolean, value: unknown): void {
    if (this.#byId.get(u.jobId) === u) this.#byId.delete(u.jobId);
    // Its outcome is here: the job (its arguments, up to maxPayload) need not stay in Redis.
    if (u.sent && this.#shutdown === undefined) this.#queue.remove(u.jobId).catch(() => undefined);
    u.sent = false;
    if (!u.job.done) u.job.unitDone(u, ok, value);
    this.#maybeFinish();
  }

  #onCompleted(jobId: string, returnvalue: unknown): void {
    const u = this.#byId.get(jobId);
    if (u === undefined || u.settling) return;
    u.settling = true;
    void this.#readResult(u, returnvalue as ResultData);
  }

  async #readResult(u: RemoteUnit, r: ResultData): Promise<void> {
    const o = this.#o;
    let resultKey: string | undefined;
    try {
      if (typeof r !== 'object' || r === null || r.v !== VERSION) throw new Error(`job ${u.jobId} completed with a value that is not a node-multiprocessing result: was it run by another kind of worker?`);
      let base64 = r.r;
      if (r.k === 1) {
        // GET, and DEL once settled: a GETDEL whose reply a cut connection lost would be resent
        // by ioredis, and find nothing.
        resultKey = this.#keys.result(u.jobId);
        base64 = await this.#redis.get(resultKey);
        if (base64 === null) throw new Error(`the result of job ${u.jobId} is gone from Redis (out-of-line results are kept 24 h; was Redis restarted without persistence?)`);
      }
      if (typeof base64 !== 'string') throw new Error(`job ${u.jobId} completed without a result`);
      if (o.hmacKey !== undefined && !resultSignatureValid(o.hmacKey, o.queue, u.jobId, base64, r.s)) {
        throw new Error(`the result of job ${u.jobId} is not signed with the pool's HMAC key: refused (a worker without the key, or a forged result)`);
      }
      this.#settle(u, true, v8.deserialize(Buffer.from(base64, 'base64')));
    } catch (err) {
      this.#settle(u, false, err);
    }
    if (resultKey !== undefined && this.#shutdown === undefined) this.#redis.del(resultKey).catch(() => undefined);
  }

  #onFailed(jobId: string, failedReason: string): void {
    const u = this.#byId.get(jobId);
    if (u === undefined || u.settling) return;
    const f = parseFailure(String(failedReason), this.#o.hmacKey, this.#o.queue, jobId);
    if (f === undefined) {
      if (/stalled/.test(failedReason)) return this.#onStalled(jobId);
      return this.#settle(u, false, withCallSite(new Error(`job ${jobId} failed in BullMQ: ${failedReason}`), u));
    }
    // Refused and cancelled jobs would fail the same way again.
    if (f.kind !== 'refused' && f.kind !== 'cancelled' && this.#runAgain(u, 1)) return;
    this.#settle(u, false, failureError(f, u));
  }

  /**
   * Adds the unit again under a new job id if its runs left allow (`spent`: what the old job
   * used). The old job is failed for good in Redis, and goes.
   */
  #runAgain(u: RemoteUnit, spent: number): boolean {
    if (this.#o.retries + 1 - (u.spent + spent) <= 0 || this.#terminated || this.#byId.get(u.jobId) !== u) return false;
    this.#byId.delete(u.jobId);
    if (this.#shutdown === undefined) this.#queue.remove(u.jobId).catch(() => undefined);
    u.spent += spent;
    u.jobId = `${this.#poolId}-${u.seq}-r${++u.again}`;
    u.sent = false;
    u.settling = false;
    this.submit([u]);
    return true;
  }

  /**
   * A job whose lock expired. If its taker had marked it started (STARTED_FIELD), its worker host
   * is gone (or was cut off from Redis for lockDuration) while it ran: WorkerLostError, unless
   * `retries`. Without the mark it never ran, and runs now: its taker never got it (BullMQ's reply
   * that handed it over was lost when Redis restarted), or lost it before starting it.
   */
  #onStalled(jobId: string): void {
    const u = this.#byId.get(jobId);
    if (u === undefined || u.settling) return;
    u.settling = true;
    void (async () => {
      let fields: Array<string | null> | undefined;
      try {
        // A few fields, not the whole job (whose arguments may take up to maxPayload). The mark
        // cannot come after the lock expired (the host sets it only while it holds the lock).
        fields = await Promise.race([
          this.#redis.hmget(this.#keys.job(jobId), 'timestamp', STARTED_FIELD),
          new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000).unref()),
        ]);
      } catch {
        // Redis is away: it may have run, so it counts as lost.
      }
      const neverRan = fields !== undefined && fields[0] !== null && fields[1] === null;
      const startedBy: string | undefined = fields?.[1] ?? undefined;
      if (this.#byId.get(jobId) !== u) return;
      // A job that never ran spends no run: it runs once, now.
      if (this.#runAgain(u, neverRan ? 0 : 1)) return;
      // The job is failed in Redis (BullMQ fails it when a worker next takes it): take it out.
      if (this.#shutdown === undefined) this.#queue.remove(jobId).catch(() => undefined);
      const processedBy = startedBy;
      const pid = Number(/:(\d+)$/.exec(processedBy ?? '')?.[1] ?? 0);
      const who = processedBy === undefined ? 'its worker host' : `its worker host ${processedBy}`;
      this.#settle(u, false, withCallSite(new WorkerLostError(
        `${who} was lost while running the task: the job's lock expired and BullMQ's stalled-job check failed it ` +
        '(the host died, or was cut off from Redis for longer than its lock duration)',
        pid, null, null,
      ), u));
    })();
  }

  /**
   * Every WATCH_MS while jobs are outstanding: was the event stream trimmed past where the reader
   * was at the previous check? An entry deleted before the reader reached it lies past that point
   * (the reader only moves on), so its event may be lost, and the jobs are looked up. Redis ≥ 7
   * says up to which id it deleted entries (max-deleted-entry-id); for an older one, where its
   * first entry now is. A reader that keeps up is never that far behind (WATCH_MS).
   */
  async #checkTrimmed(): Promise<void> {
    const seenBefore = this.#seenAtLastCheck;
    this.#seenAtLastCheck = this.#lastEventId;
    // (A reconcile that is running already is asked to run again: the trim may have come after it read a job.)
    if (!this.#ready || this.#shutdown !== undefined || this.#redis.status !== 'ready' || this.#byId.size === 0) return;
    let trimmedTo: string;
    try {
      const info: unknown[] = await this.#redis.xinfo('STREAM', this.#keys.events);
      const field = (name: string): unknown => (info.includes(name) ? info[info.indexOf(name) + 1] : undefined);
      // Entries before the first one are gone (XTRIM, BullMQ's MAXLEN); all of them when it is
      // empty. Redis ≥ 7 also names the largest id XDEL took.
      const first = field('first-entry') as [string, unknown] | null | undefined;
      trimmedTo = Number(field('length')) === 0 || !first ? String(field('last-generated-id') ?? '0-0') : first[0];
      const maxDeleted = field('max-deleted-entry-id');
      if (typeof maxDeleted === 'string' && compareIds(maxDeleted, trimmedTo) > 0) trimmedTo = maxDeleted;
    } catch (err) {
      if (!/no such key/i.test((err as Error).message)) return; // away: look again later
      trimmedTo = '18446744073709551615-0'; // the stream itself is gone
    }
    const seen = compareIds(seenBefore, this.#reconciledUpTo) > 0 ? seenBefore : this.#reconciledUpTo;
    if (compareIds(trimmedTo, seen) <= 0) return;
    this.#reconciledUpTo = trimmedTo;
    await this.#reconcile();
  }

  /** Each job still waited for is looked up: an outcome whose event was missed, or a job Redis lost. One run at a time. */
  #reconcile(): Promise<void> {
    if (this.#reconciling !== undefined) {
      this.#reconcileAgain = true;
      return this.#reconciling;
    }
    this.#reconciling = (async () => {
      do {
        this.#reconcileAgain = false;
        await this.#lookUpAll();
      } while (this.#reconcileAgain && this.#shutdown === undefined);
    })().finally(() => (this.#reconciling = undefined));
    return this.#reconciling;
  }

  async #lookUpAll(): Promise<void> {
    if (!this.#ready || this.#shutdown !== undefined) return;
    const units = [...this.#byId.values()].filter((u) => u.sent && !u.settling);
    for (let i = 0; i < units.length; i += LOOKUP_SLICE) {
      const slice = units.slice(i, i + LOOKUP_SLICE);
      let replies: Array<[Error | null, unknown]>;
      try {
        // A few fields of each job's hash, not the job (its arguments may take up to maxPayload).
        const pipe = this.#redis.pipeline();
        for (const u of slice) {
          pipe.hmget(this.#keys.job(u.jobId), 'timestamp', 'finishedOn', 'returnvalue', 'failedReason');
          pipe.zscore(this.#keys.completed, u.jobId);
        }
        replies = await pipe.exec();
      } catch {
        return; // away again: the next reconnection looks again
      }
      slice.forEach((u, k) => {
        const [e1, fields] = replies[2 * k] as [Error | null, Array<string | null>];
        const [e2, score] = replies[2 * k + 1] as [Error | null, string | null];
        if (e1 !== null || e2 !== null || this.#byId.get(u.jobId) !== u || u.settling) return;
        const [timestamp, finishedOn, returnvalue, failedReason] = fields;
        if (timestamp === null) {
          return this.#settle(u, false, withCallSite(new Error(
            `the job ${u.jobId} of this pool is gone from Redis: Redis lost its data (restarted without persistence, or evicted keys), ` +
            'or the job was removed. Run Redis with appendonly yes and maxmemory-policy noeviction (docs/scale-out.md)',
          ), u));
        }
        if (!finishedOn) return; // waiting or running: its event is still to come
        if (score !== null) {
          let value: unknown;
          try {
            value = JSON.parse(returnvalue ?? 'null');
          } catch {
            value = null;
          }
          return this.#onCompleted(u.jobId, value);
        }
        if (failedReason) return this.#onFailed(u.jobId, failedReason);
      });
    }
  }

  async #cancelJobs(ids: string[]): Promise<void> {
    try {
      await this.#redis.publish(this.#keys.cancel, JSON.stringify({ pool: this.#poolId, jobs: ids }));
      await Promise.all(ids.map((id) => this.#queue.remove(id).catch(() => undefined)));
    } catch {
      // Redis is away: the aborted call has rejected already; its task may still run.
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Closing

  /** Closed, no input left to read, nothing waited for: the connections go. */
  #maybeFinish(): void {
    if (this.#shutdown !== undefined || this.#host.state === 'running' || this.#host.activeStreams > 0) return;
    if (this.#byId.size > 0 || this.#toAdd.length > 0 || this.#addsInFlight > 0) return;
    void this.#close(async () => undefined);
  }

  #close(before: () => Promise<void>): Promise<void> {
    this.#shutdown ??= (async () => {
      this.#shutdownStarted();
      clearInterval(this.#watchTimer);
      // Still connecting: stop trying, and let #start finish before closing what it made.
      if (!this.#ready && this.#redis !== undefined && this.#redis.status !== 'ready') this.#redis.disconnect();
      await this.#starting.catch(() => undefined);
      try {
        if (this.#redis?.status === 'ready') await withTimeout(before(), SHUTDOWN_WAIT_MS);
      } catch {
        // Redis is away: what the workers were to be told, they find out from the pool's silence.
      }
        // With Redis away, closing cleanly would wait for it: just disconnect.
      const up = this.#redis?.status === 'ready';
      const closers = [this.#checker, this.#events, this.#queue].filter((c) => c !== undefined).map((c) => c.close().catch(() => undefined));
      await withTimeout(Promise.all(closers), up ? SHUTDOWN_WAIT_MS : 100).catch(() => undefined);
      for (const c of [this.#checker, this.#events, this.#queue]) c?.disconnect?.().catch?.(() => undefined);
      if (this.#redis !== undefined) {
        if (this.#redis.status === 'ready') await withTimeout(this.#redis.quit(), 1000).catch(() => undefined);
        this.#redis.disconnect();
      }
    })();
    return this.#shutdown;
  }
}

/** Orders two stream ids ("ms-seq"). */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map((x) => BigInt(x || '0'));
  const [bm, bs] = b.split('-').map((x) => BigInt(x || '0'));
  return am !== bm ? (am < bm ? -1 : 1) : as === bs ? 0 : as < bs ? -1 : 1;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The error as thrown at the call: its own name and message, and the call site's stack. */
function withCallSite<E extends Error>(err: E, u: RemoteUnit): E {
  const local = u.job.callSite.stack;
  if (local !== undefined) err.stack = `${err.name}: ${err.message}\n${local.slice(local.indexOf('\n') + 1)}`;
  return err;
}

function failureError(f: Failure, u: RemoteUnit): Error {
  const info: ErrorInfo = f.info;
  switch (f.kind) {
    case 'lost':
      return withCallSite(new WorkerLostError(info.message, f.pid ?? 0, f.exitCode ?? null, f.signal ?? null), u);
    case 'timeout':
      return withCallSite(new TimeoutError(info.message), u);
    default:
      return rebuildError(info, u.job.callSite);
  }
}
