#!/usr/bin/env node
// node-multiprocessing's runner: prints one JSON line per figure, {"system","workload","value",
// "unit","n"}, with the workload keys that the peers' runners (bench/peers/) print for theirs,
// and the sizes of bench/sizes.json. A few keys are ours alone (W1.start_join_warm.*,
// W6.lock.async_wakeup*.*, W6.queue.get_wakeup.*, W6.pipe.recv_wakeup.*, W6.event.wait_wakeup.*, W6.js_poll_floor.*, W7.sum.private_loop.*, W5.queue.small_ints_async.*).
//
//   node bench/nmp_runner.js [W1,W2,W3,W4,W5,W6,W7,W8,W9]
'use strict';
const fs = require('fs');
const mp = require('..');
const { SIZES: N, emitter, now, median, pct, selected, memoryOf, sleep, cpuJob, cpuSpeedup, roundTrips } = require('./common');

const emit = emitter('node-multiprocessing');

// W1: start+join of an empty target (after one warm-up), as every peer times its own.
async function w1() {
  const empty = () => {};
  const warm = new mp.Process({ target: empty });
  warm.start();
  await warm.join();
  const ts = [];
  for (let i = 0; i < N.W1; i++) {
    const t0 = now();
    const p = new mp.Process({ target: empty });
    p.start();
    await p.join();
    ts.push(now() - t0);
  }
  emit('W1.start_join.median', median(ts), 'ms', N.W1);
  emit('W1.start_join.p95', pct(ts, 0.95), 'ms', N.W1);

  // The same with the 'warm' start method, a spare being up at each start (it is not a fork:
  // a fresh Node booted ahead of time). No peer has it: our own key.
  mp.setStartMethod('warm', { spares: 1 });
  const warmTs = [];
  for (let i = 0; i < N.W1; i++) {
    await mp.sparesReady();
    const t0 = now();
    const p = new mp.Process({ target: empty });
    p.start();
    await p.join();
    warmTs.push(now() - t0);
  }
  mp.setStartMethod('spawn');
  emit('W1.start_join_warm.median', median(warmTs), 'ms', N.W1);
  emit('W1.start_join_warm.p95', pct(warmTs, 0.95), 'ms', N.W1);
}

// W5: a child produces, the parent consumes (as in bench/peers/python.py): 200k small ints, then
// 2000 × 64 KiB Buffers. The parent uses getSync, as Python's parent blocks in q.get(); the async
// form is measured too (our own key).
async function w5() {
  const N_INTS = N.W5_INTS;
  const N_BYTES = N.W5_BYTES_N;
  const SIZE = N.W5_BYTES;
  const run = async (label, n, size, consume) => {
    const q = new mp.Queue();
    const ready = new mp.Event();
    const go = new mp.Event();
    const p = new mp.Process({
      target: (q, ready, go, n, size) => {
        ready.set();
        go.waitSync();
        if (size) {
          const b = Buffer.alloc(size);
          for (let i = 0; i < n; i++) q.putSync(b);
        } else {
          for (let i = 0; i < n; i++) q.putSync(i);
        }
      },
      args: [q, ready, go, n, size],
    });
    p.start();
    await ready.wait();
    const t0 = now();
    go.set();
    const got = await consume(q, n);
    const t = (now() - t0) / 1e3;
    await p.join();
    if (got !== (size ? n * size : n)) throw new Error(`W5 ${label}: got ${got}`);
    return t;
  };
  const syncInts = (q, n) => {
    let got = 0;
    for (let i = 0; i < n; i++) if (q.getSync() !== undefined) got++;
    return got;
  };
  const asyncInts = async (q, n) => {
    let got = 0;
    for (let i = 0; i < n; i++) if ((await q.get()) !== undefined) got++;
    return got;
  };
  // The shape: a fresh Buffer per item, read with `await q.get()`.
  const asyncBytes = async (q, n) => {
    let got = 0;
    for (let i = 0; i < n; i++) got += (await q.get()).length;
    return got;
  };
  // Every item into one reused buffer: no allocation, no first-touch page faults.
  const bytesInto = async (q, n) => {
    const into = Buffer.allocUnsafe(SIZE);
    let got = 0;
    for (let i = 0; i < n; i++) got += await q.getBytesInto(into);
    return got;
  };
  let t = await run('small_ints', N_INTS, 0, syncInts);
  emit('W5.queue.small_ints.throughput', N_INTS / t, 'msgs/s', N_INTS);
  t = await run('small_ints async', N_INTS, 0, asyncInts);
  emit('W5.queue.small_ints_async.throughput', N_INTS / t, 'msgs/s', N_INTS);
  t = await run('bytes64KiB', N_BYTES, SIZE, asyncBytes);
  emit('W5.queue.bytes64KiB.throughput', (N_BYTES * SIZE) / t / 1e6, 'MB/s', N_BYTES);
  emit('W5.queue.bytes64KiB.msgs', N_BYTES / t, 'msgs/s', N_BYTES);
  t = await run('bytes64KiB into', N_BYTES, SIZE, bytesInto);
  emit('W5.queue.bytes64KiB_into.throughput', (N_BYTES * SIZE) / t / 1e6, 'MB/s', N_BYTES);

  // The same 2000 × 64 KiB through a Pipe, read with recvBytesInto into one reused buffer (our key).
  const [reader, writer] = mp.Pipe({ duplex: false });
  const ready = new mp.Event();
  const go = new mp.Event();
  const p = new mp.Process({
    target: async (w, ready, go, n, size) => {
      ready.set();
      go.waitSync();
      const b = Buffer.alloc(size);
      for (let i = 0; i < n; i++) await w.sendBytes(b);
    },
    args: [writer, ready, go, N_BYTES, SIZE],
  });
  p.start();
  await ready.wait();
  const into = Buffer.alloc(SIZE);
  const t0 = now();
  go.set();
  let got = 0;
  for (let i = 0; i < N_BYTES; i++) got += reader.recvBytesIntoSync(into);
  t = (now() - t0) / 1e3;
  await p.join();
  if (got !== N_BYTES * SIZE) throw new Error(`W5 pipe: got ${got}`);
  emit('W5.pipe.bytes64KiB_into.throughput', (N_BYTES * SIZE) / t / 1e6, 'MB/s', N_BYTES);
}

