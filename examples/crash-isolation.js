// A service that keeps a crashing parser away from itself: the parser runs in pool worker
// processes. A crash (here a stand-in for a segfault in a native parser) or a hang kills only
// one worker: that request fails, a fresh worker takes the dead one's place, and the service
// goes on serving.
//
//   node examples/crash-isolation.js
'use strict';
const mp = require('node-multiprocessing');

// The parser, as an export of this file: each worker imports this file (a module task), so the
// check at the bottom keeps workers from running main(), as Python's `if __name__ == '__main__':`.
exports.parse = function parse(text) {
  // A NUL byte "crashes" this parser the way a native one would: the process dies at once.
  if (text.includes('\u0000')) process.kill(process.pid, 'SIGKILL');
  // Runaway input makes it spin for ever.
  if (text.startsWith('((((')) for (;;);
  // Anything else is JSON; bad JSON is an ordinary error, and the worker lives on.
  return JSON.parse(text);
};

async function main() {
  // taskTimeout: a task that runs longer than 2 s has its worker killed and rejects with
  // mp.TimeoutError.
  const pool = new mp.Pool({ processes: 2, taskTimeout: 2000 });
  const parse = mp.task(__filename, 'parse');

  const requests = ['{"id": 1}', '[1, 2, 3]', 'not json', '{"id": "\u0000"}', '(((((', '{"id": 6}'];
  // All at once: the other requests run on while one worker dies.
  const outcomes = await Promise.allSettled(requests.map((text) => pool.apply(parse, [text])));
  outcomes.forEach((o, i) => {
    if (o.status === 'fulfilled') console.log(`request ${i + 1}: parsed ${JSON.stringify(o.value)}`);
    else if (o.reason instanceof mp.WorkerLostError) console.log(`request ${i + 1}: the parser crashed (${o.reason.signal}); its worker was replaced`);
    else if (o.reason instanceof mp.TimeoutError) console.log(`request ${i + 1}: the parser hung; its worker was killed after 2 s`);
    else console.log(`request ${i + 1}: bad input (${o.reason.name})`);
  });

  // Still serving, with as many workers as before.
  const after = await pool.apply(parse, ['{"after": "the crashes"}']);
  console.log(`survived: ${JSON.stringify(after)} parsed by a pool of ${pool.pids.length} live workers`);
  pool.close();
  await pool.join();
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
