// The model zoo: classic CNN architectures with torchvision's module trees, parameter names and
// initialisations (LeNet-5 has no torchvision twin; see lenet.ts). Pretrained torchvision weights,
// once converted (e.g. to safetensors), load with loadStateDict and no renaming.
export { LeNet5, lenet5, type LeNet5Options } from './lenet.js';
export { AlexNet, alexnet, type AlexNetOptions } from './alexnet.js';
export {
  VGG,
  makeVggLayers,
  vggConfigs,
  vgg11,
  vgg11Bn,
  vgg13,
  vgg13Bn,
  vgg16,
  vgg16Bn,
  vgg19,
  vgg19Bn,
  type VggConfig,
  type VggOptions,
} from './vgg.js';
export {
  GoogLeNet,
  BasicConv2d,
  Inception,
  InceptionAux,
  googlenet,
  type GoogLeNetOptions,
  type GoogLeNetOutputs,
} from './googlenet.js';
export {
  ResNet,
  BasicBlock,
  Bottleneck,
  resnet18,
  resnet34,
  resnet50,
  resnet101,
  resnet152,
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
  densenet121,
  densenet161,
  densenet169,
  densenet201,
  type DenseNetOptions,
  type DenseNetFactoryOptions,
} from './densenet.js';
export { stochasticDepth, linearSurvivalProb } from './stochastic-depth.js';
export { mnistNet } from './mnist-net.js';
export {
  classify,
  preprocessImage,
  IMAGENET_MEAN,
  IMAGENET_STD,
  type ClassifyOptions,
  type Prediction,
} from './classify.js';
export { SqueezeNet, Fire, squeezenet1_0, squeezenet1_1, type SqueezeNetOptions } from './squeezenet.js';
export { MobileNetV2, InvertedResidual, mobilenetV2, type MobileNetV2Options } from './mobilenet-v2.js';
export { convNormActivation, makeDivisible, type ConvNormActivationOptions } from './mobile-blocks.js';
export {
  MobileNetV3,
  V3InvertedResidual,
  SqueezeExcitation,
  mobilenetV3Large,
  mobilenetV3Small,
  type MobileNetV3Options,
  type V3BlockConfig,
} from './mobilenet-v3.js';
export { EfficientNet, MBConv, efficientnetB0, type EfficientNetOptions, type MBConvConfig } from './efficientnet.js';
export {
  ShuffleNetV2,
  ShuffleUnit,
  channelShuffle,
  shufflenetV2X0_5,
  shufflenetV2X1_0,
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
  inceptionV3,
  type InceptionV3Options,
  type InceptionV3Outputs,
} from './inception-v3.js';
