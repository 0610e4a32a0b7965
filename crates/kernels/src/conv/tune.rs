//! The autotuner behind [`ConvAlgo::Auto`], as cuDNN's benchmark mode: the first call of a shape
//! and pass times the algorithms that could win it (at most four runs each, and two more for a
//! winner other than the rules' pick, taking turns with that pick; on the call's own
//! buffers), keeps the fastest for the rest of the process, and can persist the table to a file
//! so the next process starts tuned. Off by default in this crate, whose callers want fixed
//! choices; the Node binding turns it on unless asked for deterministic algorithms.
//!
//! The fixed rules (`ConvAlgo::resolve_for`, `ConvAlgo::resolve_prepared`) stay the default:
//! another algorithm replaces the rule's pick only when it measured [`MARGIN`] faster, so timing
//! noise does not swap algorithms for nothing. Candidates are only the algorithms that can win
//! a shape (see [`candidates`]): timing an algorithm ten times slower than the rule's pick would
//! cost more than tuning saves.
//!
//! The first call's results come from the winner (it runs again when it was not the last one
//! timed), so a tuned shape gives the same bits on its first call as on later ones.
use super::{fft, im2col, winograd, Choice, Conv2dParams, ConvAlgo, ConvPass};
use crate::{bail, scratch, simd, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

/// How much faster than the rule's pick another algorithm must measure to replace it.
pub const MARGIN: f64 = 0.95;
/// Rounds of the rule's pick and the fastest other candidate, taking turns, before the other
/// replaces the rule (see `time_candidates`).
const CONFIRM: usize = 2;
/// Largest tuning cache file read (about 40 000 entries).
const MAX_CACHE_BYTES: u64 = 4 << 20;
/// First line of a cache file.
const HEADER: &str = "# ferroconv conv tuning cache v1: cpu, simd, threads, pass, shape \
                      (n,c,h,w,oc,kh,kw,sh,sw,pt,pb,pl,pr,dh,dw,groups), algo, seconds per candidate";

/// What a tuned choice is for: the three passes, and the forward with weights prepared once
/// (a compiled plan's, where no per-call weight transform is paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunedPass {
    Forward,
    ForwardPrepared,
    BackwardData,
    BackwardWeight,
}

