#!/usr/bin/env node
// `npm run bench`: node-multiprocessing beside the anchors (../shared/anchors), in one run on one
// machine, interleaved round by round as the anchors' run-all.sh does. Writes the anchors' table
// (RESULTS.md, with our column) and prints our figures as ratios to the anchors of the same run.
//
//   npm run bench                          # 3 rounds; anchors: py-mp-fork node-fork-json node-fork-advanced node-threads-sab piscina workerpool-thread
//   RUNS=1 npm run bench                   # a quick look
//   ANCHORS="py-mp-fork" npm run bench     # fewer anchors
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const source = process.env.ANCHORS_DIR || path.resolve(root, '..', 'shared', 'anchors');
const work = path.join(os.tmpdir(), 'nmp-bench-anchors');
const RUNS = Number(process.env.RUNS || 3);
const ANCHORS = (process.env.ANCHORS || 'py-mp-fork node-fork-json node-fork-advanced node-threads-sab piscina workerpool-thread').split(/\s+/).filter(Boolean);
const OURS = 'node-multiprocessing';

// The anchors' own commands (run-all.sh), for the systems we run beside ours.
const COMMANDS = {
  'py-mp-fork': ['python3', 'py_runner.py', '--api', 'mp', '--method', 'fork'],
  'py-mp-spawn': ['python3', 'py_runner.py', '--api', 'mp', '--method', 'spawn'],
  'py-mp-forkserver': ['python3', 'py_runner.py', '--api', 'mp', '--method', 'forkserver'],
  'node-fork-json': ['node', 'node_fork.js', 'json'],
  'node-fork-advanced': ['node', 'node_fork.js', 'advanced'],
  'node-threads-sab': ['node', '--expose-gc', 'node_threads.js'],
  piscina: ['node', '--expose-gc', 'node_pools.mjs', 'piscina'],
  'workerpool-process': ['node', '--expose-gc', 'node_pools.mjs', 'workerpool-process'],
  'workerpool-thread': ['node', '--expose-gc', 'node_pools.mjs', 'workerpool-thread'],
  'tinypool-process': ['node', '--expose-gc', 'node_pools.mjs', 'tinypool-process'],
  'tinypool-thread': ['node', '--expose-gc', 'node_pools.mjs', 'tinypool-thread'],
  [OURS]: ['node', path.join(root, 'bench', 'nmp_runner.js')],
};

function prepare() {
  if (!fs.existsSync(path.join(source, 'run-all.sh'))) {
    throw new Error(`no anchors at ${source} (set ANCHORS_DIR)`);
  }
  fs.rmSync(work, { recursive: true, force: true });
  fs.cpSync(source, work, { recursive: true });
  for (const f of fs.readdirSync(work)) {
    const p = path.join(work, f);
    fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o755 : 0o644);
  }
  fs.rmSync(path.join(work, 'raw'), { recursive: true, force: true });
  fs.mkdirSync(path.join(work, 'raw'));
  const needsPools = ANCHORS.some((a) => a.startsWith('piscina') || a.startsWith('workerpool') || a.startsWith('tinypool'));
  if (needsPools) execFileSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: work, stdio: 'inherit' });
  const env = {
    date: new Date().toISOString(), uname: os.release(), nproc: os.cpus().length, node: process.version,
    python: execFileSync('python3', ['-c', 'import sys;print(sys.version.split()[0])'], { encoding: 'utf8' }).trim(),
    piscina: '-', workerpool: '-', tinypool: '-', runs: RUNS,
    cpu: os.cpus()[0].model, mem_total_kB: Math.round(os.totalmem() / 1024),
  };
  fs.writeFileSync(path.join(work, 'env.json'), JSON.stringify(env));
}

function runOnce(system, round) {
  const out = path.join(work, 'raw', `${system}.run${round}.jsonl`);
  const wrap = path.join(work, 'raw', '.cpuwrap');
  const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  const fd = fs.openSync(out, 'w');
  const r = spawnSync('python3', ['cpuwrap.py', wrap, '300', ...COMMANDS[system]], { cwd: work, stdio: ['ignore', fd, 'inherit'] });
  fs.closeSync(fd);
  const [wall, foreign, rc] = fs.readFileSync(wrap, 'utf8').trim().split(/\s+/);
  const extra = [['env.loadavg1_before', load, 'load'], ['env.foreign_load', foreign, 'cores'], ['env.exit_code', rc, 'rc']];
  fs.appendFileSync(out, extra.map(([w, v, u]) => JSON.stringify({ system, workload: w, value: Number(v), unit: u, n: 1 })).join('\n') + '\n');
  console.log(`round ${round}  ${system.padEnd(22)} rc=${rc}  ${Number(wall).toFixed(1)} s  other procs ${foreign} cores`);
  if (r.status !== 0) console.log(`  (${system} failed: see its stderr above)`);
}

