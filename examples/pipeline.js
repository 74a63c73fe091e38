// A producer/consumer pipeline: this process produces jobs into a JoinableQueue, several
// consumer processes take them, and their results come back through a second queue.
//
//   node examples/pipeline.js
'use strict';
const mp = require('node-multiprocessing');

// A consumer process. It is sent to the child by its source, so it is self-contained: the queues
// come as arguments. `for await` takes jobs until the queue is closed and drained.
async function consumer(jobs, results) {
  for await (const n of jobs) {
    await results.put({ n, square: n * n });
    jobs.taskDone();   // after the result is out: jobs.join() below then means "all results are in"
  }
}

async function main() {
  const jobs = new mp.JoinableQueue();
  const results = new mp.Queue();
  const consumers = [1, 2, 3].map(() => new mp.Process({ target: consumer, args: [jobs, results] }));
  consumers.forEach((p) => p.start());

  // The producer. put() waits only if the queue is full, so a slow consumer holds it back.
  const count = 100;
  for (let n = 1; n <= count; n++) await jobs.put(n);

  await jobs.join();   // Python's q.join(): every job was taken and marked done
  jobs.close();        // ends the consumers' `for await` in every process
  await Promise.all(consumers.map((p) => p.join()));

  const got = [];
  for (let i = 0; i < count; i++) got.push(await results.get());
  got.sort((a, b) => a.n - b.n);
  console.log(`${got.length} results from ${consumers.length} consumers`);
  console.log(`first squares: ${got.slice(0, 5).map((r) => r.square).join(' ')}`);
  console.log(`sum of squares 1..${count}: ${got.reduce((s, r) => s + r.square, 0)}`);
  console.log(`consumers' exit codes: ${consumers.map((p) => p.exitCode).join(' ')}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
