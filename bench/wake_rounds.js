// The waiting side of the bench's wake-up rounds (nmp_runner.js, timeWakeUps), loaded by the
// child from its target. Round i: wait until the waker says go (state[2]), start the wait, say
// it is started (state[1]), await it, record the time since the waker's stamp (state[0], µs),
// and say the round is done (state[3]).
'use strict';

async function waitRounds(state, lat, n, start, after) {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    while (Atomics.load(state, 2) !== BigInt(i + 1)) Atomics.wait(pause, 0, 0, 0.05);
    const woken = start(i);
    Atomics.store(state, 1, BigInt(i + 1));
    await woken;
    lat[i] = Number(process.hrtime.bigint() - state[0]) / 1e3;
    after?.(i);
    Atomics.store(state, 3, BigInt(i + 1));
  }
}

module.exports = { waitRounds };
