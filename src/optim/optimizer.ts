// Optimizer: the base every update rule (SGD, Adam, ...) builds on. It owns the parameter groups
// (each with its own hyper-parameters, which schedulers change between steps), the per-parameter
// state (moment buffers, step counts) and a JSON-serialisable state dict so a checkpoint can
// resume training exactly where it stopped. The update rules follow PyTorch 1.13's single-tensor
// (foreach=False) code operation by operation in float32; see float32.ts for how.
import { persistent, Tensor, writableData } from '../tensor.js';
import { describe } from '../describe.js';

/** Hyper-parameters every parameter group has, whatever the optimizer. */
export interface GroupOptions {
  /** Learning rate of the group; learning-rate schedulers change this value. */
  lr: number;
  /** L2 penalty added to the gradient (AdamW: decoupled decay). Default 0 (AdamW 1e-2). */
  weightDecay: number;
  /** Caffe's lr_mult: the update uses lr * lrMult. Default 1. */
  lrMult: number;
  /** Caffe's decay_mult: the update uses weightDecay * decayMult. Default 1. */
  decayMult: number;
}

/** A hyper-parameter value: a number, a flag, or a pair (Adam's betas). */
export type OptionValue = number | boolean | readonly [number, number];

/** A parameter group as the optimizer holds it: every option resolved. */
export type ParamGroup<O extends GroupOptions = GroupOptions> = O & { params: Tensor[] };

/** A parameter group as given to the constructor: options it leaves out take the defaults. */
export type ParamGroupInput<O extends GroupOptions = GroupOptions> = Partial<O> & { params: Tensor[] };

/** What an optimizer is constructed with: a flat list of tensors (one group) or groups. */
export type Params<O extends GroupOptions = GroupOptions> = readonly Tensor[] | readonly ParamGroupInput<O>[];

/** Per-parameter state: the number of updates it has had and its float32 buffers. */
export interface ParamState {
  step: number;
  buffers: Record<string, Float32Array>;
}

/** One parameter group in a state dict: its options plus the indices of its parameters. */
export interface SavedParamGroup {
  params: number[];
  [option: string]: number | boolean | number[];
}

/**
 * The optimizer's state as plain JSON: `state` maps a parameter's index (counted across groups
 * in order, as torch does) to its step count and buffers (float32 values as number arrays);
 * `paramGroups` holds each group's hyper-parameters.
 */
export interface OptimizerStateDict {
  optimizer: string;
  state: Record<string, Record<string, number | number[]>>;
  paramGroups: SavedParamGroup[];
}

/** Options shared by every optimizer: these four come first in each one's defaults. */
export const GROUP_DEFAULTS: GroupOptions = { lr: 0, weightDecay: 0, lrMult: 1, decayMult: 1 };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks `value` has the same kind as `like` (number / boolean / pair of numbers). */
function checkKind(value: unknown, like: OptionValue, what: string): void {
  if (typeof like === 'number') {
    if (typeof value !== 'number' || Number.isNaN(value))
      throw new Error(`${what}: expected a number, got ${describe(value)}`);
  } else if (typeof like === 'boolean') {
    if (typeof value !== 'boolean') throw new Error(`${what}: expected a boolean, got ${describe(value)}`);
  } else if (
    !Array.isArray(value) ||
    value.length !== 2 ||
    value.some((x) => typeof x !== 'number' || Number.isNaN(x))
  ) {
    throw new Error(`${what}: expected a pair of numbers, got ${describe(value)}`);
  }
}

function copyValue<V>(v: V): V {
  return (Array.isArray(v) ? [...v] : v) as V;
}

export abstract class Optimizer<O extends GroupOptions = GroupOptions> {
  /** The options groups fall back on (constructor options over the optimizer's defaults). */
  readonly defaults: Readonly<O>;
  readonly paramGroups: ParamGroup<O>[] = [];
  protected readonly state = new Map<Tensor, ParamState>();
  /** Buffer names this optimizer keeps per parameter (checked by loadStateDict). */
  protected abstract readonly bufferNames: readonly string[];
  private readonly name: string;

