#!/usr/bin/env node
// `npm install` step: load a prebuild if one matches, else compile with node-gyp (node-gyp-build).
//
// Node's headers ship with the installed Node (<prefix>/include/node). Point node-gyp at them when
// nothing else did, so a fresh machine with no network and no ~/.npmrc still builds.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

if (!process.env.npm_config_nodedir) {
  const prefix = path.dirname(path.dirname(process.execPath));
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
    process.env.npm_config_nodedir = prefix;
  }
}
const bin = require.resolve('node-gyp-build/bin.js');
const result = spawnSync(process.execPath, [bin], { stdio: 'inherit', env: process.env });
process.exit(result.status === null ? 1 : result.status);
