// Pictures of what a CNN learned and looks at, written as PNG: the first layer's filters as a
// grid, the feature maps of a named layer, class saliency by Grad-CAM (Selvaraju et al. 2017:
// the layer's maps weighted by the mean gradient of the class score over each map, ReLU, blended
// as a heat map over the image) and by input gradients (Simonyan et al. 2014: |d score / d
// pixel|, the maximum over colour channels), and a unit's receptive field drawn on the image.
// Layers are named by their state-dict path ('layer4', 'features.0'); a layer called several
// times in one forward is taken at its last call. The model runs eagerly in eval mode with
// inference fusion off (so every layer's call is seen); modes and fusion are put back after.
import { noGrad } from '../autograd.js';
import { describe } from '../describe.js';
import { type Module, observeCalls } from '../nn/module.js';
import { callPath, inspecting, relativePath } from './common.js';
import { Conv2d } from '../nn/conv2d.js';
import { interpolate } from '../ops/interpolate.js';
import { Tensor } from '../tensor.js';
import { drawGrid, heatColor, imagePlanes, imageTile, normalize, type Tile } from './image.js';
import { type FilterOptions, filter, forDisplay, isZeroSum, type KernelName, kernelNames } from './kernels.js';
import { summary } from './summary.js';

/** A picture written to `path`, and its size in pixels. */
export interface Picture {
  path: string;
  width: number;
  height: number;
}

export interface ModelInputOptions {
  /** Turns the [1, C, H, W] image in [0, 1] into the model's input (e.g. ImageNet normalisation). */
  preprocess?: (image: Tensor) => Tensor;
}

export interface SaliencyOptions extends ModelInputOptions {
  /** The class to explain (default: the model's top class for this image). */
  classIndex?: number;
  /** Class names for the caption. */
  classes?: readonly string[];
}

/** Runs `fn` on `model` in eval mode, fusion off, parameters frozen (common.ts inspecting). */
const looking = <T>(model: Module, fn: () => T): T => inspecting(model, { training: false, freeze: true }, fn);

/** Each layer call of one eval forward: its path and output shape (no gradient kept). */
function layerCalls(model: Module, x: Tensor): { path: string; shape: number[] }[] {
  const calls: { path: string; shape: number[] }[] = [];
  const rel = relativePath(model);
  looking(model, () =>
    noGrad(() =>
      observeCalls(
        {
          exit(m, _ins, y, step) {
            if (y instanceof Tensor) calls.push({ path: callPath(rel(m), step), shape: [...y.shape] });
            return undefined;
          },
        },
        () => model.call(x),
      ),
    ),
  );
  return calls;
}

/** The layer Grad-CAM looks at by default: the last child of the model with a spatial output. */
function defaultCamLayer(model: Module, x: Tensor): string {
  const calls = layerCalls(model, x).filter((c) => c.path && c.shape.length === 4 && c.shape[2] * c.shape[3] > 1);
  const top = calls.filter((c) => !c.path.includes('.'));
  const pick = top.at(-1) ?? calls.at(-1);
  if (!pick) throw new Error('gradCam: the model has no layer with a spatial [N, C, H, W] output');
  return pick.path;
}

/**
 * Runs the model on `x` with the output of `layer` (its last call) captured; with `leaf`, that
 * output is replaced by a leaf tensor needing a gradient, so a backward from the result fills
 * its `.grad`. Throws naming the layers when `layer` is never called.
 */
