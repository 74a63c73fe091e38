// How shared objects cross into another process: each kind describes itself as segment handles
// plus a little state, and is revived on the other side over the same memory (never a copy).
// Arguments are walked through plain objects and arrays, and through the Maps, Sets and class
// instances that hold a shared object; everything else goes to v8.serialize as it is.
import { types } from 'util';
import * as v8 from 'v8';

import type { Segment, SegmentHandle } from './segment';
import { describe } from './describe';

export const kShare = Symbol('node-multiprocessing.share');

export interface ShareDescription {
  kind: string;
  segments: Segment[];
  /** Plain data, and other shared objects, which are described in turn. */
  state?: unknown;
  /**
   * For an object in an arena block (lib/arena.ts): takes the reference that the message carries,
   * which the receiver's revived object takes over. Called once the message is sure to leave;
   * returns what gives it back if the message is not sent after all.
   */
  retain?: () => () => void;
}

/** What encode() reports of the shared objects it describes. */
export interface EncodeSink {
  /** Each segment of each object (a spawner passes their fds on). */
  segment?(segment: Segment): void;
  /** Each object's retain (see ShareDescription). */
  retain?(retain: () => () => void): void;
  /** Mark the handles as deposited with the tracker (see lib/segment.ts). */
  kept?: boolean;
}

export interface Shareable {
  [kShare](): ShareDescription;
}

type Reviver = (segments: Segment[], state: any) => unknown;

const MARK = '__nodeMultiprocessingShared__';
/**
 * Wraps an encoded value that holds a shared object. A value without one is sent as it is, and
 * decode() gives it back without walking it: most messages hold none.
 */
const HOLDS_SHARED = '__nodeMultiprocessingHoldsShared__';
const revivers = new Map<string, Reviver>();

/** The module that registers each kind. */
const KIND_MODULES: Record<string, string> = {
  SharedMemory: './shared-memory',
  Value: './value',
  Array: './value',
  Lock: './synchronize',
  RLock: './synchronize',
  Semaphore: './synchronize',
  BoundedSemaphore: './synchronize',
  Event: './synchronize',
  Condition: './synchronize',
  Barrier: './synchronize',
  Queue: './queues',
  SimpleQueue: './queues',
  JoinableQueue: './queues',
  Connection: './queues',
};

export function registerKind(kind: string, revive: Reviver): void {
  revivers.set(kind, revive);
}

export function isShareable(value: unknown): value is Shareable {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && kShare in value;
}

/** A plain object of any realm (v8.deserialize builds them in the main one; a vm or test runner may not be it). */
function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  if (proto === null || proto === Object.prototype) return true;
  return Object.getPrototypeOf(proto) === null && typeof proto.constructor === 'function' && proto.constructor.name === 'Object';
}

/** What error messages call a shared object: its kind, as a user wrote it. */
function kindName(shared: object): string {
  // An Array is a typed array of a class of ours (SharedInt32Array...): call it what it was made as.
  if (ArrayBuffer.isView(shared)) return 'Array';
  return (shared.constructor as Function | undefined)?.name ?? 'shared object';
}

type Shape = 'array' | 'record' | 'map' | 'set' | 'error' | 'opaque';

/** Prototypes of objects found to be records (class instances): their next instances are known at once. */
const recordPrototypes = new WeakSet<object>();

/**
 * How v8.serialize takes an object apart, and so where a shared object inside it would go:
 * 'record' for plain objects and class instances (it copies their own enumerable properties into
 * a plain object), 'error' for an Error (its message, stack and cause, nothing else), 'opaque' for
 * what it clones by internal state (a Date, a typed array...) or refuses (a Promise, a Proxy...).
 */
function shapeOf(v: object): Shape {
  if (Array.isArray(v)) return 'array';
  const proto = Object.getPrototypeOf(v) as object | null;
  // An object made by a class is a record like the others of its class (only Reflect.construct
  // could give a Map a class's prototype); a Proxy of one is not.
  if (proto !== null && recordPrototypes.has(proto) && !types.isProxy(v)) return 'record';
  if (isPlain(v)) return 'record';
  if (ArrayBuffer.isView(v) || types.isAnyArrayBuffer(v)) return 'opaque';
  if (types.isMap(v)) return 'map';
  if (types.isSet(v)) return 'set';
  if (types.isNativeError(v)) return 'error';
  if (types.isDate(v) || types.isRegExp(v) || types.isBoxedPrimitive(v) || types.isProxy(v) || types.isPromise(v) ||
    types.isWeakMap(v) || types.isWeakSet(v)) return 'opaque';
  if (proto !== null) recordPrototypes.add(proto);
  return 'record';
}

