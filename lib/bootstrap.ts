// The entry point of every child: `node [execArgv] dist/bootstrap.js <name>`.
// It reads the start message from the channel (fd 3), attaches the shared objects it was handed,
// runs the target, and lets the event loop end the process.
import * as fs from 'fs';
import * as v8 from 'v8';

// It loads only what this target needs: the shared kinds and the addon come with the first
// shared argument (each ms here is a ms of every Process.start()).
import { CHANNEL_FD, self, StartMessage } from './context';
import { decode } from './shared';
import { resolveTask, withClosureHint } from './task';

const channelFd = Number(process.env.NMP_CHANNEL_FD ?? CHANNEL_FD);
delete process.env.NMP_CHANNEL_FD;

// The parent writes the start message as soon as we exist, and our end of the socket is
// blocking: read it at once, without an event-loop turn or the net module.
function readExactly(fd: number, n: number): Buffer {
  const buf = Buffer.allocUnsafe(n);
  for (let off = 0; off < n;) {
    const got = fs.readSync(fd, buf, off, n - off, null);
    if (got === 0) throw new Error('node-multiprocessing: the parent closed the channel before the start message');
    off += got;
  }
  return buf;
}

// A warm spare loads everything a target may need while it has nothing else to do, says it is
// up, then sleeps in read() until a Process.start() needs it.
if (process.env.NMP_SPARE === '1') {
  delete process.env.NMP_SPARE;
  require('./index');
  const body = v8.serialize({ type: 'ready' });
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length, 0);
  fs.writeSync(channelFd, Buffer.concat([head, body]));
}

const message = v8.deserialize(readExactly(channelFd, readExactly(channelFd, 4).readUInt32LE(0))) as StartMessage;
fs.closeSync(channelFd);
if (message.cwd !== undefined) process.chdir(message.cwd);
if (message.env !== undefined) {
  for (const key of Object.keys(process.env)) if (!(key in message.env)) delete process.env[key];
  Object.assign(process.env, message.env);
}
void run(message);

async function run(message: StartMessage): Promise<void> {
  self.name = message.name;
  self.identity = message.identity;
  self.daemon = message.daemon;
  self.parent = message.parent;
  if (message.inherited.length > 0) {
    (require('./segment') as typeof import('./segment')).Segment.adoptInherited(message.inherited);
  }
  if (message.target === null) return;
  try {
    const args = decode(v8.deserialize(message.args)) as unknown[];
    const fn = await resolveTask(message.target);
    await fn(...args);
  } catch (err) {
    withClosureHint(err, message.target);
    process.stderr.write(`Process ${self.name}:\n${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  }
}