// W6a: uncontended acquire+release pairs in one process; W6b: two processes × 100k locked
// increments of a raw Value, started together behind a Barrier, timed by CLOCK_MONOTONIC
// stamps taken in the children (as bench/peers/python.py).
function pairs(lock, n) {
  for (let i = 0; i < n; i++) {
    lock.acquireSync();
    lock.release();
  }
}

async function w6() {
  const lock = new mp.Lock();
  const reps = [];
  for (let r = 0; r < N.W6A_REPS; r++) {
    const t0 = now();
    pairs(lock, N.W6A);
    reps.push(now() - t0);
  }
  emit('W6.lock.uncontended', N.W6A / (median(reps) / 1e3), 'pairs/s', N.W6A);

  const shared = new mp.Lock();
  const v = new mp.RawValue('i', 0);
  const barrier = new mp.Barrier(2);
  const stamps = new mp.RawArray('q', 4);
  const procs = [0, 1].map((k) => new mp.Process({
    target: (lock, v, n, barrier, stamps, k) => {
      barrier.waitSync();
      stamps[2 * k] = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        lock.acquireSync();
        v.value += 1;
        lock.release();
      }
      stamps[2 * k + 1] = process.hrtime.bigint();
    },
    args: [shared, v, N.W6B, barrier, stamps, k],
  }));
  procs.forEach((p) => p.start());
  await Promise.all(procs.map((p) => p.join()));
  const start = stamps[0] < stamps[2] ? stamps[0] : stamps[2];
  const end = stamps[1] > stamps[3] ? stamps[1] : stamps[3];
  const totalMs = Number(end - start) / 1e6;
  emit('W6.lock.contended_2proc.total', totalMs, 'ms', 2 * N.W6B);
  emit('W6.lock.contended_2proc.ops', (2 * N.W6B) / (totalMs / 1e3), 'ops/s', 2 * N.W6B);
  emit('W6.lock.contended_2proc.final_value', v.value, 'count', 2 * N.W6B);
  emit('W6.lock.contended_2proc.correct', v.value === 2 * N.W6B ? 1 : 0, 'bool', 2 * N.W6B);

  // Async wake-ups (timeWakeUps): an acquire pending in another process, resolved by our
  // release; measured as shipped (the wait polls first, lib/wait.ts), and with polling off (it
  // sleeps at once). The same for an `await q.get()` woken by a putSync of a small int (the put
  // is timed with it, as the release is), an `await conn.recv()` woken by a send() of one, and an
  // `await e.wait()` woken by set().
  const lockWakeUps = (pollMs, counted) => {
    const lock = new mp.Lock();
    return timeWakeUps(counted, {
      target: (state, lat, n, lock, pollMs) => {
        if (pollMs !== undefined) require(process.env.NMP_BENCH_MP).setWaitPolling(pollMs);
        return require(process.env.NMP_BENCH_ROUNDS).waitRounds(state, lat, n, () => lock.acquire(), () => lock.release());
      },
      args: [lock, pollMs],
      hold: () => lock.acquireSync(),
      wake: () => lock.release(),
    });
  };
  const getWakeUps = async (counted) => {
    const q = new mp.Queue();
    const xs = await timeWakeUps(counted, {
      target: (state, lat, n, q) => require(process.env.NMP_BENCH_ROUNDS).waitRounds(state, lat, n, () => q.get()),
      args: [q],
      wake: (i) => q.putSync(i),
    });
    q.close();
    return xs;
  };
  const recvWakeUps = async (counted) => {
    const [reader, writer] = mp.Pipe({ duplex: false });
    const xs = await timeWakeUps(counted, {
      target: (state, lat, n, reader) => require(process.env.NMP_BENCH_ROUNDS).waitRounds(state, lat, n, () => reader.recv()),
      args: [reader],
      wake: (i) => writer.send(i),  // a number is in the pipe when send() returns
    });
    writer.close();
    reader.close();
    return xs;
  };
  const eventWakeUps = async (counted) => {
    const e = new mp.Event();
    const xs = await timeWakeUps(counted, {
      target: (state, lat, n, e) => require(process.env.NMP_BENCH_ROUNDS).waitRounds(state, lat, n, () => e.wait(), () => e.clear()),
      args: [e],
      wake: () => e.set(),
    });
    e.close();
    return xs;
  };
  // Ours, the plain-JS poll and the C floor take turns in WAKE_CHUNKS chunks, so that the ratios
  // compare the same minutes of a machine whose wake-up times drift (on this VM the C floor went
  // from 2 µs to 9 µs within an hour).
  const floor = futexFloor();
  const xs = { polled: [], noPoll: [], jsPoll: [], c: [], get: [], recv: [], event: [] };
  const chunk = Math.ceil(N.WAKE / N.WAKE_CHUNKS);
  for (let k = 0; k < N.WAKE_CHUNKS; k++) {
    xs.polled.push(...await lockWakeUps(undefined, chunk));
    xs.c.push(...floor.run(chunk));
    xs.noPoll.push(...await lockWakeUps(0, chunk));
    xs.jsPoll.push(...await jsPollFloor(chunk));
    xs.get.push(...await getWakeUps(chunk));
    xs.recv.push(...await recvWakeUps(chunk));
    xs.event.push(...await eventWakeUps(chunk));
  }
  floor.close();
  const n = chunk * N.WAKE_CHUNKS;
  const spread = (key, xs) => {
    emit(`${key}.median`, median(xs), 'us', n);
    emit(`${key}.p95`, pct(xs, 0.95), 'us', n);
  };
  spread('W6.lock.async_wakeup', xs.polled);
  spread('W6.lock.async_wakeup_no_poll', xs.noPoll);
  spread('W6.queue.get_wakeup', xs.get);
  spread('W6.pipe.recv_wakeup', xs.recv);
  spread('W6.event.wait_wakeup', xs.event);
  spread('W6.js_poll_floor', xs.jsPoll);
  if (xs.c.length > 0) spread('W6.futex_floor', xs.c);
}