impl TunedPass {
    pub fn name(self) -> &'static str {
        match self {
            TunedPass::Forward => "forward",
            TunedPass::ForwardPrepared => "forward-prepared",
            TunedPass::BackwardData => "backward-data",
            TunedPass::BackwardWeight => "backward-weight",
        }
    }

    /// The conv pass this is a choice for.
    pub fn conv_pass(self) -> ConvPass {
        match self {
            TunedPass::Forward | TunedPass::ForwardPrepared => ConvPass::Forward,
            TunedPass::BackwardData => ConvPass::BackwardData,
            TunedPass::BackwardWeight => ConvPass::BackwardWeight,
        }
    }

    fn parse(s: &str) -> Option<TunedPass> {
        [
            TunedPass::Forward,
            TunedPass::ForwardPrepared,
            TunedPass::BackwardData,
            TunedPass::BackwardWeight,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// One tuned choice: what won, what the rules pick, and each candidate's best time in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuned {
    pub params: Conv2dParams,
    pub pass: TunedPass,
    pub threads: usize,
    pub simd: &'static str,
    pub algo: Choice,
    pub rule: Choice,
    pub seconds: Vec<(Choice, f64)>,
}

impl Tuned {
    /// [`choice_name`] of one of this entry's choices.
    pub fn name(&self, c: Choice) -> String {
        choice_name(&self.params, self.pass, c)
    }
}

/// A choice's name: the algorithm's, and for im2col where it has two paths for this pass, the
/// path's (`im2col:gemm`, `im2col:indirect`, `im2col:col2im`, ...; see [`im2col::paths`]).
pub fn choice_name(p: &Conv2dParams, pass: TunedPass, c: Choice) -> String {
    match (c.algo, im2col::paths(p, pass.conv_pass())) {
        (ConvAlgo::Im2col, Some(names)) => format!("im2col:{}", names[usize::from(c.alt)]),
        _ => c.algo.name().to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    params: Conv2dParams,
    pass: TunedPass,
    threads: usize,
    simd: &'static str,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Key, Tuned>,
    file: Option<PathBuf>,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
/// Held while a shape is being timed: one tuning at a time, so two callers do not time their
/// candidates against each other's load. A caller that finds it taken uses the rules.
static TUNING: Mutex<()> = Mutex::new(());

/// A poisoned lock (a panic while held) still guards consistent data here: every update is a
/// single insert or assignment.
fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns tuning on (`Auto` times candidates) or off (`Auto` follows the fixed rules, and the
/// table is not consulted: deterministic algorithm choices).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Every tuned choice of this process (and those loaded from the cache file for this CPU).
pub fn entries() -> Vec<Tuned> {
    let mut v: Vec<Tuned> = table().entries.values().cloned().collect();
    v.sort_by_key(|t| (t.threads, t.pass.name(), format!("{:?}", t.params)));
    v
}

/// Forgets every tuned choice (the cache file, if any, is left as it is).
pub fn clear() {
    table().entries.clear();
}

/// The cache file new choices are appended to, if any.
pub fn cache_file() -> Option<PathBuf> {
    table().file.clone()
}

/// What loading a cache file found: entries taken, and lines skipped (malformed, or made on
/// another CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLoad {
    pub loaded: usize,
    pub skipped: usize,
}

/// Uses `path` as the tuning cache: loads the choices it holds for this CPU (creating the file
/// when missing) and appends every new choice to it. `None` stops persisting. A file that
/// cannot be read or written, or is too large, is an error and changes nothing.
pub fn set_cache_file(path: Option<&Path>) -> Result<CacheLoad> {
    let Some(path) = path else {
        table().file = None;
        return Ok(CacheLoad {
            loaded: 0,
            skipped: 0,
        });
    };
    let shown = path.display();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| crate::KernelError(format!("tune cache: cannot open {shown}: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| crate::KernelError(format!("tune cache: cannot read {shown}: {e}")))?
        .len();
    if len > MAX_CACHE_BYTES {
        bail!("tune cache: {shown} is {len} bytes, more than the {MAX_CACHE_BYTES} a cache holds");
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| crate::KernelError(format!("tune cache: cannot read {shown}: {e}")))?;
    if bytes.is_empty() {
        writeln!(file, "{HEADER}")
            .map_err(|e| crate::KernelError(format!("tune cache: cannot write {shown}: {e}")))?;
    }
    let (parsed, skipped) = parse_cache(&String::from_utf8_lossy(&bytes), &simd::cpu_name());
    let mut t = table();
    let loaded = parsed.len();
    for e in parsed {
        t.entries.insert(key_of(&e), e);
    }
    t.file = Some(path.to_path_buf());
    Ok(CacheLoad { loaded, skipped })
}

fn key_of(t: &Tuned) -> Key {
    Key {
        params: t.params,
        pass: t.pass,
        threads: t.threads,
        simd: t.simd,
    }
}

/// The entries of a cache file's text made on `cpu`, and how many lines were skipped. Never
/// fails: a cache is only a hint, so a line that does not parse into a valid shape and a
/// candidate algorithm for it is skipped (and that shape tuned again).
pub fn parse_cache(text: &str, cpu: &str) -> (Vec<Tuned>, usize) {
    let (mut out, mut skipped) = (Vec::new(), 0);
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Some((c, t)) if c == cpu => out.push(t),
            _ => skipped += 1,
        }
    }
    (out, skipped)
}

fn parse_line(line: &str) -> Option<(&str, Tuned)> {
    let f: Vec<&str> = line.split('\t').collect();
    let [cpu, simd, threads, pass, shape, algo, seconds] = f[..] else {
        return None;
    };
    let simd = simd::available()
        .into_iter()
        .map(|l| l.name())
        .find(|n| *n == simd)?;
    let threads: usize = threads.parse().ok().filter(|&t| (1..=4096).contains(&t))?;
    let pass = TunedPass::parse(pass)?;
    let shape: Vec<usize> = shape
        .split(',')
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [n, c, h, w, oc, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, groups] = shape[..] else {
        return None;
    };
    let in_per_group = c.checked_div(groups)?;
    let params = Conv2dParams::from_shapes(
        [n, c, h, w],
        [oc, in_per_group, kh, kw],
        [sh, sw],
        [pt, pb, pl, pr],
        [dh, dw],
        groups,
    )
    .ok()?;
    // Choices are stored by name and must name a candidate of this shape and pass (names, not
    // im2col's `alt` flag, so a file stays right when the rules' pick changes).
    let cands = candidates(&params, pass);
    let by_name = |name: &str| {
        cands
            .iter()
            .copied()
            .find(|&c| choice_name(&params, pass, c) == name)
    };
    let algo = by_name(algo)?;
    let seconds = seconds
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (a, v) = s.split_once('=')?;
            let v: f64 = v
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
            Some((by_name(a)?, v))
        })
        .collect::<Option<Vec<_>>>()?;
    let rule = rule_for(&params, pass);
    Some((
        cpu,
        Tuned {
            params,
            pass,
            threads,
            simd,
            algo,
            rule,
            seconds,
        },
    ))
}

fn format_line(cpu: &str, t: &Tuned) -> String {
    let p = &t.params;
    let shape = [
        p.batch,
        p.in_channels,
        p.in_h,
        p.in_w,
        p.out_channels,
        p.kernel_h,
        p.kernel_w,
        p.stride_h,
        p.stride_w,
        p.pad_top,
        p.pad_bottom,
        p.pad_left,
        p.pad_right,
        p.dilation_h,
        p.dilation_w,
        p.groups,
    ]
    .map(|v| v.to_string())
    .join(",");
    let seconds: Vec<String> = t
        .seconds
        .iter()
        .map(|&(c, s)| format!("{}={s:.3e}", t.name(c)))
        .collect();
    format!(
        "{cpu}\t{}\t{}\t{}\t{shape}\t{}\t{}",
        t.simd,
        t.threads,
        t.pass.name(),
        t.name(t.algo),
        seconds.join(",")
    )
}

/// What the fixed rules pick for `Auto` in this pass (im2col on the path its rules pick).
pub fn rule_for(p: &Conv2dParams, pass: TunedPass) -> Choice {
    match pass {
        TunedPass::ForwardPrepared => ConvAlgo::Auto.resolve_prepared(p),
        other => ConvAlgo::Auto.resolve_for(p, other.conv_pass()),
    }
    .into()
}

/// The choices worth timing for this shape and pass, the rule's pick first:
/// - im2col, unless one block of its lowering would not fit its scratch bound, on both of its
///   paths where it has two ([`im2col::paths`]);
/// - Winograd for dense 3x3 stride-1 layers of 16+ channels either side whose transformed
///   weights stay within Winograd's memory bound (for the weight gradient, its F(2x2, 3x3)
///   form, only where it can win: see [`winograd::weight_grad_may_pay`]);
/// - the FFT for dense stride-1 layers of 5x5 and larger kernels with 32+ channels;
/// - direct summation for grouped convs, for small ones (under 20 MFLOP, where the others'
///   packing and transforms cost about as much as the work), and where im2col cannot run.
///
/// A shape with a single candidate is never timed.
pub fn candidates(p: &Conv2dParams, pass: TunedPass) -> Vec<Choice> {
    let mut c: Vec<Choice> = vec![rule_for(p, pass)];
    let dense = p.groups == 1;
    if im2col::scratch_bounded(p) {
        c.push(ConvAlgo::Im2col.into());
        if im2col::paths(p, pass.conv_pass()).is_some() {
            c.push(Choice {
                algo: ConvAlgo::Im2col,
                alt: true,
            });
        }
    }
    if dense
        && winograd::applies(p)
        && winograd::within_memory_bound(p)
        && p.in_per_group() >= 16
        && p.out_per_group() >= 16
        && (pass != TunedPass::BackwardWeight || winograd::weight_grad_may_pay(p))
    {
        c.push(ConvAlgo::Winograd.into());
    }
    if dense && fft::pays_off(p) && p.kernel_h * p.kernel_w >= 25 {
        c.push(ConvAlgo::Fft.into());
    }
    if p.groups > 1 || p.flops() < 20e6 || !im2col::scratch_bounded(p) {
        c.push(ConvAlgo::Direct.into());
    }
    let mut seen = Vec::new();
    c.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    c
}

/// The algorithm `Auto` uses for this shape and pass without running anything: the tuned one
/// when tuning is on and the shape was tuned on this thread count, else the rule's pick.
pub fn lookup(p: &Conv2dParams, pass: TunedPass) -> Choice {
    if enabled() {
        if let Some(t) = table().entries.get(&key_for(p, pass)) {
            return t.algo;
        }
    }
    rule_for(p, pass)
}

/// Whether a call of `Auto` on this shape and pass would time candidates now: tuning is on,
/// the shape has more than one candidate and no choice kept for this thread count.
pub fn needs_tuning(p: &Conv2dParams, pass: TunedPass) -> bool {
    enabled() && candidates(p, pass).len() > 1 && !table().entries.contains_key(&key_for(p, pass))
}

/// Runs one call of `pass` on shape `p` with `asked` (`run(algo)` computes the call's result
/// with a concrete algorithm) and returns the algorithm whose result the outputs hold. `Auto`
/// with tuning on: the tuned choice, or, at the first call of this shape, the fastest candidate
/// timed on the call's own buffers. A candidate that runs out of scratch memory drops out; the
/// rule's pick running out is the call's error.
pub(crate) fn run(
    p: &Conv2dParams,
    pass: TunedPass,
    asked: Choice,
    mut run: impl FnMut(Choice),
) -> Result<Choice> {
    if asked.algo != ConvAlgo::Auto || !enabled() {
        let algo = if asked.algo == ConvAlgo::Auto {
            rule_for(p, pass)
        } else {
            asked
        };
        scratch::fallible("conv2d", || {
            run(algo);
            Ok(())
        })?;
        return Ok(algo);
    }
    let key = key_for(p, pass);
    let kept = || table().entries.get(&key).map(|t| t.algo);
    let mut run_one = |algo: Choice| {
        scratch::fallible("conv2d", || {
            run(algo);
            Ok(())
        })
        .map(|()| algo)
    };
    if let Some(algo) = kept() {
        return run_one(algo);
    }
    let cands = candidates(p, pass);
    if cands.len() < 2 {
        return run_one(cands[0]);
    }
    let _tuning = match TUNING.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        // Another call is timing its candidates: this one runs the rule's pick untimed.
        Err(TryLockError::WouldBlock) => return run_one(cands[0]),
    };
    // The caller that held the lock may have just tuned this very shape.
    if let Some(algo) = kept() {
        return run_one(algo);
    }
    let (algo, seconds) = time_candidates(&cands, &mut run)?;
    record(Tuned {
        params: *p,
        pass,
        threads: key.threads,
        simd: key.simd,
        algo,
        rule: cands[0],
        seconds,
    });
    Ok(algo)
}

