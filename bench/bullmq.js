#!/usr/bin/env node
// The BullMQ backend's figures beside the local pool's: starts its own redis-server (AOF on,
// appendfsync everysec, maxmemory-policy noeviction: the production checklist of
// docs/scale-out.md) on a free port, and 2 worker CLIs of 1 process each, then measures
//   - the round trip of a no-op apply (median of sequential calls),
//   - map(x => x * x) over 100,000 items with the default chunks (Python's rule: 8 jobs),
//   - jobs/s: 5,000 no-op applyAsync calls at once, each its own job,
// and the same on a local Pool of 2 processes. Prints one JSON line per figure,
// {"system","workload","value","unit","n"}, as bench/nmp_runner.js does.
//
//   npm run compile && node bench/bullmq.js
//
// This file is also the module of the tasks: the workers run it with --allow-module.
'use strict';

exports.noop = () => undefined;
exports.square = (x) => x * x;

if (require.main === module) main().catch((err) => {
  console.error(err);
  process.exit(1);
});

async function main() {
  const { spawn } = require('child_process');
  const fs = require('fs');
  const net = require('net');
  const os = require('os');
  const path = require('path');
  const mp = require('..');

  const N = { APPLY_WARM: 300, APPLY: 1000, MAP: 100_000, MAP_RUNS: 5, JOBS: 5000, JOBS_RUNS: 3 };
  const server = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => fs.existsSync(p));
  if (server === undefined) {
    console.error('bench/bullmq.js: redis-server not found (apt-get install redis-server); nothing measured');
    process.exit(process.env.CI === 'true' ? 1 : 0);
  }
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  const emit = (system, workload, value, unit, n) => {
    process.stdout.write(JSON.stringify({ system, workload, value: Math.round(value * 1000) / 1000, unit, n }) + '\n');
  };
  const freePort = () => new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
  /** Waits (at most ms) for a line matching re on a child's stdout. */
  const ready = (child, re, ms, what) => new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready in ${ms} ms: ${out}`)), ms);
    child.stdout.on('data', (d) => {
      out += d;
      if (re.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}): ${out}`)));
  });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nmp-bench-redis-'));
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const children = [];
  const cleanup = () => {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  try {
    const redis = spawn(server, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes',
      '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(redis);
    await ready(redis, /Ready to accept connections/, 20000, 'redis-server');
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const workers = [0, 1].map(() => {
      const w = spawn(process.execPath, [cli, 'worker', '--redis', url, '--queue', 'bench', '--processes', '1', '--allow-module', __filename],
        { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(w);
      return w;
    });
    await Promise.all(workers.map((w) => ready(w, /worker ready/, 30000, 'a worker CLI')));
    console.error(`bench/bullmq.js: redis-server ${port} (AOF everysec, noeviction), 2 worker CLIs of 1 process, node ${process.version}, ${os.cpus().length} CPUs`);

    const jobs = mp.tasks(__filename);
    const remote = new mp.Pool({ processes: 2, backend: mp.backends.bullmq({ connection: url, queue: 'bench' }) });
    const local = new mp.Pool({ processes: 2 });
    for (const [system, pool] of [['node-multiprocessing/local', local], ['node-multiprocessing/bullmq', remote]]) {
      // Round trip of a no-op apply.
      for (let i = 0; i < N.APPLY_WARM; i++) await pool.apply(jobs.noop);
      const ts = [];
      for (let i = 0; i < N.APPLY; i++) {
        const t = process.hrtime.bigint();
        await pool.apply(jobs.noop);
        ts.push(Number(process.hrtime.bigint() - t) / 1e3);
      }
      emit(system, 'B1.apply_roundtrip.median', median(ts), 'us', N.APPLY);

      // map of 100,000 x * x, default chunks.
      const xs = Array.from({ length: N.MAP }, (_, i) => i);
      const mt = [];
      for (let r = 0; r < N.MAP_RUNS; r++) {
        const t = performance.now();
        const out = await pool.map(jobs.square, xs);
        mt.push(performance.now() - t);
        if (out.length !== N.MAP || out[N.MAP - 1] !== (N.MAP - 1) ** 2) throw new Error('wrong map result');
      }
      emit(system, 'B2.map_100k_default_chunks.first', mt[0], 'ms', 1);
      emit(system, 'B2.map_100k_default_chunks.median', median(mt), 'ms', N.MAP_RUNS);

      // jobs/s: many no-op tasks at once, one job each.
      const rates = [];
      for (let r = 0; r < N.JOBS_RUNS; r++) {
        const t = performance.now();
        await Promise.all(Array.from({ length: N.JOBS }, () => pool.applyAsync(jobs.noop).get()));
        rates.push(N.JOBS / ((performance.now() - t) / 1000));
      }
      emit(system, 'B3.jobs_per_s.median', median(rates), 'jobs/s', N.JOBS_RUNS);
    }
    for (const pool of [remote, local]) {
      pool.close();
      await pool.join();
    }
  } finally {
    cleanup();
  }
}
