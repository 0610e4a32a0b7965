// A restricted reader of Python's pickle format (protocols 0 to 5), for PyTorch checkpoints.
//
// Written here rather than taken from a package: a pickle is a program for a stack machine whose
// GLOBAL and REDUCE opcodes call arbitrary Python functions, and reading torch.save's files
// safely means deciding, opcode by opcode, what a call may do. This reader never calls anything
// it was not given: GLOBAL yields a name, and REDUCE / NEWOBJ / BUILD on a name succeed only when
// the caller's `call` handler accepts that name (torch's tensor-rebuild functions, say); any
// other name is an Error naming it. Nothing is imported, evaluated or executed.
//
// Values: None -> null, bool, int -> number (or bigint beyond 2^53), float, str -> string,
// bytes -> Uint8Array, tuple and list -> array, dict -> Map, set -> array. Every read is bounds
// checked, so a truncated or hostile file gives an Error, never a crash or a huge allocation.

/** A global (module, name) a pickle refers to, before anything is done with it. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

export interface UnpickleOptions {
  /**
   * Calls `fn(...args)` for REDUCE and NEWOBJ of a global: returns the value, or throws for a
   * global that is not allowed. Never given anything but PickleGlobal callees.
   */
  call: (fn: PickleGlobal, args: unknown[]) => unknown;
  /** Resolves a persistent id (BINPERSID / PERSID): torch's storages. */
  persistentLoad?: (pid: unknown) => unknown;
  /** What the errors call the input. */
  what: string;
}

