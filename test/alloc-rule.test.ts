// The allocation rule of src/tensor.ts: op outputs and scratch buffers in src/ops, src/nn,
// src/models, src/optim and src/train come from uninitialized(n, op) (fully overwritten) or
// allocate(n, op) (read before written, accumulated into, or zero by meaning), never from
// `new Float32Array` directly. The few exceptions are listed here, each with its reason.
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIRS = ['src/ops', 'src/nn', 'src/models', 'src/optim', 'src/train'];
const PATTERN = /new\s+Float32Array\s*\(/;

interface Allowed {
  file: string;
  /** Every flagged line of `file` containing this text is allowed. */
  text: string;
  reason: string;
}

const ALLOWED: Allowed[] = [
  {
    file: 'src/ops/loss.ts',
    text: 'new Float32Array([',
    reason: 'a reduced loss: a one-element array of the value, not a buffer sized for a kernel',
  },
  {
    file: 'src/ops/elementwise.ts',
    text: 'new Float32Array([',
    reason: 'sum and mean: a one-element array of the value, not a buffer sized for a kernel',
  },
];

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.isFile() && extname(entry.name) === '.ts') out.push(path);
  }
  return out.sort();
}

/** `file:line: code` for every `new Float32Array(` in code (not comments) under `dirs`. */
function float32Allocations(dirs: readonly string[] = DIRS): { file: string; line: number; code: string }[] {
  const found: { file: string; line: number; code: string }[] = [];
  for (const dir of dirs) {
    for (const path of sourceFiles(join(ROOT, dir))) {
      const file = relative(ROOT, path).split('\\').join('/');
      readFileSync(path, 'utf8')
        .split(/\r?\n/)
        .forEach((text, i) => {
          const code = text.trim();
          if (code.startsWith('//') || code.startsWith('*') || code.startsWith('/*')) return;
          if (PATTERN.test(code)) found.push({ file, line: i + 1, code });
        });
    }
  }
  return found;
}

describe('allocation rule', () => {
  const found = float32Allocations();
  const allowedBy = (f: { file: string; code: string }) =>
    ALLOWED.find((a) => a.file === f.file && f.code.includes(a.text));

  it('allocates op outputs through uninitialized/allocate, not new Float32Array', () => {
    const offending = found.filter((f) => !allowedBy(f)).map((f) => `${f.file}:${f.line}: ${f.code}`);
    expect(
      offending,
      'use uninitialized(n, op) for outputs written in full, allocate(n, op) otherwise (see src/tensor.ts)',
    ).toEqual([]);
  });

  it('has no stale allow-list entries, and a reason for each', () => {
    for (const a of ALLOWED) {
      expect(a.reason.length, `${a.file}: ${a.text}`).toBeGreaterThan(10);
      expect(
        found.some((f) => allowedBy(f) === a),
        `allow-list entry ${a.file} "${a.text}" matches nothing`,
      ).toBe(true);
    }
  });
});
