#!/usr/bin/env node
// Builds native/test/core_test.cc with the core sources under ASan+UBSan (CMakeLists.txt) and
// runs it with ctest.
'use strict';
const { execFileSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');
const build = path.join(root, 'build-cmake');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
run('cmake', ['-S', root, '-B', build, '-DCMAKE_BUILD_TYPE=Debug']);
run('cmake', ['--build', build, '--target', 'mp_native_test', '-j', '2']);
run('ctest', ['--test-dir', build, '--output-on-failure']);