  /**
   * @param name class name, used in messages and state dicts
   * @param params tensors, or groups `{ params, ...options }`
   * @param builtIn every option with its default value
   * @param options the caller's overrides of the defaults (undefined values are ignored)
   */
  protected constructor(name: string, params: Params<O>, builtIn: O, options: Partial<O>) {
    this.name = name;
    const defaults = {} as O;
    for (const [k, v] of Object.entries(builtIn)) (defaults as Record<string, unknown>)[k] = copyValue(v);
    if (!isObject(options)) throw new Error(`${name}: options: expected an object, got ${describe(options)}`);
    for (const [k, v] of Object.entries(options)) {
      if (!Object.hasOwn(builtIn, k))
        throw new Error(`${name}: unknown option '${k}' (known: ${Object.keys(builtIn).join(', ')})`);
      if (v !== undefined) (defaults as Record<string, unknown>)[k] = copyValue(v);
    }
    this.resolveOptions(defaults, builtIn, `${name}`);
    this.defaults = defaults;
    if (!Array.isArray(params))
      throw new Error(`${name}: params: expected an array of tensors or parameter groups, got ${describe(params)}`);
    if (params.length === 0) throw new Error(`${name}: params: got an empty parameter list`);
    const groups =
      params[0] instanceof Tensor
        ? [{ params: params as Tensor[] } as ParamGroupInput<O>]
        : (params as ParamGroupInput<O>[]);
    for (const g of groups) this.addParamGroup(g);
  }

  /**
   * Adds a group (e.g. layers unfrozen part-way through fine-tuning). Options it leaves out take
   * the optimizer's defaults; a tensor may belong to only one group.
   */
  addParamGroup(group: ParamGroupInput<O>): void {
    const where = `${this.name}: paramGroups[${this.paramGroups.length}]`;
    if (!isObject(group) || !Array.isArray(group.params)) {
      throw new Error(`${where}: expected { params: Tensor[], ...options }, got ${describe(group)}`);
    }
    const taken = new Set(this.paramGroups.flatMap((g) => g.params));
    const seen = new Set<Tensor>();
    group.params.forEach((p, i) => {
      if (!(p instanceof Tensor)) throw new Error(`${where}.params[${i}]: expected a Tensor, got ${describe(p)}`);
      if (taken.has(p) || seen.has(p))
        throw new Error(`${where}.params[${i}]: this tensor is already in a parameter group`);
      seen.add(p);
    });
    const resolved = {} as Record<string, unknown>;
    for (const [k, v] of Object.entries(this.defaults)) resolved[k] = copyValue(v);
    for (const [k, v] of Object.entries(group)) {
      if (k === 'params') continue;
      if (!Object.hasOwn(this.defaults, k))
        throw new Error(`${where}: unknown option '${k}' (known: ${Object.keys(this.defaults).join(', ')})`);
      if (v !== undefined) resolved[k] = copyValue(v);
    }
    this.resolveOptions(resolved as unknown as O, this.defaults, where);
    this.paramGroups.push({ ...(resolved as unknown as O), params: [...group.params] });
  }

  /**
   * One update of every trainable parameter from its gradient, in place. Skips parameters whose
   * grad is null or whose requiresGrad is false. `closure`, if given, is called first (to
   * recompute the loss) and its result returned.
   */
  step(closure?: () => number): number | undefined {
    const loss = closure ? closure() : undefined;
    // Check every gradient before touching anything, so a bad one leaves all parameters as they were.
    this.paramGroups.forEach((group, gi) => {
      group.params.forEach((p, pi) => {
        if (p.requiresGrad && p.grad !== null && p.grad.size !== p.size) {
          throw new Error(
            `${this.name}.step: paramGroups[${gi}].params[${pi}]: grad has shape ` +
              `[${p.grad.shape.join(', ')}], expected [${p.shape.join(', ')}]`,
          );
        }
      });
    });
    for (const group of this.paramGroups) {
      // Caffe's multipliers fold into the effective rates; torch sees only the products.
      const lr = group.lr * group.lrMult;
      const weightDecay = group.weightDecay * group.decayMult;
      for (const p of group.params) {
        if (!p.requiresGrad || p.grad === null) continue;
        let st = this.state.get(p);
        if (!st) {
          st = { step: 0, buffers: {} };
          this.state.set(p, st);
        }
        this.update(writableData(p), p.grad.data, st, group, lr, weightDecay);
      }
    }
    return loss;
  }