function medians() {
  const by = new Map();
  for (const f of fs.readdirSync(path.join(work, 'raw'))) {
    if (!f.endsWith('.jsonl')) continue;
    for (const line of fs.readFileSync(path.join(work, 'raw', f), 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      const { system, workload, value } = JSON.parse(line);
      const key = `${system}|${workload}`;
      if (!by.has(key)) by.set(key, []);
      by.get(key).push(value);
    }
  }
  const med = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  return (system, workload) => (by.has(`${system}|${workload}`) ? med(by.get(`${system}|${workload}`)) : undefined);
}

function summary(get) {
  const fmt = (x, digits = 3) => (x === undefined ? 'n/a' : Number(x.toPrecision(digits)).toLocaleString('en-US'));
  const ratio = (a, b) => (a === undefined || b === undefined ? 'n/a' : `${(a / b).toFixed(2)}×`);
  const o = (w) => get(OURS, w);
  const lines = [
    ['Uncontended Lock acquire+release (pairs/s)', fmt(o('W6.lock.uncontended')),
      `${ratio(o('W6.lock.uncontended'), get('py-mp-fork', 'W6.lock.uncontended'))} py-mp-fork; ${ratio(o('W6.lock.uncontended'), get('node-threads-sab', 'W6.lock.uncontended'))} threads+SAB`, 'goal ≥ 2× Python, ≥ 40 M/s'],
    ['2 procs × 100k locked increments (ms)', fmt(o('W6.lock.contended_2proc.total')),
      `${ratio(get('py-mp-fork', 'W6.lock.contended_2proc.total'), o('W6.lock.contended_2proc.total'))} faster than py-mp-fork`, 'goal ≥ 5×'],
    ['Queue: 200k small ints, child → parent (msgs/s)', fmt(o('W5.queue.small_ints.throughput')),
      `${ratio(o('W5.queue.small_ints.throughput'), get('py-mp-fork', 'W5.queue.small_ints.throughput'))} py-mp-fork; ${ratio(o('W5.queue.small_ints.throughput'), get('node-fork-json', 'W5.queue.small_ints.throughput'))} child_process IPC (json); async get ${fmt(o('W5.queue.small_ints_async.throughput'))}`, 'goal ≥ 1 M/s'],
    ['Queue: 2000 × 64 KiB, child → parent (MB/s)', fmt(o('W5.queue.bytes64KiB.throughput')),
      `${ratio(o('W5.queue.bytes64KiB.throughput'), get('py-mp-fork', 'W5.queue.bytes64KiB.throughput'))} py-mp-fork; ${ratio(o('W5.queue.bytes64KiB.throughput'), get('node-fork-advanced', 'W5.queue.bytes64KiB.throughput'))} child_process IPC (advanced); ${ratio(o('W5.queue.bytes64KiB.throughput'), get('node-threads-sab', 'W5.queue.bytes64KiB.throughput'))} threads`, 'goal ≥ 2 GB/s'],
    ['Pipe: 2000 × 64 KiB, recvBytesInto one buffer (MB/s)', fmt(o('W5.pipe.bytes64KiB_into.throughput')),
      `${ratio(o('W5.pipe.bytes64KiB_into.throughput'), get('py-mp-fork', 'W5.queue.bytes64KiB.throughput'))} py-mp-fork's Queue`, 'goal ≥ 4 GB/s (issue 9)'],
    ['Async wake-up across processes, median (µs)', fmt(o('W6.lock.async_wakeup.median')),
      `p95 ${fmt(o('W6.lock.async_wakeup.p95'))} µs; ${ratio(o('W6.lock.async_wakeup.median'), o('W6.futex_floor.median'))} of one futex wake between two C processes (${fmt(o('W6.futex_floor.median'))} µs, p95 ${fmt(o('W6.futex_floor.p95'))})`, 'goal ≤ 1.5× the C floor (issue 9)'],
    ['Child sums 10M f64 mp.Array (ms)', fmt(o('W7.sum.mp_array_ctypes.time')),
      `${ratio(o('W7.sum.mp_array_ctypes.time'), o('W7.sum.private_loop.time'))} of a private Float64Array; ${ratio(get('py-mp-fork', 'W7.sum.shm_memoryview.time'), o('W7.sum.mp_array_ctypes.time'))} faster than Python's best (shared_memory)`, 'goal ≤ 1.3×, ≥ 5×'],
    ['Start+join of an empty Process, median (ms)', fmt(o('W1.start_join.median')),
      `${ratio(o('W1.start_join.median'), get('node-fork-json', 'W1.start_join.median'))} of child_process.fork; py-mp-fork ${fmt(get('py-mp-fork', 'W1.start_join.median'))} ms`, 'goal ≤ 1.0'],
    ['Start+join with a warm spare up, median (ms)', fmt(o('W1.start_join_warm.median')),
      `p95 ${fmt(o('W1.start_join_warm.p95'))} ms; py-mp-forkserver in RESULTS.md: 30.7 ms`, 'goal ≤ 10 ms'],
    ['Pool of 2: create → first result (ms)', fmt(o('W2.pool_startup')),
      `${ratio(o('W2.pool_startup'), get('node-fork-json', 'W2.pool_startup'))} of child_process.fork ×2; with warm spares ${fmt(o('W2.pool_startup_warm'))} ms; py-mp-fork ${fmt(get('py-mp-fork', 'W2.pool_startup'))} ms`, 'goal ≤ 1.0; warm ≤ 10 ms'],
    ['map x*x over 100k, default chunks (ms)', fmt(o('W3.map.default.total')),
      `${ratio(o('W3.map.default.total'), get('py-mp-fork', 'W3.map.default.total'))} of py-mp-fork's time; the same map again ${fmt(o('W3.map.default_again.total'))} ms (${ratio(o('W3.map.default_again.total'), get('py-mp-fork', 'W3.map.default.total'))})`, 'goal ≤ 1.0'],
    ['map x*x over 100k, chunksize 1 (ms)', fmt(o('W3.map.chunk1.total')),
      `${ratio(o('W3.map.chunk1.total'), get('py-mp-fork', 'W3.map.chunk1.total'))} of py-mp-fork's time; piscina ${fmt(get('piscina', 'W3.map.chunk1.total'))} ms`, 'goal ≤ 0.5'],
    ['apply round trip on a warm pool, median (µs)', fmt(o('W4.apply_roundtrip.median')),
      `piscina ${fmt(get('piscina', 'W4.apply_roundtrip.median'))}, workerpool-thread ${fmt(get('workerpool-thread', 'W4.apply_roundtrip.median'))}, child_process ${fmt(get('node-fork-json', 'W4.apply_roundtrip.median'))}, py-mp-fork ${fmt(get('py-mp-fork', 'W4.apply_roundtrip.median'))} µs`, 'goal ≤ 40 µs and below every Node pool'],
    ["Tutorial's CPU job, pool of 2 vs serial (speed-up)", fmt(o('W8.cpu.speedup')),
      `py-mp-fork ${fmt(get('py-mp-fork', 'W8.cpu.speedup'))}×; child_process ${fmt(get('node-fork-json', 'W8.cpu.speedup'))}×`, 'goal ≥ 1.9×'],
    ['Idle pool worker RSS (MiB)', fmt(o('W9.idle_worker_rss')),
      `${ratio(o('W9.idle_worker_rss'), get('node-fork-json', 'W9.idle_worker_rss'))} of a child_process.fork worker; an idle Process child ${fmt(o('W9.idle_child_rss'))} MiB`, 'goal ≤ 1.0'],
  ];
  console.log(`\nnode-multiprocessing beside the anchors, medians of ${RUNS} round(s):\n`);
  for (const [what, value, vs, goal] of lines) console.log(`  ${what.padEnd(46)} ${String(value).padStart(12)}   ${vs}   (${goal})`);
}

function main() {
  prepare();
  const systems = [...ANCHORS, OURS];
  for (let r = 1; r <= RUNS; r++) for (const s of systems) runOnce(s, r);
  const agg = spawnSync('python3', ['aggregate.py'], { cwd: work, encoding: 'utf8' });
  if (agg.status === 0) console.log(`\nThe anchors' table with our column: ${path.join(work, 'RESULTS.md')}`);
  else console.log(`aggregate.py failed: ${agg.stderr}`);
  summary(medians());
}

main();
