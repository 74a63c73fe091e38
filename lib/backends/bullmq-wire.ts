// What the BullMQ backend's two sides agree on: the Redis connection option, key names, the job's
// data, the result and failure formats, and their HMAC signatures. Loaded by the pool (client)
// and by the worker host (lib/backends/bullmq-worker.ts); needs neither bullmq nor ioredis.
//
// A job's data is JSON (BullMQ's format) holding the task's description in the clear and its
// arguments as base64 of v8.serialize, so Map, Set, Date, BigInt and typed arrays cross as they do
// to a local pool. v8's format is read by the same or a newer Node: run workers on the clients'
// Node major or a newer one.
import { createHmac, timingSafeEqual } from 'crypto';
import * as v8 from 'v8';

import { describe } from '../describe';
import type { Mode } from '../pool-worker';
import { ErrorInfo } from '../remote-error';
import { isShareable, kShare } from '../shared';
import type { TaskSpec } from '../task';

/** How to reach Redis: a URL (`redis://user:pass@host:6379/0`, `rediss://` for TLS) or its parts. */
export type RedisConnection = string | RedisConnectionOptions;

export interface RedisConnectionOptions {
  /** A redis:// or rediss:// URL; the other fields add to it. */
  url?: string;
  host?: string;
  port?: number;
  /** A Redis ACL user (Redis ≥ 6). */
  username?: string;
  password?: string;
  db?: number;
  /** TLS: true, or Node's TLS options (a private CA's `ca`, a client certificate's `cert` and `key`, ...). */
  tls?: boolean | RedisTlsOptions;
}

export interface RedisTlsOptions {
  ca?: string | Buffer | Array<string | Buffer>;
  cert?: string | Buffer;
  key?: string | Buffer;
  servername?: string;
  rejectUnauthorized?: boolean;
}

/** The default size limit of one job's arguments and of one result, as v8.serialize bytes. */
export const DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024;
/** The largest limit that may be set: Redis refuses a bulk string over 512 MB, and base64 adds a third. */
export const MAX_MAX_PAYLOAD = 256 * 1024 * 1024;
/**
 * A result larger than this is kept under a key of its own, not in the job: BullMQ copies a
 * job's return value into the queue's event stream (up to ~10,000 events are kept), where large
 * values would multiply Redis's memory.
 */
export const INLINE_RESULT = 64 * 1024;
/** How long an out-of-line result waits for its pool (ms). */
export const RESULT_TTL = 24 * 3600 * 1000;
/** How long a terminated pool's id is remembered, so that its jobs still queued are refused (ms). */
export const CANCEL_TTL = 24 * 3600 * 1000;

/**
 * The version of jobs and results. 2: workers mark each job they start (STARTED_FIELD), and pools
 * run again a stalled job without the mark. A worker of version 1 never marks, so its pools would
 * take its lost jobs for never started: the two refuse each other's jobs instead.
 */
export const VERSION = 2;

/**
 * The job-hash field a worker host sets, while it still holds the job's lock, just before it
 * hands the task to a child process; its value is the host's name. A job whose lock expired
 * without it never ran: its taker never got it (BullMQ's reply that handed it over was lost when
 * Redis restarted), so running it again runs it once. Each job id is run at most once (the pool
 * retries under a new id), so the field always speaks of this job's only run.
 */
export const STARTED_FIELD = 'nmpStarted';

/**
 * Sets STARTED_FIELD if the lock is still held with this token (KEYS: lock, job hash; ARGV: token,
 * field, host). 1 if set, 0 if the job is no longer this taker's: then it must not run.
 */
