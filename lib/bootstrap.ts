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

const message = v8.deserialize(readExactly(channelFd, readExactly(channelFd, 4).readUInt32LE(0))) as StartMessage;
fs.closeSync(channelFd);
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