/**
 * The first shared object reachable from `v` (v itself excluded) through what v8 clones, or
 * undefined. `visited` is made when there is something to visit.
 */
function findShared(v: object, shape: Shape, visited?: Set<object>): object | undefined {
  switch (shape) {
    case 'array':
      for (let i = 0; i < (v as unknown[]).length; i++) {
        const part = (v as unknown[])[i];
        if (typeof part === 'object' && part !== null) {
          const found = isShareable(part) ? part : findSharedIn(part, (visited ??= new Set([v])));
          if (found !== undefined) return found;
        }
      }
      return undefined;
    case 'record':
      for (const key of Object.keys(v)) {
        const part = (v as Record<string, unknown>)[key];
        if (typeof part === 'object' && part !== null) {
          const found = isShareable(part) ? part : findSharedIn(part, (visited ??= new Set([v])));
          if (found !== undefined) return found;
        }
      }
      return undefined;
    case 'map':
    case 'set': {
      // forEach: twice as fast as an iterator over a large Map.
      let found: object | undefined;
      const look = (part: unknown): void => {
        if (found !== undefined || typeof part !== 'object' || part === null) return;
        found = isShareable(part) ? part : findSharedIn(part, (visited ??= new Set([v])));
      };
      (v as Map<unknown, unknown>).forEach((x, key) => {
        look(x);
        if (shape === 'map') look(key);
      });
      return found;
    }
    case 'error': {
      const part = Object.prototype.hasOwnProperty.call(v, 'cause') ? (v as Error).cause : undefined;
      if (typeof part !== 'object' || part === null) return undefined;
      return isShareable(part) ? part : findSharedIn(part, (visited ??= new Set([v])));
    }
    default:
      return undefined;
  }
}

/** findShared() of an object inside another, once: cycles end there. */
function findSharedIn(part: object, visited: Set<object>): object | undefined {
  if (visited.has(part)) return undefined;
  visited.add(part);
  return findShared(part, shapeOf(part), visited);
}

/** What findShared() looks through, each part with its path, for an error message. */
function* partsOf(v: object): Generator<[string, unknown]> {
  switch (shapeOf(v)) {
    case 'array':
      for (let i = 0; i < (v as unknown[]).length; i++) yield [`[${i}]`, (v as unknown[])[i]];
      break;
    case 'map': {
      let i = 0;
      for (const [key, x] of v as Map<unknown, unknown>) {
        yield [`.keys()[${i++}]`, key];
        yield [`.get(${describe(key)})`, x];
      }
      break;
    }
    case 'set': {
      let i = 0;
      for (const x of v as Set<unknown>) yield [`.values()[${i++}]`, x];
      break;
    }
    case 'error':
      if (Object.prototype.hasOwnProperty.call(v, 'cause')) yield ['.cause', (v as Error).cause];
      break;
    case 'record':
      for (const key of Object.keys(v)) yield [`.${key}`, (v as Record<string, unknown>)[key]];
      break;
    default:
  }
}