  /** Clears the gradients of every parameter (sets them to null, as zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const g of this.paramGroups) for (const p of g.params) p.grad = null;
  }

  /** Updates one parameter in place. `lr` and `weightDecay` already include the group's multipliers. */
  protected abstract update(
    param: Float32Array,
    grad: Float32Array,
    state: ParamState,
    group: ParamGroup<O>,
    lr: number,
    weightDecay: number,
  ): void;

  /** Range checks on a group's (or the defaults') options; throws naming `where` and the option. */
  protected abstract checkOptions(options: O, where: string): void;

  /** The buffer `name` of a parameter's state, created filled with `fill` the first time. */
  protected buffer(state: ParamState, name: string, size: number, fill = 0): Float32Array {
    let b = state.buffers[name];
    if (!b) {
      b = persistent(size, `${this.name}.step`, fill);
      state.buffers[name] = b;
    }
    return b;
  }

  /**
   * Saves the per-parameter state as it is now (step counts, which buffers exist) and returns
   * the function that puts it back: a compiled training step whose trace failed part-way
   * (src/plan/train.ts) undoes the bookkeeping its optimizer step did before running eagerly.
   */
  snapshotState(): () => void {
    const saved = [...this.state].map(([p, st]) => [p, { step: st.step, buffers: { ...st.buffers } }] as const);
    return () => {
      this.state.clear();
      for (const [p, st] of saved) this.state.set(p, { step: st.step, buffers: { ...st.buffers } });
    };
  }

  /**
   * Puts each buffer that is a key of `replacements` by its value (a compiled training step's
   * updated moments, src/plan/train.ts); other buffers stay.
   */
  replaceArrays(replacements: Map<Float32Array, Float32Array>): void {
    for (const st of this.state.values()) {
      for (const [name, b] of Object.entries(st.buffers)) {
        const next = replacements.get(b);
        if (next) st.buffers[name] = next;
      }
    }
  }

  /** Every state buffer (moments, accumulators): what a compiled training step updates. */
  stateArrays(): Float32Array[] {
    const out: Float32Array[] = [];
    for (const st of this.state.values()) out.push(...Object.values(st.buffers));
    return out;
  }

  /** Kinds (against `like`), then the common ranges, then the optimizer's own checks. */
  private resolveOptions(options: O, like: Readonly<O>, where: string): void {
    for (const [k, v] of Object.entries(like))
      checkKind((options as Record<string, unknown>)[k], v as OptionValue, `${where}: ${k}`);
    for (const k of ['lr', 'weightDecay', 'lrMult', 'decayMult'] as const) {
      if (!(options[k] >= 0)) throw new Error(`${where}: ${k}: expected a non-negative number, got ${options[k]}`);
    }
    this.checkOptions(options, where);
  }

  /** The optimizer's state as JSON-serialisable data (buffers copied, not shared). */
  stateDict(): OptimizerStateDict {
    const state: OptimizerStateDict['state'] = {};
    const paramGroups: SavedParamGroup[] = [];
    let index = 0;
    for (const group of this.paramGroups) {
      const saved: SavedParamGroup = { params: [] };
      for (const [k, v] of Object.entries(group)) {
        if (k !== 'params') saved[k] = copyValue(v) as number | boolean | number[];
      }
      for (const p of group.params) {
        const st = this.state.get(p);
        if (st) {
          const entry: Record<string, number | number[]> = { step: st.step };
          for (const [name, buf] of Object.entries(st.buffers)) entry[name] = Array.from(buf);
          state[String(index)] = entry;
        }
        saved.params.push(index++);
      }
      paramGroups.push(saved);
    }
    return { optimizer: this.name, state, paramGroups };
  }

  /**
   * Restores a state dict from stateDict() (of an optimizer built the same way: same class,
   * same groups with the same number of parameters). Everything is checked first: on an Error
   * (which names the problem) nothing has changed. Group options, including lr, are restored.
   */
  loadStateDict(stateDict: OptimizerStateDict): void {
    const { newOptions, newState } = this.planLoad(stateDict);
    // Checked: commit (nothing below can throw).
    this.paramGroups.forEach((g, gi) => {
      Object.assign(g, newOptions[gi]);
    });
    this.state.clear();
    for (const [p, st] of newState) this.state.set(p, st);
  }