class Reader {
  pos: number;
  constructor(
    readonly bytes: Uint8Array,
    start: number,
    readonly fail: (msg: string) => never,
  ) {
    this.pos = start;
  }
  need(n: number): number {
    if (n < 0 || this.pos + n > this.bytes.length) this.fail(`truncated at byte ${this.pos} (needs ${n} more)`);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8(): number {
    return this.bytes[this.need(1)];
  }
  view(n: number): DataView {
    const at = this.need(n);
    return new DataView(this.bytes.buffer, this.bytes.byteOffset + at, n);
  }
  slice(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }
  /** A length field of `width` bytes (little-endian, unsigned). */
  len(width: 1 | 4 | 8): number {
    if (width === 1) return this.u8();
    if (width === 4) return this.view(4).getUint32(0, true);
    const v = this.view(8).getBigUint64(0, true);
    if (v > BigInt(this.bytes.length)) this.fail(`a length of ${v} bytes is past the end of the input`);
    return Number(v);
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) this.fail(`truncated at byte ${this.pos} (a text argument without its newline)`);
    const s = new TextDecoder('latin1').decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Little-endian two's complement integer of `b` (LONG1 / LONG4), as a number when it fits. */
function longFrom(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function textInt(s: string, fail: (m: string) => never): number | bigint | boolean {
  const t = s.replace(/L$/, '');
  if (t === '00') return false;
  if (t === '01') return true;
  if (!/^[-+]?\d+$/.test(t)) fail(`'${s}' is not an integer`);
  const v = BigInt(t);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Most memo entries and stack depth a pickle may build: bounded by its length anyway. */
const MAX_MARKS = 1 << 20;

/**
 * Reads one pickle starting at `start` of `bytes`; returns its value and the offset just after
 * its STOP opcode (torch's legacy format writes several pickles back to back).
 */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions, start = 0): { value: unknown; end: number } {
  const fail = (msg: string): never => {
    throw new Error(`${opts.what}: pickle: ${msg}`);
  };
  const r = new Reader(bytes, start, fail);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK to pop to');
    return stack.splice(m as number);
  };
  const call = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof PickleGlobal)) return fail('REDUCE of something that is not a global');
    if (!Array.isArray(args)) return fail(`${fn.qualified}: arguments are not a tuple`);
    return opts.call(fn, args);
  };
  const setItems = (target: unknown, items: unknown[]) => {
    if (!(target instanceof Map)) fail('SETITEM(S) on something that is not a dict');
    if (items.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i];
      if (typeof k === 'object' && k !== null) fail('a dict key that is not a string, number or bool');
      (target as Map<unknown, unknown>).set(k, items[i + 1]);
    }
  };
  const append = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) fail('APPEND(S) on something that is not a list');
    for (const it of items) (target as unknown[]).push(it);
  };

  for (;;) {
    const at = r.pos;
    const op = r.u8();
    switch (op) {
      case 0x80: // PROTO
        if (r.u8() > 5) fail('protocol above 5');
        break;
      case 0x95: // FRAME
        r.need(8);
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) fail(`STOP with ${stack.length} values on the stack`);
        return { value: stack[0], end: r.pos };
      case 0x28: // MARK
        if (marks.length >= MAX_MARKS) fail('too many nested MARKs');
        marks.push(stack.length);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: // TUPLE
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x91: // FROZENSET
        stack.push(popMark());
        break;
      case 0x64: {
        // DICT
        const items = popMark();
        const d = new Map();
        setItems(d, items);
        stack.push(d);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x71: // BINPUT
        memo.set(r.u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(r.len(4), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x70: // PUT
        memo.set(Number(textInt(r.line(), fail)), top());
        break;
      case 0x68: // BINGET
      case 0x6a: // LONG_BINGET
      case 0x67: {
        // GET
        const k = op === 0x68 ? r.u8() : op === 0x6a ? r.len(4) : Number(textInt(r.line(), fail));
        if (!memo.has(k)) fail(`memo key ${k} was never stored`);
        stack.push(memo.get(k));
        break;
      }
      case 0x58: // BINUNICODE
      case 0x8c: // SHORT_BINUNICODE
      case 0x8d: {
        // BINUNICODE8
        const raw = r.slice(r.len(op === 0x8c ? 1 : op === 0x58 ? 4 : 8));
        try {
          stack.push(utf8.decode(raw));
        } catch {
          fail(`invalid UTF-8 in a string at byte ${at}`);
        }
        break;
      }
      case 0x56: // UNICODE (raw-unicode-escape, one line)
      case 0x53: // STRING (quoted, one line)
        stack.push(op === 0x53 ? r.line().replace(/^(['"])(.*)\1$/, '$2') : r.line());
        break;
      case 0x54: // BINSTRING
      case 0x55: {
        // SHORT_BINSTRING: Python 2 str, read as latin-1
        const n = r.len(op === 0x55 ? 1 : 4);
        stack.push(new TextDecoder('latin1').decode(r.slice(n)));
        break;
      }
      case 0x42: // BINBYTES
      case 0x43: // SHORT_BINBYTES
      case 0x8e: // BINBYTES8
      case 0x96: {
        // BYTEARRAY8
        const n = r.len(op === 0x43 ? 1 : op === 0x42 ? 4 : 8);
        stack.push(r.slice(n));
        break;
      }
      case 0x4a: // BININT
        stack.push(r.view(4).getInt32(0, true));
        break;
      case 0x4b: // BININT1
        stack.push(r.u8());
        break;
      case 0x4d: // BININT2
        stack.push(r.view(2).getUint16(0, true));
        break;
      case 0x8a: // LONG1
        stack.push(longFrom(r.slice(r.len(1))));
        break;
      case 0x8b: // LONG4
        stack.push(longFrom(r.slice(r.len(4))));
        break;
      case 0x49: // INT
      case 0x4c: // LONG
        stack.push(textInt(r.line(), fail));
        break;
      case 0x47: // BINFLOAT (big-endian double)
        stack.push(r.view(8).getFloat64(0, false));
        break;
      case 0x46: {
        // FLOAT
        const s = r.line();
        const v = Number(s);
        if (Number.isNaN(v) && !/nan/i.test(s)) fail(`'${s}' is not a float`);
        stack.push(v);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x63: {
        // GLOBAL
        const module = r.line();
        stack.push(new PickleGlobal(module, r.line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL of something not a string');
        stack.push(new PickleGlobal(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x81: {
        // NEWOBJ
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        if (!(kwargs instanceof Map) || kwargs.size) fail('NEWOBJ_EX with keyword arguments');
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: {
        // BUILD: state onto an object. Only dicts take it (an OrderedDict's attributes, such as
        // a state dict's _metadata, which nothing here needs); anything else is refused.
        const state = pop();
        const obj = top();
        if (!(obj instanceof Map)) fail('BUILD on something that is not a dict');
        if (state !== null && !(state instanceof Map) && !Array.isArray(state))
          fail('BUILD with a state that is not a dict');
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail('a persistent id, and none are expected here');
        stack.push(opts.persistentLoad?.(pid));
        break;
      }
      case 0x50: {
        // PERSID
        const pid = r.line();
        if (!opts.persistentLoad) fail('a persistent id, and none are expected here');
        stack.push(opts.persistentLoad?.(pid));
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x90: {
        // ADDITEMS (to a set)
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x30: // POP
        if (marks.length && stack.length === marks[marks.length - 1]) marks.pop();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      default:
        fail(`unsupported opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at}`);
    }
  }
}
