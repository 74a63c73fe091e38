// The tasks the npm pools run (bench/peers/pools.mjs): piscina and tinypool pick one by name from
// this module; workerpool registers them all (bench/peers/workerpool_worker.js).
'use strict';
const { cpuJob } = require('../common');

exports.identity = (x) => x;
exports.square = (x) => x * x;
exports.squareAll = (xs) => xs.map((x) => x * x);
exports.cpu = (n) => cpuJob(n);
exports.nap = (ms) => new Promise((resolve) => setTimeout(() => resolve(process.pid), ms));
