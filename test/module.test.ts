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
import { lenet5 } from '../src/models/index.js';
import { thrown } from './helpers.js';

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

// Module.call is the one door for layer calls: a failing layer is named by its path in the model,
// its type and its input, for a user's Sequential and a user's own Module exactly as in the zoo
// (test/zoo.test.ts checks the zoo's messages).
describe('errors name the failing layer', () => {
  const tooSmall =
    'input: 2x2 is too small for a 3x3 window (stride 3x3, padding 0x0, dilation 1x1): output would be 0x0';

  class Head extends Module {
    readonly pool: MaxPool2d;
    readonly fc: Linear;
    constructor() {
      super();
      this.pool = this.addModule('pool', new MaxPool2d(3));
      this.fc = this.addModule('fc', new Linear(4, 2));
    }
    forward(x: Tensor): Tensor {
      return this.fc.call(new Flatten().call(this.pool.call(x)));
    }
  }

  it("a user's Sequential, nested", () => {
    const net = new Sequential(
      new Conv2d(3, 4, 3, { padding: 1 }),
      new ReLU(),
      new Sequential(new MaxPool2d(2), ['head', new Head()]),
    );
    const x = randn([1, 3, 4, 4]);
    const expected = `Sequential: layer '2.head.pool' (MaxPool2d) failed on [1, 4, 2, 2] (model input [1, 3, 4, 4]): ${tooSmall}`;
    // Through forward (Sequential notes its input), call() and predict() alike.
    for (const run of [() => net.forward(x), () => net.call(x)]) {
      const err = thrown(run);
      expect(err.message).toBe(expected);
      // Annotated once, at the innermost layer: the cause is the op's own error.
      expect((err.cause as Error).message).toBe(tooSmall);
      expect((err.cause as Error).cause).toBeUndefined();
    }
    return expect(net.predict(x)).rejects.toThrow(expected);
  });

  it("a user's own Module, around a Sequential and a zoo model", () => {
    class Net extends Module {
      readonly stem = this.addModule('stem', new Sequential(new Conv2d(1, 4, 3, { padding: 1 }), new ReLU()));
      readonly head = this.addModule('head', new Head());
      forward(x: Tensor): Tensor {
        return this.head.call(this.stem.call(x));
      }
    }
    const net = new Net();
    const x = randn([1, 1, 2, 2]);
    expect(thrown(() => net.call(x)).message).toBe(
      `Net: layer 'head.pool' (MaxPool2d) failed on [1, 4, 2, 2] (model input [1, 1, 2, 2]): ${tooSmall}`,
    );
    // Entered through its own forward the model input is unknown; the layer is named the same.
    expect(thrown(() => net.forward(x)).message).toBe(
      `Net: layer 'head.pool' (MaxPool2d) failed on [1, 4, 2, 2]: ${tooSmall}`,
    );
    // A layer's own check (no window here) is named the same way.
    expect(thrown(() => net.call(randn([1, 2, 5, 5]))).message).toBe(
      "Net: layer 'stem.0' (Conv2d) failed on [1, 2, 5, 5] (model input [1, 2, 5, 5]): " +
        'Conv2d: expected input [N, 1, H, W], got [1, 2, 5, 5]',
    );

    // A zoo model inside a user's model is a layer like any other.
    class Wrapper extends Module {
      readonly backbone = this.addModule('backbone', lenet5());
      forward(x: Tensor): Tensor {
        return this.backbone.call(x);
      }
    }
    const err = thrown(() => new Wrapper().call(zeros([2, 3, 28, 28])));
    expect(err.message).toBe(
      "Wrapper: layer 'backbone' (LeNet5) failed on [2, 3, 28, 28] (model input [2, 3, 28, 28]): " +
        "LeNet5: expected input [N, 1, H, W] (layer 'features.0' takes 1 channel), got [2, 3, 28, 28]",
    );
  });

  it("a model's own checks and a lone layer's errors are not rewritten", () => {
    expect(thrown(() => lenet5().call(zeros([1, 1, 20, 20]))).message).toBe(
      'LeNet5: expected a 28x28 input [N, 1, 28, 28], got [1, 1, 20, 20]',
    );
    expect(thrown(() => new MaxPool2d(3).call(zeros([1, 1, 2, 2]))).message).toBe(tooSmall);
  });

  it('a forward the user replaced still runs through call()', () => {
    const net = new Sequential(new Conv2d(1, 2, 3), new ReLU());
    const relu = net.at(1);
    relu.forward = () => {
      throw new Error('hooked');
    };
    expect(thrown(() => net.forward(zeros([1, 1, 3, 3]))).message).toBe(
      "Sequential: layer '1' (ReLU) failed on [1, 2, 1, 1] (model input [1, 1, 3, 3]): hooked",
    );
  });
});
