// Where ONNX Runtime's time goes on a zoo model, layer kind by layer kind, with the labels
// bench/profile_plan.ts prints for ferroconv's compiled plans, so the two can be read side by
// side: ORT's own profiler (enableProfiling) over the timed runs, kernel times summed per kind.
//
//   node --import tsx bench/profile_ort.ts [--models resnet50,densenet121] [--batch 1] [--iters 30] [--top 25] [--int8]
// (--int8: the models quantize_static made for the int8 section, `<model>.int8.onnx`, beside
// profile_plan.ts --int8.)
//
// Needs onnxruntime-node (npm run bench:peers) and the models' ONNX files, which
// `npm run bench:compare -- --sections infer` exports into bench/.cache/onnx. Run it right after
// profile_plan.ts: this host's speed drifts by tens of percent over minutes.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from '../src/io/onnx/gen/onnx_pb.js';
import { CACHE_DIR, findOrt, type OrtSession, ortSessionOptions } from './compare/peers.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'resnet50,googlenet,densenet121' },
    batch: { type: 'string', default: '1' },
    iters: { type: 'string', default: '30' },
    top: { type: 'string', default: '25' },
    threads: { type: 'string', default: '2' },
    int8: { type: 'boolean', default: false },
  },
});

/** One event of ORT's profile (Chrome trace format). */
interface TraceEvent {
  cat?: string;
  name: string;
  dur: number;
  args?: {
    op_name?: string;
    input_type_shape?: Record<string, number[]>[];
    output_type_shape?: Record<string, number[]>[];
  };
}

/** The dimensions of each tensor in a shape list of ORT's profile (`[{ float: [1, 64, 56, 56] }]`). */
const dimsOf = (list: Record<string, number[]>[] | undefined) => (list ?? []).map((s) => Object.values(s)[0] ?? []);

/** A conv's row label, as profile_plan.ts prints it: `conv KxK[/sS] IN->OUT @H`. */
const convLabel = (k: number[], stride: number, cin: number, cout: number, h: number) =>
  `conv ${k[0]}x${k[1]}${stride > 1 ? `/s${stride}` : ''} ${cin}->${cout} @${h}`;

/**
 * The row label of a node: convs by convLabel (the stride is not in the profile: it is the
 * input's height over the output's, rounded), other ops by name.
 */
function label(e: TraceEvent, qweights: Map<string, number[]>): string {
  const op = e.args?.op_name ?? '?';
  const [x] = dimsOf(e.args?.input_type_shape);
  const [y] = dimsOf(e.args?.output_type_shape);
  if (op === 'Conv') {
    const w = dimsOf(e.args?.input_type_shape)[1];
    if (!x || !w) return op;
    return convLabel([w[2], w[3]], y ? Math.round(x[2] / y[2]) : 1, x[1], w[0], x[2]);
  }
  if (op === 'QLinearConv') {
    // ORT runs the quantized convs in NHWC and leaves the (pre-packed) weight out of the
    // shapes: the kernel size comes from the model's graph, by node name.
    const w = qweights.get(e.name.replace(/(_token_\d+)?_kernel_time$/, ''));
    if (!x || !y || !w) return op;
    return convLabel([w[2], w[3]], Math.round(x[1] / y[1]), x[3], y[3], x[1]);
  }
  return op;
}

/** Each Conv node's weight dimensions in a QDQ model (the int8 initializer its DequantizeLinear reads). */
function qdqConvWeights(file: string): Map<string, number[]> {
  const model = fromBinary(ModelProtoSchema, readFileSync(file));
  const graph = model.graph;
  const out = new Map<string, number[]>();
  if (!graph) return out;
  const dims = new Map(graph.initializer.map((t) => [t.name, t.dims.map(Number)]));
  const producer = new Map(graph.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
  for (const n of graph.node) {
    if (n.opType !== 'Conv') continue;
    const dq = producer.get(n.input[1]);
    const w = dq?.opType === 'DequantizeLinear' ? dims.get(dq.input[0]) : dims.get(n.input[1]);
    if (w) out.set(n.name, w);
  }
  return out;
}

const ort = findOrt();
if (!ort.api) throw new Error(ort.error ?? 'onnxruntime-node is not installed (npm run bench:peers)');
const api = ort.api;
const batch = Number(values.batch);
const iters = Number(values.iters);
for (const model of values.models.split(',')) {
  const file = join(CACHE_DIR, 'onnx', `${model}${values.int8 ? '.int8' : ''}.onnx`);
  if (!existsSync(file)) {
    console.log(`${model}: no ${file} (npm run bench:compare -- --sections infer exports it)`);
    continue;
  }
  const qweights = values.int8 ? qdqConvWeights(file) : new Map<string, number[]>();
  const dir = mkdtempSync(join(tmpdir(), 'ferroconv-ortprof-'));
  try {
    // A session with profiling on also has endProfiling(), which OrtSession leaves out.
    const session = (await api.InferenceSession.create(file, {
      ...ortSessionOptions(Number(values.threads)),
      enableProfiling: true,
      profileFilePrefix: join(dir, 'p'),
    })) as OrtSession & { endProfiling(): void };
    const dims = [batch, 3, 224, 224];
    const data = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => Math.random() - 0.5);
    const feeds = { [session.inputNames[0]]: new api.Tensor('float32', data, dims) };
    const warm = 5;
    for (let i = 0; i < warm; i++) await session.run(feeds);
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await session.run(feeds);
    const perRun = (performance.now() - t0) / iters;
    session.endProfiling();
    await session.release();
    const trace = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!trace) throw new Error(`${model}: ORT wrote no profile into ${dir}`);
    const events = JSON.parse(readFileSync(join(dir, trace), 'utf8')) as TraceEvent[];
    const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
    const rows = new Map<string, { us: number; nodes: Set<string> }>();
    for (const e of kernels) {
      const key = label(e, qweights);
      const row = rows.get(key) ?? { us: 0, nodes: new Set<string>() };
      row.us += e.dur;
      row.nodes.add(e.name);
      rows.set(key, row);
    }
    const runs = warm + iters;
    const total = [...rows.values()].reduce((a, r) => a + r.us, 0) / runs / 1000;
    console.log(
      `\n== ${model} b${batch} (ORT): ${perRun.toFixed(2)} ms per run (mean of ${iters}); kernels ${total.toFixed(1)} ms`,
    );
    const sorted = [...rows.entries()].sort((a, b) => b[1].us - a[1].us).slice(0, Number(values.top));
    for (const [key, r] of sorted) {
      const ms = r.us / runs / 1000;
      console.log(
        `  ${key.padEnd(36)} ${ms.toFixed(2).padStart(6)} ms ${((100 * ms) / total).toFixed(1).padStart(5)}% ${String(r.nodes.size).padStart(4)} nodes`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
