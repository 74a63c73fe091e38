// Python's array/ctypes typecodes, with C's sizes on this platform (LP64 Linux), and the checks
// that refuse a bad value before anything is allocated.
import { describe } from './describe';

export type TypedArray =
  | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Float32Array | Float64Array;

type TypedArrayConstructor = { new (buffer: ArrayBuffer, byteOffset: number, length: number): TypedArray; BYTES_PER_ELEMENT: number };

export type Typecode = 'b' | 'B' | 'h' | 'H' | 'i' | 'I' | 'l' | 'L' | 'q' | 'Q' | 'f' | 'd' | 'c' | 'u';
export type TypeName =
  | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64'
  | 'float32' | 'float64' | 'char' | 'wchar';

/** The JS type of one element: bigint for the 64-bit integers, number otherwise. */
export type ElementOf<C extends Typecode | TypeName> =
  C extends 'l' | 'L' | 'q' | 'Q' | 'int64' | 'uint64' ? bigint : number;
/** What Value.value holds: a one-character string for 'c' and 'u'. */
export type ValueOf<C extends Typecode | TypeName> = C extends 'c' | 'u' | 'char' | 'wchar' ? string : ElementOf<C>;

export type TypedArrayOf<C extends Typecode | TypeName> =
  C extends 'b' | 'int8' ? Int8Array :
  C extends 'B' | 'uint8' | 'c' | 'char' ? Uint8Array :
  C extends 'h' | 'int16' ? Int16Array :
  C extends 'H' | 'uint16' ? Uint16Array :
  C extends 'i' | 'int32' ? Int32Array :
  C extends 'I' | 'uint32' | 'u' | 'wchar' ? Uint32Array :
  C extends 'l' | 'q' | 'int64' ? BigInt64Array :
  C extends 'L' | 'Q' | 'uint64' ? BigUint64Array :
  C extends 'f' | 'float32' ? Float32Array :
  Float64Array;

type Kind = 'int' | 'bigint' | 'float' | 'char' | 'wchar';

export interface TypeInfo {
  code: Typecode;
  size: number;
  ctor: TypedArrayConstructor;
  kind: Kind;
  min: number | bigint;
  max: number | bigint;
}

function info(code: Typecode, ctor: TypedArrayConstructor, kind: Kind, min: number | bigint, max: number | bigint): TypeInfo {
  return { code, size: ctor.BYTES_PER_ELEMENT, ctor, kind, min, max };
}

const TYPES: Record<Typecode, TypeInfo> = {
  b: info('b', Int8Array, 'int', -128, 127),
  B: info('B', Uint8Array, 'int', 0, 255),
  h: info('h', Int16Array, 'int', -32768, 32767),
  H: info('H', Uint16Array, 'int', 0, 65535),
  i: info('i', Int32Array, 'int', -(2 ** 31), 2 ** 31 - 1),
  I: info('I', Uint32Array, 'int', 0, 2 ** 32 - 1),
  l: info('l', BigInt64Array, 'bigint', -(2n ** 63n), 2n ** 63n - 1n),
  L: info('L', BigUint64Array, 'bigint', 0n, 2n ** 64n - 1n),
  q: info('q', BigInt64Array, 'bigint', -(2n ** 63n), 2n ** 63n - 1n),
  Q: info('Q', BigUint64Array, 'bigint', 0n, 2n ** 64n - 1n),
  f: info('f', Float32Array, 'float', -3.4028234663852886e38, 3.4028234663852886e38),
  d: info('d', Float64Array, 'float', -Infinity, Infinity),
  c: info('c', Uint8Array, 'char', 0, 255),
  u: info('u', Uint32Array, 'wchar', 0, 0x10ffff),
};

const NAMES: Record<TypeName, Typecode> = {
  int8: 'b', uint8: 'B', int16: 'h', uint16: 'H', int32: 'i', uint32: 'I', int64: 'q', uint64: 'Q',
  float32: 'f', float64: 'd', char: 'c', wchar: 'u',
};

export function typeInfo(typecode: unknown, caller: string): TypeInfo {
  if (typeof typecode === 'string') {
    if (Object.prototype.hasOwnProperty.call(TYPES, typecode)) return TYPES[typecode as Typecode];
    if (Object.prototype.hasOwnProperty.call(NAMES, typecode)) return TYPES[NAMES[typecode as TypeName]];
  }
  throw new TypeError(
    `${caller}: unknown typecode ${describe(typecode)}; use one of ${Object.keys(TYPES).join(' ')} or a name such as 'int32', 'float64'`,
  );
}

/** Checks one element and returns what the typed array stores (a number or a bigint). */
export function toElement(t: TypeInfo, value: unknown, caller: string): number | bigint {
  switch (t.kind) {
    case 'float':
      if (typeof value !== 'number') throw new TypeError(`${caller}: typecode '${t.code}' needs a number, got ${describe(value)}`);
      if (Number.isFinite(value) && (value < (t.min as number) || value > (t.max as number))) {
        throw new RangeError(`${caller}: ${value} is out of range for typecode '${t.code}'`);
      }
      return value;
    case 'bigint': {
      let big: bigint;
      if (typeof value === 'bigint') big = value;
      else if (typeof value === 'number' && Number.isInteger(value)) big = BigInt(value);
      else throw new TypeError(`${caller}: typecode '${t.code}' needs an integer (bigint or number), got ${describe(value)}`);
      if (big < (t.min as bigint) || big > (t.max as bigint)) {
        throw new RangeError(`${caller}: ${big} is out of range for typecode '${t.code}' (${t.min}..${t.max})`);
      }
      return big;
    }
    case 'char':
    case 'wchar': {
      let code: number;
      if (typeof value === 'string') {
        const cp = value.codePointAt(0);
        if (cp === undefined || String.fromCodePoint(cp) !== value) {
          throw new TypeError(`${caller}: typecode '${t.code}' needs one character, got ${describe(value)}`);
        }
        code = cp;
      } else if (typeof value === 'number' && Number.isInteger(value)) {
        code = value;
      } else {
        throw new TypeError(`${caller}: typecode '${t.code}' needs a one-character string or a character code, got ${describe(value)}`);
      }
      if (code < (t.min as number) || code > (t.max as number)) {
        throw new RangeError(`${caller}: character code ${code} is out of range for typecode '${t.code}'`);
      }
      return code;
    }
    default:
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        throw new TypeError(`${caller}: typecode '${t.code}' needs an integer, got ${describe(value)}`);
      }
      if (value < (t.min as number) || value > (t.max as number)) {
        throw new RangeError(`${caller}: ${value} is out of range for typecode '${t.code}' (${t.min}..${t.max})`);
      }
      return value;
  }
}

/** Converts what the typed array holds back to the Value's JS form. */
export function fromElement(t: TypeInfo, stored: number | bigint): unknown {
  if (t.kind === 'char' || t.kind === 'wchar') return String.fromCodePoint(stored as number);
  return stored;
}
