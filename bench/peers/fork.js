#!/usr/bin/env node
// What a Node user has without this library: child_process.fork and its IPC channel, with a pool
// written by hand (one task in flight per worker, the rest waiting in line). Prints the figures of
// two systems, one per serialization of the channel: fork-json and fork-advanced.
//
//   node bench/peers/fork.js [W1,W2,W3,W4,W5,W7,W8,W9]
//
// W1–W4, W8 and W9 run with json, Node's default. W5 runs with both. W7 runs with advanced only:
// with no shared memory between processes, the array is copied to the child, and json would turn
// 10M numbers into text.
'use strict';
const { fork } = require('child_process');
const path = require('path');
const { SIZES: N, emitter, now, median, pct, sleep, selected, memoryOf, cpuSpeedup, roundTrips, mapByRuns, poolStartups } = require('../common');

const CHILD = path.join(__dirname, 'fork_child.js');
const emitFor = { json: emitter('fork-json'), advanced: emitter('fork-advanced') };
const emit = emitFor.json;
const exited = (child) => new Promise((resolve) => child.once('exit', resolve));

class ForkPool {
  constructor(size, serialization = 'json') {
    this.idle = [];
    this.line = [];       // tasks not sent yet: [id, task, arg], from this.head on
    this.head = 0;
    this.pending = new Map();
    this.nextId = 0;
    this.workers = Array.from({ length: size }, () => {
      const w = fork(CHILD, ['worker'], { serialization });
      w.on('message', ({ id, result }) => {
        const resolve = this.pending.get(id);
        this.pending.delete(id);
        this.idle.push(w);
        this.dispatch();
        resolve(result);
      });
      this.idle.push(w);
      return w;
    });
  }

  run(task, arg) {
    return new Promise((resolve) => {
      const id = this.nextId++;
      this.pending.set(id, resolve);
      this.line.push([id, task, arg]);
      this.dispatch();
    });
  }

  dispatch() {
    while (this.idle.length > 0 && this.head < this.line.length) {
      const [id, task, arg] = this.line[this.head];
      this.line[this.head++] = undefined;
      this.idle.pop().send({ id, task, arg });
    }
    if (this.head === this.line.length) {
      this.line = [];
      this.head = 0;
    }
  }

  get pids() {
    return this.workers.map((w) => w.pid);
  }

  async close() {
    const gone = this.workers.map(exited);
    for (const w of this.workers) w.kill();
    await Promise.all(gone);
  }
}

async function w1() {
  const once = () => exited(fork(CHILD, ['empty']));
  await once();
  const ts = [];
  for (let i = 0; i < N.W1; i++) {
    const t0 = now();
    await once();
    ts.push(now() - t0);
  }
  emit('W1.start_join.median', median(ts), 'ms', N.W1);
  emit('W1.start_join.p95', pct(ts, 0.95), 'ms', N.W1);
}

async function w2() {
  await poolStartups(emit, () => new ForkPool(2));
}

async function w9(pool) {
  await Promise.all([pool.run('nap', N.W9_TASK_MS), pool.run('nap', N.W9_TASK_MS)]);
  await sleep(N.W9_IDLE_MS);
  const { rss, pss } = memoryOf(pool.pids);
  emit('W9.idle_worker_rss', rss, 'MiB', 2);
  emit('W9.idle_worker_pss', pss, 'MiB', 2);
}

async function w4(pool) {
  await roundTrips(emit, (i) => pool.run('identity', i));
}

// Node's pools have no map(): chunksize 1 is a run() per item, and the chunked map is the caller
// slicing the items into N.W3_CHUNK-sized tasks.
async function w3(pool) {
  await mapByRuns(emit, (name, arg) => pool.run(name, arg));
}

async function w8(pool) {
  await cpuSpeedup(emit, (n, tasks) => Promise.all(Array.from({ length: tasks }, () => pool.run('cpu', n))), () => [process.pid, ...pool.pids]);
}

// W5: a child sends, this process counts, from "go" until the last message is in. json carries a
// Buffer as base64 text (JSON would make it an array of numbers); advanced carries it as is.
async function w5() {
  for (const serialization of ['json', 'advanced']) {
    for (const [n, size] of [[N.W5_INTS, 0], [N.W5_BYTES_N, N.W5_BYTES]]) {
      const child = fork(CHILD, ['produce'], { serialization });
      const gone = exited(child);
      await new Promise((resolve) => child.once('message', resolve));
      let got = 0;
      let bytes = 0;
      const done = new Promise((resolve) => {
        child.on('message', (m) => {
          if (size) bytes += typeof m === 'string' ? Buffer.from(m, 'base64').length : m.length;
          if (++got === n) resolve();
        });
      });
      const t0 = now();
      child.send({ n, size, base64: serialization === 'json' });
      await done;
      const t = (now() - t0) / 1e3;
      if (child.connected) child.disconnect();   // the child may have left on its own already
      await gone;
      const e = emitFor[serialization];
      if (size) {
        if (bytes !== n * size) throw new Error(`W5 ${serialization}: got ${bytes} bytes`);
        e('W5.queue.bytes64KiB.throughput', bytes / t / 1e6, 'MB/s', n);
        e('W5.queue.bytes64KiB.msgs', n / t, 'msgs/s', n);
      } else {
        e('W5.queue.small_ints.throughput', n / t, 'msgs/s', n);
      }
    }
  }
}

// W7: a child sums 10M float64. Node processes share no memory, so the array travels in a message
// (advanced serialization: a Float64Array as is) and the time runs from sending to the answer.
async function w7() {
  const n = N.W7;
  const xs = new Float64Array(n);
  for (let i = 0; i < n; i++) xs[i] = i;
  const pool = new ForkPool(1, 'advanced');
  await pool.run('identity', 0);
  const t0 = now();
  const s = await pool.run('sum', xs);
  const t = now() - t0;
  await pool.close();
  if (s !== (n * (n - 1)) / 2) throw new Error(`W7 sum is ${s}`);
  emitFor.advanced('W7.sum.copy_ipc.time', t, 'ms', n);
  emitFor.advanced('W7.sum.copy_ipc.bandwidth', (n * 8) / (t / 1e3) / 1e9, 'GB/s', n);
}

async function main() {
  const t0 = now();
  const want = selected(['W1', 'W2', 'W3', 'W4', 'W5', 'W7', 'W8', 'W9']);
  if (want('W2')) await w2();
  if (['W9', 'W4', 'W3', 'W8'].some(want)) {
    const pool = new ForkPool(2);
    try {
      for (const [w, run] of Object.entries({ W9: w9, W4: w4, W3: w3, W8: w8 })) if (want(w)) await run(pool);
    } finally {
      await pool.close();
    }
  }
  if (want('W1')) await w1();
  if (want('W5')) await w5();
  if (want('W7')) await w7();
  emit('runner.wall', (now() - t0) / 1e3, 's', 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
