// The model zoo: classic CNN architectures with torchvision's module trees, parameter names and
// initialisations (LeNet-5 has no torchvision twin; see lenet.ts). torchvision's pretrained
// weights load by name (`resnet50({ weights: 'IMAGENET1K_V1' })`, `await pretrained('resnet50')`),
// from its own .pth files and with no renaming (pretrained.ts).
import * as zooAlexnet from './alexnet.js';
import * as zooDensenet from './densenet.js';
import * as zooEfficientnet from './efficientnet.js';
import * as zooGooglenet from './googlenet.js';
import * as zooInceptionV3 from './inception-v3.js';
import * as zooMobilenetV2 from './mobilenet-v2.js';
import * as zooMobilenetV3 from './mobilenet-v3.js';
import * as zooResnet from './resnet.js';
import * as zooShufflenetV2 from './shufflenet-v2.js';
import * as zooSqueezenet from './squeezenet.js';
import * as zooVgg from './vgg.js';
import { AUX, type DownloadOptions, downloadWeights, type WithWeights, withWeights } from './pretrained.js';
import type { Module } from '../nn/module.js';
export { LeNet5, lenet5, type LeNet5Options } from './lenet.js';
export { AlexNet, type AlexNetOptions } from './alexnet.js';
export {
  VGG,
  makeVggLayers,
  vggConfigs,
  type VggConfig,
  type VggOptions,
} from './vgg.js';
export {
  GoogLeNet,
  BasicConv2d,
  Inception,
  InceptionAux,
  type GoogLeNetOptions,
  type GoogLeNetOutputs,
} from './googlenet.js';
export {
  ResNet,
  BasicBlock,
  Bottleneck,
  type BlockKind,
  type ResNetOptions,
  type ResNetFactoryOptions,
  type ResidualBlockOptions,
} from './resnet.js';
export {
  DenseNet,
  DenseLayer,
  DenseBlock,
  Transition,
  type DenseNetOptions,
  type DenseNetFactoryOptions,
} from './densenet.js';
export { stochasticDepth, linearSurvivalProb } from './stochastic-depth.js';
export { mnistNet } from './mnist-net.js';
export {
  SegmentationModel,
  ResNetBackbone,
  FCNHead,
  ASPP,
  ASPPConv,
  ASPPPooling,
  DeepLabHead,
  fcnResnet50,
  deeplabv3Resnet50,
  type SegmentationModelOptions,
  type SegmentationOutputs,
} from './segmentation.js';
export {
  classify,
  preprocessImage,
  IMAGENET_MEAN,
  IMAGENET_STD,
  type ClassifyOptions,
  type Prediction,
} from './classify.js';
export { SqueezeNet, Fire, type SqueezeNetOptions } from './squeezenet.js';
export { MobileNetV2, InvertedResidual, type MobileNetV2Options } from './mobilenet-v2.js';
export { convNormActivation, makeDivisible, type ConvNormActivationOptions } from './mobile-blocks.js';
export {
  MobileNetV3,
  V3InvertedResidual,
  SqueezeExcitation,
  type MobileNetV3Options,
  type V3BlockConfig,
} from './mobilenet-v3.js';
export { EfficientNet, MBConv, type EfficientNetOptions, type MBConvConfig } from './efficientnet.js';
export {
  ShuffleNetV2,
  ShuffleUnit,
  channelShuffle,
  type ShuffleNetV2Options,
} from './shufflenet-v2.js';
export {
  Inception3,
  InceptionA,
  InceptionB,
  InceptionC,
  InceptionD,
  InceptionE,
  InceptionV3Aux,
  type InceptionV3Options,
  type InceptionV3Outputs,
} from './inception-v3.js';