export const MARK_STARTED_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0`;

/** ioredis options from ours (ioredis and bullmq take the same). */
export function ioredisOptions(connection: RedisConnection): Record<string, unknown> {
  const base = typeof connection === 'string' ? { url: connection } : { ...connection };
  if (base.tls === true) base.tls = {};
  if (base.tls === false) delete base.tls;
  return base as Record<string, unknown>;
}

/** Checks a connection option before anything connects: a TypeError names what is wrong. */
export function checkConnection(connection: unknown, caller: string): RedisConnection {
  if (typeof connection === 'string') {
    if (!/^rediss?:\/\//.test(connection)) throw new TypeError(`${caller}: connection must be a redis:// or rediss:// URL, got ${describe(connection)}`);
    return connection;
  }
  if (typeof connection !== 'object' || connection === null) {
    throw new TypeError(`${caller}: connection must be a redis:// URL or { host, port, username, password, tls, db }, got ${describe(connection)}`);
  }
  const c = connection as Record<string, unknown>;
  const known = ['url', 'host', 'port', 'username', 'password', 'db', 'tls'];
  for (const key of Object.keys(c)) {
    if (!known.includes(key)) throw new TypeError(`${caller}: connection has an unknown field ${JSON.stringify(key)} (known: ${known.join(', ')})`);
  }
  if (c.url !== undefined && (typeof c.url !== 'string' || !/^rediss?:\/\//.test(c.url))) throw new TypeError(`${caller}: connection.url must be a redis:// or rediss:// URL, got ${describe(c.url)}`);
  for (const key of ['host', 'username', 'password']) {
    if (c[key] !== undefined && typeof c[key] !== 'string') throw new TypeError(`${caller}: connection.${key} must be a string, got ${describe(c[key])}`);
  }
  for (const key of ['port', 'db']) {
    if (c[key] !== undefined && (typeof c[key] !== 'number' || !Number.isInteger(c[key]) || (c[key] as number) < 0)) {
      throw new TypeError(`${caller}: connection.${key} must be a non-negative integer, got ${describe(c[key])}`);
    }
  }
  if (c.tls !== undefined && typeof c.tls !== 'boolean' && (typeof c.tls !== 'object' || c.tls === null)) {
    throw new TypeError(`${caller}: connection.tls must be true or TLS options, got ${describe(c.tls)}`);
  }
  return c as RedisConnectionOptions;
}

export function checkQueueName(queue: unknown, caller: string): string {
  if (typeof queue !== 'string' || !/^[A-Za-z0-9_.-]{1,200}$/.test(queue)) {
    throw new TypeError(`${caller}: queue must be a name of letters, digits, '_', '.' or '-', got ${describe(queue)}`);
  }
  return queue;
}

/** Where a queue's own keys of ours live: beside BullMQ's, under its prefix. */
export function keys(prefix: string, queue: string): {
  cancel: string; cancelled: string; result: (jobId: string) => string; job: (jobId: string) => string; lock: (jobId: string) => string;
  events: string; completed: string;
} {
  const base = `${prefix}:${queue}`;
  return {
    /** Pub/sub channel: {"pool": id, "jobs"?: [ids]} ends running tasks. */
    cancel: `${base}:nmp:cancel`,
    /** Sorted set: terminated pool ids, scored by when they may be forgotten. */
    cancelled: `${base}:nmp:cancelled`,
    result: (jobId) => `${base}:nmp:result:${jobId}`,
    /** BullMQ's: a job's hash. */
    job: (jobId) => `${base}:${jobId}`,
    /** BullMQ's: a job's lock, whose value is its taker's token. */
    lock: (jobId) => `${base}:${jobId}:lock`,
    /** BullMQ's: the event stream. */
    events: `${base}:events`,
    /** BullMQ's: the sorted set of completed jobs. */
    completed: `${base}:completed`,
  };
}

// -------------------------------------------------------------------------------------------------
// Jobs

/** A job's data, as BullMQ stores it (JSON). */
export interface JobData {
  v: number;
  /** The pool that sent it (random hex). */
  pool: string;
  fn: TaskSpec;
  mode: Mode;
  /** The pool's initializer: its task and base64 v8 initargs. */
  init?: { fn: TaskSpec; args: string };
  /** taskTimeout (ms), counted from when the worker takes the job. */
  t?: number;
  /** maxTasksPerChild. */
  m?: number;
  /** The largest result the pool takes (v8 bytes). */
  x: number;
  /** The arguments (apply) or the chunk (map, starmap): base64 of v8.serialize. */
  p: string;
  /** HMAC-SHA256 (hex) of all of the above, the queue's name and the job's id. */
  s?: string;
}

/** A task's fields, each its own MAC part: a name and a source (or a URL and an export) cannot trade characters. */
function specParts(spec: TaskSpec): string[] {
  return spec.kind === 'module' ? ['m', String(spec.url), String(spec.exportName)] : ['s', String(spec.name), String(spec.source)];
}

/** HMAC-SHA256 of the parts, each prefixed with its length in UTF-8 bytes: no two lists of parts give the same input. */
function mac(key: Buffer, parts: string[]): string {
  const h = createHmac('sha256', key);
  for (const part of parts) {
    const bytes = Buffer.from(part, 'utf8');
    h.update(`${bytes.length}:`);
    h.update(bytes);
  }
  return h.digest('hex');
}

function macEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length === 32 && timingSafeEqual(x, y);
}

function jobParts(queue: string, jobId: string, d: JobData): string[] {
  // A fixed number of parts after each tag ('m'/'s' for a task, '0'/'1' for the initializer), so
  // the list of parts reads back one way only.
  return [
    'nmp-job2', String(d.v), queue, jobId, String(d.pool), ...specParts(d.fn), String(d.mode),
    ...(d.init === undefined ? ['0'] : ['1', ...specParts(d.init.fn), String(d.init.args)]),
    String(d.t ?? ''), String(d.m ?? ''), String(d.x), String(d.p),
  ];
}

