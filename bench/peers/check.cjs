// After `npm run bench:peers`: says whether each optional peer loads from bench/.peers, and
// what it runs with. onnxruntime-node ships its CPU binary in the npm tarball, so it must load
// even though its install script (a download) was skipped with ONNXRUNTIME_NODE_INSTALL=skip.
const { createRequire } = require('node:module');
const path = require('node:path');

const req = createRequire(path.join(__dirname, '..', '.peers', 'package.json'));
let failed = 0;

function check(name, fn) {
  return Promise.resolve()
    .then(fn)
    .then((what) => console.log(`ok      ${name}: ${what}`))
    .catch((e) => {
      failed++;
      console.log(`FAILED  ${name}: ${String(e ? e.message : e).split('\n')[0]}`);
    });
}

(async () => {
  await check('onnxruntime-node', () => {
    const ort = req('onnxruntime-node');
    return `version ${ort.env.versions.node}, bundled backends ${ort
      .listSupportedBackends()
      .filter((b) => b.bundled)
      .map((b) => b.name)
      .join(', ')}`;
  });
  await check('@tensorflow/tfjs + tfjs-backend-wasm', async () => {
    const tf = req('@tensorflow/tfjs');
    const wasm = req('@tensorflow/tfjs-backend-wasm');
    wasm.setThreadsCount(2);
    await tf.setBackend('wasm');
    await tf.ready();
    const y = tf.add(tf.ones([2]), tf.ones([2])).dataSync();
    if (y[0] !== 2) throw new Error('wrong result from the wasm backend');
    const mt = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT');
    return `tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}, SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT')}, threads ${wasm.getThreadsCount()}${mt ? '' : ' (no multithreaded wasm in Node: single-threaded)'}`;
  });
  process.exitCode = failed ? 1 : 0;
})();
