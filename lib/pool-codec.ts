// The pool's message encoding. v8.serialize costs about 4 µs for a three-element array (a new
// serializer per call), more than a whole task of `x => x * x`; so numbers, strings, booleans,
// null, undefined and arrays of them, the bulk of what tasks take and return, are written by
// hand into one reused scratch buffer. Anything else (objects, Maps, typed arrays, shared
// objects) goes through v8.serialize after shared objects are described (lib/shared.ts).
import * as v8 from 'v8';

import { decode, serializeMessage } from './shared';

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

/** The scratch buffer starts small and doubles up to this; a larger payload goes to v8.serialize. */
const MAX_SCRATCH = 16 * 1024 * 1024;
const MAX_DEPTH = 8;
/** write() results other than an end offset. */
const NOT_SIMPLE = -1;
const TOO_BIG = -2;
let scratch = Buffer.allocUnsafe(64 * 1024);
let view = new DataView(scratch.buffer, scratch.byteOffset, scratch.length);

/** Writes `value` at `at`; returns the new end, NOT_SIMPLE, or TOO_BIG for the scratch buffer. */
/** Writes a number at `at` (room for 9 bytes checked by the caller); returns the new end. */
function writeNumber(value: number, at: number): number {
  if ((value | 0) === value && (value !== 0 || 1 / value > 0)) {
    scratch[at] = Tag.Int;
    view.setInt32(at + 1, value, true);
    return at + 5;
  }
  scratch[at] = Tag.Float;
  view.setFloat64(at + 1, value, true);
  return at + 9;
}

function write(value: unknown, at: number, depth: number): number {
  if (at + 9 > scratch.length) return TOO_BIG;
  switch (typeof value) {
    case 'number':
      return writeNumber(value, at);
    case 'string': {
      // UTF-8 cannot hold a lone surrogate: v8.serialize keeps it.
      if (!(value as unknown as { isWellFormed(): boolean }).isWellFormed()) return NOT_SIMPLE;
      if (at + 5 + value.length * 3 > scratch.length) return TOO_BIG;
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
      if (!Array.isArray(value) || depth >= MAX_DEPTH || Object.getPrototypeOf(value) !== Array.prototype) return NOT_SIMPLE;
      scratch[at] = Tag.Array;
      view.setUint32(at + 1, value.length, true);
      let end = at + 5;
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        if (typeof item === 'number' && end + 9 <= scratch.length) {
          // Numbers without the general dispatch: the bulk of a map's chunk.
          end = writeNumber(item, end);
          continue;
        }
        // A hole would come back as undefined: let v8 keep it a hole.
        if (item === undefined && !(i in value)) return NOT_SIMPLE;
        end = write(item, end, depth + 1);
        if (end < 0) return end;
      }
      return end;
    }
    default:
      return NOT_SIMPLE;
  }
}

/** Where read() is: one cursor instead of a [value, end] pair allocated per value. */
let cursor = 0;

function read(buf: Buffer, dv: DataView): unknown {
  const at = cursor;
  switch (buf[at] as Tag) {
    case Tag.Int:
      cursor = at + 5;
      return dv.getInt32(at + 1, true);
    case Tag.Float:
      cursor = at + 9;
      return dv.getFloat64(at + 1, true);
    case Tag.String: {
      const n = dv.getUint32(at + 1, true);
      cursor = at + 5 + n;
      return buf.toString('utf8', at + 5, at + 5 + n);
    }
    case Tag.True:
      cursor = at + 1;
      return true;
    case Tag.False:
      cursor = at + 1;
      return false;
    case Tag.Null:
      cursor = at + 1;
      return null;
    case Tag.Undefined:
      cursor = at + 1;
      return undefined;
    case Tag.Array: {
      const n = dv.getUint32(at + 1, true);
      const out = new Array<unknown>(n);
      cursor = at + 5;
      for (let i = 0; i < n; i++) {
        // Numbers inline: the bulk of a map's chunk.
        const tag = buf[cursor];
        if (tag === Tag.Int) {
          out[i] = dv.getInt32(cursor + 1, true);
          cursor += 5;
        } else if (tag === Tag.Float) {
          out[i] = dv.getFloat64(cursor + 1, true);
          cursor += 9;
        } else {
          out[i] = read(buf, dv);
        }
      }
      return out;
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
  let end = write(value, start, 0);
  while (end === TOO_BIG && scratch.length < MAX_SCRATCH) {
    scratch = Buffer.allocUnsafe(scratch.length * 2);
    view = new DataView(scratch.buffer, scratch.byteOffset, scratch.length);
    end = write(value, start, 0);
  }
  if (end >= 0) {
    scratch[0] = Format.Fast;
    for (let i = 0; i < header.length; i++) view.setFloat64(1 + 8 * i, header[i], true);
    return Buffer.from(scratch.subarray(0, end));
  }
  const body = serializeMessage(value, what);
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
  cursor = start;
  return read(message, new DataView(message.buffer, message.byteOffset, message.length));
}

/** Encodes and decodes: what a value becomes on the other side (for tests). */
export function roundTrip(value: unknown): unknown {
  return decodeValue(encodeMessage([], value, 'value'), 0);
}

/**
 * Runs the codec over a mixed array until V8 has optimized it (a few ms): a worker does this the
 * first time it goes idle, so that the first large map pays less for the JIT (a first 100k-item
 * map took 70-80 ms without it, 45-55 ms with it, against 10-15 ms once everything is warm).
 */
export function warmUp(): void {
  const sample = Array.from({ length: 4096 }, (_, i) => (i % 3 === 0 ? i * 1.5 : i));
  for (let round = 0; round < 24; round++) decodeValue(encodeMessage([round], sample, 'warm-up'), 1);
}
