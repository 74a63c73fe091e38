#!/usr/bin/env node
// `npm run prebuild`: prebuildify --napi --strip, pointed at the installed Node's headers (as the
// install step is) so it works offline.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const prefix = path.dirname(path.dirname(process.execPath));
const env = { ...process.env };
if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
  env.npm_config_nodedir = prefix;
}
// prebuildify runs `node-gyp` from PATH; npm puts its own there for scripts, so do the same
// when called directly.
const npmGypBin = path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', '@npmcli', 'run-script', 'lib', 'node-gyp-bin');
const npmGyp = path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
if (fs.existsSync(npmGypBin) && fs.existsSync(npmGyp)) {
  env.PATH = `${env.PATH}${path.delimiter}${npmGypBin}`;
  env.npm_config_node_gyp = env.npm_config_node_gyp || npmGyp;
}
const bin = require.resolve('prebuildify/bin.js');
const result = spawnSync(process.execPath, [bin, '--napi', '--strip', ...process.argv.slice(2)], { stdio: 'inherit', env });
process.exit(result.status === null ? 1 : result.status);
