// Value and Array: typed data in shared memory, as Python's multiprocessing.Value / Array.
//
// A Value lives in an arena block (lib/arena.ts): its RLock's words (used when lock: true), then
// the data at +16. An Array is laid out the same way: a 16-byte header for the RLock, then the
// data, 16-byte aligned; up to 992 data bytes it lives in an arena block too, else in a segment of
// its own. An Array IS a typed array of its typecode over that data: indexing, iteration and
// subarray() are V8's own, zero-copy. In a block, its ArrayBuffer is a view of the block alone
// (native subView), so that close() can detach it without touching its neighbours.
import { constants as bufferConstants } from 'buffer';

import { adopted, allocate, Block, MAX_PAYLOAD, release, releaseOnCollect, retain } from './arena';
import { native } from './native';
import { Segment } from './segment';
import { isShareable, kShare, registerKind, ShareDescription } from './shared';
import { Lock, RLock } from './synchronize';
import {
  ElementOf, fromElement, toElement, Typecode, TypedArray, TypedArrayOf, TypeInfo, typeInfo, TypeName, ValueOf,
} from './typecodes';
import { describe } from './describe';

const HEADER = 16;
const MAX_BYTES = bufferConstants.MAX_LENGTH;

export interface SharedOptions {
  /** true (default): an RLock of its own; false: none (raw); or an existing Lock/RLock to use. */
  lock?: boolean | Lock;
}

function checkLockOption(options: unknown, caller: string): boolean | Lock {
  if (options === undefined || options === null) return true;
  if (typeof options !== 'object') throw new TypeError(`${caller}: options must be an object, got ${describe(options)}`);
  const lock = (options as SharedOptions).lock;
  if (lock === undefined) return true;
  if (typeof lock === 'boolean' || lock instanceof Lock) return lock;
  throw new TypeError(`${caller}: lock must be true, false, a Lock or an RLock, got ${describe(lock)}`);
}

function lockFor(seg: Segment, option: boolean | Lock): Lock | null {
  if (option === true) return RLock.over(seg, 0);
  return option === false ? null : option;
}

/** A Value's or small Array's own RLock: the first words of its block, kept by its holder. */
function blockLockFor(block: Block, option: boolean | Lock, holder: object): Lock | null {
  if (option === true) return RLock.over(block.seg, block.offset).inBlock(block, holder);
  return option === false ? null : option;
}

/** A holder is closed: its own RLock dies with it (a lock given in the options does not). */
function closeOwnLock(lock: Lock | null, block: Block): void {
  if (lock !== null && isEmbedded(lock, block)) lock.dieWithHolder();
}

function noLock(what: string): Error {
  return new TypeError(`this ${what} was made with lock: false and has no lock`);
}

// ---------------------------------------------------------------------------------------------
// Value

export class Value<C extends Typecode | TypeName = Typecode | TypeName> {
  readonly typecode: Typecode;
  private readonly block: Block;
  private view: TypedArray;
  private readonly info: TypeInfo;
  private readonly lock: Lock | null;
  /** Holds one of the block's references (given back by close() or the garbage collector). */
  private owns: boolean;

  constructor(typecode: C, value?: ValueOf<C>, options?: SharedOptions) {
    const t = typeInfo(typecode, 'Value()');
    const stored = value === undefined ? (t.kind === 'bigint' ? 0n : 0) : toElement(t, value, 'Value()');
    const lockOption = checkLockOption(options, 'Value()');
    this.typecode = t.code;
    this.info = t;
    this.block = allocate();
    this.owns = true;
    releaseOnCollect.register(this, this.block, this);
    this.view = new t.ctor(this.block.seg.buffer, this.block.offset + HEADER, 1);
    this.view[0] = stored as never;
    this.lock = blockLockFor(this.block, lockOption, this);
  }

