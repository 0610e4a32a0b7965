// Pretrained weights by name (src/models/pretrained.ts): the registry generated from torchvision,
// and downloads from a local HTTP server on 127.0.0.1 (no network): a ResNet-18 .pth written by
// Debian's torch at test time is fetched, hash-checked, cached and loaded to torch's logits; a
// truncated download, a wrong hash and a server error are each an Error that leaves nothing in
// the cache; FERROCONV_OFFLINE=1 names the file and where to put it.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { models, noGrad, Tensor } from '../src/index.js';
import { hasPython, PYTHON } from './helpers.js';

const hasTorch = hasPython('torch', 'torchvision');

const home = mkdtempSync(join(tmpdir(), 'ferroconv-home-'));
const env = { ...process.env };
beforeAll(() => {
  process.env.FERROCONV_HOME = home;
  delete process.env.FERROCONV_OFFLINE;
  delete process.env.FERROCONV_WEIGHTS_URL;
});
afterAll(() => {
  process.env = env;
  rmSync(home, { recursive: true, force: true });
});

describe('the registry', () => {
  it("lists torchvision's weights for the zoo, with ImageNet's class names", () => {
    expect(models.weightsFor('resnet50')).toEqual(['IMAGENET1K_V1', 'IMAGENET1K_V2']);
    expect(models.weightsLocation('resnet50').path).toBe(join(home, 'weights', 'resnet50-11ad3fa6.pth'));
    expect(models.weightsLocation('resnet50', 'IMAGENET1K_V1').url).toBe(
      'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    );
    process.env.FERROCONV_WEIGHTS_URL = 'http://mirror.example/m/';
    expect(models.weightsLocation('alexnet').url).toBe('http://mirror.example/m/alexnet-owt-7be5be79.pth');
    delete process.env.FERROCONV_WEIGHTS_URL;
    expect(models.IMAGENET_CLASSES.length).toBe(1000);
    expect(models.IMAGENET_CLASSES[0]).toBe('tench');
    expect(() => models.weightsLocation('resnet50', 'IMAGENET9K')).toThrow(/has no weights 'IMAGENET9K'/);
    expect(() => models.weightsLocation('lenet5')).toThrow(/no published weights for 'lenet5'/);
  });

  it('a factory given weights that are not cached says how to get them', () => {
    expect(() => models.resnet18({ weights: 'IMAGENET1K_V1' })).toThrow(/downloadWeights\('resnet18'/);
    process.env.FERROCONV_OFFLINE = '1';
    return expect(models.pretrained('resnet18')).rejects.toThrow(/FERROCONV_OFFLINE=1 .*resnet18-f37072fd\.pth/);
  });
});

describe.skipIf(!hasTorch)('downloads from a local server', () => {
  let server: Server;
  let base = '';
  let bytes: Buffer;
  let sha = '';
  let ref: { logits: number[] };
  const hits: string[] = [];

  beforeAll(async () => {
    delete process.env.FERROCONV_OFFLINE;
    const made = mkdtempSync(join(tmpdir(), 'ferroconv-pth-'));
    execFileSync(PYTHON, [join(__dirname, 'fixtures', 'gen_torch_pth.py'), made], { stdio: 'pipe' });
    bytes = readFileSync(join(made, 'resnet18.pth'));
    ref = JSON.parse(readFileSync(join(made, 'reference.json'), 'utf8'));
    rmSync(made, { recursive: true, force: true });
    sha = createHash('sha256').update(bytes).digest('hex').slice(0, 8);
    server = createServer((req, res) => {
      const url = req.url ?? '';
      hits.push(url);
      if (url.startsWith('/err-')) {
        res.writeHead(500);
        res.end('no');
      } else if (url.startsWith('/cut-')) {
        // Promises every byte, sends half, then hangs up.
        res.writeHead(200, { 'content-length': String(bytes.length) });
        res.write(bytes.subarray(0, bytes.length >> 1), () => res.destroy());
      } else {
        res.writeHead(200, { 'content-length': String(bytes.length) });
        res.end(bytes);
      }
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    models.registerWeights('resnet18', 'TEST', { url: `${base}/resnet18-${sha}.pth` });
    models.registerWeights('resnet18', 'CUT', { url: `${base}/cut-${sha}.pth` });
    models.registerWeights('resnet18', 'BADHASH', { url: `${base}/bad-00000000.pth` });
    models.registerWeights('resnet18', 'ERR', { url: `${base}/err-${sha}.pth` });
  }, 120_000);
  afterAll(() => new Promise<void>((ok) => server.close(() => ok())));

  const cached = () => (existsSync(join(home, 'weights')) ? readdirSync(join(home, 'weights')) : []);

  it('a truncated download, a wrong hash and a server error are Errors and leave nothing behind', async () => {
    await expect(models.downloadWeights('resnet18', 'CUT')).rejects.toThrow(/cut-.*(broke off|got \d+ of)/);
    await expect(models.downloadWeights('resnet18', 'BADHASH')).rejects.toThrow(/does not start with 00000000/);
    await expect(models.downloadWeights('resnet18', 'ERR')).rejects.toThrow(/HTTP 500/);
    expect(cached()).toEqual([]);
  });

  it("downloads once, checks the hash, and loads torch's weights to torch's logits", async () => {
    const seen: number[] = [];
    const drawn: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      drawn.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    let path: string;
    try {
      path = await models.downloadWeights('resnet18', 'TEST', { onProgress: (n) => seen.push(n), progress: true });
    } finally {
      process.stderr.write = write;
    }
    expect(cached()).toEqual([`resnet18-${sha}.pth`]);
    expect(seen.at(-1)).toBe(bytes.length);
    // The progress bar, as torch.hub draws one: the file, a bar, and 100% at the end.
    expect(drawn.at(-1)).toMatch(
      new RegExp(`^\\rdownloading resnet18-${sha}\\.pth \\[#{30}\\] 100% [\\d.]+/[\\d.]+ MB\\n$`),
    );
    const before = hits.length;
    const net = await models.pretrained('resnet18', 'TEST'); // cached: no request
    expect(hits.length).toBe(before);
    expect(path).toBe(models.weightsLocation('resnet18', 'TEST').path);
    const x = new Tensor(
      Float32Array.from({ length: 2 * 3 * 64 * 64 }, (_, i) => Math.sin(i * 0.01)),
      [2, 3, 64, 64],
    );
    const y = noGrad(() => net.call(x));
    const scale = Math.max(...ref.logits.map(Math.abs));
    expect(Math.max(...ref.logits.map((w, i) => Math.abs(y.data[i] - w) / scale))).toBeLessThan(1e-5);
    // The synchronous factory takes the cached file too, in eval mode.
    const again = models.resnet18({ weights: 'TEST' });
    expect(again.training).toBe(false);
    expect(Array.from(noGrad(() => again.call(x)).data)).toEqual(Array.from(y.data));
  }, 120_000);
});
