// The pool's message encoding. v8.serialize costs about 4 µs for a three-element array (a new
// serializer per call), more than a whole task of `x => x * x`; so numbers, strings, booleans,
// null, undefined and arrays of them, the bulk of what tasks take and return, are written by
// hand into one reused scratch buffer. Anything else (objects, Maps, typed arrays, shared
// objects) goes through v8.serialize after shared objects are described (lib/shared.ts).
import * as v8 from 'v8';

import { decode, encode, serialize } from './shared';

const enum Tag {
  Float = 0,
  Int = 1,
  String = 2,
  True = 3,
  False = 4,
  Null = 5,
  Undefined = 6,
  Array = 7,
}

const enum Format {
  V8 = 0,
  Fast = 1,
}

/** Past this the scratch buffer is not grown: a large payload goes to v8.serialize. */
const SCRATCH = 64 * 1024;
const MAX_DEPTH = 8;
const scratch = Buffer.allocUnsafe(SCRATCH);
const view = new DataView(scratch.buffer, scratch.byteOffset, scratch.length);

/** Writes `value` at `at`; returns the new end, or -1 if it is not simple or does not fit. */
function write(value: unknown, at: number, depth: number): number {
  if (at + 9 > SCRATCH) return -1;
  switch (typeof value) {
    case 'number':
      if ((value | 0) === value && !Object.is(value, -0)) {
        scratch[at] = Tag.Int;
        view.setInt32(at + 1, value, true);
        return at + 5;
      }
      scratch[at] = Tag.Float;
      view.setFloat64(at + 1, value, true);
      return at + 9;
    case 'string': {
      if (at + 5 + value.length * 3 > SCRATCH) return -1;
      scratch[at] = Tag.String;
      const n = scratch.write(value, at + 5, 'utf8');
      view.setUint32(at + 1, n, true);
      return at + 5 + n;
    }
    case 'boolean':
      scratch[at] = value ? Tag.True : Tag.False;
      return at + 1;
    case 'undefined':
      scratch[at] = Tag.Undefined;
      return at + 1;
    case 'object': {
      if (value === null) {
        scratch[at] = Tag.Null;
        return at + 1;
      }
      if (!Array.isArray(value) || depth >= MAX_DEPTH || Object.getPrototypeOf(value) !== Array.prototype) return -1;
      scratch[at] = Tag.Array;
      view.setUint32(at + 1, value.length, true);
      let end = at + 5;
      for (let i = 0; i < value.length; i++) {
        // A hole would come back as undefined: let v8 keep it a hole.
        if (!(i in value)) return -1;
        end = write(value[i], end, depth + 1);
        if (end < 0) return -1;
      }
      return end;
    }
    default:
      return -1;
  }
}

function read(buf: Buffer, dv: DataView, at: number): [unknown, number] {
  switch (buf[at] as Tag) {
    case Tag.Int:
      return [dv.getInt32(at + 1, true), at + 5];
    case Tag.Float:
      return [dv.getFloat64(at + 1, true), at + 9];
    case Tag.String: {
      const n = dv.getUint32(at + 1, true);
      return [buf.toString('utf8', at + 5, at + 5 + n), at + 5 + n];
    }
    case Tag.True:
      return [true, at + 1];
    case Tag.False:
      return [false, at + 1];
    case Tag.Null:
      return [null, at + 1];
    case Tag.Undefined:
      return [undefined, at + 1];
    case Tag.Array: {
      const n = dv.getUint32(at + 1, true);
      const out = new Array<unknown>(n);
      let pos = at + 5;
      for (let i = 0; i < n; i++) [out[i], pos] = read(buf, dv, pos);
      return [out, pos];
    }
    default:
      throw new Error(`node-multiprocessing: corrupt pool message (tag ${buf[at]} at ${at})`);
  }
}

/**
 * A message: a fixed header of float64 fields, then the value. A value that cannot be cloned
 * throws a TypeError that names it (`what`), before anything is sent.
 */
export function encodeMessage(header: readonly number[], value: unknown, what: string): Buffer {
  const start = 1 + 8 * header.length;
  const end = write(value, start, 0);
  if (end >= 0) {
    scratch[0] = Format.Fast;
    for (let i = 0; i < header.length; i++) view.setFloat64(1 + 8 * i, header[i], true);
    return Buffer.from(scratch.subarray(0, end));
  }
  const body = serialize(encode(value), what);
  const out = Buffer.allocUnsafe(start + body.length);
  out[0] = Format.V8;
  for (let i = 0; i < header.length; i++) out.writeDoubleLE(header[i], 1 + 8 * i);
  body.copy(out, start);
  return out;
}

/** The header's i-th field, without decoding the value. */
export function headerField(message: Buffer, i: number): number {
  return message.readDoubleLE(1 + 8 * i);
}

/** The value of a message whose header has `fields` fields; shared objects are revived. */
export function decodeValue(message: Buffer, fields: number): unknown {
  const start = 1 + 8 * fields;
  if (message[0] === Format.V8) return decode(v8.deserialize(message.subarray(start)));
  return read(message, new DataView(message.buffer, message.byteOffset, message.length), start)[0];
}

/** Encodes and decodes: what a value becomes on the other side (for tests). */
export function roundTrip(value: unknown): unknown {
  return decodeValue(encodeMessage([], value, 'value'), 0);
}