/** The path from `root` to `target` (an object reached by the walk), for an error message. */
function pathTo(root: unknown, target: object, path: string, visited = new Set<object>()): string | undefined {
  if (root === target) return path;
  if (typeof root !== 'object' || root === null || visited.has(root) || isShareable(root)) return undefined;
  visited.add(root);
  for (const [key, part] of partsOf(root)) {
    const found = pathTo(part, target, path + key, visited);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Thrown inside encode() at a shared object that cannot travel where it is; encode() names it. */
class Unsendable {
  constructor(readonly container: object, readonly shared: object) {}
}

/**
 * Replaces shared objects by their descriptions, reporting each segment to `sink` (the sender
 * passes those fds along). Returns a structure v8.serialize can take. A shared object is carried
 * wherever v8.serialize would carry it: in plain objects and arrays, as a Map's key or value, in a
 * Set, and in an instance of a class (which arrives as a plain object, as v8 makes it). In an
 * Error's cause, which v8 rebuilds as plain data, it is refused with a TypeError that names it.
 * `what` names the value in that message.
 */
export function encode(value: unknown, sink: EncodeSink = {}, what = 'value'): unknown {
  const kept = sink.kept === true;
  const seen = new Map<object, unknown>();
  let described = false;
  const walk = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (isShareable(v)) {
      described = true;
      const d = v[kShare]();
      if (d.retain !== undefined) sink.retain?.(d.retain);
      const handles: SegmentHandle[] = d.segments.map((s) => {
        sink.segment?.(s);
        return kept ? { ...s.handle(), kept: true } : s.handle();
      });
      const out = { [MARK]: d.kind, segments: handles, state: walk(d.state) };
      seen.set(v, out);
      return out;
    }
    if (Array.isArray(v)) {
      const out: unknown[] = [];
      seen.set(v, out);
      for (let i = 0; i < v.length; i++) out.push(walk(v[i]));
      return out;
    }
    if (isPlain(v)) {
      const out: Record<string, unknown> = {};
      seen.set(v, out);
      for (const key of Object.keys(v)) out[key] = walk((v as Record<string, unknown>)[key]);
      return out;
    }
    // Anything else goes to v8.serialize untouched, unless a shared object is inside: then what
    // v8 would rebuild is rebuilt here, with the shared objects described.
    const shape = shapeOf(v);
    if (shape === 'opaque' || findShared(v, shape) === undefined) return v;
    if (shape === 'map') {
      const out = new Map<unknown, unknown>();
      seen.set(v, out);
      for (const [key, x] of v as Map<unknown, unknown>) out.set(walk(key), walk(x));
      return out;
    }
    if (shape === 'set') {
      const out = new Set<unknown>();
      seen.set(v, out);
      for (const x of v as Set<unknown>) out.add(walk(x));
      return out;
    }
    if (shape === 'error') throw new Unsendable(v, findShared(v, shape)!);
    // A class instance: a plain object of its own enumerable properties, as v8 would make it.
    const out: Record<string, unknown> = {};
    seen.set(v, out);
    for (const key of Object.keys(v)) out[key] = walk((v as Record<string, unknown>)[key]);
    return out;
  };
  try {
    const out = walk(value);
    return described ? { [HOLDS_SHARED]: out } : value;
  } catch (err) {
    if (!(err instanceof Unsendable)) throw err;
    const where = pathTo(value, err.container, what) ?? what;
    const inner = pathTo(err.container, err.shared, where) ?? `${where}.cause`;
    const kind = kindName(err.shared);
    throw new TypeError(
      `${inner}: ${/^[AEIOU]/.test(kind) ? 'an' : 'a'} ${kind} inside an Error cannot be sent to another process: an Error's cause arrives as plain data, ` +
        `a copy that shares nothing; send the ${kind} beside the Error`,
    );
  }
}

/** What encode() made of a value, once v8.deserialize has rebuilt it: shared objects revived. */
export function decode(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || !Object.prototype.hasOwnProperty.call(value, HOLDS_SHARED)) return value;
  const seen = new Map<object, unknown>();
  const walk = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (Array.isArray(v)) {
      const out: unknown[] = [];
      seen.set(v, out);
      for (let i = 0; i < v.length; i++) out.push(walk(v[i]));
      return out;
    }
    if (types.isMap(v)) {
      // Revived in place: the Map is the message's own. Values change under their keys, which
      // keeps the order; a key that changes (a shared object as a key) takes a rebuild.
      seen.set(v, v);
      const map = v as Map<unknown, unknown>;
      let keysChange = false;
      for (const [key, x] of map) {
        if (typeof key === 'object' && key !== null && walk(key) !== key) keysChange = true;
        if (typeof x === 'object' && x !== null) {
          const revived = walk(x);
          if (revived !== x) map.set(key, revived);
        }
      }
      if (keysChange) {
        const entries = [...map].map(([key, x]) => [walk(key), x] as const);
        map.clear();
        for (const [key, x] of entries) map.set(key, x);
      }
      return map;
    }
    if (types.isSet(v)) {
      seen.set(v, v);
      const set = v as Set<unknown>;
      let changes = false;
      for (const x of set) if (typeof x === 'object' && x !== null && walk(x) !== x) changes = true;
      if (changes) {
        // walk() gives each object what it gave it the first time (seen).
        const items = [...set].map(walk);
        set.clear();
        for (const x of items) set.add(x);
      }
      return set;
    }
    if (!isPlain(v)) return v;
    const rec = v as Record<string, unknown>;
    if (typeof rec[MARK] === 'string') {
      // A child loads a shared kind's module (and the addon) only when an argument needs it:
      // each module loaded is start-up time and memory of every child.
      if (!revivers.has(rec[MARK] as string)) require(KIND_MODULES[rec[MARK] as string] ?? './index');
      const revive = revivers.get(rec[MARK] as string);
      if (revive === undefined) throw new TypeError(`cannot revive a shared ${rec[MARK]}: unknown kind`);
      const { Segment } = require('./segment') as typeof import('./segment');
      const segments = (rec.segments as SegmentHandle[]).map((h) => Segment.attach(h));
      const out = revive(segments, walk(rec.state));
      seen.set(v, out);
      return out;
    }
    const out: Record<string, unknown> = {};
    seen.set(v, out);
    for (const key of Object.keys(rec)) out[key] = walk(rec[key]);
    return out;
  };
  return walk((value as Record<string, unknown>)[HOLDS_SHARED]);
}

