// torchvision's semantic segmentation models on a dilated ResNet-50: FCN (Long et al. 2015) and
// DeepLabV3 (Chen et al. 2017, atrous spatial pyramid pooling). Module trees and parameter names
// as torchvision 0.14's (`backbone.layer4.2.conv3.weight`, `classifier.0.convs.4.1.weight`,
// `aux_classifier.4.bias`), so its state dicts and .pth files load with no renaming.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { cat } from '../ops/elementwise.js';
import { interpolate } from '../ops/interpolate.js';
import type { Tensor } from '../tensor.js';
import { type ResNet, resnet50 } from './resnet.js';

/**
 * A ResNet without its pooling and classifier (torchvision's IntermediateLayerGetter over
 * conv1..layer4): the children keep their names, so `backbone.layer1.0.conv1.weight` is the
 * ResNet's `layer1.0.conv1.weight`. forward returns layer4's features; `features` also layer3's.
 */
export class ResNetBackbone extends Module {
  private readonly net: ResNet;

  constructor(resnet: ResNet) {
    super();
    this.net = resnet;
    for (const name of ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3', 'layer4'] as const) {
      this.addModule(name, resnet[name]);
    }
  }

  features(x: Tensor): { out: Tensor; aux: Tensor } {
    const r = this.net;
    let y = r.maxpool.call(r.relu.call(r.bn1.call(r.conv1.call(x))));
    y = r.layer2.call(r.layer1.call(y));
    const aux = r.layer3.call(y);
    return { out: r.layer4.call(aux), aux };
  }

  forward(x: Tensor): Tensor {
    return this.features(x).out;
  }
}

/** torchvision's FCNHead: 3x3 conv to in/4 channels, BN, ReLU, dropout 0.1, 1x1 conv to the classes. */
export class FCNHead extends Sequential {
  constructor(inChannels: number, channels: number) {
    const inter = Math.floor(inChannels / 4);
    super(
      new Conv2d(inChannels, inter, 3, { padding: 1, bias: false }),
      new BatchNorm2d(inter),
      new ReLU(),
      new Dropout(0.1),
      new Conv2d(inter, channels, 1),
    );
  }
}

/** One ASPP branch: a dilated 3x3 conv, BN, ReLU. */
export class ASPPConv extends Sequential {
  constructor(inChannels: number, outChannels: number, dilation: number) {
    super(
      new Conv2d(inChannels, outChannels, 3, { padding: dilation, dilation, bias: false }),
      new BatchNorm2d(outChannels),
      new ReLU(),
    );
  }
}

/** The image-level ASPP branch: global average, 1x1 conv, BN, ReLU, spread back over the map. */
export class ASPPPooling extends Sequential {
  constructor(inChannels: number, outChannels: number) {
    super(
      new AdaptiveAvgPool2d(1),
      new Conv2d(inChannels, outChannels, 1, { bias: false }),
      new BatchNorm2d(outChannels),
      new ReLU(),
    );
  }

  forward(x: Tensor): Tensor {
    return interpolate(super.forward(x), [x.shape[2], x.shape[3]], { mode: 'bilinear', alignCorners: false });
  }
}

/** A container whose children are called one by one by their owner (torch's nn.ModuleList). */
class ModuleList extends Module {
  readonly items: Module[];
  constructor(items: Module[]) {
    super();
    this.items = items;
    for (const [i, m] of items.entries()) this.addModule(String(i), m);
  }
  forward(): Tensor {
    throw new Error('ModuleList: call its items, not the list');
  }
}

/**
 * Atrous spatial pyramid pooling: a 1x1 branch, one dilated 3x3 branch per rate and the
 * image-level branch, concatenated and projected to `outChannels` (dropout 0.5), as torchvision.
 */
export class ASPP extends Module {
  readonly convs: ModuleList;
  readonly project: Sequential;

  constructor(inChannels: number, atrousRates: readonly number[], outChannels = 256) {
    super();
    const branches: Module[] = [
      new Sequential(new Conv2d(inChannels, outChannels, 1, { bias: false }), new BatchNorm2d(outChannels), new ReLU()),
      ...atrousRates.map((r) => new ASPPConv(inChannels, outChannels, r)),
      new ASPPPooling(inChannels, outChannels),
    ];
    this.convs = this.addModule('convs', new ModuleList(branches));
    this.project = this.addModule(
      'project',
      new Sequential(
        new Conv2d(branches.length * outChannels, outChannels, 1, { bias: false }),
        new BatchNorm2d(outChannels),
        new ReLU(),
        new Dropout(0.5),
      ),
    );
  }

