import { Embedding } from '../nn/embedding.js';
import { Flatten } from '../nn/flatten.js';
import { GRU } from '../nn/gru.js';
import { Linear } from '../nn/linear.js';
import { Module } from '../nn/module.js';
import { Sequential } from '../nn/sequential.js';
import { Tanh } from '../nn/sigmoid.js';
import { noGrad } from '../autograd.js';
import { cat, reshape } from '../ops/elementwise.js';
import { gather } from '../ops/nd.js';
import { crossEntropy, logSoftmax } from '../ops/loss.js';
import { Tensor } from '../tensor.js';
import {
  addNoise,
  canvasBatch,
  checkSample,
  checkScale,
  checkSetOptions,
  digitPool,
  mnistDigits,
  paste,
  randomDigit,
  toBytes,
} from './canvas.js';
import type { TaskSet } from './train.js';
import { convPoolBlocks } from './transfer.js';

const DIGIT_WORDS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];
/** The vocabulary: padding, begin and end of sentence, the ten digit words, the relations. */
export const CAPTION_VOCAB = ['<pad>', '<bos>', '<eos>', ...DIGIT_WORDS, 'left', 'of', 'above'] as const;
export const PAD = 0;
export const BOS = 1;
export const EOS = 2;
const word = (w: string) => CAPTION_VOCAB.indexOf(w as (typeof CAPTION_VOCAB)[number]);
/** Longest caption in tokens, with its <eos>: "three left of seven <eos>". */
export const CAPTION_LENGTH = 5;

/** The words of a token sequence (up to <eos>, without <bos>/<pad>). */
export function captionText(tokens: ArrayLike<number>): string {
  const out: string[] = [];
  for (const t of Array.from(tokens)) {
    if (t === EOS) break;
    if (t !== PAD && t !== BOS) out.push(CAPTION_VOCAB[t] ?? `<${t}>`);
  }
  return out.join(' ');
}

export interface CaptionBatch {
  images: Tensor;
  /** Decoder inputs [N, L]: <bos> then the caption's first L - 1 tokens (teacher forcing). */
  inputs: Tensor;
  /** Targets [N * L]: the caption then <eos>, -100 (ignored) after it. */
  targets: Int32Array;
}

export class CaptionSet implements TaskSet<CaptionBatch> {
  constructor(
    readonly size: number,
    readonly pixels: Uint8Array,
    /** [N, CAPTION_LENGTH] token ids, <eos>-terminated, <pad> after. */
    readonly tokens: Uint8Array,
  ) {}

  get length(): number {
    return this.tokens.length / CAPTION_LENGTH;
  }

  /** Caption `i` as words. */
  caption(i: number): string {
    return captionText(this.tokens.subarray(i * CAPTION_LENGTH, (i + 1) * CAPTION_LENGTH));
  }

  batch(indices: ArrayLike<number>): CaptionBatch {
    const n = indices.length;
    const L = CAPTION_LENGTH;
    const inputs = new Float32Array(n * L);
    const targets = new Int32Array(n * L).fill(-100);
    for (let k = 0; k < n; k++) {
      const i = indices[k];
      checkSample('CaptionSet.batch', i, this.length);
      inputs[k * L] = BOS;
      for (let t = 0; t < L; t++) {
        const tok = this.tokens[i * L + t];
        if (tok === PAD) break;
        targets[k * L + t] = tok;
        if (t + 1 < L) inputs[k * L + t + 1] = tok;
      }
    }
    return { images: canvasBatch(this.pixels, this.size, indices), inputs: new Tensor(inputs, [n, L]), targets };
  }
}

/**
 * Canvases with two digits a and b, either side by side ("a left of b": a's ink ends left of
 * where b's begins) or stacked ("a above b"), each a random MNIST sample at a random side in
 * `scale`, with jitter and noise. The caption names the left (or upper) digit first, so every
 * canvas has exactly one right description.
 */