function runCapturing(model: Module, x: Tensor, layer: string, leaf: boolean): { captured: Tensor; output: Tensor } {
  const rel = relativePath(model);
  const seen = new Set<string>();
  // A first pass counts the calls of the layer, so the last one can be taken.
  let calls = 0;
  for (const c of layerCalls(model, x)) {
    seen.add(c.path);
    if (c.path === layer) calls++;
  }
  if (calls === 0) {
    const names = [...seen].filter(Boolean);
    throw new Error(
      `no layer '${layer}' ran in the forward (layers: ${names.slice(0, 12).join(', ')}` +
        `${names.length > 12 ? `, …${names.length} in all` : ''})`,
    );
  }
  let captured: Tensor | null = null;
  let n = 0;
  const output = looking(model, () =>
    observeCalls(
      {
        exit(m, _ins, y, step) {
          if (!(y instanceof Tensor) || callPath(rel(m), step) !== layer || ++n !== calls) return undefined;
          // A graph step's output cannot be replaced: Grad-CAM needs a layer that is a module.
          if (step && leaf) throw new Error(`'${layer}' is a step of an imported graph; pick a module layer`);
          if (!leaf) {
            captured = y;
            return undefined;
          }
          const t = new Tensor(y.data, y.shape);
          t.requiresGrad = true;
          captured = t;
          return t;
        },
      },
      () => (leaf ? model.call(x) : noGrad(() => model.call(x))),
    ),
  );
  if (!(output instanceof Tensor)) throw new Error('the model did not return a tensor');
  return { captured: captured!, output };
}

function modelInput(image: Tensor, opts: ModelInputOptions, who: string): { image: Tensor; x: Tensor } {
  const planes = imagePlanes(image, who);
  const img = new Tensor(planes.data, [1, planes.channels, planes.height, planes.width]);
  const x = opts.preprocess ? opts.preprocess(img) : img;
  if (!(x instanceof Tensor)) throw new Error(`${who}: preprocess must return a Tensor`);
  return { image: img, x };
}

/** The class index to explain: the given one (checked) or the top one. */
function chooseClass(logits: Tensor, classIndex: number | undefined, who: string): number {
  if (logits.ndim !== 2 || logits.shape[0] !== 1) {
    throw new Error(`${who}: expected the model to return [1, classes] scores, got [${logits.shape.join(', ')}]`);
  }
  const k = logits.shape[1];
  if (classIndex === undefined) {
    let best = 0;
    for (let i = 1; i < k; i++) if (logits.data[i] > logits.data[best]) best = i;
    return best;
  }
  if (!Number.isInteger(classIndex) || classIndex < 0 || classIndex >= k) {
    throw new Error(`${who}: classIndex must be an integer in [0, ${k}), got ${describe(classIndex)}`);
  }
  return classIndex;
}

/** Backward from the score of the class to explain (see chooseClass); returns that class. */
function backwardFromClass(logits: Tensor, classIndex: number | undefined, who: string): number {
  const k = chooseClass(logits, classIndex, who);
  // d(score of class k) / d(logits): one-hot.
  const g = new Float32Array(logits.size);
  g[k] = 1;
  logits.backward(new Tensor(g, logits.shape));
  return k;
}

/** Grad-CAM's map for one image: [h, w] at the layer's resolution, in [0, 1]. */
export function gradCamMap(
  model: Module,
  image: Tensor,
  opts: SaliencyOptions & { layer?: string } = {},
): { map: Tensor; layer: string; classIndex: number; score: number } {
  const { x } = modelInput(image, opts, 'gradCam');
  const layer = opts.layer ?? defaultCamLayer(model, x);
  // The backward too runs inside: with the parameters frozen, it fills only the captured leaf.
  return looking(model, () => {
    let captured: Tensor;
    let output: Tensor;
    try {
      ({ captured, output } = runCapturing(model, x, layer, true));
    } catch (e) {
      throw new Error(`gradCam: ${(e as Error).message}`, { cause: e });
    }
    if (captured.ndim !== 4) {
      throw new Error(`gradCam: layer '${layer}' gives [${captured.shape.join(', ')}], expected [1, C, H, W] maps`);
    }
    const classIndex = backwardFromClass(output, opts.classIndex, 'gradCam');
    const [, c, h, w] = captured.shape;
    const plane = h * w;
    const grad = captured.grad?.data ?? new Float32Array(captured.size);
    const cam = new Float32Array(plane);
    for (let ch = 0; ch < c; ch++) {
      let alpha = 0;
      for (let i = 0; i < plane; i++) alpha += grad[ch * plane + i];
      alpha /= plane;
      for (let i = 0; i < plane; i++) cam[i] += alpha * captured.data[ch * plane + i];
    }
    for (let i = 0; i < plane; i++) cam[i] = Math.max(0, cam[i]);
    return { map: new Tensor(normalize(cam), [h, w]), layer, classIndex, score: output.data[classIndex] };
  });
}

