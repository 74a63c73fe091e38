// The README's example, as it is there.
import * as mp from 'node-multiprocessing';   // or: const mp = require('node-multiprocessing')

const v = new mp.Value('i', 0);
const lock = new mp.Lock();
const add = (v, n, lock) => { for (let i = 0; i < 1000; i++) lock.withLockSync(() => { v.value += n; }); };
const ps = [1, 4].map((n) => new mp.Process({ target: add, args: [v, n, lock] }));
ps.forEach((p) => p.start());
await Promise.all(ps.map((p) => p.join()));
console.log(v.value);   // 5000: the two children added to the same memory, under one lock
