// How shared objects cross into another process: each kind describes itself as segment handles
// plus a little state, and is revived on the other side over the same memory (never a copy).
// Arguments are walked through plain objects and arrays; everything else goes to v8.serialize.
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

/**
 * Replaces shared objects by their descriptions, reporting each segment to `onSegment` (the
 * sender passes those fds along). Returns a structure v8.serialize can take.
 */
export function encode(value: unknown, sink: EncodeSink = {}): unknown {
  const kept = sink.kept === true;
  const seen = new Map<object, unknown>();
  const walk = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (isShareable(v)) {
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
    return v;
  };
  return walk(value);
}

export function decode(value: unknown): unknown {
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
  return walk(value);
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
  const bytes = serialize(encode(value, { segment: (s) => segments.push(s), retain: (r) => retains.push(r), kept: true }), what);
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
    const where = findUncloneable(value, what) ?? what;
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
