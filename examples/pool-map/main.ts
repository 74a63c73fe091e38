// A CPU-bound Pool.map in TypeScript, with typed module tasks.
//
//   npx tsc -p examples && node examples/dist/pool-map/main.js
//
// The work is split into ranges; pool.map sends the ranges to one worker process per CPU, and
// the results come back in order. The tasks live in tasks.ts, which the workers import.
import * as mp from 'node-multiprocessing';

import type { Range } from './tasks';

// A typed handle on tasks.ts: each exported function becomes an mp.Task with its signature, so
// pool.map(jobs.countPrimes, ranges) checks that `ranges` are Ranges and returns number[].
// The workers import the module by path: require.resolve('./tasks') names the compiled
// tasks.js beside this file (or tasks.ts, when this file itself runs under a TS loader).
const jobs = mp.tasks<typeof import('./tasks')>(require.resolve('./tasks'));

async function main(): Promise<void> {
  const limit = 2_000_000;
  const step = 100_000;
  const ranges: Range[] = [];
  for (let from = 0; from < limit; from += step) ranges.push({ from, to: Math.min(from + step, limit) });

  // `await using` is Python's `with Pool() as pool:` (except that leaving the block closes the
  // pool and waits for its workers, where Python's terminates them).
  await using pool = new mp.Pool();   // one worker per CPU: mp.cpuCount()

  const counts: number[] = await pool.map(jobs.countPrimes, ranges);
  // pool.map(jobs.countPrimes, [1, 2]) would not compile: a number is not a Range.
  const total = counts.reduce((a, b) => a + b, 0);
  console.log(`${ranges.length} ranges, ${counts.length} counts back in order; first ranges: ${counts.slice(0, 3).join(', ')}`);
  console.log(`primes below ${limit}: ${total}`);

  const largest: number = await pool.apply(jobs.largestPrimeBelow, [limit]);
  console.log(`largest prime below ${limit}: ${largest}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