/**
 * Times `counted` wake-ups across processes, after WAKE_WARMUP more that are not counted. A child
 * runs `target(state, lat, n, ...args)`, which waits round by round (bench/wake_rounds.js); here,
 * round i: once the child has finished round i-1, `hold(i)`, say go, let the child's wait start
 * (and reach the kernel, or its poll run) with a 1 ms nap as the C floor's waker takes, stamp,
 * and `wake(i)`. Latency = the child's resume time - our stamp (CLOCK_MONOTONIC, both sides).
 */
async function timeWakeUps(counted, { target, args, hold, wake }) {
  const n = N.WAKE_WARMUP + counted;
  const state = new mp.RawArray('q', 4);  // [0] stamp, [1] child waits in round, [2] go for round, [3] rounds done
  const lat = new mp.RawArray('d', n);
  const child = new mp.Process({
    target,
    args: [state, lat, n, ...args],
    env: { ...process.env, NMP_BENCH_MP: require.resolve('..'), NMP_BENCH_ROUNDS: require.resolve('./wake_rounds') },
  });
  child.start();
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    while (Atomics.load(state, 3) !== BigInt(i)) Atomics.wait(pause, 0, 0, 0.05);
    hold?.(i);
    Atomics.store(state, 2, BigInt(i + 1));
    while (Atomics.load(state, 1) !== BigInt(i + 1)) Atomics.wait(pause, 0, 0, 0.05);
    Atomics.wait(pause, 0, 0, 1);
    Atomics.store(state, 0, process.hrtime.bigint());
    wake(i);
  }
  await child.join();
  return [...lat].slice(N.WAKE_WARMUP);
}

