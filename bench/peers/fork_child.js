// The child side of bench/peers/fork.js: `node fork_child.js empty|worker|produce`.
'use strict';
const { cpuJob } = require('../common');

const TASKS = {
  identity: (x) => x,
  square: (x) => x * x,
  squareAll: (xs) => xs.map((x) => x * x),
  cpu: (n) => cpuJob(n),
  nap: (ms) => new Promise((resolve) => setTimeout(() => resolve(process.pid), ms)),
  // The whole array arrives by message (there is no shared memory between processes in Node).
  sum: (xs) => {
    let s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[i];
    return s;
  },
};

switch (process.argv[2]) {
  case 'empty':
    // Nothing listens on the channel, so it does not keep the child alive.
    break;
  case 'worker':
    // A pool worker: one task at a time, answered as { id, result }.
    process.on('message', ({ id, task, arg }) => {
      const result = TASKS[task](arg);
      if (result instanceof Promise) result.then((r) => process.send({ id, result: r }));
      else process.send({ id, result });
    });
    break;
  case 'produce':
    // W5: on { n, size, base64 }, send n messages in a plain loop, as a Node user would. Once they
    // are written, nothing listens on the channel any more, and the child exits.
    process.once('message', ({ n, size, base64 }) => {
      const bytes = Buffer.alloc(size, 7);
      const payload = base64 ? bytes.toString('base64') : bytes;
      for (let i = 0; i < n; i++) process.send(size ? payload : i);
    });
    process.send('ready');
    break;
  default:
    throw new Error(`fork_child.js: unknown mode ${process.argv[2]}`);
}
