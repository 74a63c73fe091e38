// What the Node runners of the bench share: the sizes, the line a figure is printed as, the
// statistics, and the /proc readings. bench/peers/python.py reads the same sizes.json and prints
// the same lines, so every system runs the same amounts and bench/run.js reads them all alike.
'use strict';
const fs = require('fs');

/** How much each workload runs (W3: items of the map, W6A: lock pairs, …), for every system. */
const SIZES = require('./sizes.json');

/** Returns emit(workload, value, unit, n), which prints one figure of `system` as a JSON line. */
function emitter(system) {
  return (workload, value, unit, n) => {
    const v = Math.round(Number(value) * 1e6) / 1e6;
    process.stdout.write(JSON.stringify({ system, workload, value: v, unit, n }) + '\n');
  };
}

const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** The p-quantile with linear interpolation between ranks (Python's statistics does the same). */
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  const k = (s.length - 1) * p;
  const f = Math.floor(k);
  const c = Math.ceil(k);
  return s[f] + (s[c] - s[f]) * (k - f);
};

/** Which workloads to run: the runner's first argument (`W1,W4`), or all of `all`. */
function selected(all, arg = process.argv[2]) {
  const which = arg ? arg.split(',').filter(Boolean) : all;
  for (const w of which) if (!all.includes(w)) throw new Error(`unknown workload ${w} (this runner knows ${all.join(',')})`);
  return (w) => which.includes(w);
}

/** Mean VmRSS and PSS (MiB) of processes. PSS splits shared pages among their sharers. */
function memoryOf(pids) {
  const kib = (file, field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(file, 'utf8'))[1]);
  const rss = pids.map((pid) => kib(`/proc/${pid}/status`, 'VmRSS') / 1024);
  const pss = pids.map((pid) => kib(`/proc/${pid}/smaps_rollup`, 'Pss') / 1024);
  return { rss: mean(rss), pss: mean(pss) };
}

// The machine is shared, so the CPU job measures what other processes took meanwhile.
const CLK_TCK = 100;
function busyTicks() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return f.reduce((a, b) => a + b) - f[3] - f[4];   // all but idle and iowait
}
function ticksOf(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}
const probe = (pids) => ({ busy: busyTicks(), ours: pids.reduce((a, p) => a + ticksOf(p), 0), t: now() });
/** Mean cores used by processes other than ours between two probes. */
const foreignLoad = (a, b) => Math.max(0, ((b.busy - a.busy) - (b.ours - a.ours)) / CLK_TCK / ((b.t - a.t) / 1e3));

/**
 * The tutorial's CPU job: `sum(i + i**2 + i**3 for i in range(n))` on float64. It must stay
 * self-contained: node-multiprocessing sends it to its workers by source.
 */
function cpuJob(n) {
  let res = 0;
  for (let i = 0; i < n; i++) res += i + i ** 2 + i ** 3;
  return res;
}

/**
 * W8: SIZES.W8_TASKS tasks of about SIZES.W8_TASK_MS each, one after the other in this thread,
 * then on a pool of 2 (`runOnPool(n, tasks)` resolves with their results). An attempt that other
 * processes disturbed (≥ 0.25 core, outside `pids()`) is redone once: a machine that stays busy
 * longer than that would only make the bench long, and the table says how much they took.
 */
