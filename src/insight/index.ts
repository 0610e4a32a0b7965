// Seeing inside a CNN: the layer table (summary) with receptive fields, the classic image kernels
// (filter), per-layer timing (profile), and pictures of filters, feature maps and saliency
// (visualize).
export { summary, ModelSummary, type SummaryRow, type SummaryOptions } from './summary.js';
export { profile, ProfileResult, type LayerTiming, type ProfileOptions } from './profile.js';
export { type FieldAxis, type ReceptiveField, throughWindow, unionField } from './receptive-field.js';
export {
  filter,
  KERNELS,
  kernelNames,
  differenceOfGaussians,
  isZeroSum,
  forDisplay,
  type KernelName,
  type KernelRows,
  type FilterOptions,
} from './kernels.js';
export { readImage, writeImage, heatColor } from './image.js';
export * as visualize from './visualize.js';
