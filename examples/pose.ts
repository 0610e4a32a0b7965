// Pose estimation by keypoint heatmaps ("simple baselines"): stick figures with 11 joints on
// noisy, cluttered 64x64 canvases; a small ResNet-style backbone with a transposed-conv head
// predicts one heatmap per joint (MSE against Gaussian targets), decoded with a sub-pixel
// argmax. Prints PCK@0.1 (a joint is right within 10% of the figure's size) and writes a
// picture of predicted skeletons (cyan) with the true joints (red).
//   npx tsx examples/pose.ts [--epochs 4] [--train 8000] [--out out]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Adam, apps, CosineAnnealingLR, manualSeed, mseLoss } from '../src/index.js';

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '4' },
    train: { type: 'string', default: '8000' },
    out: { type: 'string', default: 'out' },
  },
});
const epochs = Number(values.epochs);
manualSeed(0);
const t0 = performance.now();
const train = apps.poseSet({ count: Number(values.train), seed: 1 });
const test = apps.poseSet({ count: 1000, seed: 2 });
const model = new apps.PoseNet({ numJoints: apps.POSE_JOINTS.length });
const optimizer = new Adam(model.parameters(), { lr: 2e-3 });
const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
await apps.trainTask(model, train, {
  optimizer,
  scheduler,
  epochs,
  batchSize: 32,
  loss: (heatmaps, batch) => mseLoss(heatmaps, batch.heatmaps),
  onEpochEnd: (epoch, log) =>
    console.log(`epoch ${epoch}/${epochs}: heatmap MSE ${log.loss.toExponential(3)} in ${log.seconds.toFixed(1)} s`),
});
const seconds = (performance.now() - t0) / 1000;
const m = await apps.evaluatePose(model, test);
console.log(
  `pose: PCK@0.1 ${(100 * m.pck).toFixed(2)}%, PCK@0.05 ${(100 * m.pck05).toFixed(2)}% ` +
    `(${test.length} test figures, ${apps.POSE_JOINTS.length} joints, trained in ${seconds.toFixed(0)} s)`,
);

mkdirSync(values.out, { recursive: true });
const k = apps.POSE_JOINTS.length;
const tiles = Array.from({ length: 16 }, (_, i) => {
  const at = (arr: Float32Array, j: number): [number, number] => [arr[(i * k + j) * 2], arr[(i * k + j) * 2 + 1]];
  return {
    image: apps.canvasImage(test.pixels, test.size, i),
    width: test.size,
    height: test.size,
    overlay: {
      lines: apps.POSE_LIMBS.map(([p, q]) => ({ from: at(m.joints, p), to: at(m.joints, q), color: '#00e5ff' })),
      points: Array.from({ length: k }, (_, j) => ({
        x: at(test.joints, j)[0],
        y: at(test.joints, j)[1],
        color: '#ff3030',
      })),
    },
  };
});
const path = join(values.out, 'pose.png');
await apps.drawGrid(path, tiles, { columns: 8, scale: 3 });
console.log(`wrote ${path}`);