  /** @internal A Value sent by another process: it takes over the reference its message carried. */
  static over(seg: Segment, state: { typecode: Typecode; lock: boolean | Lock; offset: number }): Value {
    const v = Object.create(Value.prototype) as { -readonly [K in keyof Value]: unknown } & Value;
    const t = typeInfo(state.typecode, 'Value');
    const block: Block = { seg, offset: state.offset };
    Object.assign(v, {
      typecode: t.code, info: t, block, owns: true, view: new t.ctor(seg.buffer, block.offset + HEADER, 1), lock: blockLockFor(block, state.lock, v),
    });
    releaseOnCollect.register(v, block, v);
    adopted(block);
    return v;
  }

  /** Reads and writes go straight to shared memory (unlocked, like Python's: `+=` is two steps). */
  get value(): ValueOf<C> {
    const stored = this.view[0];
    // Closed: the view is empty. undefined for every typecode ('c' and 'u' would make no character of it).
    if (stored === undefined) return undefined as unknown as ValueOf<C>;
    return fromElement(this.info, stored) as ValueOf<C>;
  }

  set value(v: ValueOf<C>) {
    const t = this.info;
    if (t.kind === 'int' && typeof v === 'number' && v === (v | 0) && v >= (t.min as number) && v <= (t.max as number)) {
      this.view[0] = v;  // the common case, without the general checks
      return;
    }
    this.view[0] = toElement(t, v, 'Value.value') as never;
  }

  /** The RLock (or the Lock given in the options) guarding this value. */
  getLock(): Lock {
    if (this.lock === null) throw noLock('Value');
    return this.lock;
  }

