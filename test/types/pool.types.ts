// Type tests, checked by `tsc -p test/types` in `npm test`: every @ts-expect-error line must be
// an error, and every other line must compile. Nothing here runs.
import * as mp from '../../dist';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
function expectType<T>(_value: T): void {}
function assert<T extends true>(): void {}

declare const pool: mp.Pool;
const square = (x: number) => x * x;
const greet = (name: string, times: number) => name.repeat(times);
const later = async (x: number) => String(x);

async function maps(): Promise<void> {
  const squares = await pool.map(square, [1, 2, 3]);
  assert<Equal<typeof squares, number[]>>();
  const strings = await pool.map(later, new Set([1, 2]));
  assert<Equal<typeof strings, string[]>>();
  // @ts-expect-error items must be what fn takes
  await pool.map(square, ['a', 'b']);
  // @ts-expect-error map passes one argument: a two-parameter function is refused
  await pool.map(greet, ['a']);
  const starred = await pool.starmap(greet, [['a', 2], ['b', 3]]);
  assert<Equal<typeof starred, string[]>>();
  // @ts-expect-error starmap's items are fn's argument lists
  await pool.starmap(greet, [['a', 'b']]);
  for await (const v of pool.imap(later, [1, 2])) expectType<string>(v);
  // @ts-expect-error imap's items are fn's parameter
  pool.imap(later, ['x']);
  for await (const v of pool.imapUnordered(square, (async function* () { yield 1; })())) expectType<number>(v);
  // A function that takes nothing ignores the item, whatever it is.
  const pids = await pool.map(() => process.pid, ['a', 1]);
  assert<Equal<typeof pids, number[]>>();
  const all = pool.mapAsync(square, [1]);
  assert<Equal<typeof all, mp.AsyncResult<number[]>>>();
}

async function applies(): Promise<void> {
  const s = await pool.apply(greet, ['a', 3]);
  assert<Equal<typeof s, string>>();
  // @ts-expect-error args are checked against fn's parameters
  await pool.apply(greet, ['a', 'b']);
  // @ts-expect-error too few arguments
  await pool.apply(greet, ['a']);
  const r = pool.applyAsync(later, [2], { callback: (v) => expectType<string>(v) });
  assert<Equal<Awaited<ReturnType<typeof r.get>>, string>>();
  // @ts-expect-error the callback gets the task's value
  pool.applyAsync(later, [2], { callback: (v: number) => v });
}

async function moduleTasks(): Promise<void> {
  const jobs = mp.tasks<typeof import('../fixtures/jobs.js')>(new URL('file:///jobs.js'));
  const xs = await pool.map(jobs.square, [1, 2]);
  assert<Equal<typeof xs, number[]>>();
  const sum = await pool.apply(jobs.add, [1, 2]);
  assert<Equal<typeof sum, number>>();
  // @ts-expect-error module tasks keep their signatures
  await pool.apply(jobs.add, ['1', 2]);
  // @ts-expect-error only the module's functions are tasks
  jobs.notAFunction;
  const typed = mp.task<typeof square>('./jobs.js', 'square');
  assert<Equal<Awaited<ReturnType<typeof pool.map<typeof square>>>, number[]>>();
  await pool.map(typed, [1]);
}

function processes(): void {
  new mp.Process({ target: greet, args: ['a', 2] });
  // @ts-expect-error a Process's args are checked against its target
  new mp.Process({ target: greet, args: [1, 2] });
  new mp.Process({ target: mp.task<typeof square>('./jobs.js', 'square'), args: [3] });
  // @ts-expect-error the same for a module task
  new mp.Process({ target: mp.task<typeof square>('./jobs.js', 'square'), args: ['3'] });
}

function options(): void {
  new mp.Pool({ processes: 2, initializer: (base: number) => void base, initargs: [1] });
  // @ts-expect-error initargs are checked against the initializer
  new mp.Pool({ initializer: (base: number) => void base, initargs: ['x'] });
  // @ts-expect-error processes is a number
  new mp.Pool({ processes: '2' });
}

void [maps, applies, moduleTasks, processes, options];
