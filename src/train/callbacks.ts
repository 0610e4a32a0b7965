// Training callbacks, named like Keras/tfjs: fit() calls each hook that a callback defines.
// The progress bar and early stopping are callbacks like any user's.

/** Numbers fit() reports: loss, acc (top-1), acc5 (top-5), lr, and val_* after validation. */
export type Logs = Record<string, number>;

export interface Callback {
  /** Called by fit() first, with the handle to the running loop. */
  setTrainer?(trainer: TrainerHandle): void;
  onTrainBegin?(logs: Logs): void | Promise<void>;
  onTrainEnd?(logs: Logs): void | Promise<void>;
  onEpochBegin?(epoch: number, logs: Logs): void | Promise<void>;
  onEpochEnd?(epoch: number, logs: Logs): void | Promise<void>;
  onBatchBegin?(batch: number, logs: Logs): void | Promise<void>;
  onBatchEnd?(batch: number, logs: Logs): void | Promise<void>;
}

/** What callbacks can see and steer while fit() runs. */
export interface TrainerHandle {
  /** Set to true to stop after the current epoch. */
  stopTraining: boolean;
  readonly epochs: number;
  readonly batchesPerEpoch: number;
}

/** Stops training when `monitor` has not improved by `minDelta` for `patience` epochs. */
export class EarlyStopping implements Callback {
  private best: number;
  private wait = 0;
  private trainer?: TrainerHandle;
  stoppedEpoch = -1;
  readonly monitor: string;
  readonly patience: number;
  readonly minDelta: number;
  readonly mode: 'min' | 'max';

  constructor(opts: { monitor?: string; patience?: number; minDelta?: number; mode?: 'min' | 'max' } = {}) {
    this.monitor = opts.monitor ?? 'val_loss';
    this.patience = opts.patience ?? 0;
    this.minDelta = Math.abs(opts.minDelta ?? 0);
    this.mode = opts.mode ?? (this.monitor.includes('acc') ? 'max' : 'min');
    this.best = this.mode === 'min' ? Infinity : -Infinity;
  }

  setTrainer(trainer: TrainerHandle): void {
    this.trainer = trainer;
  }

  onEpochEnd(epoch: number, logs: Logs): void {
    const v = logs[this.monitor];
    if (v === undefined || Number.isNaN(v)) return;
    const improved = this.mode === 'min' ? v < this.best - this.minDelta : v > this.best + this.minDelta;
    if (improved) {
      this.best = v;
      this.wait = 0;
    } else if (++this.wait > this.patience) {
      this.stoppedEpoch = epoch;
      if (this.trainer) this.trainer.stopTraining = true;
    }
  }
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  const sec = Math.floor(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m` : `${m}:${String(sec).padStart(2, '0')}`;
}

/**
 * Progress: on a TTY one line redrawn in place (bar, loss, accuracy, images/s, ETA); otherwise,
 * or with `live: false`, plain lines, `every` batches and at each epoch's end, so logs stay
 * readable.
 */
export class ProgressBar implements Callback {
  private epochStart = 0;
  private seen = 0;
  private epoch = 0;
  private readonly tty: boolean;
  private trainer: TrainerHandle = { stopTraining: false, epochs: 0, batchesPerEpoch: 0 };

  constructor(
    private readonly opts: { stream?: NodeJS.WriteStream; every?: number; width?: number; live?: boolean } = {},
  ) {
    this.tty = opts.live ?? Boolean((opts.stream ?? process.stdout).isTTY);
  }

  setTrainer(trainer: TrainerHandle): void {
    this.trainer = trainer;
  }

  private get out(): NodeJS.WriteStream {
    return this.opts.stream ?? process.stdout;
  }

  onEpochBegin(epoch: number): void {
    this.epoch = epoch;
    this.epochStart = performance.now();
    this.seen = 0;
  }

  onBatchEnd(batch: number, logs: Logs): void {
    this.seen += logs.size ?? 0;
    const { batchesPerEpoch: total, epochs } = this.trainer;
    const elapsed = (performance.now() - this.epochStart) / 1000;
    const ips = this.seen / Math.max(elapsed, 1e-9);
    const eta = (elapsed / (batch + 1)) * (total - batch - 1);
    const text =
      `epoch ${this.epoch + 1}/${epochs} ${batch + 1}/${total} loss ${logs.loss.toFixed(4)} ` +
      `acc ${(100 * logs.acc).toFixed(2)}% ${ips.toFixed(0)} img/s ETA ${fmtTime(eta)}`;
    if (this.tty) {
      const width = this.opts.width ?? 24;
      const filled = Math.round((width * (batch + 1)) / total);
      this.out.write(`\r[${'='.repeat(filled)}${' '.repeat(width - filled)}] ${text}\x1b[K`);
    } else {
      const every = this.opts.every ?? 100;
      if ((batch + 1) % every === 0) this.out.write(`${text}\n`);
    }
  }

  onEpochEnd(epoch: number, logs: Logs): void {
    const secs = (performance.now() - this.epochStart) / 1000;
    const parts = Object.entries(logs)
      .filter(([k]) => k !== 'size')
      .map(
        ([k, v]) =>
          `${k} ${k.includes('acc') ? `${(100 * v).toFixed(2)}%` : k === 'lr' ? v.toExponential(2) : v.toFixed(4)}`,
      );
    this.out.write(
      `${this.tty ? '\r\x1b[K' : ''}epoch ${epoch + 1}/${this.trainer.epochs} ${fmtTime(secs)} ` +
        `${(this.seen / secs).toFixed(0)} img/s - ${parts.join(' - ')}\n`,
    );
  }
}
