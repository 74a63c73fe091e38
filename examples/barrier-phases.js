// A Barrier phase loop: worker processes step a simulation together, one phase at a time. Heat
// spreads along a rod of 6 cells, held at 100 degrees at its left end; each of 3 workers owns
// 2 cells. No worker starts phase k+1 before every worker has finished phase k.
//
//   node examples/barrier-phases.js
'use strict';
const mp = require('node-multiprocessing');

// A worker. Sent by its source, so everything comes as arguments. Two rows of cells in shared
// memory: a phase reads one and writes the other, so no cell is read while it is written.
async function worker(barrier, rows, first, count, phases) {
  const n = rows[0].length;
  for (let phase = 1; phase <= phases; phase++) {
    const from = rows[(phase - 1) % 2];
    const to = rows[phase % 2];
    for (let i = first; i < first + count; i++) {
      if (i === 0) to[i] = 100;   // the heat source
      else to[i] = (from[i - 1] + from[i] + from[Math.min(i + 1, n - 1)]) / 3;
    }
    await barrier.wait();   // resolves once all parties have arrived for this phase
  }
}

async function main() {
  const workers = 3;
  const cellsEach = 2;
  const phases = 8;
  const cells = workers * cellsEach;
  const rows = [new mp.Array('d', cells), new mp.Array('d', cells)];
  rows[0][0] = 100;

  // The parties are the workers and this process, which prints each phase's row. The timeout
  // breaks the barrier (mp.BrokenBarrierError for everyone) if a party dies instead of arriving.
  const barrier = new mp.Barrier(workers + 1, { timeout: 10_000 });
  const ps = [];
  for (let w = 0; w < workers; w++) {
    ps.push(new mp.Process({ target: worker, args: [barrier, rows, w * cellsEach, cellsEach, phases] }));
  }
  ps.forEach((p) => p.start());

  for (let phase = 1; phase <= phases; phase++) {
    await barrier.wait();
    // Every worker has written row phase % 2, and none writes it again before this process has
    // arrived at the next phase's barrier: it is safe to read.
    console.log(`phase ${phase}: ${[...rows[phase % 2]].map((t) => t.toFixed(1).padStart(5)).join(' ')}`);
  }
  await Promise.all(ps.map((p) => p.join()));
  console.log(`${workers} workers finished ${phases} phases with exit codes ${ps.map((p) => p.exitCode).join(' ')}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
