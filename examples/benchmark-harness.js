// A benchmark harness: each case runs in a fresh process, pinned to one CPU, a few rounds, and
// the harness reports what the kernel measured for it (Process.resourceUsage(), from wait4):
// CPU time and peak memory of that process alone, with no JIT warm-up or garbage left over from
// the other cases.
//
//   node examples/benchmark-harness.js
'use strict';
const fs = require('fs');
const mp = require('node-multiprocessing');

// The cases. Each runs in its own child, sent by its source: self-contained. Each prints a
// result, so the work cannot be optimized away and the output can be checked. A child's figures
// include Node's own start-up: the empty case measures it, to subtract from the others.
const cases = {
  'empty (Node start-up alone)': () => {},
  'sum a loop': () => {
    let s = 0;
    for (let i = 0; i < 3e7; i++) s += i % 7;
    console.log(`  result ${s}`);
  },
  'sort 300k numbers': () => {
    let x = 1;
    const a = Float64Array.from({ length: 3e5 }, () => (x = (x * 48271) % 2147483647));
    a.sort();
    console.log(`  result ${a[0]} .. ${a[a.length - 1]}`);
  },
  'fill 64 MiB': () => {
    const b = Buffer.alloc(64 << 20, 7);
    console.log(`  result ${b.length} bytes, last ${b[b.length - 1]}`);
  },
};

/** The CPUs this process may run on (Linux): "0-3,8" → [0, 1, 2, 3, 8]. */
function allowedCpus() {
  const list = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1];
  return list.split(',').flatMap((part) => {
    const [lo, hi = lo] = part.split('-').map(Number);
    return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main() {
  // The last CPU we may use; with more than one, this process is left the others.
  const cpus = allowedCpus();
  const cpu = cpus[cpus.length - 1];
  const rounds = 3;
  console.log(`${mp.cpuCount()} CPUs; each case runs ${rounds} times, each time in a fresh process on CPU ${cpu}`);

  for (const [name, fn] of Object.entries(cases)) {
    console.log(`${name}:`);
    const usages = [];
    for (let r = 0; r < rounds; r++) {
      const p = new mp.Process({ target: fn, cpus: [cpu], name: `${name} #${r + 1}` });
      p.start();
      await p.join();
      if (p.exitCode !== 0) throw new Error(`${p.name} exited with code ${p.exitCode}`);
      usages.push(p.resourceUsage());   // { userCPUTime, systemCPUTime } in µs, maxRSS in KiB
    }
    const ms = (us) => (us / 1000).toFixed(1);
    console.log(`  user ${ms(median(usages.map((u) => u.userCPUTime)))} ms, ` +
      `system ${ms(median(usages.map((u) => u.systemCPUTime)))} ms, ` +
      `peak RSS ${(median(usages.map((u) => u.maxRSS)) / 1024).toFixed(1)} MiB (medians of ${rounds})`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