/** |d score / d input|, the maximum over channels: [H, W] in [0, 1]. */
export function inputGradientMap(
  model: Module,
  image: Tensor,
  opts: SaliencyOptions = {},
): { map: Tensor; classIndex: number; score: number } {
  const { x } = modelInput(image, opts, 'saliency');
  const leaf = new Tensor(x.data, x.shape);
  leaf.requiresGrad = true;
  return looking(model, () => {
    const output = model.call(leaf);
    const classIndex = backwardFromClass(output, opts.classIndex, 'saliency');
    const [, c, h, w] = x.shape;
    const plane = h * w;
    const g = leaf.grad?.data ?? new Float32Array(leaf.size);
    const map = new Float32Array(plane);
    for (let ch = 0; ch < c; ch++) {
      for (let i = 0; i < plane; i++) map[i] = Math.max(map[i], Math.abs(g[ch * plane + i]));
    }
    return { map: new Tensor(normalize(map), [h, w]), classIndex, score: output.data[classIndex] };
  });
}

/** The image (RGB planes) with `map` (any size, resized bilinearly) blended over it as heat. */
function blendHeat(image: Tensor, map: Tensor, alpha = 0.5): Float32Array {
  const { data, channels, height, width } = imagePlanes(image, 'blend');
  const up =
    map.shape[0] === height && map.shape[1] === width
      ? map.data
      : noGrad(() => interpolate(new Tensor(map.data, [1, 1, ...map.shape]), [height, width], { mode: 'bilinear' }))
          .data;
  const plane = height * width;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    const heat = heatColor(up[i]);
    for (let c = 0; c < 3; c++) {
      const base = data[(channels === 3 ? c : 0) * plane + i];
      out[c * plane + i] = (1 - alpha) * base + alpha * heat[c];
    }
  }
  return out;
}

function caption(classIndex: number, score: number, classes?: readonly string[]): string {
  return `${classes?.[classIndex] ?? `class ${classIndex}`} (${score.toFixed(2)})`;
}

/** Picks a scale so that a tile is about `target` pixels across. */
const scaleFor = (size: number, target = 224) => Math.max(1, Math.round(target / size));

/**
 * Grad-CAM for `image` ([1, C, H, W] in [0, 1]) written to `out` as PNG: the image and the heat
 * map over it, side by side. `layer` defaults to the model's last child with a spatial output
 * (ResNet 'layer4', VGG 'features').
 */
export async function gradCam(
  model: Module,
  image: Tensor,
  opts: SaliencyOptions & { layer?: string; out: string },
): Promise<Picture & { layer: string; classIndex: number; score: number; map: Tensor }> {
  const r = gradCamMap(model, image, opts);
  const { height, width } = imagePlanes(image, 'gradCam');
  const label = caption(r.classIndex, r.score, opts.classes);
  const tiles: Tile[] = [
    { ...rgbTile(image), overlay: { caption: 'image' } },
    {
      image: blendHeat(image, r.map),
      width,
      height,
      channels: 3,
      overlay: { caption: `Grad-CAM ${r.layer}: ${label}` },
    },
  ];
  const size = await drawGrid(opts.out, tiles, { columns: 2, scale: scaleFor(Math.max(height, width), 256) });
  return { path: opts.out, ...size, ...r };
}

