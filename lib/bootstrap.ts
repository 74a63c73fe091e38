// The entry point of every child: `node [execArgv] dist/bootstrap.js <name>`.
// It reads the start message from the channel (fd 3), attaches the shared objects it was handed,
// runs the target, and lets the event loop end the process.
import * as v8 from 'v8';

import { Channel } from './channel';
import { self } from './context';
import { CHANNEL_FD, StartMessage } from './process';
import { Segment } from './segment';
import { decode } from './shared';
import { resolveTask, withClosureHint } from './task';
// Every shared kind must be registered before arguments are revived.
import './index';

const channelFd = Number(process.env.NMP_CHANNEL_FD ?? CHANNEL_FD);
delete process.env.NMP_CHANNEL_FD;

const channel = new Channel(channelFd, (message: StartMessage) => {
  if (message.type !== 'start') return;
  channel.unref();
  void run(message);
});

async function run(message: StartMessage): Promise<void> {
  self.name = message.name;
  self.identity = message.identity;
  self.daemon = message.daemon;
  self.parent = message.parent;
  Segment.adoptInherited(message.inherited);
  if (message.target === null) {
    channel.close();
    return;
  }
  try {
    const args = decode(v8.deserialize(message.args)) as unknown[];
    const fn = await resolveTask(message.target);
    await fn(...args);
  } catch (err) {
    withClosureHint(err, message.target);
    process.stderr.write(`Process ${self.name}:\n${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  } finally {
    channel.close();
  }
}
