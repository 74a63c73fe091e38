#!/usr/bin/env node
// Node's worker threads with a SharedArrayBuffer and Atomics: threads of one process, not
// processes, so the reference for what shared memory and a futex lock cost with no process
// boundary. This file is both the runner and, under a Worker, the thread's code.
//
//   node bench/peers/threads.js [W1,W5,W6,W7]
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const { SIZES: N, emitter, now, median, pct, selected } = require('../common');

// A lock word: 0 free, 1 held, 2 held and someone may sleep on it. A release that finds 2 wakes
// one sleeper, which takes the word back as 2, since others may still sleep.
function lock(word) {
  if (Atomics.compareExchange(word, 0, 0, 1) === 0) return;
  while (Atomics.exchange(word, 0, 2) !== 0) Atomics.wait(word, 0, 2);
}
async function lockAsync(word) {
  if (Atomics.compareExchange(word, 0, 0, 1) === 0) return;
  while (Atomics.exchange(word, 0, 2) !== 0) {
    const wait = Atomics.waitAsync(word, 0, 2);
    if (wait.async) await wait.value;
  }
}
function unlock(word) {
  if (Atomics.exchange(word, 0, 0) === 2) Atomics.notify(word, 0, 1);
}

// ------------------------------------------------------------------ the threads' side

const THREAD = {
  empty() {},

  // W5: post n messages (a copy each: structured clone, no transfer) once the parent says go.
  produce({ n, size }) {
    parentPort.once('message', () => {
      const bytes = new Uint8Array(size).fill(7);
      for (let i = 0; i < n; i++) parentPort.postMessage(size ? bytes : i);
    });
    parentPort.postMessage('ready');
  },

  // W6b: n locked increments of a shared counter, once `go` turns 1; stamps the start and end.
  increment({ words, n, k }) {
    const [word, counter, go, stamps] = [new Int32Array(words, 0, 1), new Int32Array(words, 4, 1), new Int32Array(words, 8, 1), new BigInt64Array(words, 16, 4)];
    parentPort.postMessage('ready');
    Atomics.wait(go, 0, 0);
    stamps[2 * k] = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      lock(word);
      counter[0] += 1;
      unlock(word);
    }
    stamps[2 * k + 1] = process.hrtime.bigint();
  },

  // W6 wake-up: round i, once the main thread holds the lock, start an async acquire and say so;
  // when it resolves, record how long after the release that was.
  async waiter({ words, lat, rounds }) {
    const word = new Int32Array(words, 0, 1);
    const state = new BigInt64Array(words, 8, 4);  // [0] release stamp, [1] waiting round, [2] held round, [3] done
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const out = new Float64Array(lat);
    // A pending waitAsync does not keep a thread's event loop alive: without this, the thread
    // would exit at its first wait.
    const alive = setInterval(() => {}, 1 << 30);
    parentPort.postMessage('ready');
    for (let i = 0; i < rounds; i++) {
      while (Atomics.load(state, 2) !== BigInt(i + 1)) Atomics.wait(pause, 0, 0, 0.05);
      const acquired = lockAsync(word);
      Atomics.store(state, 1, BigInt(i + 1));
      await acquired;
      out[i] = Number(process.hrtime.bigint() - Atomics.load(state, 0)) / 1e3;
      unlock(word);
      Atomics.store(state, 3, BigInt(i + 1));
    }
    clearInterval(alive);
  },

  // W7: sum the shared Float64Array, median of `reps` after one untimed pass.
  sum({ data, reps }) {
    const xs = new Float64Array(data);
    const sum = () => {
      let s = 0;
      for (let i = 0; i < xs.length; i++) s += xs[i];
      return s;
    };
    sum();
    const ts = [];
    let s = 0;
    for (let r = 0; r < reps; r++) {
      const t0 = now();
      s = sum();
      ts.push(now() - t0);
    }
    parentPort.postMessage({ s, ms: median(ts) });
  },
};

// ------------------------------------------------------------------ the runner

const emit = emitter('threads');
const start = (role, data = {}) => new Worker(__filename, { workerData: { role, ...data } });
const exited = (w) => new Promise((resolve) => w.once('exit', resolve));
const message = (w) => new Promise((resolve) => w.once('message', resolve));

// W1: a Worker from construction until its 'exit' (a thread, not a process).
async function w1() {
  await exited(start('empty'));
  const ts = [];
  for (let i = 0; i < N.W1; i++) {
    const t0 = now();
    await exited(start('empty'));
    ts.push(now() - t0);
  }
  emit('W1.start_join.median', median(ts), 'ms', N.W1);
  emit('W1.start_join.p95', pct(ts, 0.95), 'ms', N.W1);
}

