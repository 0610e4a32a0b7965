// Target `tfjs`: a tfjs layers model as one JSON document ({modelTopology, weightSpecs,
// weightData: base64}, what tfjs's save handlers get) through loadTfjsLayersModel, then, when it
// loads and declares a small input, a forward. The structure-aware mutation edits the JSON tree
// (layer classes and configs, shapes, weight specs); every failure must be the importer's own
// Error ('loadTfjsLayersModel: ...' reading, 'TfjsModel: ...' running).
import { loadTfjsLayersModel } from '../../src/io/tfjs.js';
import type { Target } from '../engine.js';
import { forwardDeclared } from './forward.js';
import { type Json, mutateTree, render, utf8 } from '../mutate.js';

function decode(input: Uint8Array): { modelTopology: unknown; weightSpecs: never[]; weightData: Uint8Array } {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(new TextDecoder().decode(input));
  } catch (e) {
    throw new Error(`loadTfjsLayersModel: not JSON (${(e as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null) throw new Error('loadTfjsLayersModel: not an object');
  const data = typeof doc.weightData === 'string' ? Buffer.from(doc.weightData, 'base64') : new Uint8Array(0);
  return {
    modelTopology: doc.modelTopology,
    weightSpecs: (Array.isArray(doc.weightSpecs) ? doc.weightSpecs : []) as never[],
    weightData: new Uint8Array(data),
  };
}

export function createTarget(): Target {
  return {
    name: 'tfjs',
    dictionary: ['Conv2D', 'Dense', 'Flatten', 'same', 'valid', 'kernel', 'bias', 'inbound_nodes', 'class_name'].map(
      utf8,
    ),
    isParserError: (message) => message.startsWith('loadTfjsLayersModel: ') || message.startsWith('TfjsModel: '),
    extension: () => 'json',
    mutate(input, rng) {
      let root: Json;
      try {
        root = JSON.parse(new TextDecoder().decode(input));
      } catch {
        return null;
      }
      for (let k = rng.range(1, 3); k > 0; k--) root = mutateTree(root, rng);
      return utf8(render(root));
    },
    async execute(input) {
      const model = await loadTfjsLayersModel(decode(input));
      forwardDeclared(model);
    },
  };
}
