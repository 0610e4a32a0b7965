//! Compiled plans: a fixed sequence of kernel calls over planned buffers, run as one call.
//!
//! A plan is what one forward of a static model does, written down once: the kernel calls in
//! order, each reading and writing ranges of three kinds of memory,
//! - the **input** (the batch the caller passes to each run),
//! - **state** arrays (the model's parameters and buffers, passed to each run, never written),
//! - **temps**: the intermediate values, which live in one arena the plan lays out itself.
//!
//! Temps get arena offsets by lifetime (from the step that first writes one to the last step that
//! touches it), so two temps share memory only when no step sees both alive: the arena of a
//! ResNet holds a few activations at a time, not all of them. Every step's writes are checked,
//! when the plan is made, to overlap none of its reads and none of its other writes, which is what
//! makes handing each step plain `&[f32]` / `&mut [f32]` slices of the one arena sound.
//!
//! What each step computes is a closure the caller builds (the binding, from the same argument
//! parsing as its eager entry), so this module knows nothing of convolutions.
use crate::{bail, KernelError, Result};

/// Where an operand's memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Input,
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
    /// Only temps are written (a step writing into the input or a state array is refused).
    pub writes: Vec<Operand>,
    pub run: StepFn,
}

/// Floats between arena offsets: 64 bytes, a cache line, so temps never share a line.
const ALIGN: usize = 16;

pub struct Plan {
    input_len: usize,
    state_lens: Vec<usize>,
    steps: Vec<Step>,
    output: Operand,
    /// Arena offset of each temp.
    temp_at: Vec<usize>,
    arena_len: usize,
}

