// Module: the base of every layer and model. It owns parameters (trainable tensors), buffers
// (state such as running statistics) and child modules, names them with dotted paths exactly as
// PyTorch does (`features.0.weight`, `layer1.0.bn1.running_mean`), and saves/loads them. A parent
// runs a child through `child.call(x)`, the one door every layer call goes through: it is where a
// failing layer's error gets its context (the layer's dotted path, its type, the shape it got).
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { isTorchFile, readTorch } from '../io/torch.js';
import { noGrad } from '../autograd.js';
import type { OnnxExportOptions } from '../io/onnx/export.js';
import { compile, notePlanInfo, type PlanInfo, run as runPlan, stateArrays } from '../plan/index.js';
import { allocate, pinSet, Tensor, uninitialized, unpinSet, writableData } from '../tensor.js';

export type StateDict = Map<string, Tensor>;

/** See Module.inferenceSnapshot. */
export interface InferenceSnapshot {
  forward(...inputs: Tensor[]): Tensor;
}

/** See Module.inferenceSession. */
export interface InferenceSession {
  forward(x: Tensor): Promise<Tensor>;
  close(): void;
}

/**
 * Bumped by every change to any module's children, parameters or buffers (addModule,
 * addParameter and addBuffer are their only writers), so a walk of a tree stays valid while it
 * holds.
 */
let treeVersion = 0;

/**
 * Each module's last walk of its tree (moduleList, stateTensors) and the treeVersion it saw: kept
 * out of the module's own properties, which a compiled plan's guard compares.
 */
const walks = new WeakMap<object, { version: number; modules: Module[]; state: Tensor[] }>();

export abstract class Module {
  /** Training mode (dropout active, batch norm uses batch statistics). */
  training = true;
  private readonly params = new Map<string, Tensor | null>();
  private readonly bufs = new Map<string, Tensor | null>();
  private readonly children = new Map<string, Module>();

  abstract forward(...inputs: Tensor[]): Tensor;

  /**
   * Runs forward. Parents call their children this way (`this.features.call(x)`), so an Error
   * thrown inside a layer comes out naming the layer as a state dict would, its type, the shape
   * it was given and the model's input shape, with the original as `cause`, e.g.
   * `AlexNet: layer 'features.12' (MaxPool2d) failed on [1, 256, 1, 1] (model input
   * [1, 3, 32, 32]): input: 1x1 is too small for a 3x3 window (...)`. The innermost layer adds
   * the context; the calls around it pass the Error on unchanged. The model's own errors (its
   * input check) are not rewritten. The model input is known when the model itself was entered
   * through call() (predict, fit and inference snapshots do), or when its forward noted it
   * (noteModelInput: Sequential and the zoo do).
   */
  call(...inputs: Tensor[]): Tensor {
    frames.push({ module: this, inputs });
    try {
      if (!observer) return this.forward(...inputs);
      const watching = observer;
      watching.enter?.(this, inputs);
      const y = this.forward(...inputs);
      return watching.exit?.(this, inputs, y) ?? y;
    } catch (e) {
      throw withLayerContext(e, this, inputs);
    } finally {
      frames.pop();
    }
  }

  /** Registers a trainable tensor under `name` (null registers an absent optional one, e.g. bias). */
  protected addParameter(name: string, t: Tensor | null): Tensor | null {
    checkName(name);
    if (t) t.requiresGrad = true;
    this.params.set(name, t);
    treeVersion++;
    return t;
  }

  protected addBuffer(name: string, t: Tensor | null): Tensor | null {
    checkName(name);
    this.bufs.set(name, t);
    treeVersion++;
    return t;
  }

  protected addModule<M extends Module>(name: string, m: M): M {
    checkName(name);
    this.children.set(name, m);
    registeredAt.set(m, { parent: this, name });
    treeVersion++;
    return m;
  }

  /** Direct children, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.children];
  }

  /** The child at a dotted path ('layer1.0.conv1'), or an Error naming the missing part. */
  getSubmodule(path: string): Module {
    let m: Module = this;
    for (const part of path.split('.').filter(Boolean)) {
      const next = m.children.get(part);
      if (!next) throw new Error(`getSubmodule: no module '${part}' in '${path}'`);
      m = next;
    }
    return m;
  }

