// workerpool's worker script: the tasks of bench/peers/tasks.js, by name.
'use strict';
const workerpool = require('workerpool');

workerpool.worker({ ...require('./tasks') });
