//! Compiled plans: a fixed sequence of kernel calls over planned buffers, run as one call.
//!
//! A plan is what one forward (or one training step) of a static model does, written down once:
//! the kernel calls in order, each reading and writing ranges of three kinds of memory,
//! - **inputs** (the batch, the labels: arrays the caller passes to each run, never written),
//! - **state** arrays (the model's parameters and buffers, the optimizer's moments: passed to
//!   each run; a training step's plan writes some of them in place),
//! - **temps**: the intermediate values, which live in one arena the plan lays out itself.
//!
//! Temps get arena offsets by lifetime (from the step that first writes one to the last step that
//! touches it), so two temps share memory only when no step sees both alive: the arena of a
//! ResNet holds a few activations at a time, not all of them. Every step's writes are checked,
//! when the plan is made, to overlap none of its reads and none of its other writes, which is what
//! makes handing each step plain `&[f32]` / `&mut [f32]` slices of the one arena sound. The
//! same check covers state arrays written in place; that two state arrays share no memory is the
//! caller's to check (the binding does, per run).
//!
//! What each step computes is a closure the caller builds (the binding, from the same argument
//! parsing as its eager entry), so this module knows nothing of convolutions.
use crate::{bail, KernelError, Result};

/// Where an operand's memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Input(usize),
    State(usize),
    Temp(usize),
}

/// `len` floats at `offset` of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operand {
    pub src: Source,
    pub offset: usize,
    pub len: usize,
}

/// What a step computes: reads in the order the step's builder listed them, then its writes.
pub type StepFn = Box<dyn Fn(&[&[f32]], &mut [&mut [f32]]) -> Result<()> + Send + Sync>;

/// One kernel call of a plan.
pub struct Step {
    /// The binding's name for it, for errors.
    pub name: String,
    pub reads: Vec<Operand>,
    /// Temps and state arrays (a step writing into an input is refused).
    pub writes: Vec<Operand>,
    pub run: StepFn,
}

/// Floats between arena offsets: 64 bytes, a cache line, so temps never share a line.
const ALIGN: usize = 16;