/** Input-gradient saliency for `image`, written to `out` as PNG: image, gradient map, blend. */
export async function saliency(
  model: Module,
  image: Tensor,
  opts: SaliencyOptions & { out: string },
): Promise<Picture & { classIndex: number; score: number; map: Tensor }> {
  const r = inputGradientMap(model, image, opts);
  const { height, width } = imagePlanes(image, 'saliency');
  const tiles: Tile[] = [
    { ...rgbTile(image), overlay: { caption: 'image' } },
    { image: r.map.data, width, height, channels: 1, overlay: { caption: '|d score / d pixel|' } },
    {
      image: blendHeat(image, r.map),
      width,
      height,
      channels: 3,
      overlay: { caption: caption(r.classIndex, r.score, opts.classes) },
    },
  ];
  const size = await drawGrid(opts.out, tiles, { columns: 3, scale: scaleFor(Math.max(height, width), 256) });
  return { path: opts.out, ...size, ...r };
}

function rgbTile(image: Tensor): Tile {
  const { data, channels, height, width } = imagePlanes(image, 'image');
  return { image: data, width, height, channels };
}

/** The first Conv2d of the model (in registration order), or the one at `layer`. */
function convAt(model: Module, layer: string | undefined, who: string): { path: string; conv: Conv2d } {
  if (layer !== undefined) {
    let m: Module;
    try {
      m = model.getSubmodule(layer);
    } catch (e) {
      throw new Error(`${who}: ${(e as Error).message}`, { cause: e });
    }
    if (!(m instanceof Conv2d)) throw new Error(`${who}: '${layer}' is a ${m.constructor.name}, expected a Conv2d`);
    return { path: layer, conv: m };
  }
  for (const [path, m] of model.namedModules()) if (m instanceof Conv2d) return { path, conv: m };
  throw new Error(`${who}: the model has no Conv2d layer`);
}

/**
 * The filters of a conv layer (default: the first) as a grid written to `out`: one tile per output
 * channel, in colour when the layer reads 3 channels (an RGB image), else its first input
 * channel in grey; each filter scaled to its own minimum and maximum.
 */
export async function filters(
  model: Module,
  opts: { layer?: string; out: string; max?: number; columns?: number },
): Promise<Picture & { layer: string; count: number }> {
  const { path, conv } = convAt(model, opts.layer, 'filters');
  const [o, i, kh, kw] = conv.weight.shape;
  const count = Math.min(o, opts.max ?? 64);
  const tiles: Tile[] = [];
  const w = conv.weight.data;
  for (let f = 0; f < count; f++) {
    const per = i * kh * kw;
    if (i === 3) {
      tiles.push({ image: normalize(w.subarray(f * per, (f + 1) * per)), width: kw, height: kh, channels: 3 });
    } else {
      tiles.push({ image: normalize(w.subarray(f * per, f * per + kh * kw)), width: kw, height: kh, channels: 1 });
    }
  }
  const columns = opts.columns ?? Math.ceil(Math.sqrt(count));
  const size = await drawGrid(opts.out, tiles, { columns, scale: scaleFor(Math.max(kh, kw), 40) });
  return { path: opts.out, ...size, layer: path, count };
}

/**
 * The feature maps of `layer` for `image`, as a grid written to `out`: one tile per channel (up to
 * `max`, default 64), each scaled to its own range. Returns the layer's output shape too.
 */
export async function features(
  model: Module,
  image: Tensor,
  opts: ModelInputOptions & { layer: string; out: string; max?: number; columns?: number },
): Promise<Picture & { shape: number[] }> {
  const { x } = modelInput(image, opts, 'features');
  let captured: Tensor;
  try {
    ({ captured } = runCapturing(model, x, opts.layer, false));
  } catch (e) {
    throw new Error(`features: ${(e as Error).message}`, { cause: e });
  }
  if (captured.ndim !== 4) {
    throw new Error(`features: layer '${opts.layer}' gives [${captured.shape.join(', ')}], expected [1, C, H, W] maps`);
  }
  const [, c, h, w] = captured.shape;
  const count = Math.min(c, opts.max ?? 64);
  const tiles: Tile[] = [];
  for (let ch = 0; ch < count; ch++) {
    tiles.push({ image: normalize(captured.data.subarray(ch * h * w, (ch + 1) * h * w)), width: w, height: h });
  }
  const columns = opts.columns ?? Math.ceil(Math.sqrt(count));
  const size = await drawGrid(opts.out, tiles, { columns, scale: scaleFor(Math.max(h, w), 64) });
  return { path: opts.out, ...size, shape: [...captured.shape] };
}

