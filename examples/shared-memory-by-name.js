// A SharedMemory made in one process and attached by name in another: a child creates a
// segment, fills it, sends only its name, and exits; this process attaches to the name.
//
//   node examples/shared-memory-by-name.js
'use strict';
const fs = require('fs');
const mp = require('node-multiprocessing');

// The child's work, as an export of this file: the child imports this file to run it (a module
// task), so it may use what this file requires. The check at the bottom keeps the child from
// running main(), as Python's `if __name__ == '__main__':` does.
exports.producer = function producer(names, count) {
  const shm = new mp.SharedMemory({ create: true, size: count * Float64Array.BYTES_PER_ELEMENT });
  const data = new Float64Array(shm.buf.buffer, shm.buf.byteOffset, count);
  for (let i = 0; i < count; i++) data[i] = i + 1;
  names.putSync(shm.name);   // only the name crosses: any process of this user could attach to it
  shm.close();               // this process is done with it; the segment and its name stay
};

async function main() {
  const count = 1000;
  const names = new mp.Queue();
  const p = new mp.Process({ target: mp.task(__filename, 'producer'), args: [names, count] });
  p.start();
  const name = await names.get({ timeout: 10_000 });   // rejects with mp.Empty if the child failed
  await p.join();
  console.log(`the child made a segment and exited with code ${p.exitCode}`);

  // The name outlives the child that made it: it lives as long as the process tree (this process
  // and all it started), as with Python's resource_tracker, or until someone unlinks it.
  const shm = new mp.SharedMemory({ name });
  const data = new Float64Array(shm.buf.buffer, shm.buf.byteOffset, count);
  console.log(`attached ${shm.size} bytes by name after the child exited`);
  console.log(`sum of the ${count} numbers the child wrote: ${data.reduce((a, b) => a + b, 0)}`);

  shm.close();    // unmaps it in this process
  shm.unlink();   // removes the name for everyone (else it goes when this process tree ends)
  console.log(`after unlink() the name is gone from /dev/shm: ${!fs.existsSync(`/dev/shm/${name}`)}`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
