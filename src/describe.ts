// How an untrusted value (from a parsed file, or a user's argument) appears in an error message:
// short whatever its size or depth, and never throwing. A template string would call the value's
// toString/valueOf, which a parsed object can replace with non-functions ({"toString": 1} makes
// `${v}` throw a TypeError), and would print a million-element array in full.

/** `3`, `"abc"`, `null`, `[1, 2, …5 items]`, `an object`. */
export function describe(v: unknown, depth = 0): string {
  if (Array.isArray(v)) {
    if (depth >= 2) return `[…${v.length} items]`;
    const shown = v.slice(0, 6).map((x) => describe(x, depth + 1));
    return `[${shown.join(', ')}${v.length > 6 ? `, …${v.length} items` : ''}]`;
  }
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (typeof v === 'function') return 'a function';
  if (v === null || typeof v !== 'object') return String(v);
  return 'an object';
}