  /** Lets this process's object go now: its value reads undefined and ignores writes afterwards. */
  close(): void {
    if (!this.owns) return;
    this.owns = false;
    releaseOnCollect.unregister(this);
    closeOwnLock(this.lock, this.block);
    release(this.block);
    this.view = new this.info.ctor(new ArrayBuffer(8), 0, 0);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [kShare](): ShareDescription {
    if (!this.owns) throw new Error('this shared object is closed');
    const block = this.block;
    const lock = this.lock === null ? false : this.lock instanceof RLock && isEmbedded(this.lock, block) ? true : this.lock;
    return { kind: 'Value', segments: [block.seg], state: { typecode: this.typecode, lock, offset: block.offset }, retain: () => {
      retain(block);
      return () => release(block);
    } };
  }

  toString(): string {
    return `<Value('${this.typecode}', ${String(this.value)})>`;
  }
}

function isEmbedded(lock: Lock, where: Segment | Block): boolean {
  const l = lock as unknown as { seg: Segment; off: number };
  return where instanceof Segment ? l.seg === where : l.seg === where.seg && l.off === where.offset;
}

/** A Value with no lock: `new mp.RawValue('i', 0)`. */
export const RawValue = function RawValue<C extends Typecode | TypeName>(typecode: C, value?: ValueOf<C>) {
  if (new.target === undefined) throw new TypeError("Class constructor RawValue cannot be invoked without 'new'");
  return new Value(typecode, value, { lock: false });
} as unknown as new <C extends Typecode | TypeName>(typecode: C, value?: ValueOf<C>) => Value<C>;

// ---------------------------------------------------------------------------------------------
// Array

export interface SharedArrayMethods {
  readonly typecode: Typecode;
  /** The RLock (or the Lock given in the options) guarding this array. */
  getLock(): Lock;
  /** Unmaps this process's view now; the typed array is detached (length 0) afterwards. */
  close(): void;
  [Symbol.dispose](): void;
}

export type SharedArray<C extends Typecode | TypeName = Typecode | TypeName> = TypedArrayOf<C> & SharedArrayMethods;

interface ArrayState {
  seg: Segment;
  lock: Lock | null;
  typecode: Typecode;
  /** In an arena block: the block, the view of it the array stands on, and whether it holds a reference. */
  block?: Block;
  view?: ArrayBuffer;
  owns?: boolean;
}

const arrayState = new WeakMap<object, ArrayState>();
const arrayClasses = new Map<Function, Function>();

/** One subclass per typed array kind; subarray() and friends give plain typed arrays (species). */
function sharedClass(base: TypeInfo['ctor']): new (buffer: ArrayBuffer, byteOffset: number, length: number) => TypedArray {
  let cls = arrayClasses.get(base);
  if (cls === undefined) {
    const Base = base as unknown as new (buffer: ArrayBuffer, byteOffset: number, length: number) => TypedArray;
    cls = class extends (Base as any) {
      static get [Symbol.species]() {
        return base;
      }
      get typecode(): Typecode {
        return state(this).typecode;
      }
      getLock(): Lock {
        const lock = state(this).lock;
        if (lock === null) throw noLock('Array');
        return lock;
      }
      close(): void {
        const s = state(this);
        if (s.block === undefined) {
          s.seg.close();
        } else if (s.owns === true) {
          s.owns = false;
          releaseOnCollect.unregister(this);
          closeOwnLock(s.lock, s.block);
          // Every typed array over the view (this one, its subarrays) is detached before the block
          // can go to another object.
          native.detachView(s.view!);
          release(s.block);
        }
      }
      [Symbol.dispose](): void {
        this.close();
      }
      [kShare](): ShareDescription {
        const s = state(this);
        const length = (this as unknown as TypedArray).length;
        const block = s.block;
        if (block === undefined) {
          const lock = s.lock === null ? false : isEmbedded(s.lock, s.seg) ? true : s.lock;
          return { kind: 'Array', segments: [s.seg], state: { typecode: s.typecode, lock, length } };
        }
        if (s.owns !== true) throw new Error('this shared object is closed');
        const lock = s.lock === null ? false : isEmbedded(s.lock, block) ? true : s.lock;
        return {
          kind: 'Array', segments: [block.seg], state: { typecode: s.typecode, lock, length, offset: block.offset },
          retain: () => {
            retain(block);
            return () => release(block);
          },
        };
      }
    };
    Object.defineProperty(cls, 'name', { value: `Shared${base.name}` });
    arrayClasses.set(base, cls);
  }
  return cls as never;
}

function state(arr: object): ArrayState {
  const s = arrayState.get(arr);
  if (s === undefined) throw new TypeError('not a shared Array');
  return s;
}

function makeArray(t: TypeInfo, seg: Segment, length: number, lock: Lock | null): TypedArray {
  const Cls = sharedClass(t.ctor);
  const arr = new Cls(seg.buffer, HEADER, length);
  arrayState.set(arr, { seg, lock, typecode: t.code });
  return arr;
}

/** An Array in an arena block, holding one of its references (a new block's, or a message's). */
function makeBlockArray(t: TypeInfo, block: Block, length: number, lockOption: boolean | Lock): TypedArray {
  const Cls = sharedClass(t.ctor);
  const view = native.subView(block.seg.buffer, block.offset, HEADER + length * t.size);
  const arr = new Cls(view, HEADER, length);
  arrayState.set(arr, { seg: block.seg, lock: blockLockFor(block, lockOption, arr), typecode: t.code, block, view, owns: true });
  // The block goes back when the view is collected, not the array: a subarray() or `arr.buffer`
  // may outlive the array, and both stand on the view.
  releaseOnCollect.register(view, block, arr);
  return arr;
}

/** Whether an Array of these bytes of data goes in an arena block. */
function fitsBlock(bytes: number): boolean {
  return HEADER + bytes <= MAX_PAYLOAD;
}

function checkLength(n: number, t: TypeInfo, caller: string): number {
  if (!Number.isInteger(n)) throw new TypeError(`${caller}: size must be an integer, got ${n}`);
  if (n < 0) throw new RangeError(`${caller}: size must not be negative, got ${n}`);
  if (HEADER + n * t.size > MAX_BYTES) {
    throw new RangeError(`${caller}: ${n} elements of '${t.code}' (${n * t.size} bytes) exceed the largest shared array, ${MAX_BYTES} bytes`);
  }
  return n;
}

function elementsOf(t: TypeInfo, init: unknown, caller: string): Array<number | bigint> {
  let items: unknown[];
  if (typeof init === 'string') {
    if (t.kind !== 'char' && t.kind !== 'wchar') {
      throw new TypeError(`${caller}: a string initializes only a 'c' or 'u' array, not '${t.code}'`);
    }
    items = t.kind === 'char' ? [...Buffer.from(init, 'latin1')] : [...init];
  } else if (ArrayBuffer.isView(init) && !(init instanceof DataView)) {
    items = [...(init as unknown as Iterable<unknown>)];
  } else if (typeof init === 'object' && init !== null && Symbol.iterator in init) {
    items = [...(init as Iterable<unknown>)];
  } else {
    throw new TypeError(`${caller}: expected a size or an iterable of values, got ${describe(init)}`);
  }
  checkLength(items.length, t, caller);
  return items.map((item, i) => {
    if (typeof item === 'object' && item !== null && !isShareable(item)) {
      throw new TypeError(`${caller}: element [${i}] is ${describe(item)}: an Array is one-dimensional and holds '${t.code}' values only`);
    }
    return toElement(t, item, `${caller}: element [${i}]`);
  });
}

function createArray(typecode: unknown, sizeOrInit: unknown, options: unknown, caller: string, raw: boolean): TypedArray {
  const t = typeInfo(typecode, caller);
  let length: number;
  let values: Array<number | bigint> | undefined;
  if (typeof sizeOrInit === 'number') {
    length = checkLength(sizeOrInit, t, caller);
  } else {
    values = elementsOf(t, sizeOrInit, caller);
    length = values.length;
  }
  const lockOption = raw ? false : checkLockOption(options, caller);
  let arr: TypedArray;
  if (fitsBlock(length * t.size)) {
    arr = makeBlockArray(t, allocate(HEADER + length * t.size), length, lockOption);
  } else {
    const seg = Segment.create(HEADER + length * t.size);
    arr = makeArray(t, seg, length, lockFor(seg, lockOption));
  }
  if (values !== undefined) {
    for (let i = 0; i < length; i++) arr[i] = values[i] as never;
  }
  return arr;
}

export interface SharedArrayConstructor {
  /** `new mp.Array('d', 1_000_000)` (zero-filled) or `new mp.Array('i', [1, 2, 3])`. */
  new <C extends Typecode | TypeName>(typecode: C, sizeOrInit: number | Iterable<ElementOf<C>> | string, options?: SharedOptions): SharedArray<C>;
  [Symbol.hasInstance](value: unknown): boolean;
}

export const SharedArray = function Array(typecode: unknown, sizeOrInit: unknown, options?: unknown) {
  if (new.target === undefined) throw new TypeError("Class constructor Array cannot be invoked without 'new'");
  return createArray(typecode, sizeOrInit, options, 'Array()', false);
} as unknown as SharedArrayConstructor;
Object.defineProperty(SharedArray, Symbol.hasInstance, { value: (x: unknown) => typeof x === 'object' && x !== null && arrayState.has(x) });

export const RawArray = function RawArray(typecode: unknown, sizeOrInit: unknown) {
  if (new.target === undefined) throw new TypeError("Class constructor RawArray cannot be invoked without 'new'");
  return createArray(typecode, sizeOrInit, undefined, 'RawArray()', true);
} as unknown as new <C extends Typecode | TypeName>(typecode: C, sizeOrInit: number | Iterable<ElementOf<C>> | string) => SharedArray<C>;

registerKind('Value', (segs, st) => Value.over(segs[0], st));
registerKind('Array', (segs, st: { typecode: Typecode; lock: boolean | Lock; length: number; offset?: number }) => {
  const t = typeInfo(st.typecode, 'Array');
  if (st.offset === undefined) return makeArray(t, segs[0], st.length, lockFor(segs[0], st.lock));
  // It takes over the reference its message carried.
  const block: Block = { seg: segs[0], offset: st.offset };
  const arr = makeBlockArray(t, block, st.length, st.lock);
  adopted(block);
  return arr;
});
