// Request/response over a Pipe: a server process answers the requests this process sends on
// the other end, one at a time, until this end is closed.
//
//   node examples/pipe-request-response.js
'use strict';
const mp = require('node-multiprocessing');

// The server, in its own process. Sent by its source: everything it uses comes as arguments.
async function server(conn) {
  // Ends when the other end is closed (recv() would reject with mp.EOFError).
  for await (const { id, op, args } of conn) {
    if (op === 'add') await conn.send({ id, result: args[0] + args[1] });
    else if (op === 'upper') await conn.send({ id, result: args[0].toUpperCase() });
    else await conn.send({ id, error: `unknown op ${op}` });
  }
}

async function main() {
  const [client, serverEnd] = mp.Pipe();   // duplex: both ends send and receive
  const p = new mp.Process({ target: server, args: [serverEnd] });
  p.start();
  // Do not close serverEnd here, as one would in Python: close() ends that direction of the
  // pipe for both processes. The server holds it now.

  let nextId = 0;
  async function call(op, ...args) {
    const id = ++nextId;
    await client.send({ id, op, args });
    if (!(await client.poll(10_000))) throw new Error(`no answer to request ${id} in 10 s`);
    const reply = await client.recv();
    if (reply.id !== id) throw new Error(`answer ${reply.id} to request ${id}`);
    if (reply.error !== undefined) throw new Error(reply.error);
    return reply.result;
  }

  console.log(`add(2, 3) -> ${await call('add', 2, 3)}`);
  console.log(`add(0.5, 0.25) -> ${await call('add', 0.5, 0.25)}`);
  console.log(`upper('pipe') -> ${await call('upper', 'pipe')}`);
  try {
    await call('divide', 1, 0);
  } catch (err) {
    console.log(`divide(1, 0) -> error: ${err.message}`);
  }

  client.close();   // the server's `for await` ends, and so does the server
  await p.join();
  console.log(`server exited with code ${p.exitCode} after ${nextId} requests`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