/// A state array as a run gets it: read only, or writable for a plan that updates it in place.
pub enum StateArray<'a> {
    Read(&'a [f32]),
    Write(&'a mut [f32]),
}

impl StateArray<'_> {
    pub fn len(&self) -> usize {
        match self {
            StateArray::Read(s) => s.len(),
            StateArray::Write(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fails unless `got` has `want`'s lengths, one by one.
fn check_lens(what: &str, got: impl ExactSizeIterator<Item = usize>, want: &[usize]) -> Result<()> {
    if got.len() != want.len() {
        bail!("{what}: expected {} arrays, got {}", want.len(), got.len());
    }
    for (k, (g, &w)) in got.zip(want).enumerate() {
        if g != w {
            bail!("{what}[{k}]: expected {w} elements, got {g}");
        }
    }
    Ok(())
}

/// `f32` storage seen as `i32` (labels, max-pool indices): the arena and the caller's arrays
/// are floats, and the few integer operands live there bit for bit.
pub fn as_i32(s: &[f32]) -> &[i32] {
    bytemuck::cast_slice(s)
}

/// [`as_i32`] for a written operand.
pub fn as_i32_mut(s: &mut [f32]) -> &mut [i32] {
    bytemuck::cast_slice_mut(s)
}

pub struct Plan {
    input_lens: Vec<usize>,
    state_lens: Vec<usize>,
    /// Which state arrays some step writes (a run must pass those writable).
    state_written: Vec<bool>,
    steps: Vec<Step>,
    outputs: Vec<Operand>,
    /// Arena offset of each temp.
    temp_at: Vec<usize>,
    arena_len: usize,
}

impl Plan {
    /// Checks every operand against its source's length, lays the temps out in the arena by
    /// lifetime and checks that no step's writes overlap its reads or each other there.
    pub fn new(
        input_lens: Vec<usize>,
        state_lens: Vec<usize>,
        temp_lens: Vec<usize>,
        steps: Vec<Step>,
        outputs: Vec<Operand>,
    ) -> Result<Plan> {
        let source_len = |s: Source| -> Result<usize> {
            match s {
                Source::Input(k) => input_lens.get(k).copied().ok_or_else(|| {
                    KernelError(format!(
                        "input {k}: the plan has {} inputs",
                        input_lens.len()
                    ))
                }),
                Source::State(k) => state_lens.get(k).copied().ok_or_else(|| {
                    KernelError(format!(
                        "state {k}: the plan has {} state arrays",
                        state_lens.len()
                    ))
                }),
                Source::Temp(t) => temp_lens.get(t).copied().ok_or_else(|| {
                    KernelError(format!("temp {t}: the plan has {} temps", temp_lens.len()))
                }),
            }
        };
        let check = |what: &str, o: &Operand| -> Result<()> {
            let len = source_len(o.src)?;
            if o.offset.checked_add(o.len).is_none_or(|end| end > len) {
                bail!(
                    "{what}: {} floats at {} of {:?} ({len} floats) is out of range",
                    o.len,
                    o.offset,
                    o.src
                );
            }
            Ok(())
        };
        // Lifetimes: first and last step that touches each temp.
        let mut first = vec![usize::MAX; temp_lens.len()];
        let mut last = vec![0usize; temp_lens.len()];
        let mut state_written = vec![false; state_lens.len()];
        for (i, s) in steps.iter().enumerate() {
            for o in &s.reads {
                check(&s.name, o)?;
                if let Source::Temp(t) = o.src {
                    if first[t] == usize::MAX {
                        bail!("{}: reads temp {t} before any step writes it", s.name);
                    }
                    last[t] = i;
                }
            }
            for o in &s.writes {
                check(&s.name, o)?;
                match o.src {
                    Source::Temp(t) => {
                        first[t] = first[t].min(i);
                        last[t] = i;
                    }
                    Source::State(k) => state_written[k] = true,
                    Source::Input(_) => bail!("{}: a plan step may not write an input", s.name),
                }
            }
        }
        for o in &outputs {
            check("output", o)?;
            if let Source::Temp(t) = o.src {
                if first[t] == usize::MAX {
                    bail!("output: temp {t} is never written");
                }
                last[t] = steps.len();
            }
        }
        let (temp_at, arena_len) = lay_out(&temp_lens, &first, &last);
        let plan = Plan {
            input_lens,
            state_lens,
            state_written,
            steps,
            outputs,
            temp_at,
            arena_len,
        };
        for s in &plan.steps {
            // Temps by arena offset; a state array's ranges are apart from the arena's and
            // from other state arrays' (the caller checks the arrays are disjoint).
            let range = |o: &Operand| plan.memory_range(o);
            for (j, w) in s.writes.iter().enumerate() {
                let wr = range(w);
                let clash = s.reads.iter().filter_map(range).chain(
                    s.writes
                        .iter()
                        .enumerate()
                        .filter(|&(k, _)| k != j)
                        .filter_map(|(_, o)| range(o)),
                );
                for r in clash {
                    if let Some(wr) = wr {
                        if wr.0 == r.0 && wr.1 < r.2 && r.1 < wr.2 {
                            bail!("{}: writes memory the same step reads or writes", s.name);
                        }
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Floats of arena a run needs.
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }

    /// A zeroed arena for [`Plan::run`]; unwinds with `scratch::OutOfMemory` when the allocator
    /// refuses (the binding's entries turn that into an Error).
    pub fn new_arena(&self) -> Vec<f32> {
        crate::scratch::zeroed(self.arena_len)
    }

    /// Floats of each output.
    pub fn output_lens(&self) -> Vec<usize> {
        self.outputs.iter().map(|o| o.len).collect()
    }

    /// Number of state arrays a run passes.
    pub fn state_count(&self) -> usize {
        self.state_lens.len()
    }

    /// Whether some step writes state array `k`.
    pub fn writes_state(&self, k: usize) -> bool {
        self.state_written.get(k).copied().unwrap_or(false)
    }

    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Arena range of a temp operand, `None` for inputs and state arrays.
    fn arena_range(&self, o: &Operand) -> Option<(usize, usize)> {
        match o.src {
            Source::Temp(t) => {
                let start = self.temp_at[t] + o.offset;
                Some((start, start + o.len))
            }
            _ => None,
        }
    }

    /// The memory an operand covers, for the overlap check of one step: (space, start, end),
    /// where space 0 is the arena and space k + 1 is state array k; inputs are never written.
    fn memory_range(&self, o: &Operand) -> Option<(usize, usize, usize)> {
        match o.src {
            Source::Temp(_) => self.arena_range(o).map(|(a, b)| (0, a, b)),
            Source::State(k) => Some((k + 1, o.offset, o.offset + o.len)),
            Source::Input(_) => None,
        }
    }

    /// Checks the lengths of a run's inputs, state arrays and outputs (the binding calls it on
    /// the JavaScript thread, so a wrong call throws before any work is queued).
    pub fn check_args(
        &self,
        inputs: impl ExactSizeIterator<Item = usize>,
        state: impl ExactSizeIterator<Item = usize>,
        outputs: impl ExactSizeIterator<Item = usize>,
    ) -> Result<()> {
        let output_lens: Vec<usize> = self.outputs.iter().map(|o| o.len).collect();
        check_lens("inputs", inputs, &self.input_lens)?;
        self.check_state(state)?;
        check_lens("outputs", outputs, &output_lens)
    }

    /// [`Plan::check_args`] for the state arrays alone.
    pub fn check_state(&self, state: impl ExactSizeIterator<Item = usize>) -> Result<()> {
        check_lens("state", state, &self.state_lens)
    }

    /// Runs every step in order and copies the results into `outputs`. `state` holds every
    /// state array, writable ([`StateArray::Write`]) where [`Plan::writes_state`] says a step
    /// writes it. `replaced` gives, for some steps, the closure to run this time instead (the
    /// same call with other scalar arguments: a dropout seed, an optimizer's step count), in
    /// increasing step order.
    pub fn run(
        &self,
        arena: &mut [f32],
        inputs: &[&[f32]],
        state: &mut [StateArray],
        outputs: &mut [&mut [f32]],
        replaced: &[(usize, StepFn)],
    ) -> Result<()> {
        self.run_timed(arena, inputs, state, outputs, replaced, None)
    }

    /// [`Plan::run`], also writing each step's wall time in milliseconds into `times` (one
    /// per step) when given: where a plan's time goes, step by step.
    pub fn run_timed(
        &self,
        arena: &mut [f32],
        inputs: &[&[f32]],
        state: &mut [StateArray],
        outputs: &mut [&mut [f32]],
        replaced: &[(usize, StepFn)],
        mut times: Option<&mut [f64]>,
    ) -> Result<()> {
        if let Some(t) = &times {
            crate::error::check_len("times", t.len(), self.steps.len())?;
        }
        crate::error::check_len("arena", arena.len(), self.arena_len)?;
        self.check_args(
            inputs.iter().map(|s| s.len()),
            state.iter().map(|s| s.len()),
            outputs.iter().map(|s| s.len()),
        )?;
        // Raw parts of every state array, taken once: a step's slices are made from these, as
        // from the arena's base pointer.
        let mut parts: Vec<(*mut f32, usize, bool)> = Vec::with_capacity(state.len());
        for (k, s) in state.iter_mut().enumerate() {
            parts.push(match s {
                StateArray::Read(r) => {
                    if self.state_written[k] {
                        bail!("state[{k}]: the plan writes this array; pass it writable");
                    }
                    (r.as_ptr() as *mut f32, r.len(), false)
                }
                StateArray::Write(w) => (w.as_mut_ptr(), w.len(), true),
            });
        }
        let base = arena.as_mut_ptr();
        let read = |o: &Operand| -> &[f32] {
            match o.src {
                Source::Input(k) => &inputs[k][o.offset..o.offset + o.len],
                // SAFETY: in range (checked in `new` against lengths checked above); a state
                // array written by this step is not among its reads (checked in `new`).
                Source::State(k) => unsafe {
                    std::slice::from_raw_parts(parts[k].0.add(o.offset), o.len)
                },
                // SAFETY: in range of the arena (checked in `new` and by the length check
                // above); no write of the same step overlaps it (checked in `new`), and the
                // slices live only for this step.
                Source::Temp(t) => unsafe {
                    std::slice::from_raw_parts(base.add(self.temp_at[t] + o.offset), o.len)
                },
            }
        };
        let mut replaced = replaced.iter().peekable();
        for (i, s) in self.steps.iter().enumerate() {
            let reads: Vec<&[f32]> = s.reads.iter().map(read).collect();
            let mut writes: Vec<&mut [f32]> = s
                .writes
                .iter()
                .map(|o| match o.src {
                    // SAFETY: as for reads; writes overlap no other operand of the step, and
                    // the state arrays written were passed writable (checked above).
                    Source::State(k) => unsafe {
                        std::slice::from_raw_parts_mut(parts[k].0.add(o.offset), o.len)
                    },
                    _ => {
                        let (start, _) = self.arena_range(o).expect("writes are temps or state");
                        // SAFETY: as for reads; writes overlap no other operand of the step.
                        unsafe { std::slice::from_raw_parts_mut(base.add(start), o.len) }
                    }
                })
                .collect();
            let run = match replaced.peek() {
                Some((k, f)) if *k == i => {
                    replaced.next();
                    f
                }
                _ => &s.run,
            };
            let start = times.is_some().then(std::time::Instant::now);
            run(&reads, &mut writes).map_err(|e| KernelError(format!("{}: {e}", s.name)))?;
            if let (Some(t), Some(start)) = (times.as_deref_mut(), start) {
                t[i] = start.elapsed().as_secs_f64() * 1e3;
            }
        }
        for (out, o) in outputs.iter_mut().zip(&self.outputs) {
            out.copy_from_slice(read(o));
        }
        Ok(())
    }

    /// The operands of step `i`, for checking that a replacement reads and writes the same.
    pub fn step_operands(&self, i: usize) -> Option<(&[Operand], &[Operand])> {
        self.steps.get(i).map(|s| (&s.reads[..], &s.writes[..]))
    }
}

/// Arena offsets for temps alive over steps `first[t]..=last[t]`: each temp goes at the lowest
/// offset where it overlaps no temp whose lifetime meets its own (first fit, temps taken in the
/// order they are first written). Temps never written get no space.
fn lay_out(lens: &[usize], first: &[usize], last: &[usize]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..lens.len())
        .filter(|&t| first[t] != usize::MAX)
        .collect();
    order.sort_by_key(|&t| (first[t], t));
    let mut at = vec![0usize; lens.len()];
    // Placed temps: (offset, end, last step).
    let mut placed: Vec<(usize, usize, usize)> = Vec::new();
    let mut total = 0;
    for t in order {
        let size = lens[t].next_multiple_of(ALIGN);
        let mut live: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, end_step)| end_step >= first[t])
            .map(|&(o, e, _)| (o, e))
            .collect();
        live.sort_unstable();
        let mut offset = 0;
        for (o, e) in live {
            if offset + size <= o {
                break;
            }
            offset = offset.max(e);
        }
        at[t] = offset;
        placed.push((offset, offset + size, last[t]));
        total = total.max(offset + size);
    }
    (at, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(t: usize, len: usize) -> Operand {
        Operand {
            src: Source::Temp(t),
            offset: 0,
            len,
        }
    }

    fn add_one(name: &str, from: Operand, to: Operand) -> Step {
        Step {
            name: name.into(),
            reads: vec![from],
            writes: vec![to],
            run: Box::new(|r, w| {
                for (o, i) in w[0].iter_mut().zip(r[0]) {
                    *o = i + 1.0;
                }
                Ok(())
            }),
        }
    }

    #[test]
    fn chain_reuses_memory_and_computes() {
        let n = 100;
        let input = Operand {
            src: Source::Input(0),
            offset: 0,
            len: n,
        };
        let steps = vec![
            add_one("a", input, temp(0, n)),
            add_one("b", temp(0, n), temp(1, n)),
            add_one("c", temp(1, n), temp(2, n)),
            add_one("d", temp(2, n), temp(3, n)),
        ];
        let plan = Plan::new(vec![n], vec![], vec![n; 4], steps, vec![temp(3, n)]).unwrap();
        // Two temps alive at a time, each rounded up to whole cache lines.
        assert_eq!(plan.arena_len(), 2 * n.next_multiple_of(ALIGN));
        let mut arena = vec![0.0; plan.arena_len()];
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut y = vec![0.0; n];
        plan.run(&mut arena, &[&x], &mut [], &mut [&mut y], &[])
            .unwrap();
        assert!(y.iter().enumerate().all(|(i, &v)| v == i as f32 + 4.0));
    }

    #[test]
    fn refuses_bad_plans() {
        let n = 8;
        let input = Operand {
            src: Source::Input(0),
            offset: 0,
            len: n,
        };
        // Reading a temp nobody wrote.
        let e = Plan::new(
            vec![n],
            vec![],
            vec![n],
            vec![add_one("a", temp(0, n), temp(0, n))],
            vec![temp(0, n)],
        );
        assert!(e.is_err());
        // Writing the input.
        let e = Plan::new(
            vec![n],
            vec![],
            vec![n],
            vec![add_one("a", input, input)],
            vec![input],
        );
        assert!(e.err().unwrap().0.contains("may not write an input"));
        // Out of range.
        let long = Operand {
            len: n + 1,
            ..input
        };
        let e = Plan::new(
            vec![n],
            vec![],
            vec![n],
            vec![add_one("a", long, temp(0, n))],
            vec![temp(0, n)],
        );
        assert!(e.err().unwrap().0.contains("out of range"));
        // A step writing what it reads.
        let steps = vec![
            add_one("a", input, temp(0, n)),
            add_one("b", temp(0, n), temp(0, n)),
        ];
        let e = Plan::new(vec![n], vec![], vec![n], steps, vec![temp(0, n)]);
        assert!(e
            .err()
            .unwrap()
            .0
            .contains("writes memory the same step reads"));
    }

    #[test]
    fn wrong_run_arguments_are_errors() {
        let n = 4;
        let input = Operand {
            src: Source::Input(0),
            offset: 0,
            len: n,
        };
        let plan = Plan::new(
            vec![n],
            vec![3],
            vec![n],
            vec![add_one("a", input, temp(0, n))],
            vec![temp(0, n)],
        )
        .unwrap();
        let mut arena = vec![0.0; plan.arena_len()];
        let mut y = vec![0.0; n];
        let s = [0.0f32; 3];
        let mut run = |x: &[f32], st: &mut [StateArray], y: &mut [f32]| {
            plan.run(&mut arena, &[x], st, &mut [y], &[])
        };
        assert!(run(&[0.0; 3], &mut [StateArray::Read(&s)], &mut y).is_err());
        assert!(run(&[0.0; 4], &mut [], &mut y).is_err());
        assert!(run(&[0.0; 4], &mut [StateArray::Read(&s[..2])], &mut y).is_err());
        run(&[0.0; 4], &mut [StateArray::Read(&s)], &mut y).unwrap();
        assert_eq!(y, [1.0; 4]);
    }

    #[test]
    fn state_written_in_place_and_steps_replaced() {
        let n = 4;
        let state = Operand {
            src: Source::State(0),
            offset: 0,
            len: n,
        };
        // temp0 <- state + 1; state <- temp0 + 1 (in place, as an optimizer step).
        let steps = vec![
            add_one("a", state, temp(0, n)),
            add_one("b", temp(0, n), state),
        ];
        let plan = Plan::new(vec![], vec![n], vec![n], steps, vec![temp(0, n)]).unwrap();
        assert!(plan.writes_state(0));
        let mut arena = vec![0.0; plan.arena_len()];
        let mut w = vec![1.0f32; n];
        let mut y = vec![0.0; n];
        // Read-only state for a plan that writes it is refused.
        let r = vec![1.0f32; n];
        let e = plan.run(
            &mut arena,
            &[],
            &mut [StateArray::Read(&r)],
            &mut [&mut y],
            &[],
        );
        assert!(e.err().unwrap().0.contains("pass it writable"));
        let mut st = [StateArray::Write(&mut w)];
        plan.run(&mut arena, &[], &mut st, &mut [&mut y], &[])
            .unwrap();
        assert_eq!((y[0], w[0]), (2.0, 3.0));
        // Step 1 replaced for one run: adds 10 instead of 1.
        let ten: StepFn = Box::new(|r, w| {
            for (o, i) in w[0].iter_mut().zip(r[0]) {
                *o = i + 10.0;
            }
            Ok(())
        });
        let mut st = [StateArray::Write(&mut w)];
        plan.run(&mut arena, &[], &mut st, &mut [&mut y], &[(1, ten)])
            .unwrap();
        assert_eq!((y[0], w[0]), (4.0, 14.0));
        // A step writing state it also reads is refused.
        let e = Plan::new(
            vec![],
            vec![n],
            vec![],
            vec![add_one("c", state, state)],
            vec![],
        );
        assert!(e
            .err()
            .unwrap()
            .0
            .contains("writes memory the same step reads"));
    }
}
