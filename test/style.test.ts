// House style: no line of the TypeScript sources in src/ is over 120 characters. Biome formats to
// that width, but it cannot break a long string or comment and has no max-line-length rule.
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAX_LINE = 120;
const SOURCE = new Set(['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs']);

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    // Generated code (protobuf, DESIGN.md house style 8) is the generator's to format.
    if (entry.isDirectory() && entry.name !== 'gen') out.push(...sourceFiles(path));
    else if (entry.isFile() && SOURCE.has(extname(entry.name))) out.push(path);
  }
  return out.sort();
}

/** `file:line (length)` for every line of `files` longer than `max` characters (code points). */
function longLines(files: string[], max = MAX_LINE): string[] {
  const found: string[] = [];
  for (const file of files) {
    readFileSync(file, 'utf8')
      .split(/\r?\n/)
      .forEach((line, i) => {
        const length = [...line].length;
        if (length > max) found.push(`${relative(ROOT, file)}:${i + 1} (${length})`);
      });
  }
  return found;
}

describe('house style', () => {
  it(`keeps every line in src/ within ${MAX_LINE} characters`, () => {
    const files = sourceFiles(join(ROOT, 'src'));
    expect(files.length).toBeGreaterThan(0);
    expect(longLines(files), 'lines over the limit (wrap the string or comment by hand)').toEqual([]);
  });
});