fn key_for(p: &Conv2dParams, pass: TunedPass) -> Key {
    Key {
        params: *p,
        pass,
        threads: rayon::current_num_threads(),
        simd: simd::level().name(),
    }
}

/// Times each candidate (the rule's pick first) and leaves the winner's result in the outputs:
/// a warm-up run, then the best of up to three timed runs (one when a run takes over 50 ms, or
/// over four times the rule's best); a winner other than the rule's pick then runs [`CONFIRM`]
/// more times, taking turns with the rule's pick.
fn time_candidates(
    cands: &[Choice],
    run: &mut impl FnMut(Choice),
) -> Result<(Choice, Vec<(Choice, f64)>)> {
    let mut once = |a: Choice| -> Result<f64> {
        let t = Instant::now();
        scratch::fallible("conv2d", || {
            run(a);
            Ok(())
        })?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut seconds = Vec::new();
    let mut last = cands[0];
    for (i, &a) in cands.iter().enumerate() {
        // The warm-up (which may also prepare the candidate's weights) is never timed.
        let mut best = f64::INFINITY;
        for rep in 0..4 {
            match once(a) {
                Ok(s) if rep > 0 => best = best.min(s),
                Ok(_) => {}
                Err(e) if i == 0 => return Err(e),
                Err(_) => break,
            }
            last = a;
            // One timed run is enough for a slow call, or for a candidate four times slower
            // than the rule's pick.
            let rule = seconds.first().map_or(f64::INFINITY, |s: &(_, f64)| s.1);
            if rep > 0 && (best > 0.05 || best > 4.0 * rule) {
                break;
            }
        }
        if best.is_finite() {
            seconds.push((a, best));
        }
    }
    let mut winner = pick(&seconds);
    let short = seconds.iter().all(|e| e.0 != winner || e.1 < 0.05);
    if winner != cands[0] && short {
        // Confirmed against the rule's pick, the two taking turns: this host's load comes in
        // bursts (a shape's calls ran at half speed for seconds at a time in bench runs), and
        // one that fell on the rule's three runs alone would keep another candidate for the
        // rest of the process on a difference that was not the algorithms'. Each keeps its
        // best run of all. Runs of 50 ms and more average the bursts out and are not repeated.
        for _ in 0..CONFIRM {
            for a in [cands[0], winner] {
                let s = once(a)?;
                last = a;
                if let Some(e) = seconds.iter_mut().find(|e| e.0 == a) {
                    e.1 = e.1.min(s);
                }
            }
        }
        winner = pick(&seconds);
    }
    if winner != last {
        once(winner)?;
    }
    Ok((winner, seconds))
}

/// The winner of timed candidates, the rule's pick first: the fastest, if it beat the rule's
/// pick by [`MARGIN`], else the rule's pick.
fn pick(seconds: &[(Choice, f64)]) -> Choice {
    let rule = seconds[0];
    let fastest = seconds
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(rule);
    if fastest.1 < rule.1 * MARGIN {
        fastest.0
    } else {
        rule.0
    }
}

/// Keeps `entry`, and appends it to the cache file when there is one (a failed write only
/// stops persisting: the choice itself still holds).
fn record(entry: Tuned) {
    let mut t = table();
    if let Some(path) = t.file.clone() {
        let line = format_line(&simd::cpu_name(), &entry);
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if written.is_err() {
            t.file = None;
        }
    }
    t.entries.insert(key_of(&entry), entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Conv2dParams {
        Conv2dParams::from_shapes([2, 16, 12, 12], [16, 16, 3, 3], [1, 1], [1; 4], [1, 1], 1)
            .unwrap()
    }

    /// A candidate that beat the rule's pick only while the rule's runs were slowed (a burst of
    /// host load, here a sleep in its first four runs) loses the confirmation rounds, and the
    /// outputs are the rule's; one that is faster throughout keeps its win.
    #[test]
    fn a_winner_is_confirmed_against_the_rule_taking_turns() {
        use std::time::Duration;
        let rule = Choice::from(ConvAlgo::Im2col);
        let other = Choice::from(ConvAlgo::Direct);
        for (burst_only, want) in [(true, rule), (false, other)] {
            let (mut rule_runs, mut last) = (0, None);
            let mut run = |c: Choice| {
                let ms = if c == rule {
                    rule_runs += 1;
                    if rule_runs <= 4 || !burst_only {
                        12
                    } else {
                        0
                    }
                } else {
                    4
                };
                std::thread::sleep(Duration::from_millis(ms));
                last = Some(c);
            };
            let (winner, _) = time_candidates(&[rule, other], &mut run).unwrap();
            assert_eq!(winner, want, "burst only: {burst_only}");
            // Two more rounds of each after the first four runs, and the rule once more at the
            // end when it won (the last confirmation run was the other's).
            let again = usize::from(want == rule);
            assert_eq!(rule_runs, 4 + CONFIRM + again, "burst only: {burst_only}");
            assert_eq!(last, Some(want), "the outputs must be the winner's");
        }
    }

    #[test]
    fn another_algorithm_must_beat_the_rule_by_the_margin() {
        let [im2col, winograd, direct] =
            [ConvAlgo::Im2col, ConvAlgo::Winograd, ConvAlgo::Direct].map(Choice::from);
        assert_eq!(pick(&[(im2col, 1.0), (winograd, 0.96)]), im2col);
        assert_eq!(
            pick(&[(im2col, 1.0), (winograd, 0.9), (direct, 0.94)]),
            winograd
        );
        assert_eq!(pick(&[(im2col, 1.0), (direct, 2.0)]), im2col);
    }

    #[test]
    fn a_line_round_trips_and_bad_lines_are_skipped() {
        let alt = Choice {
            algo: ConvAlgo::Im2col,
            alt: true,
        };
        let t = Tuned {
            params: params(),
            pass: TunedPass::BackwardData,
            threads: 2,
            simd: simd::SimdLevel::Scalar.name(),
            algo: ConvAlgo::Winograd.into(),
            rule: rule_for(&params(), TunedPass::BackwardData),
            seconds: vec![
                (ConvAlgo::Im2col.into(), 1.5e-4),
                (alt, 1.2e-4),
                (ConvAlgo::Winograd.into(), 1.0e-4),
            ],
        };
        let line = format_line("cpu x", &t);
        let text = format!(
            "{HEADER}\n{line}\nother cpu{}\nnot\ta\tline\n\n",
            &line[5..]
        );
        let (got, skipped) = parse_cache(&text, "cpu x");
        assert_eq!(skipped, 2);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].params, t.params);
        assert_eq!(got[0].algo, ConvAlgo::Winograd.into());
        assert_eq!(got[0].seconds, t.seconds);
        // im2col's paths go by name: the input gradient's are as a forward conv or col2im.
        assert!(line.contains("\tim2col:as-forward=1.500e-4,im2col:col2im=1.200e-4,"));
        let col2im = line.replace("\twinograd\t", "\tim2col:col2im\t");
        assert_eq!(parse_cache(&col2im, "cpu x").0[0].algo, alt);
        let bare = line.replace("\twinograd\t", "\tim2col\t");
        assert_eq!(parse_cache(&bare, "cpu x").0.len(), 0);
        // An algorithm that cannot run the shape (FFT for a 3x3 of 16 channels) is not taken.
        let fft = line.replace("\twinograd\t", "\tfft\t");
        assert_eq!(parse_cache(&fft, "cpu x").0.len(), 0);
        // Nor is a shape that does not validate.
        let bad = line.replace("2,16,12,12,16,3,3", "2,16,2,2,16,9,9");
        assert_eq!(parse_cache(&bad, "cpu x").0.len(), 0);
    }
}
