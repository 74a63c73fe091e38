// `npm start`: the walkthrough of the tutorial this library was asked for by (Python's
// multiprocessing, section by section), in node-multiprocessing. Each section runs for real:
// real processes, real shared memory, real locks.
'use strict';
const mp = require('..');

function title(text) {
  console.log(`\n=== ${text} ===`);
}

async function threadAndProcess() {
  title('1. A thread and a process, started the same way: td.Thread / mp.Process');
  const { Worker } = require('worker_threads');
  function job(a, d) {
    console.log('aaaaa', a, d);
  }
  // A worker thread runs in this process; mp.Process runs the same function in a new one.
  const t1 = new Worker(`(${job})(...require('worker_threads').workerData)`, { eval: true, workerData: [1, 2] });
  const p1 = new mp.Process({ target: job, args: [1, 2] });
  p1.start();
  await Promise.all([new Promise((resolve) => t1.once('exit', resolve)), p1.join()]);
}

async function processWithArguments() {
  title('2. A process with arguments: mp.Process({ target: job, args: [1, 2] })');
  function job(a, d) {
    console.log(a, d);
  }
  const p1 = new mp.Process({ target: job, args: [1, 2] });
  p1.start();
  await p1.join();
  console.log(`${p1.name} (pid ${p1.pid}) exited with code ${p1.exitCode}`);
}

async function queueCollectsResults() {
  title('3. A Queue collects two processes\' results: mp.Queue(), q.put(res), q.get()');
  const job = (q) => {
    let res = 0;
    for (let i = 0; i < 1000; i++) res += i + i ** 2 + i ** 3;
    q.putSync(res);
  };
  const q = new mp.Queue();
  const p1 = new mp.Process({ target: job, args: [q] });
  const p2 = new mp.Process({ target: job, args: [q] });
  p1.start();
  p2.start();
  await Promise.all([p1.join(), p2.join()]);
  const res1 = await q.get();
  const res2 = await q.get();
  console.log(res1, res2);
}

async function pools() {
  title('4. A Pool: pool.map(job, range(10)), Pool(processes=3), apply_async(job, (2,)).get()');
  const job = (x) => x * x;
  const range = (n) => Array.from({ length: n }, (_, i) => i);
  const show = (list) => `[${list.join(', ')}]`;   // as Python prints a list

  async function multicore(options) {
    const pool = new mp.Pool(options);
    try {
      const res = await pool.map(job, range(10));
      console.log(show(res));
      const one = pool.applyAsync(job, [2]);
      console.log(await one.get());
      const multiRes = range(10).map((i) => pool.applyAsync(job, [i]));
      console.log(show(await Promise.all(multiRes.map((r) => r.get()))));
    } finally {
      pool.close();
      await pool.join();
    }
  }
  console.log(`mp.Pool() has ${mp.cpuCount()} processes (one per CPU):`);
  await multicore();
  console.log('mp.Pool({ processes: 3 }):');
  await multicore({ processes: 3 });
}

async function sharedValueAndArray() {
  title("5. Shared memory: mp.Value('i', 0), mp.Value('d', 3.14), mp.Array('i', [1, 2, 3, 4])");
  const value1 = new mp.Value('i', 0);
  const value2 = new mp.Value('d', 3.14);
  const array = new mp.Array('i', [1, 2, 3, 4]);
  const p = new mp.Process({
    target: (v1, v2, arr) => {
      v1.value = 42;
      v2.value *= 2;
      for (let i = 0; i < arr.length; i++) arr[i] *= 10;
    },
    args: [value1, value2, array],
  });
  p.start();
  await p.join();
  console.log(`after the child wrote to them: value1=${value1.value} value2=${value2.value} array=[${[...array]}]`);
  try {
    new mp.Array('i', [[1, 2], [3, 4]]);
  } catch (err) {
    console.log(`a 2-D list is refused, as in Python: ${err.name}: ${err.message}`);
  }
}

async function twoProcessesAddToAValue(withLock) {
  title(withLock
    ? '6b. With a Lock: each process holds it for its 5 additions'
    : '6a. Without a lock: two processes add 1 and 4 to one Value, 5 times each');
  const v = new mp.Value('i', 0);
  const lock = new mp.Lock();
  // Sent to the children by its source, so it is self-contained: everything comes as arguments.
  const job = (v, num, lock, withLock) => {
    if (withLock) lock.acquireSync();
    for (let i = 0; i < 5; i++) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);  // time.sleep(0.1)
      v.value += num;
      console.log(v.value);
    }
    if (withLock) lock.release();
  };
  const p1 = new mp.Process({ target: job, args: [v, 1, lock, withLock] });
  const p2 = new mp.Process({ target: job, args: [v, 4, lock, withLock] });
  p1.start();
  p2.start();
  await Promise.all([p1.join(), p2.join()]);
  const lost = 25 - v.value;
  console.log(`final value: ${v.value} (5×1 + 5×4 = 25)` +
    (lost > 0 ? `: ${lost} lost, two read-add-writes overlapped without a lock` : ''));
}

async function main() {
  console.log(`node-multiprocessing walkthrough: ${mp.cpuCount()} CPUs, main process ${mp.currentProcess().name} (pid ${process.pid})`);
  await threadAndProcess();
  await processWithArguments();
  await queueCollectsResults();
  await pools();
  await sharedValueAndArray();
  await twoProcessesAddToAValue(false);
  await twoProcessesAddToAValue(true);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
