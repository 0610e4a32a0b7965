// Building blocks the mobile networks share (torchvision's _make_divisible and
// Conv2dNormActivation).
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { ReLU6 } from '../nn/mobile-activations.js';
import type { Module } from '../nn/module.js';
import { Sequential } from '../nn/sequential.js';
import type { Tensor } from '../tensor.js';

export interface ConvNormActivationOptions {
  /** Square kernel size (default 3). */
  kernelSize?: number;
  stride?: number;
  dilation?: number;
  groups?: number;
  /** The activation's constructor; null for none (default ReLU6). */
  activation?: (() => Module) | null;
  /** Batch norm's eps and momentum (default 1e-5 and 0.1). */
  eps?: number;
  momentum?: number;
}

/**
 * The channel count `v` rounded to a multiple of `divisor` (at least `minValue`), never more
 * than 10% below `v`: torchvision's _make_divisible, shared by the MobileNets and EfficientNet.
 */
export function makeDivisible(v: number, divisor: number, minValue: number = divisor): number {
  let out = Math.max(minValue, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (out < 0.9 * v) out += divisor;
  return out;
}

/**
 * Conv2d (no bias) -> BatchNorm2d -> activation, torchvision's Conv2dNormActivation: children
 * '0', '1' and (when there is an activation) '2'. Padding keeps the size at stride 1.
 */
export function convNormActivation(
  inChannels: number,
  outChannels: number,
  opts: ConvNormActivationOptions = {},
): Sequential {
  const k = opts.kernelSize ?? 3;
  const dilation = opts.dilation ?? 1;
  const layers: Module[] = [
    new Conv2d(inChannels, outChannels, k, {
      stride: opts.stride ?? 1,
      padding: Math.floor((k - 1) / 2) * dilation,
      dilation,
      groups: opts.groups ?? 1,
      bias: false,
    }),
    new BatchNorm2d(outChannels, { eps: opts.eps, momentum: opts.momentum }),
  ];
  const act = opts.activation === undefined ? () => new ReLU6() : opts.activation;
  if (act) layers.push(act());
  return new Sequential(...layers);
}

/**
 * torchvision's initialisation of the MobileNets and EfficientNet: kaiming_normal_ (fan_out)
 * convs, batch norm 1 / 0, zero biases; `linearWeight` draws each linear layer's weight (the
 * families differ there).
 */
export function initMobileWeights(model: Module, linearWeight: (w: Tensor) => void): void {
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d) {
      init.kaimingNormal_(m.weight, { mode: 'fan_out' });
      if (m.bias) init.constant_(m.bias, 0);
    } else if (m instanceof BatchNorm2d) {
      if (m.weight) init.constant_(m.weight, 1);
      if (m.bias) init.constant_(m.bias, 0);
    } else if (m instanceof Linear) {
      linearWeight(m.weight);
      if (m.bias) init.constant_(m.bias, 0);
    }
  }
}
