// Target `plan`: the compiled-plan spec, the JSON the tracer hands to the binding's CompiledPlan
// (src/plan/trace.ts). Whatever the bytes, the constructor gives a plan or an Error starting with
// 'CompiledPlan'; a plan that is small enough then runs once on seeded values and must resolve or
// reject with such an Error too (never crash, hang or write past an array).
import { addon } from '../../src/native.js';
import type { Target } from '../engine.js';
import type { Prng } from '../prng.js';

/** Floats a run may touch in all (input, state, output): keeps every run well under a second. */
const RUN_LIMIT = 1 << 16;

const DICTIONARY = [
  '"operand"',
  '"src"',
  '"temp"',
  '"state"',
  '"input"',
  '"offset"',
  '"len"',
  '"tempLens"',
  '"stateLens"',
  '"conv2dForwardFused"',
  '"concatChannelsAffine"',
  '"batchNormFold"',
  '"reluInplace"',
  '"lrnForward"',
  '"sgdStep"',
  '"adamStep"',
  '"batchNorm2dForwardTrain"',
  '"crossEntropyForward"',
  '"maxPool2dForward"',
  '"splitChannels"',
  'null',
  '-1',
  '1e300',
  '4294967296',
].map((s) => new TextEncoder().encode(s));

const OPS = [
  'conv2dForward',
  'conv2dForwardFused',
  'maxPool2dForwardNoIndices',
  'avgPool2dForward',
  'adaptiveAvgPool2dForward',
  'linearForward',
  'activationForward',
  'reluInplace',
  'softmaxForward',
  'batchNorm2dForwardEval',
  'batchNormFold',
  'concatChannels',
  'concatChannelsAffine',
  'lrnForward',
  'broadcastBinary',
  'scale',
  // Int8 inference's.
  'quantizeU8',
  'dequantizeU8',
  'qconv2dForward',
  'maxPool2dU8',
  'avgPool2dU8',
  'adaptiveAvgPool2dU8',
  'addU8',
  'concatU8',
  'reluU8',
  // A training step's.
  'conv2dBackwardData',
  'conv2dBackwardWeight',
  'batchNorm2dForwardTrain',
  'batchNorm2dBackward',
  'maxPool2dForward',
  'maxPool2dBackward',
  'linearBackward',
  'activationBackward',
  'crossEntropyForward',
  'crossEntropyBackward',
  'dropoutForward',
  'dropoutBackward',
  'splitChannels',
  'accumulateGrad',
  'fill',
  'copy',
  'assertFinite',
  'clipGradNorm',
  'sgdStep',
  'adamStep',
  'rmspropStep',
  'adagradStep',
  'adadeltaStep',
];

/** A number near `v` or at an edge: what breaks sizes, offsets and counts. */
function nudge(v: number, rng: Prng): number {
  const picks = [v + 1, v - 1, v * 2, Math.floor(v / 2), 0, -1, 2 ** 31, 2 ** 53, 0.5, v + 16];
  return picks[rng.int(picks.length)];
}

/**
 * Structure-aware mutation: parse the spec and change one value (a number, an op name, an
 * operand's source), drop or duplicate one array element, or swap two steps. Null when the input
 * is not JSON.
 */
function mutateSpec(input: Uint8Array, rng: Prng): Uint8Array | null {
  let root: unknown;
  try {
    root = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return null;
  }
  // Every container and key in the tree, to pick one.
  const slots: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v))
      for (const [i, x] of v.entries()) {
        slots.push([v, i]);
        walk(x);
      }
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) {
        slots.push([v as Record<string, unknown>, k]);
        walk(x);
      }
  };
  walk(root);
  if (slots.length === 0) return null;
  const [box, key] = slots[rng.int(slots.length)];
  const get = (): unknown => (box as Record<string | number, unknown>)[key];
  const set = (x: unknown): void => {
    (box as Record<string | number, unknown>)[key] = x;
  };
  const v = get();
  const kind = rng.int(4);
  if (kind === 0 && Array.isArray(box) && typeof key === 'number') {
    if (rng.int(2) === 0) box.splice(key, 1);
    else box.splice(key, 0, structuredClone(box[key]));
  } else if (kind === 1 && Array.isArray(box) && box.length > 1) {
    const j = rng.int(box.length);
    [box[key as number], box[j]] = [box[j], box[key as number]];
  } else if (typeof v === 'number') set(nudge(v, rng));
  else if (typeof v === 'string')
    set(key === 'src' ? ['input', 'state', 'temp', 'other'][rng.int(4)] : OPS[rng.int(OPS.length)]);
  else if (typeof v === 'boolean') set(!v);
  else set([null, 0, 'relu', [], {}][rng.int(5)]);
  return new TextEncoder().encode(JSON.stringify(root));
}

function values(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin((i + 1) * 0.7 + seed);
  return a;
}

export function createTarget(): Target {
  return {
    name: 'plan',
    dictionary: DICTIONARY,
    isParserError: (message) => message.startsWith('CompiledPlan'),
    extension: () => 'json',
    mutate: (input, rng) => mutateSpec(input, rng),
    async execute(input) {
      const text = new TextDecoder().decode(input);
      const plan = new addon.CompiledPlan(text);
      // It parsed, so it is JSON with these fields (the binding checked them).
      const spec = JSON.parse(text) as { inputLens: number[]; stateLens: number[] };
      const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
      const total = sum(spec.inputLens) + sum(spec.stateLens) + sum(plan.outputLens);
      if (total > RUN_LIMIT || plan.arenaBytes > 4 * RUN_LIMIT) return;
      const inputs = spec.inputLens.map((n, k) => values(n, k));
      const state = spec.stateLens.map((n, k) => values(n, k + inputs.length));
      // A training step's plan writes the updated state into arrays of its own.
      const updated = plan.writtenState.map((k) => new Float32Array(spec.stateLens[k]));
      const outputs = () => plan.outputLens.map((n) => new Float32Array(n));
      if (updated.length) {
        await plan.run(inputs, state, outputs(), null, updated);
        return;
      }
      // An inference plan runs twice with content tokens: the first run prepares its conv and
      // linear weights, the second reuses them.
      const tokens = Float64Array.from(state, (_, k) => k + 1);
      await plan.run(inputs, state, outputs(), null, null, tokens);
      await plan.run(inputs, state, outputs(), null, null, tokens);
    },
  };
}
