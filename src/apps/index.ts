// The applications of CNNs beyond classification: heads, losses, metrics, synthetic data sets
// built from MNIST, a training loop for targets other than labels, and pictures of predictions.
export {
  type DigitSource,
  type Box,
  mnistDigits,
  resampleDigit,
  inkBox,
  paste,
  addClutter,
  addNoise,
  canvasBatch,
  canvasImage,
} from './canvas.js';
export { boxIoU, giouLoss, cxcywhToXyxy } from './boxes.js';
export { trainTask, type TaskSet, type TaskLoss, type TrainTaskOptions, type EpochLog } from './train.js';
export { drawGrid, classColor, PALETTE, type Overlay, type Tile, type GridOptions } from './draw.js';
export {
  localizationSet,
  LocalizationSet,
  LocalizationNet,
  splitLocalization,
  localizationLoss,
  localizationMetrics,
  evaluateLocalization,
  type LocalizationBatch,
  type LocalizationSetOptions,
  type LocalizationMetrics,
  type MultiTaskWeights,
} from './localization.js';
export {
  segmentationSet,
  SegmentationSet,
  SegmentationNet,
  SEGMENTATION_CLASSES,
  diceLoss,
  segmentationLoss,
  segmentationMetrics,
  pixelArgmax,
  evaluateSegmentation,
  type SegmentationBatch,
  type SegmentationSetOptions,
  type SegmentationMetrics,
} from './segmentation.js';
export {
  l2Normalize,
  L2Normalize,
  identitySet,
  IdentitySet,
  splitIdentities,
  EmbeddingNet,
  batchHardTripletLoss,
  ArcFaceHead,
  embed,
  verify,
  verificationMetrics,
  rocAuc,
  equalErrorRate,
  type IdentityBatch,
  type IdentitySetOptions,
  type VerificationMetrics,
} from './identification.js';
export {
  poseSet,
  PoseSet,
  PoseNet,
  POSE_JOINTS,
  POSE_LIMBS,
  decodeHeatmaps,
  pck,
  evaluatePose,
  type PoseBatch,
  type PoseSetOptions,
} from './pose.js';
export { canvasClassifier, copyFeatures, distillationLoss, type DistillationOptions } from './transfer.js';
export {
  captionSet,
  CaptionSet,
  CaptionNet,
  captionLoss,
  captionText,
  bleu4,
  evaluateCaptions,
  CAPTION_VOCAB,
  CAPTION_LENGTH,
  type CaptionBatch,
} from './captioning.js';
export {
  RECIPES,
  localizationRecipe,
  segmentationRecipe,
  identificationRecipe,
  poseRecipe,
  transferRecipe,
  captioningRecipe,
  type RecipeOptions,
  type RecipeResult,
} from './recipes.js';
