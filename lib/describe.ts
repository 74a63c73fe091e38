// How error messages name a value they refuse.
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'null prototype'})`;
  return String(value);
}

/** An options argument: undefined or null is {}, anything but an object a TypeError naming the caller. */
export function optionsOf(options: unknown, caller: string): Record<string, unknown> {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeError(`${caller}: options must be an object, got ${describe(options)}`);
  return options as Record<string, unknown>;
}
