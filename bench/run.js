#!/usr/bin/env node
// `npm run bench`: node-multiprocessing beside its peers, each measured on this machine by a
// runner of this folder, interleaved round by round (round 1 of every system, then round 2, …), so
// that a slow spell of the machine falls on all of them. Prints one markdown table of medians:
// ours, each peer, and ours ÷ peer. Needs nothing outside the repository; python3 is optional.
//
//   npm run bench                              # 3 rounds of every system (about 3–4 min on 2 cores)
//   RUNS=1 npm run bench                       # a quick look
//   PEERS="python-fork piscina" npm run bench  # fewer peers (ours always runs; PEERS=none for ours alone)
//   WORKLOADS=W4,W5 npm run bench              # fewer workloads
//   BENCH_JSON=bench.json npm run bench        # also write every figure of every round
//   ANCHORS_DIR=../shared/anchors npm run bench   # also run those anchors' runners, as a cross-check
//   BULLMQ=0 npm run bench                     # without the scale-out rows (bench/bullmq.js, run once)
//
// Runners: nmp_runner.js (ours), peers/python.py, peers/fork.js, peers/threads.js, peers/pools.mjs.
// Each prints one JSON line per figure, {system, workload, value, unit, n}, with the same keys and
// the sizes of sizes.json. Progress goes to stderr, the table to stdout.
'use strict';
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const HERE = __dirname;
const N = require('./sizes.json');
const NODE = process.execPath;
const OURS = 'node-multiprocessing';
const RUNS = Number(process.env.RUNS || 3);
const TIMEOUT_S = Number(process.env.TIMEOUT || 150);
/**
 * What moves whole rows between machines, printed under the run's header: how an idle vCPU waits
 * (with haltpoll it polls a while before it halts, and a futex wake costs a few µs instead of
 * 20 or more) and a CA bundle that every Node process reads as it starts.
 */
function machineNotes() {
  const notes = [];
  let idle = 'unknown';
  try {
    idle = fs.readFileSync('/sys/devices/system/cpu/cpuidle/current_driver', 'utf8').trim();
  } catch { /* no cpuidle in this kernel */ }
  notes.push(`cpuidle driver: ${idle}.`);
  const ca = process.env.NODE_EXTRA_CA_CERTS;
  if (ca) notes.push(`NODE_EXTRA_CA_CERTS=${ca}: every Node process (ours, child_process's) reads it as it starts, which adds to the start-up rows.`);
  return notes;
}
const list = (s) => (s || '').split(/[\s,]+/).filter(Boolean);
const ONLY_WORKLOADS = list(process.env.WORKLOADS);

