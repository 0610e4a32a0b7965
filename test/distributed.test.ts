// Data-parallel training over MPI: the sharded sampler, and real runs under Open MPI's mpirun
// (2 ranks at batch 32 against 1 process at batch 64, a rank killed mid-epoch, a resume with
// another world size). The mpirun parts are skipped, saying so, where mpirun is absent
// (.ci/run installs Debian's openmpi-bin).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { mnist } from '../src/data/index.js';
import type { Config } from './fixtures/mpi-train.js';
import { DataLoader, TensorDataset, fit, initDistributed, launchedByMpi, SGD, nn, zeros } from '../src/index.js';

const SCRIPT = fileURLToPath(new URL('./fixtures/mpi-train.ts', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const hasMpirun = spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasMpirun) {
  console.warn('distributed: the mpirun tests are skipped: no mpirun on PATH (apt-get install openmpi-bin)');
}

const tmp = () => mkdtempSync(join(tmpdir(), 'fc-mpi-'));

function dataset(n: number): TensorDataset {
  return new TensorDataset(zeros([n, 1, 2, 2]), new Int32Array(n));
}

async function indicesOf(loader: DataLoader): Promise<number[][]> {
  // The order of the current epoch, batch by batch (TensorDataset of zeros: read the order).
  const order = Array.from(loader.order(loader.epoch));
  const out: number[][] = [];
  for (let b = 0; b < loader.length; b++) out.push(order.slice(b * loader.batchSize, (b + 1) * loader.batchSize));
  return out;
}

interface RunResult {
  size: number;
  planned: boolean;
  planReason?: string;
  startEpoch: number;
  history: { epoch: number; loss: number; acc: number }[];
  params: Record<string, number[]>;
}

/** Runs `node args` under `mpirun -np ranks` (or alone with ranks 0), one kernel thread each. */
function launch(ranks: number, args: string[]) {
  const node = [process.execPath, '--import', 'tsx', ...args];
  const env = {
    ...process.env,
    FERROCONV_NUM_THREADS: '1',
    OMPI_ALLOW_RUN_AS_ROOT: '1',
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
  };
  const t0 = performance.now();
  const r =
    ranks === 0
      ? spawnSync(node[0], node.slice(1), { encoding: 'utf8', env, timeout: 120_000 })
      : spawnSync('mpirun', ['--oversubscribe', '-np', String(ranks), ...node], {
          encoding: 'utf8',
          env,
          timeout: 120_000,
        });
  return {
    status: r.status,
    stdout: r.stdout,
    output: `${r.stdout}${r.stderr}`,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Runs the fixture script (see launch) and reads what rank 0 wrote. */
function run(ranks: number, cfg: Config) {
  const r = launch(ranks, [SCRIPT, JSON.stringify(cfg)]);
  const result = existsSync(cfg.out) ? (JSON.parse(readFileSync(cfg.out, 'utf8')) as RunResult) : null;
  return { ...r, result };
}

/** The largest absolute difference between two runs' parameters. */
function maxDiff(a: RunResult, b: RunResult): number {
  let worst = 0;
  for (const [k, v] of Object.entries(a.params)) {
    const w = b.params[k];
    expect(w, k).toHaveLength(v.length);
    v.forEach((x, i) => {
      worst = Math.max(worst, Math.abs(x - w[i]));
    });
  }
  return worst;
}

describe('DataLoader shard', () => {
  it('splits every epoch between the ranks without overlap, as torch DistributedSampler does', async () => {
    for (const [n, size] of [
      [10, 3],
      [12, 4],
      [5, 2],
      [2, 3],
    ]) {
      const full = new DataLoader(dataset(n), { batchSize: 2, shuffle: true, seed: 9 });
      const perm = Array.from(full.order(4));
      const per = Math.ceil(n / size);
      const padded = Array.from({ length: per * size }, (_, i) => perm[i % n]);
      const seen: number[] = [];
      for (let rank = 0; rank < size; rank++) {
        const l = new DataLoader(dataset(n), { batchSize: 2, shuffle: true, seed: 9, shard: { rank, size } });
        const mine = Array.from(l.order(4));
        expect(mine).toEqual(padded.filter((_, i) => i % size === rank));
        expect(l.numSamples).toBe(per);
        expect(l.length).toBe(Math.ceil(per / 2));
        seen.push(...mine);
        // even: false leaves the last ranks short instead of repeating samples.
        const uneven = new DataLoader(dataset(n), { seed: 9, shuffle: true, shard: { rank, size, even: false } });
        expect(Array.from(uneven.order(4))).toEqual(perm.filter((_, i) => i % size === rank));
      }
      // Every sample is covered; only the padding repeats.
      expect(new Set(seen).size).toBe(n);
      expect(seen).toHaveLength(per * size);
    }
  });

  it('draws a new order every epoch, the same on every rank for a seed, and is resumable', async () => {
    const a = new DataLoader(dataset(16), { batchSize: 4, shuffle: true, seed: 3, shard: { rank: 1, size: 2 } });
    const b = new DataLoader(dataset(16), { batchSize: 4, shuffle: true, seed: 3, shard: { rank: 1, size: 2 } });
    expect(Array.from(a.order(0))).toEqual(Array.from(b.order(0)));
    expect(Array.from(a.order(0))).not.toEqual(Array.from(a.order(1)));
    const it0 = a[Symbol.asyncIterator]();
    await it0.next();
    await it0.return(undefined);
    const state = a.getState();
    expect(state).toMatchObject({ position: 1, shards: 2 });
    b.setState(state);
    expect(await indicesOf(b)).toEqual(await indicesOf(a));
    // Mid-epoch, another number of ranks cannot take over; at an epoch's start it can.
    const other = new DataLoader(dataset(16), { batchSize: 4, shuffle: true, seed: 3, shard: { rank: 0, size: 4 } });
    expect(() => other.setState(state)).toThrow(/sharded over 2 rank\(s\); this loader is sharded over 4/);
    other.setState({ ...state, position: 0 });
    expect(other.position).toBe(0);
  });

  it('rejects a bad shard with a clear Error', () => {
    const d = dataset(4);
    expect(() => new DataLoader(d, { shard: { rank: 2, size: 2 } })).toThrow(
      /shard.rank must be an integer in \[0, 2\)/,
    );
    expect(() => new DataLoader(d, { shard: { rank: 0, size: 0 } })).toThrow(/shard.size must be an integer >= 1/);
    expect(() => new DataLoader(d, { shard: 3 as never })).toThrow(/shard must be \{ rank, size \}/);
  });
});

describe('distributed fit without a launcher', () => {
  it('is a world of one (no libmpi loaded) and trains', async () => {
    expect(launchedByMpi({})).toBe(false);
    expect(launchedByMpi({ OMPI_COMM_WORLD_SIZE: '2' })).toBe(true);
    const w = initDistributed();
    expect(w).toEqual({ rank: 0, size: 1, library: null });
    const model = new nn.Sequential(new nn.Flatten(), new nn.Linear(4, 2));
    const loader = new DataLoader(dataset(8), { batchSize: 4, seed: 1, shard: w });
    const r = await fit(model, loader, {
      optimizer: new SGD(model.parameters(), { lr: 0.1 }),
      epochs: 1,
      distributed: true,
      progress: false,
    });
    expect(r.history).toHaveLength(1);
  });
});

describe('a launched process without a usable libmpi', () => {
  it('gets an Error naming what was tried, not a crash', () => {
    const script =
      "import('./src/index.ts').then((m) => { try { m.initDistributed(); } catch (e) { console.log(e.message); } })";
    const tryWith = (library: string) =>
      spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
        encoding: 'utf8',
        cwd: fileURLToPath(new URL('..', import.meta.url)),
        env: { ...process.env, OMPI_COMM_WORLD_SIZE: '2', FERROCONV_MPI_LIBRARY: library },
      });
    const missing = tryWith('/nonexistent/libmpi.so.40');
    expect(missing.status).toBe(0);
    expect(missing.stdout).toMatch(/MPI: cannot load Open MPI's libmpi .*\/nonexistent\/libmpi\.so\.40/);
    // A library that is not Open MPI's (here the C library) is refused by what it lacks.
    const other = tryWith('libc.so.6');
    expect(other.stdout).toMatch(/MPI: libc\.so\.6 is not Open MPI's libmpi \(it has no ompi_mpi_comm_world\)/);
  });
});

describe.skipIf(!hasMpirun)('under mpirun', () => {
  it('2 ranks at batch 32 train the parameters 1 process at batch 64 trains (compiled and eager steps)', () => {
    const dir = tmp();
    const one = run(0, { out: join(dir, 'one.json'), batch: 64, epochs: 2 });
    expect(one.status, one.output).toBe(0);
    for (const plan of [true, false]) {
      const two = run(2, { out: join(dir, `two-${plan}.json`), batch: 32, epochs: 2, plan });
      expect(two.status, two.output).toBe(0);
      expect(two.result!.size).toBe(2);
      expect(two.result!.planned).toBe(plan);
      // 8 SGD steps with momentum: only the order of the sums differs (float32 rounding).
      expect(maxDiff(one.result!, two.result!)).toBeLessThan(1e-5);
      // The history is every rank's together: the same epoch losses and accuracies.
      two.result!.history.forEach((h, i) => {
        expect(h.loss).toBeCloseTo(one.result!.history[i].loss, 5);
        expect(h.acc).toBe(one.result!.history[i].acc);
      });
    }
    // (The ranks start from different weights, seeded by rank, so this also shows they took rank 0's.)
  }, 240_000);

  it('synchronized batch norm: 2 ranks at batch 32 train as 1 process at batch 64 does with plain batch norm', () => {
    const dir = tmp();
    const one = run(0, { out: join(dir, 'one.json'), batch: 64, epochs: 2, bn: 'plain' });
    expect(one.status, one.output).toBe(0);
    const sync = run(2, { out: join(dir, 'sync.json'), batch: 32, epochs: 2, bn: 'sync' });
    expect(sync.status, sync.output).toBe(0);
    // Parameters and running statistics alike, up to float32 reduction order.
    expect(maxDiff(one.result!, sync.result!)).toBeLessThan(1e-5);
    // Its collectives have no plan step: the step ran eagerly, and fit says why.
    expect(sync.result!.planned).toBe(false);
    expect(sync.result!.planReason).toMatch(/mpiAllreduceSync has no plan step/);
    // Each rank normalising its own 32 samples trains other parameters.
    const plain = run(2, { out: join(dir, 'plain.json'), batch: 32, epochs: 2, bn: 'plain' });
    expect(plain.status, plain.output).toBe(0);
    expect(maxDiff(one.result!, plain.result!)).toBeGreaterThan(1e-4);
  }, 240_000);

  it('ranks that would not train alike (another data order) stop with an Error before the first step', () => {
    const dir = tmp();
    const out = join(dir, 'run.json');
    const r = run(2, { out, batch: 32, epochs: 1, seedPerRank: true });
    expect(r.status).not.toBe(0);
    expect(readFileSync(`${out}.rank0.error`, 'utf8')).toMatch(/the ranks disagree on the loader's seed \(low half\)/);
  }, 120_000);

  it('a rank killed mid-epoch fails the job promptly with an Error on the other; --resume continues on 1 rank', () => {
    const dir = tmp();
    const ck = join(dir, 'ck');
    const out = join(dir, 'run.json');
    const failed = run(2, {
      out,
      batch: 16,
      epochs: 3,
      checkpointDir: ck,
      die: { rank: 1, epoch: 1, batch: 2 },
      timeout: 60,
    });
    expect(failed.status).not.toBe(0);
    expect(failed.result).toBeNull();
    // Well inside the collectives' 60 s limit: the launcher ends the job when a rank dies.
    expect(failed.seconds).toBeLessThan(45);
    expect(readFileSync(`${out}.rank0.error`, 'utf8')).toMatch(/rank 0: the launcher ended the job/);
    expect(existsSync(join(ck, 'checkpoint.safetensors'))).toBe(true);
    // Resume with another world size (1 rank, the same per-rank batch): from epoch 2 on.
    const resumed = run(1, { out, batch: 16, epochs: 3, checkpointDir: ck, resume: true });
    expect(resumed.status, resumed.output).toBe(0);
    expect(resumed.result!.size).toBe(1);
    expect(resumed.result!.startEpoch).toBe(1);
    expect(resumed.result!.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    // A different per-rank batch is refused, naming why.
    const wrong = run(0, { out: join(dir, 'x.json'), batch: 32, epochs: 4, checkpointDir: ck, resume: true });
    expect(wrong.status).not.toBe(0);
    expect(wrong.output).toMatch(/state is for batchSize 16, this loader has 32/);
  }, 240_000);

  it('ferroconv train under mpirun trains one model on 2 ranks; predict splits a folder and prints it in order', async () => {
    const dir = tmp();
    const ck = join(dir, 'run');
    const t = launch(2, [CLI, 'train', '--limit', '1024', '--epochs', '1', '--checkpoint-dir', ck, '--no-progress']);
    expect(t.status, t.output).toBe(0);
    // Rank 0 alone prints and writes.
    expect(t.stdout.match(/ferroconv: training/g)).toHaveLength(1);
    expect(t.stdout).toMatch(/2 ranks x batch 64/);
    const log = JSON.parse(readFileSync(join(ck, 'log.json'), 'utf8'));
    expect(log.ranks).toBe(2);
    // 1024 samples over 2 ranks at 64 each: 8 steps.
    expect(log.batches).toHaveLength(8);
    const images = join(dir, 'images');
    const test = mnist({ train: false });
    for (let i = 0; i < 5; i++) {
      const { image } = test.get(i);
      const px = Buffer.from(
        Array.from(image.data, (v) => Math.max(0, Math.min(255, Math.round((v * 0.3081 + 0.1307) * 255)))),
      );
      const sub = join(images, i < 3 ? 'a' : 'b');
      mkdirSync(sub, { recursive: true });
      await sharp(px, { raw: { width: 28, height: 28, channels: 1 } })
        .png()
        .toFile(join(sub, `${i}.png`));
    }
    const predict = (ranks: number) =>
      launch(ranks, [CLI, 'predict', '--checkpoint', join(ck, 'model.safetensors'), '--batch-size', '2', images]);
    const alone = predict(0);
    const shared = predict(2);
    expect(alone.status, alone.output).toBe(0);
    expect(shared.status, shared.output).toBe(0);
    expect(alone.stdout.trim().split('\n')).toHaveLength(5);
    expect(shared.stdout).toBe(alone.stdout);
  }, 240_000);
});
