// PyTorch checkpoints (src/io/torch.ts, src/io/pickle.ts): files written by Debian's torch at test
// time (test/fixtures/gen_torch_pth.py) in torch.save's zip and legacy formats, every dtype and
// view, wrapped and DataParallel state dicts, and a ResNet-18 whose loaded weights must give
// torch's logits; then hostile files built here, each an Error naming what is wrong.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync, zipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { models, noGrad, readTorch, Tensor } from '../src/index.js';
import { readTorchObject } from '../src/io/torch.js';
import { hasPython, PYTHON, thrown } from './helpers.js';

const hasTorch = hasPython('torch', 'torchvision');

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-pth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Reference {
  logits: number[];
  logits_shape: number[];
  resnet18_keys: number;
  small: Record<string, { shape: number[]; values: number[] }>;
}

describe.skipIf(!hasTorch)('readTorch: files written by torch.save', () => {
  let ref: Reference;
  beforeAll(() => {
    execFileSync(PYTHON, [join(__dirname, 'fixtures', 'gen_torch_pth.py'), dir], { stdio: 'pipe' });
    ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
  }, 120_000);

  it.each(['small.pth', 'small-legacy.pth'])('%s: every dtype and view, value for value', (file) => {
    const sd = readTorch(join(dir, file));
    expect([...sd.keys()].sort()).toEqual(Object.keys(ref.small).sort());
    for (const [name, want] of Object.entries(ref.small)) {
      const t = sd.get(name) as Tensor;
      expect(t.shape, name).toEqual(want.shape);
      // float32 of the value torch holds (exact: f16, bf16 and the integers convert exactly).
      expect(Array.from(t.data), name).toEqual(want.values.map(Math.fround));
    }
  });

  it.each(['resnet18.pth', 'resnet18-legacy.pth', 'wrapped.pth', 'dataparallel.pth'])(
    '%s loads into the zoo ResNet-18 and gives torch logits',
    (file) => {
      const net = models.resnet18().load(join(dir, file));
      net.eval();
      const n = 2 * 3 * 64 * 64;
      const x = new Tensor(
        Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.01)),
        [2, 3, 64, 64],
      );
      const y = noGrad(() => net.call(x));
      expect(y.shape).toEqual(ref.logits_shape);
      let worst = 0;
      const scale = Math.max(...ref.logits.map(Math.abs));
      ref.logits.forEach((w, i) => {
        worst = Math.max(worst, Math.abs(y.data[i] - w) / scale);
      });
      expect(worst).toBeLessThan(1e-5);
      expect(readTorch(join(dir, file)).size).toBe(ref.resnet18_keys);
    },
    60_000,
  );

  it('reads bytes as well as paths, and keeps the whole object for readTorchObject', () => {
    const bytes = new Uint8Array(readFileSync(join(dir, 'wrapped.pth')));
    const obj = readTorchObject(bytes) as Map<string, unknown>;
    expect(obj.get('epoch')).toBe(3);
    expect(obj.get('arch')).toBe('resnet18');
    expect(obj.get('best_acc1')).toBe(0.5);
    expect(readTorch(bytes).get('conv1.weight')?.shape).toEqual([64, 3, 7, 7]);
  });

  it('a storage shorter than its tensors, and a truncated archive, are Errors', () => {
    const files = unzipSync(new Uint8Array(readFileSync(join(dir, 'small.pth'))));
    const key = Object.keys(files).find((k) => /\/data\/\d+$/.test(k)) as string;
    files[key] = files[key].subarray(0, 2);
    const short = zipSync(files, { level: 0 });
    expect(thrown(() => readTorch(short)).message).toMatch(/^readTorch <buffer>: storage \d+ holds 2 bytes/);
    const whole = readFileSync(join(dir, 'small.pth'));
    expect(thrown(() => readTorch(whole.subarray(0, whole.length >> 1))).message).toMatch(/^readTorch <buffer>: /);
    // Storage keys are addresses, so which storage comes last (and where 7 bytes cut) varies.
    const legacy = readFileSync(join(dir, 'small-legacy.pth'));
    expect(thrown(() => readTorch(legacy.subarray(0, legacy.length - 7))).message).toMatch(
      /runs past the end|truncated before storage/,
    );
  });
});

/** Pickle bytes from opcodes (numbers) and raw text (strings, latin-1). */
function pickle(...parts: (number | string)[]): Uint8Array {
  const out: number[] = [0x80, 2];
  for (const p of parts) {
    if (typeof p === 'number') out.push(p);
    else for (const c of p) out.push(c.charCodeAt(0));
  }
  out.push(0x2e); // STOP
  return Uint8Array.from(out);
}
const str = (s: string) => String.fromCharCode(0x8c, s.length) + s; // SHORT_BINUNICODE
const inZip = (pkl: Uint8Array) => zipSync({ 'archive/data.pkl': pkl, 'archive/version': new Uint8Array([0x33]) });

describe('readTorch: hostile files', () => {
  it('refuses any global but the tensor rebuilds, naming it, and never calls it', () => {
    const system = pickle('cos\nsystem\n(', str('echo pwned'), 't', 'R');
    expect(thrown(() => readTorch(inZip(system))).message).toMatch(/os\.system is not allowed/);
    const evil = pickle('cbuiltins\neval\n', str('1+1'), 0x85, 'R');
    expect(thrown(() => readTorch(inZip(evil))).message).toMatch(/builtins\.eval is not allowed/);
    // A whole pickled model: a clear pointer to state_dict().
    const module = pickle('ctorch.nn.modules.linear\nLinear\n)', 0x81);
    expect(thrown(() => readTorch(inZip(module))).message).toMatch(/pickled module, not a state dict/);
  });

  it('malformed pickles and archives are Errors naming the problem', () => {
    const cases: [Uint8Array, RegExp][] = [
      [inZip(pickle('R')), /stack underflow/],
      [inZip(pickle(0x68, 5)), /memo key 5 was never stored/],
      [inZip(pickle(0xff)), /unsupported opcode 0xff/],
      [inZip(pickle(0x58, 0xff, 0xff, 0xff, 0x7f)), /truncated/],
      [inZip(pickle(')', ')', 0x62)), /BUILD on something that is not a dict/],
      [zipSync({ 'archive/other': new Uint8Array(3) }), /no data\.pkl/],
      [Uint8Array.of(0x50, 0x4b, 0x03, 0x04, 1, 2, 3), /not a readable zip archive/],
      [Uint8Array.of(1, 2, 3), /^readTorch <buffer>: /],
      [inZip(pickle(']', 'K', 1, 'a')), /no state dict of tensors/],
    ];
    for (const [bytes, want] of cases) expect(thrown(() => readTorch(bytes)).message).toMatch(want);
  });

  it('a file that is not there is an Error naming it', () => {
    const path = join(dir, 'missing.pth');
    expect(thrown(() => readTorch(path)).message).toContain(path);
    writeFileSync(join(dir, 'empty.pth'), new Uint8Array(0));
    expect(thrown(() => readTorch(join(dir, 'empty.pth'))).message).toMatch(/^readTorch .*empty\.pth: /);
  });
});