  /** Every module in the tree with its dotted name ('' for this one), depth first. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.children) out.push(...child.namedModules(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  /**
   * namedModules() without the names, and stateTensors() the values of stateDict(): the same
   * order, without building a dotted name per entry (what every predict() reads before it runs).
   * Both come from one walk of the tree, kept while no module of any tree gains or loses a
   * child, parameter or buffer (treeVersion): DenseNet-121's 433 modules and 606 tensors took
   * 0.17 ms of every predict to walk, in the JavaScript before each run. Read-only to callers.
   */
  private moduleList(): readonly Module[] {
    return this.walk().modules;
  }

  private stateTensors(): readonly Tensor[] {
    return this.walk().state;
  }

  private walk(): { modules: Module[]; state: Tensor[] } {
    const kept = walks.get(this);
    if (kept?.version === treeVersion) return kept;
    const modules: Module[] = [];
    const visit = (m: Module) => {
      modules.push(m);
      for (const child of m.children.values()) visit(child);
    };
    visit(this);
    const state: Tensor[] = [];
    for (const m of modules) {
      for (const t of m.params.values()) if (t) state.push(t);
      for (const t of m.bufs.values()) if (t) state.push(t);
    }
    const walk = { version: treeVersion, modules, state };
    walks.set(this, walk);
    return walk;
  }

  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, t] of m.params) if (t) out.push([prefix ? `${prefix}.${name}` : name, t]);
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, t] of m.bufs) if (t) out.push([prefix ? `${prefix}.${name}` : name, t]);
    }
    return out;
  }

  /** Number of parameter elements (as sum(p.numel() for p in model.parameters())). */
  numParameters(): number {
    return this.parameters().reduce((a, p) => a + p.size, 0);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Clears every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /**
   * Sets requiresGrad on the parameters whose dotted name matches (a RegExp, or a prefix string
   * such as 'features.'), e.g. freeze('features.') for transfer learning. Returns how many matched.
   */
  setRequiresGrad(pattern: RegExp | string, flag: boolean): number {
    let count = 0;
    for (const [name, p] of this.namedParameters()) {
      const hit = typeof pattern === 'string' ? name.startsWith(pattern) : pattern.test(name);
      if (hit) {
        p.requiresGrad = flag;
        if (!flag) p.grad = null;
        count++;
      }
    }
    return count;
  }

  freeze(pattern: RegExp | string = /.*/): number {
    return this.setRequiresGrad(pattern, false);
  }

  unfreeze(pattern: RegExp | string = /.*/): number {
    return this.setRequiresGrad(pattern, true);
  }

  /** Parameters and buffers by dotted name. The tensors are the live ones (not copies). */
  stateDict(): StateDict {
    // Module by module, parameters then buffers: the order of PyTorch's state_dict().
    const out: StateDict = new Map();
    for (const [prefix, m] of this.namedModules()) {
      const key = (name: string) => (prefix ? `${prefix}.${name}` : name);
      for (const [name, t] of m.params) if (t) out.set(key(name), t);
      for (const [name, t] of m.bufs) if (t) out.set(key(name), t);
    }
    return out;
  }

  /**
   * Copies values from `state` into this module. Strict (default): every key must match a
   * parameter or buffer with the same shape, and none may be missing, or nothing is changed and
   * the Error lists missing, unexpected and mis-shaped keys. Non-strict: loads what matches.
   * As in torch 1.13, a missing batch-norm `num_batches_tracked` is not an error: the counter
   * is set to 0.
   */
  loadStateDict(
    state: Map<string, Tensor> | Record<string, Tensor>,
    strict = true,
  ): { missing: string[]; unexpected: string[] } {
    const plan = this.planLoad(state, strict);
    // Checked: every copy below is between arrays of the same length, so none can throw.
    for (const [mine, t] of plan.copies) writableData(mine).set(t.data);
    return { missing: plan.missing, unexpected: plan.unexpected };
  }

  /**
   * Checks `state` exactly as loadStateDict(state, strict) would, without changing anything:
   * throws the Error loadStateDict would throw, or returns the keys it would report.
   */
  validateStateDict(
    state: Map<string, Tensor> | Record<string, Tensor>,
    strict = true,
  ): { missing: string[]; unexpected: string[] } {
    const { missing, unexpected } = this.planLoad(state, strict);
    return { missing, unexpected };
  }

  /** Everything loadStateDict checks, and the copies it would then make. */
  private planLoad(
    state: Map<string, Tensor> | Record<string, Tensor>,
    strict: boolean,
  ): { missing: string[]; unexpected: string[]; copies: [Tensor, Tensor][] } {
    if (!(state instanceof Map) && (typeof state !== 'object' || state === null || Array.isArray(state))) {
      throw new Error(
        'loadStateDict: expected a Map or an object of tensors by name, ' +
          `got ${state === null ? 'null' : Array.isArray(state) ? 'an array' : typeof state}`,
      );
    }
    const src = state instanceof Map ? state : new Map(Object.entries(state));
    const own = this.stateDict();
    const absent = [...own.keys()].filter((k) => !src.has(k));
    // torch 1.13's _NormBase._load_from_state_dict: when the state dict has no version metadata
    // for a batch-norm module (none we load has: safetensors files carry no `_metadata`) and
    // lacks its `num_batches_tracked` (torchvision's older checkpoints predate the buffer), it
    // is filled in as tensor(0) before loading, in strict and non-strict loads alike. So the
    // counter is set to 0 (torch >= 2.1 keeps the current value instead) and the key is not
    // reported missing; any other missing key still is.
    const isBatchCounter = (k: string) => k === 'num_batches_tracked' || k.endsWith('.num_batches_tracked');
    const missing = absent.filter((k) => !isBatchCounter(k));
    const unexpected = [...src.keys()].filter((k) => !own.has(k));
    const misShaped: string[] = [];
    const copies: [Tensor, Tensor][] = [];
    for (const k of absent) {
      if (!isBatchCounter(k)) continue;
      const mine = own.get(k)!;
      copies.push([mine, new Tensor(allocate(mine.size, 'loadStateDict'), mine.shape)]);
    }
    for (const [k, t] of src) {
      const mine = own.get(k);
      if (!mine) continue;
      if (!(t instanceof Tensor)) {
        misShaped.push(`${k}: expected a Tensor, got ${t === null ? 'null' : typeof t}`);
      } else if (mine.size !== t.size || mine.shape.join() !== t.shape.join()) {
        // A 0-d / [1] mismatch (e.g. num_batches_tracked) is the same value: allow it.
        if (mine.size === 1 && t.size === 1) copies.push([mine, t]);
        else misShaped.push(`${k}: expected [${mine.shape.join(', ')}], got [${t.shape.join(', ')}]`);
      } else {
        copies.push([mine, t]);
      }
    }
    if (misShaped.length || (strict && (missing.length || unexpected.length))) {
      const parts: string[] = [];
      if (missing.length) parts.push(`missing keys: ${missing.join(', ')}`);
      if (unexpected.length) parts.push(`unexpected keys: ${unexpected.join(', ')}`);
      if (misShaped.length) parts.push(`shape mismatch: ${misShaped.join('; ')}`);
      throw new Error(`loadStateDict: ${parts.join('. ')}`);
    }
    return { missing, unexpected, copies };
  }

  /**
   * A frozen view of this model for inference: `forward(x)` runs in eval mode, records no graph,
   * and uses the parameters and buffers as they were when the snapshot was taken, whatever
   * happens to the model in between (training steps, loadStateDict, train()/eval()). The mode
   * switch and the weights are swapped in and out synchronously around each forward, so no
   * other code ever sees them. predict() and evaluate() run on one, which is what makes them
   * safe to call while the model trains or serves other calls. Costs one copy of the state.
   */
  inferenceSnapshot(): InferenceSnapshot {
    const saved = new Map<Tensor, Float32Array>();
    for (const t of this.stateDict().values()) saved.set(t, t.data.slice());
    return { forward: (...inputs: Tensor[]) => this.forwardIsolated(saved, inputs) };
  }

  /** forward() in eval mode on `state`'s data; everything is put back before it returns. */
  private forwardIsolated(state: Map<Tensor, Float32Array> | null, inputs: Tensor[]): Tensor {
    const modules = this.moduleList();
    const modes = modules.map((m) => m.training);
    // Tensor.data is read-only to users; only this swap, undone in `finally` before any other
    // JavaScript can run, replaces it.
    const swap = () => {
      if (!state) return;
      for (const [t, data] of state) {
        const live = t.data;
        (t as { data: Float32Array }).data = data;
        state.set(t, live);
      }
    };
    swap();
    try {
      for (const m of modules) m.training = false;
      return noGrad(() => this.call(...inputs));
    } finally {
      modules.forEach((m, i) => {
        m.training = modes[i];
      });
      swap();
    }
  }

  /**
   * Eval forwards on the model as it is now, off the JavaScript thread where a compiled plan can
   * run them (see predict). The parameter and buffer arrays are pinned until close(): ferroconv's
   * in-place writes meanwhile (optimizer steps, loadStateDict, ...) go to fresh copies
   * (writableData), so every forward of the session sees the weights of its start without a copy
   * of the state. An eager forward yields to the event loop after it. predict() and evaluate()
   * run on one; close() it when done (planInfo(model) then tells how its last forward ran).
   */
  inferenceSession(opts: { plan?: boolean } = {}): InferenceSession {
    const modules = this.moduleList();
    const state = this.stateTensors();
    const pinned = stateArrays(this, state);
    pinSet(pinned.set);
    // The tensor -> array map an eager forward swaps in, made when one first needs it.
    let arrays: Map<Tensor, Float32Array> | null = null;
    // FERROCONV_PLANS=0 turns plans off for the process (debugging: everything runs eagerly).
    const off = opts.plan === false ? 'plan: false' : process.env.FERROCONV_PLANS === '0' ? 'FERROCONV_PLANS=0' : null;
    let info: PlanInfo = off ? { planned: false, reason: off } : { planned: true };
    let open = true;
    return {
      forward: async (x: Tensor): Promise<Tensor> => {
        if (!open) throw new Error('inferenceSession: forward after close()');
        const forward = () => {
          arrays ??= new Map(state.map((t, i) => [t, pinned.arrays[i]] as const));
          return this.forwardIsolated(arrays, [x]);
        };
        const compiled = off ? null : await compile(this, modules, forward, x, state);
        if (compiled && typeof compiled !== 'string') {
          const { plan } = compiled;
          info = { planned: true, steps: plan.steps, arenaBytes: plan.arenaBytes };
          const y = await runPlan(compiled, x, pinned);
          info.preparedBytes = plan.preparedBytes;
          return y;
        }
        if (typeof compiled === 'string') info = { planned: false, reason: compiled };
        const y = forward();
        await new Promise((resolve) => setImmediate(resolve));
        return y;
      },
      close: () => {
        if (!open) return;
        open = false;
        unpinSet(pinned.set);
        notePlanInfo(this, info);
      },
    };
  }

  /**
   * Inference over a batch [N, ...] without blocking the event loop: eval mode, no graph,
   * `batchSize` samples at a time. Each chunk runs as a compiled plan (src/plan) on the kernel
   * pool off the JavaScript thread; a model whose forward cannot be traced runs eagerly instead,
   * a chunk at a time with a yield to the event loop in between (planInfo(model) says which and
   * why; `plan: false` forces eager). Every chunk sees the model as it was when predict() was
   * called: other calls in between (training, loading weights, switching modes, other predicts)
   * neither show in its result nor see its eval mode. The model's own mode is never changed.
   * Do not write into `x.data` until the promise settles.
   */
  async predict(x: Tensor, opts: { batchSize?: number; plan?: boolean } = {}): Promise<Tensor> {
    const batchSize = opts.batchSize ?? 32;
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw new Error(`predict: batchSize must be a positive integer, got ${batchSize}`);
    if (x.ndim < 1 || x.shape[0] === 0)
      throw new Error(`predict: expected a non-empty batch [N, ...], got [${x.shape.join(', ')}]`);
    const n = x.shape[0];
    const per = x.size / n;
    const session = this.inferenceSession({ plan: opts.plan });
    const outs: Tensor[] = [];
    try {
      for (let i = 0; i < n; i += batchSize) {
        const m = Math.min(batchSize, n - i);
        const chunk = new Tensor(x.data.subarray(i * per, (i + m) * per), [m, ...x.shape.slice(1)]);
        outs.push(await session.forward(chunk));
      }
    } finally {
      session.close();
    }
    const outPer = outs[0].size / outs[0].shape[0];
    // Every chunk's output has the same per-sample shape (checked), so the copies fill it.
    const data = uninitialized(n * outPer, 'predict');
    let off = 0;
    for (const o of outs) {
      if (o.size !== o.shape[0] * outPer || o.shape.slice(1).join() !== outs[0].shape.slice(1).join()) {
        throw new Error(
          `predict: the model gave [${outs[0].shape.join(', ')}] for one batch and [${o.shape.join(', ')}] for another`,
        );
      }
      data.set(o.data, off);
      off += o.size;
    }
    return new Tensor(data, [n, ...outs[0].shape.slice(1)]);
  }

  /**
   * Saves parameters and buffers to a safetensors file (atomically), with the same names as
   * PyTorch's state_dict; integer buffers (`num_batches_tracked`) are stored as I64.
   */
  save(path: string, metadata?: Record<string, string>): void {
    saveSafetensors(path, this.stateDict(), { metadata, int64: (n) => n.endsWith('num_batches_tracked') });
  }

  /**
   * Writes the model's eval forward as an ONNX file (atomically): opset 13 to 17 (default 17),
   * for an input of `inputShape`, with the batch dimension symbolic when `dynamicBatch`.
   * Parameters and buffers are initializers under their state-dict names; batch norm is
   * BatchNormalization, dropout is left out. Throws, writing nothing, when the forward holds a
   * call with no ONNX equivalent (the Error lists them all).
   */
  async exportOnnx(path: string, opts: OnnxExportOptions): Promise<void> {
    // Imported when used: the exporter imports the layers, which import this file.
    const onnx = await import('../io/onnx/export.js');
    onnx.exportOnnx(this, path, opts);
  }

  /**
   * Loads weights from a safetensors file (ours, or one written by PyTorch's safetensors from a
   * state_dict) or a PyTorch checkpoint (a .pth / .pt file from torch.save: a state dict, or one
   * under 'state_dict' / 'model' / ..., DataParallel's 'module.' prefix removed; see readTorch).
   * A missing, corrupt or mismatched file throws and leaves the module unchanged.
   */
  load(path: string, strict = true): this {
    const tensors = isTorchFile(path) ? readTorch(path) : loadSafetensors(path).tensors;
    this.loadStateDict(tensors, strict);
    return this;
  }
}