  forward(x: Tensor): Tensor {
    return this.project.call(
      cat(
        this.convs.items.map((m) => m.call(x)),
        1,
      ),
    );
  }
}

/** torchvision's DeepLabHead: ASPP (rates 12, 24, 36), 3x3 conv 256, BN, ReLU, 1x1 conv to the classes. */
export class DeepLabHead extends Sequential {
  constructor(inChannels: number, numClasses: number) {
    super(
      new ASPP(inChannels, [12, 24, 36]),
      new Conv2d(256, 256, 3, { padding: 1, bias: false }),
      new BatchNorm2d(256),
      new ReLU(),
      new Conv2d(256, numClasses, 1),
    );
  }
}

export interface SegmentationModelOptions {
  /** Output classes (default 21, PASCAL VOC's, as torchvision). */
  numClasses?: number;
  /** Add the auxiliary FCN head on layer3 (default false; torchvision's pretrained weights have it). */
  auxLoss?: boolean;
}

/** What a segmentation model gives: per-pixel logits at the input's size, and the aux head's. */
export interface SegmentationOutputs {
  out: Tensor;
  aux: Tensor | null;
}

/**
 * A segmentation model as torchvision's _SimpleSegmentationModel: backbone features at 1/8 of
 * the input (layer3 and layer4 dilated instead of strided), a head, and the logits resized
 * bilinearly (align_corners false) to the input. forward(x [N, 3, H, W]) -> [N, classes, H, W];
 * forwardWithAux also returns the auxiliary head's logits (for its loss in training).
 */
export class SegmentationModel extends Module {
  readonly backbone: ResNetBackbone;
  readonly classifier: Module;
  readonly auxClassifier: Module | null;

  constructor(backbone: ResNetBackbone, classifier: Module, auxClassifier: Module | null) {
    super();
    this.backbone = this.addModule('backbone', backbone);
    this.classifier = this.addModule('classifier', classifier);
    this.auxClassifier = auxClassifier ? this.addModule('aux_classifier', auxClassifier) : null;
  }

  forwardWithAux(x: Tensor): SegmentationOutputs {
    if (x.ndim !== 4 || x.shape[1] !== 3) {
      throw new Error(`${this.constructor.name}: expected an image batch [N, 3, H, W], got [${x.shape.join(', ')}]`);
    }
    const size: [number, number] = [x.shape[2], x.shape[3]];
    const f = this.backbone.features(x);
    const up = (t: Tensor) => interpolate(t, size, { mode: 'bilinear', alignCorners: false });
    const out = up(this.classifier.call(f.out));
    return { out, aux: this.auxClassifier ? up(this.auxClassifier.call(f.aux)) : null };
  }

  forward(x: Tensor): Tensor {
    return this.forwardWithAux(x).out;
  }
}

function dilatedResnet50(): ResNetBackbone {
  return new ResNetBackbone(resnet50({ replaceStrideWithDilation: [false, true, true] }));
}

/**
 * FCN with a dilated ResNet-50 backbone (torchvision's fcn_resnet50): 32,957,013 parameters at
 * 21 classes (35,322,218 with the aux head).
 */
export function fcnResnet50(opts: SegmentationModelOptions = {}): SegmentationModel {
  const classes = opts.numClasses ?? 21;
  return new SegmentationModel(
    dilatedResnet50(),
    new FCNHead(2048, classes),
    opts.auxLoss ? new FCNHead(1024, classes) : null,
  );
}

/**
 * DeepLabV3 with a dilated ResNet-50 backbone (torchvision's deeplabv3_resnet50): 39,638,869
 * parameters at 21 classes (42,004,074 with the aux head).
 */
export function deeplabv3Resnet50(opts: SegmentationModelOptions = {}): SegmentationModel {
  const classes = opts.numClasses ?? 21;
  return new SegmentationModel(
    dilatedResnet50(),
    new DeepLabHead(2048, classes),
    opts.auxLoss ? new FCNHead(1024, classes) : null,
  );
}
