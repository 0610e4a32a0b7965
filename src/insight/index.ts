// Seeing inside a CNN: the layer table (summary), receptive fields.
export { summary, ModelSummary, type SummaryRow, type SummaryOptions } from './summary.js';
export { type FieldAxis, type ReceptiveField, throughWindow, unionField } from './receptive-field.js';
