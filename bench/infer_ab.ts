// A/B of whole-model inference with inference fusion off and on, interleaved in one process so
// both see the same machine load: img/s medians per model and batch, and the process CPU time
// per forward (user + system, all threads: less disturbed than wall time on a shared machine).
//
//   node --import tsx bench/infer_ab.ts [--models resnet50:8,resnet50:1,densenet121:8] [--rounds 5]
import { parseArgs } from 'node:util';
import { models, noGrad, randn, setInferenceFusion, type Module } from '../src/index.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'resnet50:8,resnet50:1,densenet121:8,googlenet:8' },
    rounds: { type: 'string', default: '5' },
  },
});

const build: Record<string, () => Module> = {
  resnet50: () => models.resnet50(),
  densenet121: () => models.densenet121(),
  googlenet: () => models.googlenet(),
  alexnet: () => models.alexnet(),
  vgg16: () => models.vgg16(),
  resnet18: () => models.resnet18(),
};

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const rounds = Number(values.rounds);
for (const spec of values.models!.split(',')) {
  const [name, b] = spec.split(':');
  const batch = Number(b ?? 8);
  const model = build[name]().eval();
  const x = randn([batch, 3, 224, 224]);
  const times: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const cpu: Record<'off' | 'on', number[]> = { off: [], on: [] };
  for (const mode of ['off', 'on'] as const) {
    setInferenceFusion(mode === 'on');
    noGrad(() => model.forward(x)); // warm-up
  }
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
      setInferenceFusion(mode === 'on');
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      noGrad(() => model.forward(x));
      times[mode].push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu[mode].push((c.user + c.system) / 1000);
    }
  }
  const off = batch / (median(times.off) / 1000);
  const on = batch / (median(times.on) / 1000);
  const [cOff, cOn] = [median(cpu.off), median(cpu.on)];
  console.log(
    `${name} b${batch}: unfused ${off.toFixed(2)} img/s, fused ${on.toFixed(2)} img/s (x${(on / off).toFixed(2)}); ` +
      `CPU ms/forward unfused ${cOff.toFixed(0)}, fused ${cOn.toFixed(0)} (x${(cOff / cOn).toFixed(2)})`,
  );
}
setInferenceFusion(true);