impl Plan {
    /// Checks every operand against its source's length, lays the temps out in the arena by
    /// lifetime and checks that no step's writes overlap its reads or each other there.
    pub fn new(
        input_len: usize,
        state_lens: Vec<usize>,
        temp_lens: Vec<usize>,
        steps: Vec<Step>,
        output: Operand,
    ) -> Result<Plan> {
        let source_len = |s: Source| -> Result<usize> {
            match s {
                Source::Input => Ok(input_len),
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
                let Source::Temp(t) = o.src else {
                    bail!(
                        "{}: a plan step may write only temps, not {:?}",
                        s.name,
                        o.src
                    );
                };
                first[t] = first[t].min(i);
                last[t] = i;
            }
        }
        check("output", &output)?;
        if let Source::Temp(t) = output.src {
            if first[t] == usize::MAX {
                bail!("output: temp {t} is never written");
            }
            last[t] = steps.len();
        }
        let (temp_at, arena_len) = lay_out(&temp_lens, &first, &last);
        let plan = Plan {
            input_len,
            state_lens,
            steps,
            output,
            temp_at,
            arena_len,
        };
        for s in &plan.steps {
            let range = |o: &Operand| plan.arena_range(o);
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
                        if wr.0 < r.1 && r.0 < wr.1 {
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

    pub fn output_len(&self) -> usize {
        self.output.len
    }

    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Arena range of a temp operand, `None` for the input and state arrays.
    fn arena_range(&self, o: &Operand) -> Option<(usize, usize)> {
        match o.src {
            Source::Temp(t) => {
                let start = self.temp_at[t] + o.offset;
                Some((start, start + o.len))
            }
            _ => None,
        }
    }

    /// Checks the lengths of a run's input, state arrays and output (the binding calls it on
    /// the JavaScript thread, so a wrong call throws before any work is queued).
    pub fn check_args(
        &self,
        input: usize,
        state: impl ExactSizeIterator<Item = usize>,
        output: usize,
    ) -> Result<()> {
        crate::error::check_len("input", input, self.input_len)?;
        crate::error::check_len("output", output, self.output.len)?;
        if state.len() != self.state_lens.len() {
            bail!(
                "state: expected {} arrays, got {}",
                self.state_lens.len(),
                state.len()
            );
        }
        for (k, (got, &want)) in state.zip(&self.state_lens).enumerate() {
            if got != want {
                bail!("state[{k}]: expected {want} elements, got {got}");
            }
        }
        Ok(())
    }

    /// Runs every step in order and copies the result into `output`.
    pub fn run(
        &self,
        arena: &mut [f32],
        input: &[f32],
        state: &[&[f32]],
        output: &mut [f32],
    ) -> Result<()> {
        crate::error::check_len("arena", arena.len(), self.arena_len)?;
        self.check_args(input.len(), state.iter().map(|s| s.len()), output.len())?;
        let base = arena.as_mut_ptr();
        let read = |o: &Operand| -> &[f32] {
            match o.src {
                Source::Input => &input[o.offset..o.offset + o.len],
                Source::State(k) => &state[k][o.offset..o.offset + o.len],
                // SAFETY: in range of the arena (checked in `new` and by the length check
                // above); no write of the same step overlaps it (checked in `new`), and the
                // slices live only for this step.
                Source::Temp(t) => unsafe {
                    std::slice::from_raw_parts(base.add(self.temp_at[t] + o.offset), o.len)
                },
            }
        };
        for s in &self.steps {
            let reads: Vec<&[f32]> = s.reads.iter().map(read).collect();
            let mut writes: Vec<&mut [f32]> = s
                .writes
                .iter()
                .map(|o| {
                    let (start, _) = self.arena_range(o).expect("writes are temps (checked)");
                    // SAFETY: as for reads; writes overlap no other operand of the step.
                    unsafe { std::slice::from_raw_parts_mut(base.add(start), o.len) }
                })
                .collect();
            (s.run)(&reads, &mut writes).map_err(|e| KernelError(format!("{}: {e}", s.name)))?;
        }
        output.copy_from_slice(read(&self.output));
        Ok(())
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
            src: Source::Input,
            offset: 0,
            len: n,
        };
        let steps = vec![
            add_one("a", input, temp(0, n)),
            add_one("b", temp(0, n), temp(1, n)),
            add_one("c", temp(1, n), temp(2, n)),
            add_one("d", temp(2, n), temp(3, n)),
        ];
        let plan = Plan::new(n, vec![], vec![n; 4], steps, temp(3, n)).unwrap();
        // Two temps alive at a time, each rounded up to whole cache lines.
        assert_eq!(plan.arena_len(), 2 * n.next_multiple_of(ALIGN));
        let mut arena = vec![0.0; plan.arena_len()];
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut y = vec![0.0; n];
        plan.run(&mut arena, &x, &[], &mut y).unwrap();
        assert!(y.iter().enumerate().all(|(i, &v)| v == i as f32 + 4.0));
    }

    #[test]
    fn refuses_bad_plans() {
        let n = 8;
        let input = Operand {
            src: Source::Input,
            offset: 0,
            len: n,
        };
        // Reading a temp nobody wrote.
        let e = Plan::new(
            n,
            vec![],
            vec![n],
            vec![add_one("a", temp(0, n), temp(0, n))],
            temp(0, n),
        );
        assert!(e.is_err());
        // Writing the input.
        let e = Plan::new(n, vec![], vec![n], vec![add_one("a", input, input)], input);
        assert!(e.err().unwrap().0.contains("may write only temps"));
        // Out of range.
        let long = Operand {
            len: n + 1,
            ..input
        };
        let e = Plan::new(
            n,
            vec![],
            vec![n],
            vec![add_one("a", long, temp(0, n))],
            temp(0, n),
        );
        assert!(e.err().unwrap().0.contains("out of range"));
        // A step writing what it reads.
        let steps = vec![
            add_one("a", input, temp(0, n)),
            add_one("b", temp(0, n), temp(0, n)),
        ];
        let e = Plan::new(n, vec![], vec![n], steps, temp(0, n));
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
            src: Source::Input,
            offset: 0,
            len: n,
        };
        let plan = Plan::new(
            n,
            vec![3],
            vec![n],
            vec![add_one("a", input, temp(0, n))],
            temp(0, n),
        )
        .unwrap();
        let mut arena = vec![0.0; plan.arena_len()];
        let mut y = vec![0.0; n];
        let s = [0.0f32; 3];
        assert!(plan.run(&mut arena, &[0.0; 3], &[&s], &mut y).is_err());
        assert!(plan.run(&mut arena, &[0.0; 4], &[], &mut y).is_err());
        assert!(plan.run(&mut arena, &[0.0; 4], &[&s[..2]], &mut y).is_err());
        plan.run(&mut arena, &[0.0; 4], &[&s], &mut y).unwrap();
        assert_eq!(y, [1.0; 4]);
    }
}
