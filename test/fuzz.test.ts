// The short fuzzing pass CI runs: every fuzz target in-process for a few thousand inputs (the
// same engine, corpus and seeded inputs as `npm run fuzz`, which runs the long passes), with no
// crash and no hang allowed. A failure lists each distinct finding; rerun it with
// `npm run fuzz -- --target <name> --seed 1 --from <index> --iterations 1` (reproducer files go
// to fuzz/crashes/). A synchronous hang is ended by the engine's watchdog, which kills this test
// process and prints the input's index.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FUZZ_DIR, fuzzInProcess, findingLines, runOne, summaryLine } from '../fuzz/engine.js';
import { createTarget } from '../fuzz/targets/index.js';

/**
 * Inputs per target: about 1-3 s each on one busy core. Checkpoint runs last: if its watchdog
 * has to kill the process, the other targets' results are in already.
 */
const BUDGET: Record<string, number> = {
  safetensors: 2000,
  idx: 5000,
  'image-folder': 600,
  plan: 3000,
  onnx: 3000,
  torch: 3000,
  caffe: 3000,
  'caffe-solver': 1500,
  tfjs: 1500,
  // Slow by design: hostile HDF5 files run into the reader's 1.5 s timeout and a fresh worker.
  keras: 25,
  checkpoint: 1500,
  quantized: 1500,
  'tune-cache': 3000,
};

describe('fuzz (short pass)', () => {
  for (const [name, iterations] of Object.entries(BUDGET)) {
    it(`${name}: ${iterations} inputs, no crash, no hang`, async () => {
      const target = await createTarget(name);
      try {
        const s = await fuzzInProcess(target, { iterations, seed: 1, timeoutMs: 3000, watchdogMs: 10_000 });
        const report = [summaryLine(s), ...findingLines(s)].join('\n');
        expect(s.iterations, report).toBe(iterations);
        expect(s.counts.crash, report).toBe(0);
        expect(s.counts.hang, report).toBe(0);
      } finally {
        target.close?.();
      }
    });
  }
});

/**
 * Every input a fuzz run once found crashing or hanging, kept in fuzz/regressions/<target>/
 * (with the note the run wrote beside it): each must now parse or fail with a clean Error.
 */
describe('fuzz regressions', () => {
  const root = join(FUZZ_DIR, 'regressions');
  for (const name of readdirSync(root).sort()) {
    const files = readdirSync(join(root, name))
      .filter((f) => !f.endsWith('.txt'))
      .sort();
    it(`${name}: ${files.length} past findings give ok or a clean Error`, async () => {
      const target = await createTarget(name);
      try {
        for (const file of files) {
          const r = await runOne(target, new Uint8Array(readFileSync(join(root, name, file))), 3000);
          expect(['ok', 'error'], `${file}: ${r.outcome}: ${r.message}`).toContain(r.outcome);
        }
      } finally {
        target.close?.();
      }
    });
  }
});