// A floor for any async waiter in Node, measured the same way as the wake-ups above: the waiting
// process runs no code of ours, only a setImmediate chain that looks at a word in shared memory,
// and the waker stores to that word (no futex) instead of releasing a lock.
async function jsPollFloor(counted) {
  const word = new mp.RawArray('i', 1);
  return timeWakeUps(counted, {
    target: (state, lat, n, word) => require(process.env.NMP_BENCH_ROUNDS).waitRounds(state, lat, n, (i) => new Promise((resolve) => {
      const look = () => (Atomics.load(word, 0) === i + 1 ? resolve() : setImmediate(look));
      setImmediate(look);
    })),
    args: [word],
    wake: (i) => Atomics.store(word, 0, i + 1),
  });
}

// The floor under that figure: one futex wake between two C processes, measured the same way
// (bench/futex_floor.c), compiled here with the machine's cc. `run(counted)` gives the counted
// rounds' latencies, after WAKE_WARMUP more; without a cc it gives none, with a note.
function futexFloor() {
  const { execFileSync } = require('child_process');
  const path = require('path');
  const exe = path.join(require('os').tmpdir(), `nmp-futex-floor-${process.pid}`);
  let ok = true;
  try {
    execFileSync('cc', ['-O2', '-o', exe, path.join(__dirname, 'futex_floor.c')], { stdio: 'ignore' });
  } catch (err) {
    ok = false;
    process.stderr.write(`W6.futex_floor skipped: ${err.message.split('\n')[0]}\n`);
  }
  return {
    run: (counted) => {
      if (!ok) return [];
      const out = execFileSync(exe, [String(counted), String(N.WAKE_WARMUP), 'raw'], { encoding: 'utf8' });
      return out.trim().split(/\s+/).map(Number);
    },
    close: () => fs.rmSync(exe, { force: true }),
  };
}

// W7: a child sums a 10M float64 mp.Array (median of 3), and, in the same child, the same loop
// over a private Float64Array of the same data: the ratio is what shared memory costs.
async function w7() {
  const n = N.W7;
  const arr = new mp.Array('d', n);
  for (let i = 0; i < n; i++) arr[i] = i;
  const out = new mp.RawArray('d', 3);
  const p = new mp.Process({
    target: (arr, reps, out) => {
      const sum = (a) => {
        let s = 0;
        for (let i = 0; i < a.length; i++) s += a[i];
        return s;
      };
      const time = (a) => {
        const ts = [];
        let s = 0;
        for (let r = 0; r < reps; r++) {
          const t0 = performance.now();
          s = sum(a);
          ts.push(performance.now() - t0);
        }
        ts.sort((x, y) => x - y);
        return [s, ts[ts.length >> 1]];
      };
      const priv = Float64Array.from(arr);
      sum(priv);  // warm the JIT on both kinds before timing either
      sum(arr);
      const [sPriv, tPriv] = time(priv);
      const [sShared, tShared] = time(arr);
      out[0] = sShared === sPriv ? sShared : NaN;
      out[1] = tShared;
      out[2] = tPriv;
    },
    args: [arr, N.W7_REPS, out],
  });
  p.start();
  await p.join();
  if (out[0] !== (n * (n - 1)) / 2) throw new Error(`W7 sum is ${out[0]}`);
  emit('W7.sum.mp_array_ctypes.time', out[1], 'ms', n);
  emit('W7.sum.mp_array_ctypes.bandwidth', (n * 8) / (out[1] / 1e3) / 1e9, 'GB/s', n);
  emit('W7.sum.private_loop.time', out[2], 'ms', n);
  emit('W7.sum.shared_over_private', out[1] / out[2], 'ratio', n);
  arr.close();
}