// The factories of models torchvision publishes weights for take `weights` ('DEFAULT',
// 'IMAGENET1K_V1', ...): the cached file is loaded (see pretrained.ts; download it first with
// downloadWeights, or use pretrained()).
export const alexnet = withWeights('alexnet', zooAlexnet.alexnet);
export const vgg11 = withWeights('vgg11', zooVgg.vgg11);
export const vgg11Bn = withWeights('vgg11Bn', zooVgg.vgg11Bn);
export const vgg13 = withWeights('vgg13', zooVgg.vgg13);
export const vgg13Bn = withWeights('vgg13Bn', zooVgg.vgg13Bn);
export const vgg16 = withWeights('vgg16', zooVgg.vgg16);
export const vgg16Bn = withWeights('vgg16Bn', zooVgg.vgg16Bn);
export const vgg19 = withWeights('vgg19', zooVgg.vgg19);
export const vgg19Bn = withWeights('vgg19Bn', zooVgg.vgg19Bn);
export const googlenet = withWeights('googlenet', zooGooglenet.googlenet, AUX);
export const resnet18 = withWeights('resnet18', zooResnet.resnet18);
export const resnet34 = withWeights('resnet34', zooResnet.resnet34);
export const resnet50 = withWeights('resnet50', zooResnet.resnet50);
export const resnet101 = withWeights('resnet101', zooResnet.resnet101);
export const resnet152 = withWeights('resnet152', zooResnet.resnet152);
export const densenet121 = withWeights('densenet121', zooDensenet.densenet121);
export const densenet161 = withWeights('densenet161', zooDensenet.densenet161);
export const densenet169 = withWeights('densenet169', zooDensenet.densenet169);
export const densenet201 = withWeights('densenet201', zooDensenet.densenet201);
export const squeezenet1_0 = withWeights('squeezenet1_0', zooSqueezenet.squeezenet1_0);
export const squeezenet1_1 = withWeights('squeezenet1_1', zooSqueezenet.squeezenet1_1);
export const mobilenetV2 = withWeights('mobilenetV2', zooMobilenetV2.mobilenetV2);
export const mobilenetV3Large = withWeights('mobilenetV3Large', zooMobilenetV3.mobilenetV3Large);
export const mobilenetV3Small = withWeights('mobilenetV3Small', zooMobilenetV3.mobilenetV3Small);
export const efficientnetB0 = withWeights('efficientnetB0', zooEfficientnet.efficientnetB0);
export const shufflenetV2X0_5 = withWeights('shufflenetV2X0_5', zooShufflenetV2.shufflenetV2X0_5);
export const shufflenetV2X1_0 = withWeights('shufflenetV2X1_0', zooShufflenetV2.shufflenetV2X1_0);
export const inceptionV3 = withWeights('inceptionV3', zooInceptionV3.inceptionV3, AUX);

const FACTORIES: Record<string, WithWeights> = {
  alexnet,
  vgg11,
  vgg11Bn,
  vgg13,
  vgg13Bn,
  vgg16,
  vgg16Bn,
  vgg19,
  vgg19Bn,
  googlenet,
  resnet18,
  resnet34,
  resnet50,
  resnet101,
  resnet152,
  densenet121,
  densenet161,
  densenet169,
  densenet201,
  squeezenet1_0,
  squeezenet1_1,
  mobilenetV2,
  mobilenetV3Large,
  mobilenetV3Small,
  efficientnetB0,
  shufflenetV2X0_5,
  shufflenetV2X1_0,
  inceptionV3,
};

/** A zoo model with published weights, downloading them into the cache first when needed. */
export async function pretrained(name: string, weights = 'DEFAULT', opts: DownloadOptions = {}): Promise<Module> {
  const make = FACTORIES[name];
  if (!make)
    throw new Error(
      `pretrained: no published weights for '${name}' (expected one of ${Object.keys(FACTORIES).join(', ')})`,
    );
  await downloadWeights(name, weights, opts);
  return make({ weights });
}

export {
  downloadWeights,
  registerWeights,
  weightsDir,
  weightsFor,
  weightsLocation,
  cachedWeights,
  loadPretrained,
  IMAGENET_CLASSES,
  type DownloadOptions,
} from './pretrained.js';
