#!/usr/bin/env node
// The shared-object store at scale: `node --expose-gc bench/store.js`
// 1. 1,000,000 Values with the references kept (and 1,000,000 Locks beside them), then 1,000,000
//    Values dropped at once: this process's descriptors and shared mappings after each.
// 2. 100,000 Values made by 100 short-lived children (1,000 each), put into a queue, consumed and
//    closed here: this process's and the tracker's descriptors and memory before and after.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const mp = require('..');

const fds = (pid = process.pid) => fs.readdirSync(`/proc/${pid}/fd`).length;
const sharedMappings = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('memfd:node-multiprocessing')).length;
const rssMiB = (pid = process.pid) => Math.round(Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024);

function million(keep) {
  const before = { fds: fds(), sharedMappings: sharedMappings() };
  const kept = [];
  const t0 = performance.now();
  for (let i = 0; i < 1e6; i++) {
    const v = new mp.Value('i', i);
    if (keep) kept.push(v);
  }
  const seconds = (performance.now() - t0) / 1e3;
  if (keep) for (let i = 0; i < 1e6; i++) kept.push(new mp.Lock());
  if (keep && kept[999_999].value !== 999_999) throw new Error('a Value lost its value');
  const after = { fds: fds(), sharedMappings: sharedMappings() };
  console.log(`1,000,000 Values ${keep ? 'kept (and 1,000,000 Locks)' : 'dropped'}: ${seconds.toFixed(2)} s; descriptors ${before.fds} -> ${after.fds}, shared mappings ${before.sharedMappings} -> ${after.sharedMappings}`);
}

function trackerPid() {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Ours: this process, the tree's root, forked it.
      if (stat.includes('(nmp-tracker)') && Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

async function fromChildren(rounds) {
  const q = new mp.Queue();
  const round = async (n) => {
    const p = new mp.Process({
      target: (q, root, n) => {
        const m = require(root);
        for (let i = 0; i < n; i++) q.putSync(new m.Value('i', i));
      },
      args: [q, path.resolve(__dirname, '..'), n],
    });
    p.start();
    for (let i = 0; i < n; i++) (await q.get()).close();
    await p.join();
  };
  await round(1000);  // the tracker is up and the code is loaded before the first count
  global.gc?.();
  const tracker = trackerPid();
  const count = () => ({ fds: fds(), trackerFds: tracker ? fds(tracker) : NaN, rssMiB: rssMiB(), trackerRssMiB: tracker ? rssMiB(tracker) : NaN });
  const before = count();
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) await round(1000);
  global.gc?.();
  await new Promise((r) => setTimeout(r, 100));
  const after = count();
  console.log(`${rounds * 1000} Values from ${rounds} short-lived children in ${((performance.now() - t0) / 1e3).toFixed(1)} s: ` +
    `descriptors here ${before.fds} -> ${after.fds}, in the tracker ${before.trackerFds} -> ${after.trackerFds}; ` +
    `RSS here ${before.rssMiB} -> ${after.rssMiB} MiB, tracker ${before.trackerRssMiB} -> ${after.trackerRssMiB} MiB`);
  q.close();
}

async function main() {
  // Each part in a process of its own, so that one's garbage does not count in the other's figures.
  const part = process.argv[2];
  if (part === 'keep') return million(true);
  if (part === 'drop') return million(false);
  if (part === 'children') return fromChildren(Number(process.argv[3] || 100));
  for (const args of [['keep'], ['drop'], ['children', '100']]) {
    process.stdout.write(execFileSync(process.execPath, ['--expose-gc', __filename, ...args], { encoding: 'utf8' }));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