export function captionSet(opts: {
  count: number;
  size?: number;
  train?: boolean;
  seed?: number;
  scale?: [number, number];
  noise?: number;
  /** Only these digit classes (default all ten). */
  digits?: readonly number[];
  dir?: string;
}): CaptionSet {
  const size = opts.size ?? 64;
  const rng = checkSetOptions('captionSet', opts.count, size, 32, opts.seed ?? 0);
  const [lo, hi] = opts.scale ?? [Math.round((18 * size) / 64), Math.round((26 * size) / 64)];
  checkScale('captionSet', lo, hi, Math.floor(size / 2));
  const src = mnistDigits(opts.train ?? true, opts.dir);
  const pool = digitPool('captionSet', src, opts.digits);
  const plane = size * size;
  const pixels = new Uint8Array(opts.count * plane);
  const tokens = new Uint8Array(opts.count * CAPTION_LENGTH);
  const canvas = new Float32Array(plane);
  for (let i = 0; i < opts.count; i++) {
    canvas.fill(0);
    const horizontal = rng.next() < 0.5;
    const digits: number[] = [];
    for (let slot = 0; slot < 2; slot++) {
      const { index, side, patch } = randomDigit(src, pool, rng, lo, hi);
      // Slot 0 in the left (top) half, slot 1 in the other: the two inks never overlap.
      const half = size / 2;
      const along = Math.round(slot * half + rng.next() * (half - side));
      const across = rng.int(size - side + 1);
      paste(canvas, size, patch, side, side, horizontal ? along : across, horizontal ? across : along);
      digits.push(src.labels[index]);
    }
    addNoise(canvas, rng, opts.noise ?? 0.05);
    toBytes(canvas, pixels, i * plane);
    const words = horizontal
      ? [DIGIT_WORDS[digits[0]], 'left', 'of', DIGIT_WORDS[digits[1]]]
      : [DIGIT_WORDS[digits[0]], 'above', DIGIT_WORDS[digits[1]]];
    words.forEach((w, t) => {
      tokens[i * CAPTION_LENGTH + t] = word(w);
    });
    tokens[i * CAPTION_LENGTH + words.length] = EOS;
  }
  return new CaptionSet(size, pixels, tokens);
}

/**
 * Encoder-decoder captioner: a CNN (conv-BN-ReLU-maxpool blocks of 16, 32, 64, 64 channels, a
 * linear layer and tanh) turns the image into a feature vector that is both the GRU's first
 * state ("show and tell"'s init-inject) and, concatenated to each word embedding, part of every
 * step's input (par-inject), so the decoder can look at the image again for each word; a linear
 * layer scores the next word. forward(images [N, 1, S, S], inputs [N, L] token ids) returns
 * next-word logits [N * L, V] for teacher-forced training.
 */
export class CaptionNet extends Module {
  readonly encoder: Sequential;
  readonly embed: Embedding;
  readonly gru: GRU;
  readonly out: Linear;

  constructor(opts: { size?: number; hidden?: number; embedDim?: number } = {}) {
    super();
    const { size = 64, hidden = 128, embedDim = 32 } = opts;
    if (size % 16 !== 0) throw new Error(`CaptionNet: size must be a multiple of 16, got ${size}`);
    this.encoder = this.addModule(
      'encoder',
      new Sequential(
        ...convPoolBlocks(1, [16, 32, 64, 64]),
        new Flatten(),
        new Linear(64 * (size / 16) ** 2, hidden),
        new Tanh(),
      ),
    );
    this.embed = this.addModule('embed', new Embedding(CAPTION_VOCAB.length, embedDim));
    this.gru = this.addModule('gru', new GRU(embedDim + hidden, hidden, { batchFirst: true }));
    this.out = this.addModule('out', new Linear(hidden, CAPTION_VOCAB.length));
  }

  forward(images: Tensor, inputs?: Tensor): Tensor {
    if (!inputs)
      throw new Error('CaptionNet: forward needs the decoder inputs [N, L]; use caption() to describe images');
    const h0 = this.encoder.call(images);
    const [n, L] = inputs.shape;
    const hidden = this.gru.hiddenSize;
    const feature = gather(reshape(h0, [n, 1, hidden]), 1, new Array(L).fill(0), [L]);
    const states = this.gru.forward(cat([this.embed.call(inputs), feature], 2), h0);
    return this.out.call(reshape(states, [n * L, hidden]));
  }

  /**
   * Captions for `images`: greedy (beamWidth 1, default) or beam search keeping the `beamWidth`
   * most probable partial captions (sum of word log-probabilities) until each ends or
   * `maxLength` tokens. Returns token ids per image (with <eos> when it was reached).
   */
  caption(images: Tensor, opts: { beamWidth?: number; maxLength?: number } = {}): number[][] {
    const beam = opts.beamWidth ?? 1;
    const maxLength = opts.maxLength ?? CAPTION_LENGTH + 2;
    if (!Number.isInteger(beam) || beam < 1)
      throw new Error(`caption: beamWidth must be a positive integer, got ${beam}`);
    const wasTraining = this.training;
    this.eval();
    try {
      return noGrad(() => {
        const h0 = this.encoder.call(images);
        const n = images.shape[0];
        const hidden = this.gru.hiddenSize;
        const out: number[][] = [];
        for (let i = 0; i < n; i++) {
          const h = new Tensor(h0.data.slice(i * hidden, (i + 1) * hidden), [1, hidden]);
          out.push(this.search(h, beam, maxLength));
        }
        return out;
      });
    } finally {
      if (wasTraining) this.train();
    }
  }