/** A module running inside call(), and what it was given. */
interface Frame {
  module: Module;
  inputs: readonly Tensor[];
}

/** The call()s now running, outermost first (forward is synchronous: one stack serves the process). */
const frames: Frame[] = [];

/**
 * What observeCalls tells about every Module.call while it runs: `enter` before the module's
 * forward, `exit` after it returned (not when it threw). A tensor `exit` returns replaces the
 * module's output for the rest of the forward (Grad-CAM makes a layer's output a leaf this way).
 */
export interface CallObserver {
  enter?(module: Module, inputs: readonly Tensor[], step?: CallStep): void;
  exit?(module: Module, inputs: readonly Tensor[], output: Tensor, step?: CallStep): Tensor | undefined;
}

/**
 * A step of a module's forward that is no module of its own (a node of an imported ONNX graph),
 * shown to observers as a call of its module with this name and type (see observeStep).
 */
export interface CallStep {
  name: string;
  type: string;
}

let observer: CallObserver | null = null;

/**
 * Runs `fn`, one step of `owner`'s forward, telling the observer (if any) about it as a call
 * (enter, then exit with the step's first output). A model made of steps rather than child
 * modules (OnnxModel) shows its steps in summary() and profile() this way.
 */
export function observeStep<T>(owner: Module, step: CallStep, inputs: readonly Tensor[], fn: () => T): T {
  const watching = observer;
  if (!watching) return fn();
  watching.enter?.(owner, inputs, step);
  const out = fn();
  // Observers check what they get: a step's output need not be a tensor (a shape, a sequence).
  watching.exit?.(owner, inputs, (Array.isArray(out) ? out[0] : out) as Tensor, step);
  return out;
}