/**
 * The receptive field of one unit of `layer` (default: its centre unit) drawn on `image` and
 * written to `out`: the window of input pixels the unit sees (size, jump and start from
 * summary()), clipped to the image. Returns the window as [x1, y1, x2, y2] in input pixels.
 */
export async function receptiveFieldOverlay(
  model: Module,
  image: Tensor,
  opts: ModelInputOptions & { layer: string; unit?: [number, number]; out: string },
): Promise<Picture & { box: [number, number, number, number]; unit: [number, number] }> {
  const { image: img, x } = modelInput(image, opts, 'receptiveFieldOverlay');
  const row = summary(model, x)
    .rows.filter((r) => r.path === opts.layer)
    .at(-1);
  if (!row) throw new Error(`receptiveFieldOverlay: no layer '${opts.layer}' ran in the forward`);
  if (!row.receptiveField || !row.outputShape) {
    throw new Error(`receptiveFieldOverlay: layer '${opts.layer}' has no [N, C, H, W] output`);
  }
  const [, , oh, ow] = row.outputShape;
  const unit = opts.unit ?? [Math.floor(oh / 2), Math.floor(ow / 2)];
  if (!unit.every((v, a) => Number.isInteger(v) && v >= 0 && v < [oh, ow][a])) {
    throw new Error(`receptiveFieldOverlay: unit must be [y, x] inside ${oh}x${ow}, got ${describe(unit)}`);
  }
  const [fy, fx] = row.receptiveField;
  const [, , h, w] = img.shape;
  const cy = fy.start + unit[0] * fy.jump;
  const cx = fx.start + unit[1] * fx.jump;
  const box: [number, number, number, number] = [
    Math.max(0, cx - fx.size / 2),
    Math.max(0, cy - fy.size / 2),
    Math.min(w, cx + fx.size / 2),
    Math.min(h, cy + fy.size / 2),
  ];
  const tile: Tile = {
    ...rgbTile(img),
    overlay: {
      boxes: [{ box, color: '#ffcc00' }],
      points: [{ x: cx, y: cy, color: '#ff0000' }],
      caption: `${opts.layer} unit [${unit.join(', ')}]: ${fy.size}x${fx.size} px`,
    },
  };
  const size = await drawGrid(opts.out, [tile], { columns: 1, scale: scaleFor(Math.max(h, w), 320) });
  return { path: opts.out, ...size, box, unit };
}

/**
 * `image` ([1, C, H, W] in [0, 1]) and its filtering by each named kernel (default: all of
 * KERNELS), side by side in a grid written to `out`; signed outputs around mid-grey.
 */
export async function kernels(
  image: Tensor,
  opts: FilterOptions & { out: string; kernels?: KernelName[]; columns?: number },
): Promise<Picture & { kernels: KernelName[] }> {
  const names = opts.kernels ?? kernelNames();
  const tiles = [imageTile(image, 'input')];
  for (const name of names) tiles.push(imageTile(forDisplay(filter(image, name, opts), isZeroSum(name)), name));
  const { height, width } = imagePlanes(image, 'kernels');
  const size = await drawGrid(opts.out, tiles, {
    columns: opts.columns ?? 4,
    scale: scaleFor(Math.max(height, width), 160),
  });
  return { path: opts.out, ...size, kernels: names };
}
