// fit()'s TensorBoard logging (FitOptions.tensorboard): one SummaryWriter per run, scalars per
// step, and per epoch the epoch's results, histograms of the parameters and their gradients,
// and the first conv layer's filters as an image (also left in the run directory as
// filters.png).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Module } from '../nn/module.js';
import { Conv2d } from '../nn/conv2d.js';
import type { Tensor } from '../tensor.js';
import type { BatchRecord, EpochRecord } from './history.js';
import { SummaryWriter } from './tensorboard.js';

export class TrainingBoard {
  private constructor(readonly writer: SummaryWriter) {}

  /** The board fit() writes to, or null when `tensorboard` is off. */
  static open(tensorboard: boolean | string | undefined, logDir: string | undefined): TrainingBoard | null {
    if (tensorboard === undefined || tensorboard === false) return null;
    if (tensorboard !== true && (typeof tensorboard !== 'string' || tensorboard === '')) {
      throw new Error(`fit: tensorboard must be true or a directory, got ${typeof tensorboard}`);
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const dir = tensorboard === true ? (logDir ?? join('runs', `fit-${stamp}`)) : tensorboard;
    return new TrainingBoard(new SummaryWriter(dir));
  }

  batch(r: BatchRecord): void {
    this.writer.addScalar('train/loss', r.loss, r.step);
    this.writer.addScalar('train/acc', r.acc, r.step);
    if (Number.isFinite(r.lr)) this.writer.addScalar('train/lr', r.lr, r.step);
  }

  /** The epoch's results, the histograms and the filter image, at the epoch's last step. */
  async epoch(model: Module, logs: EpochRecord, step: number, grads: Map<string, Tensor>): Promise<void> {
    for (const [k, v] of Object.entries(logs)) {
      if (k === 'epoch' || !Number.isFinite(v)) continue;
      const tag = k.startsWith('val_') ? `val/${k.slice(4)}` : `epoch/${k}`;
      this.writer.addScalar(tag, v, step);
    }
    for (const [name, p] of model.namedParameters()) this.writer.addHistogram(`weights/${name}`, p.data, step);
    for (const [name, g] of grads) this.writer.addHistogram(`grads/${name}`, g.data, step);
    const conv = model.namedModules().find(([, m]) => m instanceof Conv2d);
    if (conv) {
      // Drawn by the same code as `ferroconv show filters` (loaded here, on first use, with sharp).
      const { filters } = await import('../insight/visualize.js');
      const out = join(this.writer.logDir, 'filters.png');
      let pic: { width: number; height: number } | null = null;
      try {
        pic = await filters(model, { layer: conv[0], out });
      } catch (e) {
        // Without the optional sharp package there is no image; everything else is still logged.
        if (!/needs the 'sharp' package/.test((e as Error).message)) throw e;
      }
      if (pic) this.writer.addImage(`filters/${conv[0]}`, readFileSync(out), pic.width, pic.height, 3, step);
    }
  }

  close(): void {
    this.writer.close();
  }
}
