// Target `tune-cache`: a conv tuning cache file (FERROCONV_TUNE_CACHE) through setTuneCache.
// '@CPU@' in an input stands for this machine's CPU name, so the seeds' entries load on any
// machine. A cache is only a hint: every malformed line must be skipped (counted, never
// thrown), and what loads must be a choice the tuner could have made.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clearConvTuning, convTuning, info, setTuneCache } from '../../src/index.js';
import { InvariantError, type Target } from '../engine.js';
import { utf8 } from '../mutate.js';

const ALGO = /^(direct|fft|winograd|im2col(:(indirect|gemm|as-forward|col2im|shifted|lowered))?)$/;
const PASSES = new Set(['forward', 'forward-prepared', 'backward-data', 'backward-weight']);
const WORDS = [
  '@CPU@',
  '\t',
  '\n',
  ',',
  '=',
  'avx512',
  'avx2+fma',
  'scalar',
  'forward',
  'forward-prepared',
  'backward-data',
  'backward-weight',
  'im2col',
  'im2col:gemm',
  'im2col:indirect',
  'im2col:col2im',
  'im2col:as-forward',
  'im2col:shifted',
  'im2col:lowered',
  'winograd',
  'fft',
  'direct',
  '1e-4',
  'NaN',
  '18446744073709551615',
  '# ferroconv conv tuning cache v1',
];

export function createTarget(): Target {
  const dir = mkdtempSync(join(tmpdir(), 'ferroconv-fuzz-tune-'));
  const path = join(dir, 'tune.tsv');
  const cpu = utf8(info().cpu);
  return {
    name: 'tune-cache',
    dictionary: WORDS.map(utf8),
    isParserError: (message) => message.startsWith('tune cache: '),
    extension: () => 'tsv',
    execute(input) {
      const bytes: number[] = [];
      for (let i = 0; i < input.length; i++) {
        if (
          input[i] === 0x40 &&
          input[i + 4] === 0x40 &&
          new TextDecoder().decode(input.subarray(i, i + 5)) === '@CPU@'
        ) {
          bytes.push(...cpu);
          i += 4;
        } else bytes.push(input[i]);
      }
      writeFileSync(path, Uint8Array.from(bytes));
      clearConvTuning();
      try {
        const { loaded, skipped } = setTuneCache(path);
        const lines = new TextDecoder().decode(Uint8Array.from(bytes)).split('\n').length;
        if (!(loaded >= 0 && skipped >= 0 && loaded + skipped <= lines))
          throw new InvariantError(`setTuneCache: ${loaded} loaded + ${skipped} skipped of ${lines} lines`);
        for (const t of convTuning()) {
          if (!ALGO.test(t.algo) || !ALGO.test(t.rule) || !PASSES.has(t.pass) || t.inputShape.length !== 4)
            throw new InvariantError(`convTuning: an impossible entry loaded: ${JSON.stringify(t)}`);
        }
        if (convTuning().length > loaded) throw new InvariantError('convTuning: more entries than loaded');
      } finally {
        setTuneCache(null);
        clearConvTuning();
      }
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
