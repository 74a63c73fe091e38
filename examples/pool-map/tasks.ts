// The tasks of main.ts. Every pool worker imports this module (the compiled tasks.js) by path,
// so it holds functions only and does nothing when it is loaded.

/** Whether n is a prime, by trial division: slow on purpose, so the work is CPU-bound. */
function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

export interface Range {
  from: number;
  to: number;
}

/** How many primes lie in [from, to). */
export function countPrimes({ from, to }: Range): number {
  let count = 0;
  for (let n = from; n < to; n++) if (isPrime(n)) count++;
  return count;
}

/** The largest prime below n. */
export function largestPrimeBelow(n: number): number {
  for (let p = n - 1; p >= 2; p--) if (isPrime(p)) return p;
  throw new RangeError(`no prime below ${n}`);
}