// Which workloads each runner measures: a peer runs the rows of the table that cite it. Python
// spawn runs those where the start method matters. workerpool and tinypool skip W3's chunksize 1
// (100k run() calls take 5–8 s there); piscina, the fastest of the three at it, stands for them.
const ALL = ['W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'W7', 'W8', 'W9'];
const POOL = (lib) => ({ name: lib, cmd: [NODE, '--expose-gc', 'peers/pools.mjs', lib], pkg: lib });
const RUNNERS = [
  { name: OURS, cmd: [NODE, 'nmp_runner.js'], workloads: ALL },
  { name: 'python-fork', cmd: ['python3', 'peers/python.py', 'fork'], python: true, workloads: ALL },
  { name: 'python-spawn', cmd: ['python3', 'peers/python.py', 'spawn'], python: true, workloads: ['W1', 'W2', 'W9'] },
  { name: 'child_process', cmd: [NODE, 'peers/fork.js'], workloads: ['W1', 'W2', 'W3', 'W4', 'W5', 'W7', 'W8', 'W9'] },
  { name: 'threads', cmd: [NODE, 'peers/threads.js'], workloads: ['W1', 'W5', 'W6', 'W7'] },
  { ...POOL('piscina'), workloads: ['W2', 'W3', 'W4', 'W9'] },
  { ...POOL('workerpool'), workloads: ['W2', 'W3.chunk12500', 'W4', 'W9'] },
  { ...POOL('tinypool'), workloads: ['W2', 'W3.chunk12500', 'W4', 'W9'] },
];

// The anchors of ../shared/anchors, when ANCHORS_DIR names them: their runners, and which of our
// peers' systems each one checks.
const ANCHORS = {
  'py-mp-fork': { cmd: ['python3', 'py_runner.py', '--api', 'mp', '--method', 'fork'], checks: 'python-fork' },
  'py-mp-spawn': { cmd: ['python3', 'py_runner.py', '--api', 'mp', '--method', 'spawn'], checks: 'python-spawn' },
  'node-fork-json': { cmd: [NODE, 'node_fork.js', 'json'], checks: 'fork-json' },
  'node-fork-advanced': { cmd: [NODE, 'node_fork.js', 'advanced'], checks: 'fork-advanced' },
  'node-threads-sab': { cmd: [NODE, '--expose-gc', 'node_threads.js'], checks: 'threads' },
  piscina: { cmd: [NODE, '--expose-gc', 'node_pools.mjs', 'piscina'], checks: 'piscina' },
  'workerpool-thread': { cmd: [NODE, '--expose-gc', 'node_pools.mjs', 'workerpool-thread'], checks: 'workerpool' },
  'tinypool-thread': { cmd: [NODE, '--expose-gc', 'node_pools.mjs', 'tinypool-thread'], checks: 'tinypool' },
};

// ------------------------------------------------------------------ the table

// Peer systems (as runners print them) → the column they go in, and their name in the ratios.
const COLUMNS = [
  { title: 'Python fork', systems: ['python-fork'] },
  { title: 'Python spawn', systems: ['python-spawn'] },
  { title: '`child_process.fork`', systems: ['fork-json', 'fork-advanced'] },
  { title: 'worker threads', systems: ['threads'] },
  { title: 'piscina', systems: ['piscina'] },
  { title: 'workerpool', systems: ['workerpool'] },
  { title: 'tinypool', systems: ['tinypool'] },
];
const NAMES = {
  'python-fork': 'Python fork',
  'python-spawn': 'Python spawn',
  'fork-json': 'child_process (json)',
  'fork-advanced': 'child_process (advanced)',
  threads: 'threads',
  piscina: 'piscina',
  workerpool: 'workerpool',
  tinypool: 'tinypool',
};

// One row per figure of the README's table. `key` is our figure's and, unless a peer says
// otherwise, the peers'. A peer is a system name, or { system, key, note, extra, ratio: false }.
// `extra` adds text to a cell, `also` adds ratios to other figures of ours (`paired`: figures timed
// in turns with ours, whose ratio is taken round by round).
const count = (n) => (n % 1e6 === 0 ? `${n / 1e6}M` : n % 1e3 === 0 && n >= 1e4 ? `${n / 1e3}k` : String(n));
const ITEMS = count(N.W3);
const BYTES = `${N.W5_BYTES_N} × ${N.W5_BYTES / 1024} KiB`;
/** The peers that start processes as a `Process` does: W1 and W2 compare with them. */
const STARTERS = ['python-fork', 'python-spawn', 'fork-json'];
const POOLS = ['python-fork', 'fork-json', 'piscina', 'workerpool', 'tinypool'];
/** A speed-up cell's note, when other processes took much CPU meanwhile. */
const disturbed = (system) => (f, figs) => {
  const foreign = figs.median(system, 'W8.cpu.foreign_load');
  return foreign >= 0.25 ? `other processes took ${foreign.toFixed(2)} core` : undefined;
};
/** A wake-up's two rows: its median and its p95, each beside the C floor's, round by round. */
const wakeUpRows = (key, what) => [
  {
    figure: `… ${what}, median`,
    better: 'lower', key: `${key}.median`, peers: [],
    also: [{ key: 'W6.futex_floor.median', paired: true, name: (f) => `the C floor, ${f(OURS, 'W6.futex_floor.median')}` }],
  },
  {
    figure: '… the same, p95',
    better: 'lower', key: `${key}.p95`, peers: [],
    also: [{ key: 'W6.futex_floor.p95', paired: true, name: (f) => `the C floor's p95, ${f(OURS, 'W6.futex_floor.p95')}` }],
  },
];
const ROWS = [
  {
    figure: '`apply` round trip on a warm pool of 2, median',
    better: 'lower', key: 'W4.apply_roundtrip.median', peers: POOLS,
  },
  {
    figure: `\`map(x => x * x)\` over ${ITEMS} items, \`chunksize: 1\``,
    better: 'lower', key: 'W3.map.chunk1.total', peers: POOLS,
  },
  {
    figure: `\`map(x => x * x)\` over ${ITEMS} items, default chunks, the first map`,
    better: 'lower', key: 'W3.map.default.total', peers: ['python-fork'],
  },
  {
    figure: '… the same map again',
    better: 'lower', key: 'W3.map.default_again.total', peers: ['python-fork'],
  },
  {
    figure: `… \`chunksize: ${N.W3_CHUNK}\` (Node pools: ${N.W3 / N.W3_CHUNK} tasks of ${N.W3_CHUNK.toLocaleString('en-US')} items)`,
    better: 'lower', key: 'W3.map.chunk12500.total', peers: POOLS,
  },
  {
    figure: `the tutorial's CPU job, ${N.W8_TASKS} tasks of ~${N.W8_TASK_MS / 1e3} s: pool of 2 vs serial, speed-up`,
    better: 'higher', key: 'W8.cpu.speedup', extra: disturbed(OURS),
    peers: ['python-fork', 'fork-json'].map((system) => ({ system, extra: disturbed(system) })),
  },
  {
    figure: 'pool of 2: create → first result',
    better: 'lower', key: 'W2.pool_startup', peers: [...STARTERS, 'piscina', 'workerpool', 'tinypool'],
  },
  {
    figure: "… with `setStartMethod('warm', { spares: 2 })`",
    better: 'lower', key: 'W2.pool_startup_warm', peers: STARTERS.map((system) => ({ system, key: 'W2.pool_startup' })),
  },
  {
    figure: 'idle pool worker RSS',
    better: 'lower', key: 'W9.idle_worker_rss',
    extra: (f) => `PSS ${f(OURS, 'W9.idle_worker_pss')}; an idle \`Process\` ${f(OURS, 'W9.idle_child_rss')}`,
    peers: [
      ...STARTERS.map((system) => ({ system, extra: (f) => `PSS ${f(system, 'W9.idle_worker_pss')}` })),
      ...['piscina', 'workerpool', 'tinypool'].map((system) => ({ system, note: 'a thread: host RSS Δ', ratio: false })),
    ],
  },
  {
    figure: 'uncontended `Lock` acquire+release',
    better: 'higher', key: 'W6.lock.uncontended', peers: ['python-fork', 'threads'],
  },
  {
    figure: `2 processes × ${count(N.W6B)} locked increments`,
    better: 'lower', key: 'W6.lock.contended_2proc.total', peers: ['python-fork', { system: 'threads', note: '2 threads' }],
  },
  {
    figure: 'wake-up after a 1 ms nap: release in another process → the waiter runs, median',
    better: 'lower', key: 'W6.lock.async_wakeup.median',
    extra: (f) => `async \`acquire()\`; with polling off (\`setWaitPolling(0)\`) ${f(OURS, 'W6.lock.async_wakeup_no_poll.median')}`,
    peers: [
      { system: 'python-fork', key: 'W6.lock.wakeup_blocking.median', note: 'blocking `acquire()`' },
      { system: 'threads', note: '`Atomics.waitAsync`, another thread' },
    ],
    also: [
      { key: 'W6.futex_floor.median', paired: true, name: (f) => `one futex wake between two C processes, ${f(OURS, 'W6.futex_floor.median')}` },
      { key: 'W6.js_poll_floor.median', paired: true, name: (f) => `a bare \`setImmediate\` poll of the word in plain JS, ${f(OURS, 'W6.js_poll_floor.median')}` },
    ],
  },
  {
    figure: '… the same, p95',
    better: 'lower', key: 'W6.lock.async_wakeup.p95',
    extra: (f) => `with polling off ${f(OURS, 'W6.lock.async_wakeup_no_poll.p95')}`,
    peers: [{ system: 'python-fork', key: 'W6.lock.wakeup_blocking.p95', note: 'blocking `acquire()`' }],
    also: [
      { key: 'W6.futex_floor.p95', paired: true, name: (f) => `the C floor's p95, ${f(OURS, 'W6.futex_floor.p95')}` },
      { key: 'W6.js_poll_floor.p95', paired: true, name: (f) => `the plain-JS poll's p95, ${f(OURS, 'W6.js_poll_floor.p95')}` },
    ],
  },
  ...wakeUpRows('W6.queue.get_wakeup', 'an `await q.get()` woken by a `putSync` of a small int in another process (the put timed with it)'),
  ...wakeUpRows('W6.pipe.recv_wakeup', 'an `await conn.recv()` woken by a `send()` of a small int in another process (the send timed with it)'),
  ...wakeUpRows('W6.event.wait_wakeup', 'an `await e.wait()` woken by `set()` in another process'),
  {
    figure: `a child sums a ${count(N.W7)} float64 shared array`,
    better: 'lower', key: 'W7.sum.mp_array_ctypes.time',
    extra: (f) => `a private \`Float64Array\` there: ${f(OURS, 'W7.sum.private_loop.time')}`,
    peers: [
      { system: 'python-fork', key: 'W7.sum.shm_memoryview.time', note: '`shared_memory`' },
      { system: 'fork-advanced', key: 'W7.sum.copy_ipc.time', note: 'no shared memory: sent in a message' },
      { system: 'threads', key: 'W7.sum.sab_worker.time', note: '`SharedArrayBuffer`' },
    ],
    also: [{ key: 'W7.sum.private_loop.time', name: () => 'a private `Float64Array`' }],
  },
  {
    figure: `\`Queue\`, ${count(N.W5_INTS)} small ints, child → parent (\`getSync\`)`,
    better: 'higher', key: 'W5.queue.small_ints.throughput',
    extra: (f) => `${f(OURS, 'W5.queue.small_ints_async.throughput')} with \`await get()\``,
    peers: ['python-fork', { system: 'fork-json', note: 'json' }, { system: 'fork-advanced', note: 'advanced' }, 'threads'],
  },
  {
    figure: `\`Queue\`, ${BYTES}, child → parent, \`await q.get()\``,
    better: 'higher', key: 'W5.queue.bytes64KiB.throughput',
    extra: (f) => `${f(OURS, 'W5.queue.bytes64KiB_into.throughput')} with \`getBytesInto\` into one buffer`,
    peers: ['python-fork', { system: 'fork-json', note: 'json, base64' }, { system: 'fork-advanced', note: 'advanced' }, 'threads'],
  },
  {
    figure: `\`Pipe\`, ${BYTES}, \`recvBytesIntoSync\` into one buffer`,
    better: 'higher', key: 'W5.pipe.bytes64KiB_into.throughput', peers: [{ system: 'python-fork', note: '`recv_bytes_into`' }],
  },
  {
    figure: 'start+join of an empty `Process`, median',
    better: 'lower', key: 'W1.start_join.median', peers: [...STARTERS, { system: 'threads', note: 'a thread' }],
  },
  {
    figure: 'start+join with a `warm` spare up, median',
    better: 'lower', key: 'W1.start_join_warm.median', extra: (f) => `p95 ${f(OURS, 'W1.start_join_warm.p95')}`,
    peers: STARTERS.map((system) => ({ system, key: 'W1.start_join.median' })),
  },
];

function digits(x) {
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US');
  return x.toPrecision(3);
}
function format(value, unit) {
  switch (unit) {
    case 'ms': return value >= 1000 ? `${digits(value / 1e3)} s` : `${digits(value)} ms`;
    case 'us': return value >= 1000 ? `${digits(value / 1e3)} ms` : `${digits(value)} µs`;
    case 'MB/s': return value >= 1000 ? `${digits(value / 1e3)} GB/s` : `${digits(value)} MB/s`;
    case 'msgs/s': case 'pairs/s': {
      const what = unit.slice(0, -2);
      if (value >= 1e6) return `${digits(value / 1e6)} M ${what}/s`;
      return value >= 1e3 ? `${digits(value / 1e3)} k ${what}/s` : `${digits(value)} ${what}/s`;
    }
    case 'x': return `${value.toFixed(2)}×`;
    default: return `${digits(value)} ${unit}`;
  }
}
const times = (r) => `${r >= 100 ? Math.round(r) : r.toPrecision(2)}×`;
const medianOf = (values) => {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** The figures of every round, and their medians. */
class Figures {
  constructor() {
    this.lines = [];
    this.by = new Map();
  }

  add(line) {
    this.lines.push(line);
    const k = `${line.system}|${line.workload}`;
    if (!this.by.has(k)) this.by.set(k, { unit: line.unit, values: [] });
    this.by.get(k).values.push(line.value);
  }

  median(system, key) {
    const f = this.by.get(`${system}|${key}`);
    return f ? medianOf(f.values) : undefined;
  }

  /** The median over rounds of each round's own a/b: for two figures timed in turns (W6's). */
  pairedRatio(system, a, b) {
    const byRound = (key) => new Map(this.lines.filter((l) => l.system === system && l.workload === key).map((l) => [l.round, l.value]));
    const as = byRound(a);
    const bs = byRound(b);
    const ratios = [...as].filter(([round]) => bs.has(round)).map(([round, v]) => v / bs.get(round));
    return ratios.length ? medianOf(ratios) : undefined;
  }

  /** The median, formatted, with † when the rounds differ by more than 30% (max/min). */
  cell(system, key) {
    const f = this.by.get(`${system}|${key}`);
    if (!f) return undefined;
    const noisy = f.values.length > 1 && Math.max(...f.values) > 1.3 * Math.min(...f.values);
    return format(this.median(system, key), f.unit) + (noisy ? ' †' : '');
  }

  systems() {
    return new Set(this.lines.map((l) => l.system));
  }
}

function table(figs) {
  const present = figs.systems();
  const columns = COLUMNS.filter((c) => c.systems.some((s) => present.has(s)));
  const f = (system, key) => figs.cell(system, key) ?? 'n/a';
  const line = (cells) => `| ${cells.join(' | ')} |`;
  const out = [line(['figure', OURS, ...columns.map((c) => c.title), 'ours ÷ peer']), line(Array(columns.length + 3).fill('---'))];
  for (const row of ROWS) {
    const peers = row.peers.map((p) => (typeof p === 'string' ? { system: p } : p)).map((p) => ({ key: row.key, ...p }));
    const ours = figs.cell(OURS, row.key);
    if (ours === undefined && peers.every((p) => figs.median(p.system, p.key) === undefined)) continue;
    const oursExtra = row.extra?.(f, figs);
    const oursCell = ours === undefined ? '—' : ours + (oursExtra ? `; ${oursExtra}` : '');
    const cells = columns.map((c) => {
      const parts = peers.filter((p) => c.systems.includes(p.system)).map((p) => {
        const v = figs.cell(p.system, p.key);
        if (v === undefined) return undefined;
        const notes = [p.note, p.extra?.(f, figs)].filter(Boolean);
        return notes.length ? `${v} (${notes.join('; ')})` : v;
      }).filter(Boolean);
      return parts.length ? parts.join('; ') : '—';
    });
    const mine = figs.median(OURS, row.key);
    const ratios = [];
    for (const a of row.also ?? []) {
      const other = figs.median(OURS, a.key);
      if (mine === undefined || other === undefined) continue;
      if (!a.paired) {
        ratios.push(`${times(mine / other)} ${a.name(f)}`);
        continue;
      }
      // Timed in turns with ours, chunk by chunk: each round's own ratio compares the same
      // minutes of the machine. The ratio of the two medians is shown beside it.
      const paired = figs.pairedRatio(OURS, row.key, a.key);
      ratios.push(`${times(paired)} ${a.name(f)} (a round's own ratio, median of rounds; ${times(mine / other)} of the medians)`);
    }
    for (const p of peers) {
      const theirs = figs.median(p.system, p.key);
      if (p.ratio !== false && mine !== undefined && theirs !== undefined) ratios.push(`${times(mine / theirs)} ${NAMES[p.system]}`);
    }
    const arrow = row.better === 'lower' ? '↓' : '↑';
    out.push(line([`${row.figure} ${arrow}`, oursCell, ...cells, ratios.join('; ') || '—']));
  }
  return out.join('\n');
}

/** Each anchor's figures beside those of the peer it checks, for the keys of the table. */
function crossCheck(figs, anchors) {
  const out = ['| anchor | figure | our peer runner | the anchor | ratio |', '|---|---|---|---|---|'];
  for (const anchor of anchors) {
    const peer = ANCHORS[anchor].checks;
    const keys = new Set(ROWS.flatMap((row) => row.peers.map((p) => (typeof p === 'string' ? { system: p } : p))
      .filter((p) => p.system === peer).map((p) => p.key ?? row.key)));
    for (const key of keys) {
      const ours = figs.median(peer, key);
      const theirs = figs.median(`anchor ${anchor}`, key);
      if (ours === undefined || theirs === undefined) continue;
      out.push(`| ${anchor} | \`${key}\` | ${figs.cell(peer, key)} | ${figs.cell(`anchor ${anchor}`, key)} | ${times(ours / theirs)} |`);
    }
  }
  return out.join('\n');
}

// ------------------------------------------------------------------ running

const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
const note = (text) => process.stderr.write(`${text}\n`);

function installed(pkg) {
  try {
    require.resolve(pkg, { paths: [HERE] });
    return true;
  } catch {
    return false;
  }
}

function hasPython() {
  const r = spawnSync('python3', ['-c', 'import multiprocessing, sys; print(sys.version.split()[0])'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** The runner's own workloads, cut to WORKLOADS (a runner's `W3.chunk12500` counts as W3). */
function workloadsOf(runner) {
  if (!ONLY_WORKLOADS.length) return runner.workloads;
  return runner.workloads.filter((w) => ONLY_WORKLOADS.includes(w.split('.')[0]));
}

let current;      // the runner running now, for SIGINT
let anchorsCopy;  // where prepareAnchors copied the anchors

/**
 * Runs one runner in a process group of its own and resolves with its figures. A runner that
 * outlives TIMEOUT, or leaves processes in its group, has the group killed.
 */
function runOnce(cmd, cwd) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd[0], cmd.slice(1), { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    current = child;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${TIMEOUT_S} s)`;
      killGroup(child.pid, 'SIGKILL');
    }, TIMEOUT_S * 1e3);
    child.on('error', (err) => { stderr += String(err); });
    child.on('close', async (code, signal) => {
      clearTimeout(timer);
      current = undefined;
      if (!(await groupGone(child.pid, 2000))) {
        stderr += '\n(left processes behind: killed)';
        killGroup(child.pid, 'SIGKILL');
      }
      const lines = [];
      for (const l of stdout.split('\n')) {
        try {
          if (l.startsWith('{')) lines.push(JSON.parse(l));
        } catch {
          stderr += `\n(not a figure: ${l})`;
        }
      }
      resolve({ pid: child.pid, code: code ?? signal, wall: (performance.now() - t0) / 1e3, lines, stderr: stderr.trim() });
    });
  });
}

function killGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
  } catch {
    // the group is gone already
  }
}

/** Resolves true once no process of the group is left, false after `ms`. */
async function groupGone(pgid, ms) {
  const until = performance.now() + ms;
  for (;;) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return true;
    }
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A copy of the anchors to run (they are read-only where they are), using our node_modules. */
function prepareAnchors(source) {
  if (!fs.existsSync(path.join(source, 'py_runner.py'))) throw new Error(`ANCHORS_DIR: no anchors at ${source}`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nmp-bench-anchors-'));
  for (const f of fs.readdirSync(source)) {
    if (/\.(js|mjs|py|json)$/.test(f) && f !== 'package-lock.json') fs.copyFileSync(path.join(source, f), path.join(work, f));
  }
  fs.symlinkSync(path.resolve(HERE, '..', 'node_modules'), path.join(work, 'node_modules'));
  return work;
}

function removeAnchorsCopy() {
  if (!anchorsCopy) return;
  fs.rmSync(path.join(anchorsCopy, 'node_modules'), { force: true });   // the symlink, not ours
  fs.rmSync(anchorsCopy, { recursive: true, force: true });
  anchorsCopy = undefined;
}

/** When dist/ was last written: a rebuild during the run would mix two builds in our figures. */
function builtAt() {
  const dist = path.resolve(HERE, '..', 'dist');
  try {
    return Math.max(...fs.readdirSync(dist).map((f) => fs.statSync(path.join(dist, f)).mtimeMs));
  } catch {
    return undefined;
  }
}

/** Names of ours in /dev/shm whose tree root is one of `pids` (nmp_<root pid in base 36>_…). */
function namesOf(pids) {
  const roots = new Set(pids.map((p) => p.toString(36)));
  return fs.readdirSync('/dev/shm').filter((n) => /^nmp_[0-9a-z]+_/.test(n) && roots.has(n.split('_')[1]));
}

/** The BullMQ backend beside the local pool, from bench/bullmq.js's lines. */
function scaleOutTable(lines) {
  const get = (system, key) => lines.find((l) => l.system === `node-multiprocessing/${system}` && l.workload === key);
  const show = (l) => (l === undefined ? '—' : format(l.value, l.unit));
  const rows = [
    ['no-op `apply` round trip, median ↓', 'B1.apply_roundtrip.median'],
    ['`map(x => x * x)` over 100,000 items, default chunks, median of 5 ↓', 'B2.map_100k_default_chunks.median'],
    ['… the first map ↓', 'B2.map_100k_default_chunks.first'],
    ['jobs/s, 5,000 `applyAsync` at once ↑', 'B3.jobs_per_s.median'],
  ];
  const out = ['Pool across machines: the BullMQ backend (a local redis-server, 2 worker CLIs of 1 process each) beside a local pool of 2.', '',
    '| figure | BullMQ backend | local pool |', '| --- | --- | --- |'];
  for (const [name, key] of rows) out.push(`| ${name} | ${show(get('bullmq', key))} | ${show(get('local', key))} |`);
  return out.join('\n');
}

async function main() {
  const t0 = performance.now();
  const python = hasPython();
  const wanted = list(process.env.PEERS || process.env.ONLY);
  for (const w of wanted) {
    if (w !== 'none' && !RUNNERS.some((r) => r.name === w)) throw new Error(`PEERS: unknown peer ${w} (peers: ${RUNNERS.slice(1).map((r) => r.name).join(' ')})`);
  }
  let runners = RUNNERS.filter((r) => r.name === OURS || !wanted.length || wanted.includes(r.name));
  const skipped = [];
  if (!python && runners.some((r) => r.python)) {
    skipped.push('python3 (with multiprocessing) was not found: the Python peers were skipped.');
    runners = runners.filter((r) => !r.python);
  }
  for (const r of runners.filter((x) => x.pkg && !installed(x.pkg))) skipped.push(`${r.pkg} is not installed (\`npm install\` installs it): skipped.`);
  runners = runners.filter((r) => !r.pkg || installed(r.pkg));
  skipped.forEach((s) => note(s));
  runners = runners.map((r) => ({ ...r, cwd: HERE, cmd: [...r.cmd, workloadsOf(r).join(',')], skip: workloadsOf(r).length === 0 })).filter((r) => !r.skip);

  let anchors = [];
  if (process.env.ANCHORS_DIR) {
    anchorsCopy = prepareAnchors(path.resolve(process.env.ANCHORS_DIR));
    const systems = new Set(runners.flatMap((r) => (r.name === 'child_process' ? ['fork-json', 'fork-advanced'] : [r.name])));
    anchors = list(process.env.ANCHORS).length ? list(process.env.ANCHORS) : Object.keys(ANCHORS).filter((a) => systems.has(ANCHORS[a].checks));
    for (const a of anchors) {
      if (!ANCHORS[a]) throw new Error(`ANCHORS: unknown anchor ${a} (anchors: ${Object.keys(ANCHORS).join(' ')})`);
      if (ANCHORS[a].cmd[0] === 'python3' && !python) continue;
      runners.push({ name: `anchor ${a}`, cmd: ANCHORS[a].cmd, cwd: anchorsCopy, anchor: true });
    }
  }

  note(`bench: ${RUNS} round(s) of ${runners.map((r) => r.name).join(', ')}`);
  process.on('SIGINT', () => {
    if (current) killGroup(current.pid, 'SIGKILL');
    removeAnchorsCopy();
    process.exit(130);
  });

  const built = builtAt();
  const figs = new Figures();
  const runs = [];
  const firstRound = new Map();
  const heard = new Set();   // what runners said on stderr, printed once
  for (let round = 1; round <= RUNS; round++) {
    for (const [i, runner] of runners.entries()) {
      const load = Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
      const head = `round ${round}/${RUNS}  ${runner.name.padEnd(26)}`;
      if (process.stderr.isTTY) process.stderr.write(`${head} …`);
      const r = await runOnce(runner.cmd, runner.cwd);
      if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
      // An anchor's systems are renamed: the anchors' piscina is not our peer runner's piscina.
      for (const line of r.lines) figs.add({ ...line, system: runner.anchor ? `anchor ${line.system}` : line.system, round });
      runs.push({ runner: runner.name, round, pid: r.pid, exit: r.code, wall_s: r.wall, loadavg1_before: load, stderr: r.stderr || undefined });
      if (round === 1) firstRound.set(runner.name, r.wall);
      const elapsed = (performance.now() - t0) / 1e3;
      const rest = [...firstRound.values()].reduce((a, b) => a + b, 0) * (RUNS - round) +
        runners.slice(i + 1).reduce((a, x) => a + (firstRound.get(x.name) ?? 0), 0);
      const eta = round > 1 || i === runners.length - 1 ? `, about ${clock(rest)} left` : '';
      note(`${head} ${r.wall.toFixed(1).padStart(5)} s  (elapsed ${clock(elapsed)}${eta})`);
      const said = r.stderr.split('\n').slice(-15).map((l) => `    ${l}`).join('\n');
      if (r.code !== 0 || r.lines.length === 0) note(`  ${runner.name} failed (exit ${r.code}):\n${said}`);
      else if (r.stderr && !heard.has(r.stderr)) note(said);
      heard.add(r.stderr);
    }
  }

  removeAnchorsCopy();

  // The scale-out pool (issue: "a local Redis, 2 workers of 1 process each"), once, after the
  // rounds: bench/bullmq.js starts its own redis-server and worker CLIs.
  let scaleOut = null;
  if (process.env.BULLMQ !== '0') {
    if (!installed('bullmq') || !installed('ioredis')) skipped.push('bullmq or ioredis is not installed: the scale-out rows were skipped.');
    else if (!['/usr/bin/redis-server', '/usr/local/bin/redis-server'].some((p) => fs.existsSync(p))) skipped.push('redis-server was not found: the scale-out rows were skipped.');
    else {
      const r = await runOnce(['node', path.join(HERE, 'bullmq.js')], HERE);
      note(`scale-out (BullMQ)           ${r.wall.toFixed(1).padStart(5)} s`);
      if (r.code !== 0) note(`  bench/bullmq.js failed (exit ${r.code}):\n${r.stderr}`);
      else scaleOut = r.lines;
      runs.push({ runner: 'bullmq', round: 1, pid: r.pid, exit: r.code, wall_s: r.wall });
    }
  }

  // Our trees' trackers remove their names once the tree has exited; give them a moment.
  const pids = runs.map((r) => r.pid);
  for (let i = 0; i < 40 && namesOf(pids).length; i++) await new Promise((r) => setTimeout(r, 50));
  const left = namesOf(pids);
  if (left.length) note(`left in /dev/shm: ${left.join(' ')}`);

  const versions = ['piscina', 'workerpool', 'tinypool'].map((p) => {
    try {
      return `${p} ${JSON.parse(fs.readFileSync(path.join(HERE, '..', 'node_modules', p, 'package.json'), 'utf8')).version}`;
    } catch {
      return `${p} (not installed)`;
    }
  });
  const cpu = os.cpus();
  const machine = `${cpu.length} cores (${cpu[0].model.trim()}), Linux ${os.release()}, Node ${process.version}, ` +
    `${python ? `Python ${python}` : 'no Python'}, ${versions.join(', ')}`;
  const wall = (performance.now() - t0) / 1e3;
  console.log(`\nMedians of ${RUNS} round(s), ${new Date().toISOString().slice(0, 10)}, ${machine}; the whole run took ${clock(wall)}.`);
  for (const line of machineNotes()) console.log(line);
  console.log('↓ lower is better, ↑ higher is better; † the rounds differ by more than 30%. Ratios divide our figure by each peer\'s, from the same run.\n');
  console.log(table(figs));
  if (anchors.length) {
    console.log('\nCross-check: our peer runners beside the anchors of ANCHORS_DIR, same run (ratio = ours ÷ anchor).\n');
    console.log(crossCheck(figs, anchors));
  }
  if (scaleOut) console.log(`\n${scaleOutTable(scaleOut)}`);
  if (skipped.length) console.log(`\n${skipped.join(' ')}`);
  if (builtAt() !== built) console.log('\ndist/ was rebuilt during the run (`npm run compile` elsewhere?): our figures may come from two builds.');
  const failed = runs.filter((r) => r.exit !== 0);
  if (failed.length) console.log(`\nFailed runs: ${failed.map((r) => `${r.runner} round ${r.round} (exit ${r.exit})`).join(', ')}.`);

  if (process.env.BENCH_JSON) {
    const medians = {};
    for (const line of figs.lines) (medians[line.system] ??= {})[line.workload] = figs.median(line.system, line.workload);
    const json = { date: new Date().toISOString(), machine, rounds: RUNS, wall_s: wall, runs, figures: figs.lines, medians };
    fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(json, null, 1) + '\n');
    note(`raw figures: ${process.env.BENCH_JSON}`);
  }
  if (failed.length) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
