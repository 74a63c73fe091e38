// bullmq and ioredis are optional peers: the library loads without them, and only the BullMQ
// backend and the worker CLI require them, here, with a message that says what to install.
import { describe } from '../describe';

function load(name: string, who: string): any {
  try {
    return require(name);
  } catch (err) {
    // Only when the package itself is missing: a missing dependency of an installed one is its own error.
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND' || !(err as Error).message.includes(`'${name}'`)) throw err;
    const e = new Error(`${who} needs the package ${JSON.stringify(name)}, an optional peer dependency of node-multiprocessing: npm install bullmq ioredis`);
    (e as NodeJS.ErrnoException).code = 'MODULE_NOT_FOUND';
    throw e;
  }
}

export function loadBullMQ(who: string): any {
  // BullMQ loads ioredis only when it connects: check it now, for a message at the call.
  loadIORedis(who);
  return load('bullmq', who);
}

export function loadIORedis(who: string): any {
  const mod = load('ioredis', who);
  return mod.default ?? mod.Redis ?? mod;
}

/**
 * Refuses a Redis that may evict keys: BullMQ's jobs are keys, and an evicted job is lost without
 * a word. INFO is readable by ACL users that CONFIG GET is not.
 */
export async function checkEvictionPolicy(redis: any, allowEviction: boolean, who: string): Promise<void> {
  const info: string = await redis.info('memory');
  const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1];
  if (policy === undefined || policy === 'noeviction' || allowEviction) return;
  throw new Error(
    `${who}: Redis runs with maxmemory-policy ${describe(policy)}, so it may evict BullMQ's jobs and lose them; ` +
    'set maxmemory-policy noeviction (docs/scale-out.md, "In production"), or pass allowEviction: true / --allow-eviction to accept the risk',
  );
}

/** A URL without its password, for messages. */
export function redact(url: string): string {
  return url.replace(/^(rediss?:\/\/[^:@/]*:)[^@/]*@/, '$1***@');
}

/**
 * Waits for a new ioredis client's first connection. Refused credentials fail at once; a Redis that
 * does not answer fails after `ms`. (Later outages are waited out: commands wait for Redis.)
 */
export function firstConnection(client: any, ms: number, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (client.status === 'ready') return resolve();
    let last: Error | undefined;
    const done = (err?: Error): void => {
      clearTimeout(timer);
      client.off('error', onError);
      client.off('ready', onReady);
      client.off('end', onEnd);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onReady = (): void => done();
    const onEnd = (): void => done(new Error(`${where}: the connection to Redis was closed before it was up`));
    const onError = (err: Error): void => {
      last = err;
      if (/WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username/i.test(err.message)) {
        done(new Error(`Redis refused the credentials of ${where}: ${err.message}`));
      }
    };
    const timer = setTimeout(() => done(new Error(`${where} could not connect to Redis within ${ms} ms: ${last?.message ?? 'no answer'}`)), ms);
    client.on('error', onError);
    client.on('ready', onReady);
    client.on('end', onEnd);
  });
}
