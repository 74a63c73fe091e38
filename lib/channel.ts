// The parent<->child channel: a Unix stream socket carrying length-prefixed v8-serialized
// messages. It never keeps the event loop alive by itself.
import * as net from 'net';
import * as v8 from 'v8';

export class Channel {
  private readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;

  constructor(fd: number, onMessage: (message: any) => void, onClose?: () => void) {
    this.socket = new net.Socket({ fd, readable: true, writable: true });
    this.socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.drain(onMessage);
    });
    this.socket.on('error', () => this.socket.destroy());
    this.socket.on('close', () => {
      this.closed = true;
      onClose?.();
    });
  }

  private drain(onMessage: (message: unknown) => void): void {
    while (this.buffered >= 4) {
      let head = this.chunks[0];
      if (head.length < 4) {
        head = Buffer.concat(this.chunks);
        this.chunks = [head];
      }
      const length = head.readUInt32LE(0);
      if (this.buffered < 4 + length) return;
      const all = this.chunks.length === 1 ? head : Buffer.concat(this.chunks);
      const body = all.subarray(4, 4 + length);
      const rest = all.subarray(4 + length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
      onMessage(v8.deserialize(body));
    }
  }

  send(message: unknown): void {
    if (this.closed) return;
    const body = v8.serialize(message);
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32LE(body.length, 0);
    this.socket.write(Buffer.concat([head, body]));
  }

  ref(): void {
    this.socket.ref();
  }

  unref(): void {
    this.socket.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
    this.socket.unref();
  }
}
