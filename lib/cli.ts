#!/usr/bin/env node
// node-multiprocessing's command line: `node-multiprocessing worker --redis URL --queue NAME ...`
// starts a worker host for pools on the BullMQ backend (docs/scale-out.md).
import * as fs from 'fs';
import { parseArgs } from 'util';

import { cpuCount } from './context';

const USAGE = `Usage: node-multiprocessing worker --redis <url> --queue <name> [options]

Runs a pool of --processes child processes that take jobs from a BullMQ queue in Redis, one job per
child at a time: the remote end of new mp.Pool({ backend: mp.backends.bullmq({ connection, queue }) }).

  --redis <url>               redis://[user:password@]host:port[/db], or rediss:// for TLS
                              (or the NMP_REDIS_URL environment variable: keeps a password out of ps)
  --queue <name>              the queue's name, as given to mp.backends.bullmq()
  --processes <n>             child processes, and jobs run at once (default: the CPU count, ${cpuCount()})
  --allow-module <path>       a module file, a directory (every module under it, but not the
                              packages in a node_modules below it) or a package name whose
                              exported functions may run; repeat for more
  --allow-source              also run functions sent by their source (the pool must set allowSource);
                              needs --hmac-key-file, or anyone who can write to Redis runs code
  --insecure-allow-source-without-key
                              --allow-source without an HMAC key (a Redis only you can write to)
  --hmac-key-file <file>      take only jobs signed with the key in this file, and sign the results
                              (or NMP_HMAC_KEY); the pool gets the same key as hmacKey
  --tls-ca <file>             a CA certificate (PEM) to trust for rediss://
  --prefix <prefix>           BullMQ's key prefix (default: bull)
  --lock-duration <ms>        BullMQ's lockDuration (default: 30000)
  --stalled-interval <ms>     BullMQ's stalledInterval (default: 30000). A host that dies is found
                              within lock-duration + 2 x stalled-interval
  --max-tasks-per-child <n>   replace a child after n jobs
  --max-payload <bytes>       the largest arguments and result of one job (default: 67108864)
  --allow-eviction            start even though Redis's maxmemory-policy is not noeviction
  --grace <ms>                on SIGTERM/SIGINT, how long the running jobs may take to finish
                              (default: 30000); those still running then fail as a lost worker
  -h, --help                  this text

SIGTERM or SIGINT stops taking jobs, lets the running ones finish (up to --grace), and exits.`;

function fail(message: string): never {
  process.stderr.write(`node-multiprocessing: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function integer(value: string | undefined, flag: string, fallback: number | undefined, min = 1): number | undefined {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min) fail(`${flag} must be an integer of at least ${min}, got ${JSON.stringify(value)}`);
  return Number(value);
}

async function worker(argv: string[]): Promise<void> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        redis: { type: 'string' },
        queue: { type: 'string' },
        processes: { type: 'string' },
        'allow-module': { type: 'string', multiple: true },
        'allow-source': { type: 'boolean' },
        'insecure-allow-source-without-key': { type: 'boolean' },
        grace: { type: 'string' },
        'hmac-key-file': { type: 'string' },
        'tls-ca': { type: 'string' },
        prefix: { type: 'string' },
        'lock-duration': { type: 'string' },
        'stalled-interval': { type: 'string' },
        'max-tasks-per-child': { type: 'string' },
        'max-payload': { type: 'string' },
        'allow-eviction': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const url = (v.redis as string | undefined) ?? process.env.NMP_REDIS_URL;
  if (url === undefined) fail('--redis <url> is required');
  if (!/^rediss?:\/\//.test(url)) fail(`--redis must be a redis:// or rediss:// URL, got ${JSON.stringify(url)}`);
  const queue = v.queue as string | undefined;
  if (queue === undefined) fail('--queue <name> is required');
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(queue)) fail(`--queue must be a name of letters, digits, '_', '.' or '-', got ${JSON.stringify(queue)}`);
  const prefix = v.prefix as string | undefined;
  if (prefix !== undefined && !/^[A-Za-z0-9_.{}-]{1,100}$/.test(prefix)) fail(`--prefix must be a short name (letters, digits, '_', '.', '{', '}', '-'), got ${JSON.stringify(prefix)}`);
  let hmacKey: Buffer | undefined;
  if (v['hmac-key-file'] !== undefined) {
    try {
      hmacKey = Buffer.from(fs.readFileSync(v['hmac-key-file'] as string, 'utf8').trim(), 'utf8');
    } catch (err) {
      fail(`--hmac-key-file: ${(err as Error).message}`);
    }
  } else if (process.env.NMP_HMAC_KEY !== undefined && process.env.NMP_HMAC_KEY !== '') {
    hmacKey = Buffer.from(process.env.NMP_HMAC_KEY, 'utf8');
  }
  if (hmacKey !== undefined && hmacKey.length < 16) fail('the HMAC key must be at least 16 bytes');
  let connection: string | { url: string; tls: { ca: Buffer } } = url;
  if (v['tls-ca'] !== undefined) {
    try {
      connection = { url, tls: { ca: fs.readFileSync(v['tls-ca'] as string) } };
    } catch (err) {
      fail(`--tls-ca: ${(err as Error).message}`);
    }
  }
  const allowModules = (v['allow-module'] as string[] | undefined) ?? [];
  const allowSource = v['allow-source'] === true;
  if (allowSource && hmacKey === undefined && v['insecure-allow-source-without-key'] !== true) {
    fail('--allow-source needs --hmac-key-file (or NMP_HMAC_KEY): without a key, anyone who can write to Redis can run code on this machine. ' +
      'Pass --insecure-allow-source-without-key to run it anyway');
  }
  const processes = integer(v.processes as string | undefined, '--processes', cpuCount())!;
  const lockDuration = integer(v['lock-duration'] as string | undefined, '--lock-duration', 30_000, 100)!;
  const stalledInterval = integer(v['stalled-interval'] as string | undefined, '--stalled-interval', 30_000, 10)!;
  const grace = integer(v.grace as string | undefined, '--grace', 30_000, 0)!;

  // Loaded only now: `--help` and bad flags need neither bullmq nor the addon.
  const { WorkerHost } = require('./backends/bullmq-worker') as typeof import('./backends/bullmq-worker');
  type Host = import('./backends/bullmq-worker').WorkerHost;
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  if (allowModules.length === 0 && !allowSource) log('node-multiprocessing worker: no --allow-module and no --allow-source: every task will be refused');
  let host: Host;
  try {
    host = await WorkerHost.start({
      connection,
      queue,
      prefix,
      processes,
      allowModules,
      allowSource,
      hmacKey,
      lockDuration,
      stalledInterval,
      maxTasksPerChild: integer(v['max-tasks-per-child'] as string | undefined, '--max-tasks-per-child', undefined),
      maxPayload: integer(v['max-payload'] as string | undefined, '--max-payload', undefined),
      allowEviction: v['allow-eviction'] === true,
      log,
    });
  } catch (err) {
    process.stderr.write(`node-multiprocessing worker: ${(err as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      // A second signal: do not wait for the running jobs.
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    stopping = true;
    log(`node-multiprocessing worker: ${signal}: finishing the running jobs`);
    host.close(grace).then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The line a supervisor (or a test) waits for.
  process.stdout.write(`node-multiprocessing worker ready: queue=${queue} processes=${processes} pid=${process.pid} children=${host.childPids.join(',')}\n`);
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'worker') return worker(rest);
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  fail(`unknown command ${JSON.stringify(command)}`);
}

void main();