/**
 * Runs `fn` with `watch` told about every Module.call inside it (summary, per-layer timing and
 * feature capture read models this way). A forward is synchronous, so the observer sees exactly
 * the calls `fn` makes. Observations do not nest.
 */
export function observeCalls<T>(watch: CallObserver, fn: () => T): T {
  if (observer) throw new Error('observeCalls: another observation is running (they do not nest)');
  observer = watch;
  try {
    return fn();
  } finally {
    observer = null;
  }
}

/** The dotted path of `m` below its outermost registered parent ('' for a model itself). */
export function modulePath(m: Module): string {
  return registrationChain(m).names.join('.');
}

/** The top of `m`'s registration chain (its model) and the names down from it to `m`. */
function registrationChain(m: Module): { model: Module; names: string[] } {
  const names: string[] = [];
  const seen = new Set<Module>([m]);
  let model = m;
  for (let at = registeredAt.get(model); at && !seen.has(at.parent); at = registeredAt.get(model)) {
    names.unshift(at.name);
    model = at.parent;
    seen.add(model);
  }
  return { model, names };
}

/** Where each module was registered: its parent and its name there (the latest addModule wins). */
const registeredAt = new WeakMap<Module, { parent: Module; name: string }>();

/** Errors that already name their layer; the calls around it pass them on unchanged. */
const annotated = new WeakSet<Error>();