async function w5() {
  for (const [n, size] of [[N.W5_INTS, 0], [N.W5_BYTES_N, N.W5_BYTES]]) {
    const w = start('produce', { n, size });
    const gone = exited(w);
    await message(w);
    let got = 0;
    let bytes = 0;
    const done = new Promise((resolve) => {
      w.on('message', (m) => {
        if (size) bytes += m.length;
        if (++got === n) resolve();
      });
    });
    const t0 = now();
    w.postMessage('go');
    await done;
    const t = (now() - t0) / 1e3;
    await gone;
    if (size) {
      if (bytes !== n * size) throw new Error(`W5: got ${bytes} bytes`);
      emit('W5.queue.bytes64KiB.throughput', bytes / t / 1e6, 'MB/s', n);
      emit('W5.queue.bytes64KiB.msgs', n / t, 'msgs/s', n);
    } else {
      emit('W5.queue.small_ints.throughput', n / t, 'msgs/s', n);
    }
  }
}

async function w6() {
  const word = new Int32Array(new SharedArrayBuffer(4));
  const reps = [];
  for (let r = 0; r < N.W6A_REPS; r++) {
    const t0 = now();
    for (let i = 0; i < N.W6A; i++) {
      lock(word);
      unlock(word);
    }
    reps.push(now() - t0);
  }
  emit('W6.lock.uncontended', N.W6A / (median(reps) / 1e3), 'pairs/s', N.W6A);

  const words = new SharedArrayBuffer(48);
  const ws = [0, 1].map((k) => start('increment', { words, n: N.W6B, k }));
  const gone = Promise.all(ws.map(exited));
  await Promise.all(ws.map(message));
  const go = new Int32Array(words, 8, 1);
  Atomics.store(go, 0, 1);
  Atomics.notify(go, 0);
  await gone;
  const stamps = new BigInt64Array(words, 16, 4);
  const first = stamps[0] < stamps[2] ? stamps[0] : stamps[2];
  const last = stamps[1] > stamps[3] ? stamps[1] : stamps[3];
  const totalMs = Number(last - first) / 1e6;
  const value = new Int32Array(words, 4, 1)[0];
  const n = 2 * N.W6B;
  emit('W6.lock.contended_2proc.total', totalMs, 'ms', n);
  emit('W6.lock.contended_2proc.ops', n / (totalMs / 1e3), 'ops/s', n);
  emit('W6.lock.contended_2proc.final_value', value, 'count', n);
  emit('W6.lock.contended_2proc.correct', value === n ? 1 : 0, 'bool', n);

  // Async wake-up: this thread releases, a Promise of Atomics.waitAsync resolves in another
  // thread. Timed as nmp_runner times ours across processes, the first WAKE_WARMUP rounds not
  // counted.
  const rounds = N.WAKE_WARMUP + N.WAKE;
  const wake = new SharedArrayBuffer(48);
  const lat = new SharedArrayBuffer(8 * rounds);
  const waiter = start('waiter', { words: wake, lat, rounds });
  const waiterGone = exited(waiter);
  await message(waiter);  // a thread still starting needs this one's event loop
  const wakeWord = new Int32Array(wake, 0, 1);
  const state = new BigInt64Array(wake, 8, 4);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < rounds; i++) {
    while (Atomics.load(state, 3) !== BigInt(i)) Atomics.wait(pause, 0, 0, 0.05);
    lock(wakeWord);
    Atomics.store(state, 2, BigInt(i + 1));
    while (Atomics.load(state, 1) !== BigInt(i + 1)) Atomics.wait(pause, 0, 0, 0.05);
    Atomics.wait(pause, 0, 0, 1);  // let the waiter's wait settle
    Atomics.store(state, 0, process.hrtime.bigint());
    unlock(wakeWord);
  }
  await waiterGone;
  const xs = [...new Float64Array(lat, 8 * N.WAKE_WARMUP)];
  emit('W6.lock.async_wakeup.median', median(xs), 'us', N.WAKE);
  emit('W6.lock.async_wakeup.p95', pct(xs, 0.95), 'us', N.WAKE);
}

async function w7() {
  const n = N.W7;
  const data = new SharedArrayBuffer(8 * n);
  const xs = new Float64Array(data);
  for (let i = 0; i < n; i++) xs[i] = i;
  const w = start('sum', { data, reps: N.W7_REPS });
  const gone = exited(w);
  const { s, ms } = await message(w);
  await gone;
  if (s !== (n * (n - 1)) / 2) throw new Error(`W7 sum is ${s}`);
  emit('W7.sum.sab_worker.time', ms, 'ms', n);
  emit('W7.sum.sab_worker.bandwidth', (n * 8) / (ms / 1e3) / 1e9, 'GB/s', n);
}

async function main() {
  const t0 = now();
  const want = selected(['W1', 'W5', 'W6', 'W7']);
  for (const [w, run] of Object.entries({ W1: w1, W5: w5, W6: w6, W7: w7 })) if (want(w)) await run();
  emit('runner.wall', (now() - t0) / 1e3, 's', 1);
}

if (isMainThread) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  THREAD[workerData.role](workerData);
}