// W9: RSS of idle pool workers after each ran a 50 ms task (as the peers' pools), and of an idle
// Process child (our own key).
async function w9(pool) {
  await pool.map((ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms), [N.W9_TASK_MS, N.W9_TASK_MS], { chunksize: 1 });
  await sleep(N.W9_IDLE_MS);
  const workers = memoryOf(pool.pids);
  emit('W9.idle_worker_rss', workers.rss, 'MiB', 2);
  emit('W9.idle_worker_pss', workers.pss, 'MiB', 2);
}

async function w9child() {
  const ps = [0, 1].map(() => new mp.Process({ target: () => setInterval(() => {}, 1000) }));
  ps.forEach((p) => p.start());
  await sleep(N.W9_IDLE_MS + 200);
  const children = memoryOf(ps.map((p) => p.pid));
  emit('W9.idle_child_rss', children.rss, 'MiB', 2);
  ps.forEach((p) => p.kill());
  await Promise.all(ps.map((p) => p.join()));
}

const trivial = (x) => x;
const square = (x) => x * x;

// W2: a pool of 2 from construction to its first result (median of 5), fresh and with warm spares.
async function w2() {
  const round = async () => {
    const t0 = now();
    const pool = new mp.Pool({ processes: 2 });
    const r = await pool.apply(trivial, [1]);
    const t = now() - t0;
    if (r !== 1) throw new Error('W2: wrong result');
    pool.terminate();
    await pool.join();
    return t;
  };
  const ts = [];
  for (let i = 0; i < N.W2; i++) ts.push(await round());
  emit('W2.pool_startup.first', ts[0], 'ms', 1);
  emit('W2.pool_startup', median(ts), 'ms', N.W2);
  mp.setStartMethod('warm', { spares: 2 });
  const warm = [];
  for (let i = 0; i < N.W2; i++) {
    await mp.sparesReady();
    await sleep(50);
    warm.push(await round());
  }
  mp.setStartMethod('spawn');
  emit('W2.pool_startup_warm', median(warm), 'ms', N.W2);
}

// W3: map x*x over 100k items on a warm pool of 2: default chunking, chunksize 1, chunksize 12500.
async function w3(pool) {
  const data = Array.from({ length: N.W3 }, (_, i) => i);
  for (const [name, chunksize] of [['default', undefined], ['chunk1', 1], ['chunk12500', N.W3_CHUNK]]) {
    const t0 = now();
    const res = await pool.map(square, data, { chunksize });
    const t = now() - t0;
    if (res.length !== N.W3 || res[N.W3 - 1] !== (N.W3 - 1) ** 2) throw new Error(`W3 ${name}: wrong result`);
    emit(`W3.map.${name}.total`, t, 'ms', N.W3);
    emit(`W3.map.${name}.per_item`, (t * 1e3) / N.W3, 'us', N.W3);
  }
  // The first large map pays for V8's JIT in the parent and the workers; the same map again does not.
  const t0 = now();
  await pool.map(square, data);
  emit('W3.map.default_again.total', now() - t0, 'ms', N.W3);
}

// W4: sequential apply round trips on a warm pool (200 warm-up calls, 5000 timed).
async function w4(pool) {
  await roundTrips(emit, (i) => pool.apply(trivial, [i]));
}

// W8: the tutorial's CPU job, 8 tasks of ~0.25 s: sequential in this process vs a pool of 2.
async function w8(pool) {
  await cpuSpeedup(emit, (n, tasks) => pool.map(cpuJob, Array(tasks).fill(n), { chunksize: 1 }), () => [process.pid, ...pool.pids]);
}

const POOL_WORKLOADS = { W9: w9, W4: w4, W3: w3, W8: w8 };
const WORKLOADS = { W1: w1, W2: w2, W5: w5, W6: w6, W7: w7, W9: w9child };

/** W9, W4, W3 and W8 share one pool of 2, in this order in every runner (W4 warms what W3 uses). */
async function poolWorkloads(want) {
  const pool = new mp.Pool({ processes: 2 });
  try {
    for (const [w, run] of Object.entries(POOL_WORKLOADS)) if (want(w)) await run(pool);
  } finally {
    pool.terminate();
    await pool.join();
  }
}

async function main() {
  const t0 = now();
  const want = selected(['W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'W7', 'W8', 'W9']);
  if (want('W2')) await w2();
  if (Object.keys(POOL_WORKLOADS).some(want)) await poolWorkloads(want);
  for (const [w, run] of Object.entries(WORKLOADS)) if (want(w) && w !== 'W2') await run();
  emit('runner.wall', (now() - t0) / 1e3, 's', 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