async function cpuSpeedup(emit, runOnPool, pids) {
  let n = 20_000;
  let t;
  for (;;) {
    const t0 = now();
    cpuJob(n);
    t = now() - t0;
    if (t > 100) break;
    n *= 2;
  }
  const size = Math.floor((n * SIZES.W8_TASK_MS) / t);
  const tasks = SIZES.W8_TASKS;
  const attempts = [];
  for (let attempt = 0; attempt < 2; attempt++) {
    const p0 = probe(pids());
    const seq = [];
    for (let i = 0; i < tasks; i++) seq.push(cpuJob(size));
    const p1 = probe(pids());
    const par = await runOnPool(size, tasks);
    const p2 = probe(pids());
    if (JSON.stringify(seq) !== JSON.stringify(par)) throw new Error('W8: results differ');
    const foreign = Math.max(foreignLoad(p0, p1), foreignLoad(p1, p2));
    attempts.push({ foreign, tSeq: p1.t - p0.t, tPar: p2.t - p1.t });
    if (foreign < 0.25) break;
  }
  const { foreign, tSeq, tPar } = attempts.find((a) => a.foreign < 0.25) ?? attempts.reduce((a, b) => (b.foreign < a.foreign ? b : a));
  emit('W8.cpu.attempts', attempts.length, 'count', tasks);
  emit('W8.cpu.foreign_load', foreign, 'cores', tasks);
  emit('W8.cpu.N', size, 'iterations', tasks);
  emit('W8.cpu.task', tSeq / tasks, 'ms', tasks);
  emit('W8.cpu.seq_total', tSeq, 'ms', tasks);
  emit('W8.cpu.pool_total', tPar, 'ms', tasks);
  emit('W8.cpu.speedup', tSeq / tPar, 'x', tasks);
}

/** W4: SIZES.W4 sequential round trips of `call(i)` (which must resolve with i), after a warm-up. */
async function roundTrips(emit, call) {
  for (let i = 0; i < SIZES.W4_WARMUP; i++) await call(i);
  const ts = [];
  for (let i = 0; i < SIZES.W4; i++) {
    const t0 = now();
    const r = await call(i);
    ts.push((now() - t0) * 1e3);
    if (r !== i) throw new Error(`W4: ${i} came back as ${r}`);
  }
  emit('W4.apply_roundtrip.median', median(ts), 'us', SIZES.W4);
  emit('W4.apply_roundtrip.mean', mean(ts), 'us', SIZES.W4);
  emit('W4.apply_roundtrip.p95', pct(ts, 0.95), 'us', SIZES.W4);
}

/**
 * W3 for the Node pools, whose tasks are `run(name, arg)`: one run per item (chunksize 1, unless
 * `chunk1` is false) and SIZES.W3 / SIZES.W3_CHUNK runs of W3_CHUNK items each.
 */
async function mapByRuns(emit, run, chunk1 = true) {
  const data = Array.from({ length: SIZES.W3 }, (_, i) => i);
  const check = (res, name) => {
    if (res.length !== SIZES.W3 || res[SIZES.W3 - 1] !== (SIZES.W3 - 1) ** 2) throw new Error(`W3 ${name}: wrong result`);
  };
  const timed = async (key, runs) => {
    const t0 = now();
    check((await Promise.all(runs())).flat(), key);
    const t = now() - t0;
    emit(`W3.map.${key}.total`, t, 'ms', SIZES.W3);
    emit(`W3.map.${key}.per_item`, (t * 1e3) / SIZES.W3, 'us', SIZES.W3);
  };
  if (chunk1) await timed('chunk1', () => data.map((x) => run('square', x)));
  await timed('chunk12500', () => {
    const chunks = [];
    for (let i = 0; i < SIZES.W3; i += SIZES.W3_CHUNK) chunks.push(run('squareAll', data.slice(i, i + SIZES.W3_CHUNK)));
    return chunks;
  });
}

/** W2 for the Node pools: a fresh pool of 2 (`newPool()`) until its first `run()` answers. */
async function poolStartups(emit, newPool) {
  const ts = [];
  for (let i = 0; i < SIZES.W2; i++) {
    const t0 = now();
    const pool = newPool();
    const r = await pool.run('identity', 1);
    ts.push(now() - t0);
    if (r !== 1) throw new Error('W2: wrong result');
    await pool.close();
  }
  emit('W2.pool_startup.first', ts[0], 'ms', 1);
  emit('W2.pool_startup', median(ts), 'ms', SIZES.W2);
}

module.exports = {
  SIZES, emitter, now, sleep, mean, median, pct, selected, memoryOf, probe, foreignLoad, cpuJob, cpuSpeedup, roundTrips,
  mapByRuns, poolStartups,
};
