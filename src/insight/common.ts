// What the look-inside tools share: the path of a layer call as a user names it, running a
// model with its modes and fusion set for the look and put back after, and the printed tables.
import { setInferenceFusion } from '../nn/fuse.js';
import { type CallStep, type Module, modulePath } from '../nn/module.js';

/** A function giving each module's path relative to `model` (its state-dict path). */
export function relativePath(model: Module): (m: Module) => string {
  const base = modulePath(model);
  return (m) => {
    const p = modulePath(m);
    return !base ? p : p === base ? '' : p.startsWith(`${base}.`) ? p.slice(base.length + 1) : p;
  };
}

/** A call's path: its module's, followed by the step's name for an imported graph's node. */
export function callPath(moduleAt: string, step: CallStep | undefined): string {
  if (!step) return moduleAt;
  return moduleAt ? `${moduleAt}.${step.name}` : step.name;
}

/**
 * Runs `fn` with every module of `model` in `training` mode and inference fusion off (so every
 * layer is entered through its own call), and with `freeze` the parameters needing no gradient
 * (a saliency backward then fills no `.grad` of theirs); puts all of it back after.
 */
export function inspecting<T>(model: Module, opts: { training: boolean; freeze?: boolean }, fn: () => T): T {
  const modules = model.namedModules().map(([, m]) => m);
  const modes = modules.map((m) => m.training);
  const params = opts.freeze ? model.parameters() : [];
  const wanted = params.map((p) => p.requiresGrad);
  const fusion = setInferenceFusion(false);
  try {
    for (const m of modules) m.training = opts.training;
    for (const p of params) p.requiresGrad = false;
    return fn();
  } finally {
    modules.forEach((m, i) => {
      m.training = modes[i];
    });
    params.forEach((p, i) => {
      p.requiresGrad = wanted[i];
    });
    setInferenceFusion(fusion);
  }
}

/**
 * A text table: a rule, the head, a rule, the rows, a rule, then `footer` (each block of it
 * followed by a rule). Columns in `left` are left-aligned, the others right-aligned.
 */
export function textTable(head: string[], rows: string[][], left: number[], footer: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c
      .map((v, i) => (left.includes(i) ? v.padEnd(widths[i]) : v.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  const rule = '='.repeat(widths.reduce((a, w) => a + w + 2, -2));
  return [rule, line(head), rule, ...rows.map(line), rule, ...footer.flatMap((block) => [...block, rule])].join('\n');
}
