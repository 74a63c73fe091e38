#!/usr/bin/env node
// Proves the shipped binary loads (classic-level's test-prebuild): makes a prebuild in a copy of
// the package, then loads it there with PREBUILDS_ONLY=1, which forbids node-gyp-build from
// falling back to build/. The work tree is left as it was.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'nmp-prebuild-'));
let failed = 0;
try {
  for (const entry of ['package.json', 'binding.gyp', 'native', 'dist', 'scripts']) {
    fs.cpSync(path.join(root, entry), path.join(copy, entry), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'));
  execFileSync(process.execPath, [path.join(copy, 'scripts', 'prebuild.js')], { cwd: copy, stdio: 'ignore' });
  const probe = `
    const loaded = require('node-gyp-build').path(${JSON.stringify(copy)});
    const mp = require(${JSON.stringify(copy)});
    const v = new mp.Value('i', 41); v.getLock().withLockSync(() => v.value++);
    console.log(JSON.stringify({ loaded, value: v.value }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['-e', probe], {
    cwd: copy, env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8',
  }));
  const fromPrebuilds = out.loaded.startsWith(path.join(copy, 'prebuilds') + path.sep);
  console.log(`${fromPrebuilds ? 'ok  ' : 'FAIL'} the addon loads from ${path.relative(copy, out.loaded)}`);
  console.log(`${out.value === 42 ? 'ok  ' : 'FAIL'} and works: a locked increment gives ${out.value}`);
  failed = (fromPrebuilds ? 0 : 1) + (out.value === 42 ? 0 : 1);
} finally {
  fs.rmSync(copy, { recursive: true, force: true });
}
console.log(`${2 - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