/** The input shape of a model whose forward was entered directly, not through call(). */
let directEntry: { model: Module; shape: readonly number[] } | null = null;

/**
 * Notes `x` as the model's input when `model.forward` was called directly (by a user, not by a
 * parent's call()), so that errors from its layers can still show it. Called at the top of the
 * forward of Sequential and of the zoo's models; outside any call() it holds until the current
 * synchronous run ends, so it never describes a later forward.
 */
export function noteModelInput(model: Module, x: Tensor): void {
  if (frames.length > 0) return; // inside call(): the frames already know
  const entry = { model, shape: x.shape };
  directEntry = entry;
  queueMicrotask(() => {
    if (directEntry === entry) directEntry = null;
  });
}

const shapeOf = (v: unknown): readonly number[] | null => (v instanceof Tensor ? v.shape : null);
const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/** `e` with the failing layer's context in front (see Module.call), or `e` itself. */
function withLayerContext(e: unknown, layer: Module, inputs: readonly Tensor[]): unknown {
  if (!(e instanceof Error) || annotated.has(e)) return e;
  // The model is the top of the registration chain; the path is the names down from it.
  const { model, names } = registrationChain(layer);
  if (names.length === 0) return e; // the model's own error (or a lone layer's) speaks for itself
  const modelFrame = frames.find((f) => f.module === model);
  const modelInput = modelFrame
    ? shapeOf(modelFrame.inputs[0])
    : directEntry?.model === model
      ? directEntry.shape
      : null;
  const x = shapeOf(inputs[0]);
  const err = new Error(
    `${model.constructor.name}: layer '${names.join('.')}' (${layer.constructor.name}) failed on ` +
      `${x ? fmt(x) : 'no input'}${modelInput ? ` (model input ${fmt(modelInput)})` : ''}: ${e.message}`,
    { cause: e },
  );
  annotated.add(err);
  return err;
}

function checkName(name: string): void {
  if (!name || name.includes('.'))
    throw new Error(`module attribute name must be non-empty and contain no '.', got '${name}'`);
}
