// Functions that cross into another process: a self-contained function, sent by its source and
// compiled once per process, or a module task, `mp.task(module, exportName)`, that the other
// process imports.
import * as path from 'path';
import { createRequire } from 'module';

import { describe } from './describe';

export type TaskSpec =
  | { kind: 'source'; source: string; name: string }
  | { kind: 'module'; url: string; exportName: string };

/** A function exported by a module, named by the module's URL or path and the export's name. */
export class Task<F extends (...args: any[]) => unknown = (...args: any[]) => unknown> {
  /** Never set: carries the function type for typed pool calls. */
  declare readonly __fn?: F;
  constructor(readonly url: string, readonly exportName: string) {}
  toString(): string {
    return `Task(${this.url}#${this.exportName})`;
  }
}

function moduleUrl(moduleUrlOrPath: unknown, caller: string): string {
  if (moduleUrlOrPath instanceof URL) return moduleUrlOrPath.href;
  if (typeof moduleUrlOrPath !== 'string' || moduleUrlOrPath.length === 0) {
    throw new TypeError(`${caller}: expected a module URL or path, got ${describe(moduleUrlOrPath)}`);
  }
  if (/^(file|data|node):/.test(moduleUrlOrPath)) return moduleUrlOrPath;
  return (require('url') as typeof import('url')).pathToFileURL(path.resolve(moduleUrlOrPath)).href;
}

/** `mp.task('./jobs.js', 'square')`: the export `square` of that module, imported by the worker. */
export function task<F extends (...args: any[]) => unknown = (...args: any[]) => unknown>(
  moduleUrlOrPath: string | URL,
  exportName = 'default',
): Task<F> {
  if (typeof exportName !== 'string' || exportName.length === 0) {
    throw new TypeError(`task(): exportName must be a non-empty string, got ${describe(exportName)}`);
  }
  return new Task<F>(moduleUrl(moduleUrlOrPath, 'task()'), exportName);
}

type FunctionsOf<M> = { [K in keyof M as M[K] extends (...args: any[]) => unknown ? K : never]: M[K] extends (...args: any[]) => unknown ? Task<M[K]> : never };

/** `const jobs = mp.tasks<typeof import('./jobs.js')>(url)`: `jobs.square` is a typed Task. */
export function tasks<M>(moduleUrlOrPath: string | URL): FunctionsOf<M> {
  const url = moduleUrl(moduleUrlOrPath, 'tasks()');
  return new Proxy({} as FunctionsOf<M>, {
    get: (_target, key) => (typeof key === 'string' ? new Task(url, key) : undefined),
  });
}

const specs = new WeakMap<Function, TaskSpec>();

/**
 * Checks a target before anything is sent: a bound, native or method function cannot be
 * rebuilt from its source in another process, so it is refused here with a TypeError.
 */
export function toTaskSpec(target: unknown, caller: string): TaskSpec {
  if (target instanceof Task) return { kind: 'module', url: target.url, exportName: target.exportName };
  if (typeof target !== 'function') {
    throw new TypeError(`${caller}: the target must be a function or mp.task(module, export), got ${describe(target)}`);
  }
  const known = specs.get(target);
  if (known !== undefined) return known;
  const name = target.name || '(anonymous)';
  const source = Function.prototype.toString.call(target);
  if (/\{\s*\[native code\]\s*\}\s*$/.test(source)) {
    if (name.startsWith('bound ')) {
      // bind() names the result `bound <name>`, and just `bound ` for an anonymous function.
      const what = name === 'bound ' ? 'an anonymous bound function' : `${name} is a bound function, which`;
      throw new TypeError(`${caller}: ${what} cannot be sent to another process; pass the bound values as arguments`);
    }
    throw new TypeError(`${caller}: ${name} is a native function, which cannot be sent to another process`);
  }
  if (/^class\b/.test(source)) throw new TypeError(`${caller}: a class cannot be a target; use a function`);
  try {
    // Compiled, not run: a method's source (`m(x) { … }`) is not an expression on its own.
    new Function(`return (${source}\n);`);
  } catch {
    throw new TypeError(
      `${caller}: ${name} is a method, whose source does not compile on its own; use a function or an arrow function, or mp.task(module, export)`,
    );
  }
  const spec: TaskSpec = { kind: 'source', source, name };
  specs.set(target, spec);
  return spec;
}

const compiled = new Map<string, Function>();

/** The hint added to a ReferenceError thrown by a function sent by source. */
export const CLOSURE_HINT =
  'functions sent to another process must be self-contained: they cannot use variables of the scope they were written in; ' +
  'pass values as arguments, require()/import() modules inside the function, or use mp.task(module, export)';

/** Compiles a function's source in this process (once per source), with require() and import(). */
export function compileSource(source: string, name: string): Function {
  let fn = compiled.get(source);
  if (fn !== undefined) return fn;
  const filename = path.join(process.cwd(), `[node-multiprocessing task ${name}]`);
  // new Function, not vm: import() works inside it without vm's experimental main-context
  // loader (whose warning would land on every child's stderr). require() resolves from the cwd.
  const factory = new Function('require', '__filename', '__dirname', `return (${source}\n);\n//# sourceURL=${filename}`);
  fn = factory(createRequire(filename), filename, process.cwd()) as Function;
  compiled.set(source, fn);
  return fn;
}

/**
 * A CommonJS file is required: the ESM loader costs ~30 ms and ~1.5 MB more in every worker
 * that starts. An ES module (`.mjs`, `.ts`, a `.js` of a `"type": "module"` package) is imported.
 */
async function load(url: string): Promise<Record<string, unknown>> {
  if (/^file:.*\.c?js$/.test(url)) {
    try {
      const exported = require((require('url') as typeof import('url')).fileURLToPath(url)) as unknown;
      return typeof exported === 'function' ? { default: exported, ...exported } : (exported as Record<string, unknown>);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ERR_REQUIRE_ESM' && code !== 'ERR_REQUIRE_ASYNC_MODULE') throw err;
    }
  }
  return (await import(url)) as Record<string, unknown>;
}

/** In the process that runs it: the function a spec names. */
export async function resolveTask(spec: TaskSpec): Promise<Function> {
  if (spec.kind === 'source') return compileSource(spec.source, spec.name);
  const ns = await load(spec.url);
  // Own exports only: `constructor`, `toString` or `__proto__` are not the module's to run.
  let fn = Object.hasOwn(ns, spec.exportName) ? ns[spec.exportName] : undefined;
  if (fn === undefined && typeof ns.default === 'object' && ns.default !== null && Object.hasOwn(ns.default, spec.exportName)) {
    fn = (ns.default as Record<string, unknown>)[spec.exportName];
  }
  if (typeof fn !== 'function') {
    throw new TypeError(`${spec.url} has no exported function ${JSON.stringify(spec.exportName)}`);
  }
  return fn;
}

/** Adds the self-containment hint to a ReferenceError from a function sent by source. */
export function withClosureHint(err: unknown, spec: TaskSpec): unknown {
  if (spec.kind === 'source' && err instanceof ReferenceError && !err.message.includes(CLOSURE_HINT)) {
    // V8 formats `stack` lazily from the current message: take it before changing the message.
    const stack = err.stack;
    const original = err.message;
    err.message = `${original} (${CLOSURE_HINT})`;
    if (typeof stack === 'string') err.stack = stack.replace(original, err.message);
  }
  return err;
}