/**
 * A message's bytes (a queue item, a pool task or result): shared objects are described, and once
 * the value is known to serialize, their arena blocks retained and their descriptors deposited
 * with the tracker, so the receiver gets them even if this process is gone by then. `onUndo`
 * receives what gives both back, for a message that is not sent after all (a put that finds the
 * queue full); a message sent and never received holds them until the tree ends.
 */
export function serializeMessage(value: unknown, what: string, onUndo?: (undo: () => void) => void): Buffer {
  const segments: Segment[] = [];
  const retains: Array<() => () => void> = [];
  const bytes = serialize(encode(value, { segment: (s) => segments.push(s), retain: (r) => retains.push(r), kept: true }, what), what);
  const undos: Array<() => void> = [];
  for (const retain of retains) undos.push(retain());
  if (segments.length > 0) {
    // Loaded only here: a child's bootstrap loads this module, and must not load the addon for it.
    const { deposit, withdraw } = require('./tracker') as typeof import('./tracker');
    for (const s of segments) {
      deposit(s.dev, s.ino, s.fd);
      undos.push(() => withdraw(s.dev, s.ino, false));
    }
  }
  if (onUndo !== undefined && undos.length > 0) onUndo(() => undos.forEach((u) => u()));
  return bytes;
}

/**
 * v8.serialize with an error that names what could not be cloned: a TypeError thrown before
 * anything is sent.
 */
export function serialize(value: unknown, what: string): Buffer {
  try {
    return v8.serialize(value);
  } catch (err) {
    // Named in the value as the caller wrote it, not in encode()'s wrapper.
    const wrapped = typeof value === 'object' && value !== null && Object.prototype.hasOwnProperty.call(value, HOLDS_SHARED);
    const where = findUncloneable(wrapped ? (value as Record<string, unknown>)[HOLDS_SHARED] : value, what) ?? what;
    throw new TypeError(`${where} cannot be sent to another process: ${(err as Error).message}`);
  }
}

function findUncloneable(value: unknown, path: string, depth = 0): string | undefined {
  if (typeof value === 'function' || typeof value === 'symbol') return `${path} (${describe(value)})`;
  if (typeof value !== 'object' || value === null || depth > 32) return undefined;
  try {
    v8.serialize(value);
    return undefined;
  } catch {
    // this one fails: look for the part that does
  }
  const entries: Array<[string, unknown]> = value instanceof Map
    ? [...value.entries()].map(([k, v]) => [`.get(${describe(k)})`, v])
    : Array.isArray(value) ? value.map((v, i) => [`[${i}]`, v]) : Object.entries(value).map(([k, v]) => [`.${k}`, v]);
  for (const [key, v] of entries) {
    const found = findUncloneable(v, path + key, depth + 1);
    if (found !== undefined) return found;
  }
  return `${path} (${describe(value)})`;
}
