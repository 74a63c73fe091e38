#!/usr/bin/env node
// Writes dist/index.mjs: the ESM entry re-exports the CommonJS build under the same names, so
// `import * as mp from 'node-multiprocessing'` and `require()` see one module instance.
'use strict';
const fs = require('fs');
const path = require('path');

const dist = path.join(__dirname, '..', 'dist');
const cjs = require(path.join(dist, 'index.js'));
const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule');
const lines = [
  "import { createRequire } from 'module';",
  'const mp = createRequire(import.meta.url)(\'./index.js\');',
  ...names.map((n) => `export const ${n} = mp.${n};`),
  'export default mp;',
  '',
];
fs.writeFileSync(path.join(dist, 'index.mjs'), lines.join('\n'));