  /**
   * Checks `stateDict` exactly as loadStateDict would, without changing anything: throws the
   * Error loadStateDict would throw (e.g. before a resume commits to anything).
   */
  validateStateDict(stateDict: OptimizerStateDict): void {
    this.planLoad(stateDict);
  }

  /** Everything loadStateDict checks, and the options and state it would then install. */
  private planLoad(stateDict: OptimizerStateDict): { newOptions: O[]; newState: Map<Tensor, ParamState> } {
    const where = `${this.name}.loadStateDict`;
    if (!isObject(stateDict) || !isObject(stateDict.state) || !Array.isArray(stateDict.paramGroups)) {
      throw new Error(`${where}: expected { optimizer, state, paramGroups }, got ${describe(stateDict)}`);
    }
    if (stateDict.optimizer !== undefined && stateDict.optimizer !== this.name) {
      throw new Error(
        `${where}: the state dict is for ${describe(stateDict.optimizer)}, this optimizer is ${this.name}`,
      );
    }
    const saved = stateDict.paramGroups;
    if (saved.length !== this.paramGroups.length) {
      throw new Error(`${where}: expected ${this.paramGroups.length} parameter groups, got ${saved.length}`);
    }
    const byIndex = new Map<string, Tensor>();
    const newOptions: O[] = [];
    saved.forEach((sg, gi) => {
      const gw = `${where}: paramGroups[${gi}]`;
      const own = this.paramGroups[gi];
      if (!isObject(sg) || !Array.isArray(sg.params))
        throw new Error(`${gw}: expected { params, ...options }, got ${describe(sg)}`);
      if (sg.params.length !== own.params.length) {
        throw new Error(`${gw}: expected ${own.params.length} parameters, got ${sg.params.length}`);
      }
      sg.params.forEach((idx, pi) => {
        if (!Number.isInteger(idx) || (idx as number) < 0)
          throw new Error(`${gw}.params[${pi}]: expected a non-negative integer index, got ${describe(idx)}`);
        const key = String(idx);
        if (byIndex.has(key)) throw new Error(`${gw}.params[${pi}]: index ${idx} appears twice`);
        byIndex.set(key, own.params[pi]);
      });
      const opts = {} as Record<string, unknown>;
      for (const [k, v] of Object.entries(sg)) {
        if (k === 'params') continue;
        if (!Object.hasOwn(this.defaults, k)) throw new Error(`${gw}: unknown option '${k}' for ${this.name}`);
        opts[k] = copyValue(v);
      }
      for (const k of Object.keys(this.defaults)) {
        if (!Object.hasOwn(opts, k)) throw new Error(`${gw}: option '${k}' is missing`);
      }
      this.resolveOptions(opts as unknown as O, this.defaults, gw);
      newOptions.push(opts as unknown as O);
    });
    const newState = new Map<Tensor, ParamState>();
    for (const [key, entry] of Object.entries(stateDict.state)) {
      const sw = `${where}: state[${key}]`;
      const p = byIndex.get(key);
      if (!p) throw new Error(`${sw}: no parameter has index ${key}`);
      if (!isObject(entry)) throw new Error(`${sw}: expected an object, got ${describe(entry)}`);
      const step = entry.step;
      if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) {
        throw new Error(`${sw}.step: expected a non-negative integer, got ${describe(step)}`);
      }
      const buffers: Record<string, Float32Array> = {};
      for (const [name, values] of Object.entries(entry)) {
        if (name === 'step') continue;
        if (!this.bufferNames.includes(name)) {
          throw new Error(`${sw}: unknown buffer '${name}' for ${this.name} (known: ${this.bufferNames.join(', ')})`);
        }
        if (!Array.isArray(values) || values.length !== p.size) {
          const got = Array.isArray(values) ? `${values.length} values` : describe(values);
          throw new Error(
            `${sw}.${name}: expected ${p.size} values (parameter shape [${p.shape.join(', ')}]), got ${got}`,
          );
        }
        if (values.some((v) => typeof v !== 'number')) throw new Error(`${sw}.${name}: expected numbers only`);
        buffers[name] = Float32Array.from(values);
      }
      newState.set(p, { step, buffers });
    }
    return { newOptions, newState };
  }
}