export function signJob(key: Buffer, queue: string, jobId: string, d: JobData): string {
  return mac(key, jobParts(queue, jobId, d));
}

export function jobSignatureValid(key: Buffer, queue: string, jobId: string, d: JobData): boolean {
  return typeof d.s === 'string' && macEqual(d.s, signJob(key, queue, jobId, d));
}

// -------------------------------------------------------------------------------------------------
// Results and failures

/** A job's return value, as BullMQ stores it: the value inline, or under keys().result(jobId). */
export interface ResultData {
  v: number;
  /** base64 of v8.serialize(value), when inline. */
  r?: string;
  /** 1: the base64 is under keys().result(jobId). */
  k?: 1;
  s?: string;
}

export function signResult(key: Buffer, queue: string, jobId: string, base64: string): string {
  return mac(key, ['nmp-result', queue, jobId, base64]);
}

export function resultSignatureValid(key: Buffer, queue: string, jobId: string, base64: string, s: unknown): boolean {
  return typeof s === 'string' && macEqual(s, signResult(key, queue, jobId, base64));
}

/** Why a task failed on the worker side. */
export type FailureKind =
  /** The task threw (or its initializer did). */
  | 'error'
  /** The child process running it died: `pid`, `exitCode`, `signal`. */
  | 'lost'
  /** It ran past taskTimeout; its child was killed. */
  | 'timeout'
  /** The worker would not run it: not on its allow-list, a bad signature, too large... */
  | 'refused'
  /** Its pool was terminated or its call aborted. */
  | 'cancelled';

export interface Failure {
  kind: FailureKind;
  info: ErrorInfo;
  pid?: number;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** The worker host (hostname:pid). */
  host: string;
}

const FAILURE_TAG = '\nnmp1:';

/**
 * A failure as BullMQ's failedReason: a line a person can read in a dashboard, then our details
 * (base64 v8) and their signature.
 */
export function failureReason(f: Failure, key: Buffer | undefined, queue: string, jobId: string): string {
  const body = v8.serialize(f).toString('base64');
  const s = key === undefined ? '' : mac(key, ['nmp-failure', queue, jobId, body]);
  return `${f.info.name}: ${f.info.message}${FAILURE_TAG}${body}:${s}`;
}

/** Our details of a failedReason; undefined if it is not ours (BullMQ's own, or forged without the key). */
export function parseFailure(reason: string, key: Buffer | undefined, queue: string, jobId: string): Failure | undefined {
  const at = reason.lastIndexOf(FAILURE_TAG);
  if (at < 0) return undefined;
  const [body, s] = reason.slice(at + FAILURE_TAG.length).split(':');
  if (key !== undefined && !(typeof s === 'string' && macEqual(s, mac(key, ['nmp-failure', queue, jobId, body])))) return undefined;
  try {
    return v8.deserialize(Buffer.from(body, 'base64')) as Failure;
  } catch {
    return undefined;
  }
}

// -------------------------------------------------------------------------------------------------
// What cannot cross machines

/**
 * Refuses shared objects anywhere in `value` (nested in arrays, plain objects, Maps and Sets):
 * their memory, locks and rings live on one machine. The TypeError names the kind and the place.
 */
export function refuseShared(value: unknown, what: string, first = 0): void {
  const seen = new Set<object>();
  const walk = (v: unknown, at: string, depth: number): void => {
    if (typeof v !== 'object' || v === null || depth > 64 || seen.has(v)) return;
    seen.add(v);
    if (isShareable(v)) {
      let kind = 'shared object';
      try {
        kind = v[kShare]().kind;
      } catch {
        // a closed object: the generic name will do
      }
      throw new TypeError(
        `${at} is ${/^[AEIOU]/.test(kind) ? 'an' : 'a'} ${kind}, which cannot be sent to a remote worker: shared memory, locks, queues and pipes ` +
        'live on one machine. Pass plain data, or use a local Pool for shared objects',
      );
    }
    if (ArrayBuffer.isView(v)) return;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) walk(v[i], `${at}[${i}]`, depth + 1);
    } else if (v instanceof Map) {
      for (const [k, x] of v) {
        walk(k, `${at} (a Map key)`, depth + 1);
        walk(x, `${at}.get(${describe(k)})`, depth + 1);
      }
    } else if (v instanceof Set) {
      for (const x of v) walk(x, `${at} (a Set member)`, depth + 1);
    } else {
      for (const key of Object.keys(v)) walk((v as Record<string, unknown>)[key], `${at}.${key}`, depth + 1);
    }
  };
  // A chunk's items are named by their place in the whole input.
  if (Array.isArray(value)) {
    seen.add(value);
    for (let i = 0; i < value.length; i++) walk(value[i], `${what}[${first + i}]`, 1);
  } else {
    walk(value, what, 0);
  }
}
