import { createRequire } from 'node:module';
import fs from 'node:fs';
const require = createRequire(import.meta.url);
const ort = require('/work/main/bench/.peers/node_modules/onnxruntime-node');
const model = process.argv[2], batch = +process.argv[3] || 1;
const s = await ort.InferenceSession.create(`bench/.cache/onnx/${model}.onnx`, { intraOpNumThreads: 2, interOpNumThreads: 1, enableProfiling: true, profileFilePrefix: '/tmp/ortprof', extra: { session: { intra_op: { allow_spinning: '0' } } } });
const name = s.inputNames[0];
const x = new ort.Tensor('float32', new Float32Array(batch * 3 * 224 * 224).fill(0.5), [batch, 3, 224, 224]);
for (let i = 0; i < 20; i++) await s.run({ [name]: x });
s.endProfiling(); await s.release?.(); const file = "/tmp/" + fs.readdirSync("/tmp").filter((f) => f.startsWith("ortprof")).sort().pop();
const ev = JSON.parse(fs.readFileSync(file, 'utf8'));
const by = new Map();
let total = 0;
for (const e of ev) {
  if (!e.name?.endsWith('_kernel_time')) continue;
  const op = e.args?.op_name;
  const shp = JSON.stringify(e.args?.input_type_shape?.slice(0, 2).map((o) => Object.values(o)[0]));
  const key = `${op} ${shp}`;
  const v = by.get(key) ?? { us: 0, n: 0 };
  v.us += e.dur; v.n++; by.set(key, v); total += e.dur;
}
const runs = 20;
console.log('total per run ms', (total / runs / 1000).toFixed(2));
const byOp = new Map();
for (const [k, v] of by) { const op = k.split(' ')[0]; byOp.set(op, (byOp.get(op) ?? 0) + v.us); }
console.log([...byOp].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${(v / runs / 1000).toFixed(2)}`).join(', '));
for (const [k, v] of [...by].sort((a, b) => b[1].us - a[1].us).slice(0, 25)) console.log((v.us / runs / 1000).toFixed(3), 'ms', v.n / runs, k);