  private search(h0: Tensor, width: number, maxLength: number): number[] {
    const feature = h0.data.slice();
    interface Hyp {
      tokens: number[];
      logp: number;
      h: Float32Array;
      done: boolean;
    }
    const hidden = this.gru.hiddenSize;
    let beams: Hyp[] = [{ tokens: [], logp: 0, h: h0.data, done: false }];
    for (let t = 0; t < maxLength && beams.some((b) => !b.done); t++) {
      const live = beams.filter((b) => !b.done);
      const prev = live.map((b) => (b.tokens.length ? b.tokens[b.tokens.length - 1] : BOS));
      const h = new Tensor(new Float32Array(live.length * hidden), [live.length, hidden]);
      live.forEach((b, k) => {
        h.data.set(b.h, k * hidden);
      });
      const e = this.embed.call(new Tensor(Float32Array.from(prev), [live.length]));
      const f = new Tensor(new Float32Array(live.length * hidden), [live.length, hidden]);
      for (let k = 0; k < live.length; k++) f.data.set(feature, k * hidden);
      const next = this.gru.step(cat([e, f], 1), h);
      const logp = logSoftmax(this.out.call(next));
      const v = CAPTION_VOCAB.length;
      const candidates: Hyp[] = beams.filter((b) => b.done);
      live.forEach((b, k) => {
        const row = logp.data.subarray(k * v, (k + 1) * v);
        const order = Array.from(row.keys())
          .sort((x, y) => row[y] - row[x])
          .slice(0, width);
        for (const tok of order) {
          candidates.push({
            tokens: [...b.tokens, tok],
            logp: b.logp + row[tok],
            h: next.data.slice(k * hidden, (k + 1) * hidden),
            done: tok === EOS,
          });
        }
      });
      beams = candidates.sort((x, y) => y.logp - x.logp).slice(0, width);
    }
    return beams[0].tokens;
  }
}

/** Per-word cross-entropy of teacher-forced logits [N * L, V] (padding ignored). */
export function captionLoss(logits: Tensor, batch: { targets: Int32Array }): Tensor {
  return crossEntropy(logits, batch.targets, { ignoreIndex: -100 });
}

function ngrams(words: string[], n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= words.length; i++) {
    const g = words.slice(i, i + n).join(' ');
    m.set(g, (m.get(g) ?? 0) + 1);
  }
  return m;
}

/**
 * Corpus BLEU-4 (Papineni et al. 2002) with one reference per candidate: the geometric mean of
 * the clipped 1- to 4-gram precisions pooled over the corpus, times the brevity penalty
 * exp(1 - r/c) when the candidates are shorter in total (c < r). No smoothing: 0 if any order
 * has no match, as NLTK's corpus_bleu.
 */
export function bleu4(candidates: readonly string[], references: readonly string[]): number {
  if (candidates.length !== references.length) {
    throw new Error(`bleu4: ${candidates.length} candidates but ${references.length} references`);
  }
  const matched = [0, 0, 0, 0];
  const total = [0, 0, 0, 0];
  let c = 0;
  let r = 0;
  for (let i = 0; i < candidates.length; i++) {
    const cand = candidates[i].split(' ').filter(Boolean);
    const ref = references[i].split(' ').filter(Boolean);
    c += cand.length;
    r += ref.length;
    for (let n = 1; n <= 4; n++) {
      const cg = ngrams(cand, n);
      const rg = ngrams(ref, n);
      for (const [g, k] of cg) matched[n - 1] += Math.min(k, rg.get(g) ?? 0);
      total[n - 1] += Math.max(0, cand.length - n + 1);
    }
  }
  if (matched.some((m) => m === 0) || c === 0) return 0;
  const logPrecision = matched.reduce((s, m, i) => s + Math.log(m / total[i]), 0) / 4;
  const brevity = c < r ? Math.exp(1 - r / c) : 1;
  return brevity * Math.exp(logPrecision);
}

/** Captions the whole set and scores exact match and BLEU-4 against the true captions. */
export function evaluateCaptions(
  model: CaptionNet,
  set: CaptionSet,
  opts: { beamWidth?: number; batchSize?: number } = {},
): { exactMatch: number; bleu4: number; captions: string[] } {
  const bs = opts.batchSize ?? 250;
  const captions: string[] = [];
  for (let at = 0; at < set.length; at += bs) {
    const idx = Array.from({ length: Math.min(bs, set.length - at) }, (_, k) => at + k);
    for (const t of model.caption(set.batch(idx).images, { beamWidth: opts.beamWidth })) captions.push(captionText(t));
  }
  const refs = Array.from({ length: set.length }, (_, i) => set.caption(i));
  const exact = captions.reduce((n, c, i) => n + (c === refs[i] ? 1 : 0), 0) / set.length;
  return { exactMatch: exact, bleu4: bleu4(captions, refs), captions };
}
