// Errors that cross between processes. v8.serialize keeps only the standard error classes' names,
// so an error travels as plain data and is rebuilt on the other side with its own name and
// message, the remote stack in `remoteStack` (Python's RemoteTraceback) and the local call site
// in `stack`.

export interface ErrorInfo {
  name: string;
  message: string;
  stack: string | undefined;
  /** Own enumerable properties that clone (`code`, `errno`, a user's fields). */
  props: Record<string, unknown> | undefined;
}

const BUILTIN: Record<string, new (message?: string) => Error> = {
  Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError,
};

/** In the process where it was thrown: what is sent of an error (or of anything thrown). */
export function errorInfo(err: unknown): ErrorInfo {
  if (!(err instanceof Error) && !(typeof err === 'object' && err !== null && 'message' in err)) {
    return { name: 'Error', message: `a non-Error value was thrown: ${String(err)}`, stack: undefined, props: { thrown: cloneable(err) } };
  }
  const e = err as Error;
  let props: Record<string, unknown> | undefined;
  for (const key of Object.keys(e)) {
    if (key === 'name' || key === 'message' || key === 'stack') continue;
    const value = cloneable((e as unknown as Record<string, unknown>)[key]);
    if (value !== undefined) (props ??= {})[key] = value;
  }
  return { name: String(e.name ?? 'Error'), message: String(e.message ?? ''), stack: typeof e.stack === 'string' ? e.stack : undefined, props };
}

function cloneable(value: unknown): unknown {
  if (value === null || ['string', 'number', 'boolean', 'bigint', 'undefined'].includes(typeof value)) return value;
  try {
    require('v8').serialize(value);
    return value;
  } catch {
    return undefined;
  }
}

/**
 * In the receiving process: an Error of the same name and message. `callSite` is an object whose
 * `stack` was captured where the call was made (Error.captureStackTrace).
 */
export function rebuildError(info: ErrorInfo, callSite: { stack?: string } | undefined): Error {
  const Ctor = Object.prototype.hasOwnProperty.call(BUILTIN, info.name) ? BUILTIN[info.name] : Error;
  const err = new Ctor(info.message);
  if (err.name !== info.name) Object.defineProperty(err, 'name', { value: info.name, configurable: true, writable: true, enumerable: false });
  if (info.props !== undefined) Object.assign(err, info.props);
  Object.defineProperty(err, 'remoteStack', { value: info.stack ?? `${info.name}: ${info.message}`, configurable: true, writable: true, enumerable: false });
  const local = callSite?.stack;
  const head = `${info.name}: ${info.message}`;
  const frames = local === undefined ? '' : local.slice(local.indexOf('\n') + 1);
  err.stack = frames === '' ? head : `${head}\n${frames}`;
  return err;
}

/** Captures the caller's stack cheaply (formatted only if an error needs it). */
export function captureCallSite(skip: Function): { stack?: string } {
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, skip);
  return site;
}
