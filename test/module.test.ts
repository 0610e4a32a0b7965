// Module: torch-style names, parameter counts, state dicts (strict and not), freezing, modes,
// default initialisation and predict() that keeps the event loop free.
import { describe, expect, it } from 'vitest';
import {
  BatchNorm2d,
  Conv2d,
  Dropout,
  Flatten,
  Linear,
  MaxPool2d,
  Module,
  ReLU,
  Sequential,
  type Tensor,
  init,
  mul,
  randn,
  zeros,
} from '../src/index.js';

class Block extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  constructor() {
    super();
    this.conv1 = this.addModule('conv1', new Conv2d(3, 8, 3, { padding: 1, bias: false }));
    this.bn1 = this.addModule('bn1', new BatchNorm2d(8));
  }
  forward(x: Tensor): Tensor {
    return this.bn1.forward(this.conv1.forward(x));
  }
}

describe('Module', () => {
  const net = () => new Sequential(new Block(), new ReLU(), new Flatten(), new Linear(8 * 4 * 4, 5));

  it('names parameters and buffers with dotted paths as PyTorch does', () => {
    const m = net();
    expect(m.namedParameters().map(([k]) => k)).toEqual([
      '0.conv1.weight',
      '0.bn1.weight',
      '0.bn1.bias',
      '3.weight',
      '3.bias',
    ]);
    expect(m.namedBuffers().map(([k]) => k)).toEqual([
      '0.bn1.running_mean',
      '0.bn1.running_var',
      '0.bn1.num_batches_tracked',
    ]);
    expect(m.numParameters()).toBe(8 * 3 * 9 + 8 + 8 + 5 * 128 + 5);
    expect(m.getSubmodule('0.bn1')).toBeInstanceOf(BatchNorm2d);
    expect(() => m.getSubmodule('0.nope')).toThrow("getSubmodule: no module 'nope' in '0.nope'");
  });

  it('initialises conv and linear like PyTorch (kaiming uniform a=sqrt(5): bound 1/sqrt(fan_in))', () => {
    const c = new Conv2d(16, 32, 3);
    const bound = 1 / Math.sqrt(16 * 9);
    const w = Array.from(c.weight.data);
    expect(Math.max(...w)).toBeLessThanOrEqual(bound);
    expect(Math.min(...w)).toBeGreaterThanOrEqual(-bound);
    expect(Math.max(...w)).toBeGreaterThan(0.9 * bound);
    const t = zeros([256, 128]);
    init.kaimingNormal_(t, { mode: 'fan_out', nonlinearity: 'relu' });
    const std = Math.sqrt(mul(t, t).mean());
    expect(Math.abs(std - Math.sqrt(2 / 256)) / Math.sqrt(2 / 256)).toBeLessThan(0.03);
  });

  it('strict loadStateDict lists missing, unexpected and mis-shaped keys and changes nothing', () => {
    const a = net();
    const sd = new Map(a.stateDict());
    sd.delete('3.bias');
    sd.set('extra', zeros([1]));
    sd.set('3.weight', zeros([5, 7]));
    const b = net();
    const before = b.stateDict().get('0.conv1.weight')!.data.slice();
    expect(() => b.loadStateDict(sd)).toThrow(
      /missing keys: 3\.bias\. unexpected keys: extra\. shape mismatch: 3\.weight: expected \[5, 128\], got \[5, 7\]/,
    );
    expect(Array.from(b.stateDict().get('0.conv1.weight')!.data)).toEqual(Array.from(before));
    sd.delete('3.weight');
    const r = b.loadStateDict(sd, false);
    expect(r).toEqual({ missing: ['3.weight', '3.bias'], unexpected: ['extra'] });
    expect(Array.from(b.stateDict().get('0.conv1.weight')!.data)).toEqual(
      Array.from(a.stateDict().get('0.conv1.weight')!.data),
    );
  });

  it('freezes by prefix or pattern and switches train/eval through the tree', () => {
    const m = net();
    expect(m.freeze('0.')).toBe(3);
    expect(
      m
        .namedParameters()
        .filter(([, p]) => p.requiresGrad)
        .map(([k]) => k),
    ).toEqual(['3.weight', '3.bias']);
    expect(m.unfreeze(/bn1/)).toBe(2);
    m.eval();
    expect(m.namedModules().every(([, x]) => !x.training)).toBe(true);
    m.train();
    expect((m.getSubmodule('0.bn1') as BatchNorm2d).training).toBe(true);
  });

  it('layers reject inputs of the wrong shape with a message naming the layer', () => {
    expect(() => new Conv2d(3, 4, 3).forward(zeros([1, 2, 8, 8]))).toThrow(
      'Conv2d: expected input [N, 3, H, W], got [1, 2, 8, 8]',
    );
    expect(() => new Linear(4, 2).forward(zeros([3, 5]))).toThrow('Linear: expected input [N, 4], got [3, 5]');
    expect(() => new Conv2d(3, 4, 3, { groups: 2 })).toThrow(/groups \(2\) must divide/);
    expect(() => new Dropout(1)).toThrow('Dropout: p must be in [0, 1), got 1');
    expect(new MaxPool2d(2)).toBeInstanceOf(Module);
  });

  it('predict() runs in chunks, in eval mode, and lets timers fire', async () => {
    const m = new Sequential(new Conv2d(1, 2, 3, { padding: 1 }), new Flatten());
    const x = randn([10, 1, 4, 4]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const y = await m.predict(x, { batchSize: 3 });
    clearInterval(timer);
    expect(y.shape).toEqual([10, 32]);
    expect(ticks).toBeGreaterThan(0);
    const direct = m.forward(x);
    expect(Array.from(y.data)).toEqual(Array.from(direct.data));
    expect(m.training).toBe(true);
  });
});
