//! The conv autotuner: what `Auto` runs once tuned, that a tuned call's results are the chosen
//! algorithm's bit for bit from the first call on, prepared forwards, deterministic mode, and
//! the cache file. One test function: tuning is process-wide state.
use ferroconv_kernels::conv::tune::{self, TunedPass};
use ferroconv_kernels::conv::{self, Choice, Conv2dParams, ConvAlgo};

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn entry(p: &Conv2dParams, pass: TunedPass) -> Option<tune::Tuned> {
    tune::entries()
        .into_iter()
        .find(|t| t.params == *p && t.pass == pass)
}

#[test]
fn tuning_keeps_a_candidate_and_its_bits() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(run);
}

fn run() {
    tune::set_enabled(true);
    tune::clear();
    // A 3x3 layer: im2col, Winograd and (small) direct summation are all candidates.
    let p = Conv2dParams::from_shapes([2, 16, 12, 12], [16, 16, 3, 3], [1, 1], [1; 4], [1, 1], 1)
        .unwrap();
    let cands = tune::candidates(&p, TunedPass::Forward);
    let alt = Choice {
        algo: ConvAlgo::Im2col,
        alt: true,
    };
    for c in [ConvAlgo::Winograd.into(), ConvAlgo::Im2col.into(), alt] {
        assert!(cands.contains(&c), "{cands:?}");
    }
    let (x, w, b) = (
        values(p.input_len(), 1),
        values(p.weight_len(), 2),
        values(16, 3),
    );
    let out_len = p.output_len(p.validate().unwrap());
    let gy = values(out_len, 4);

    // Forward: the first call tunes, and its output is the kept algorithm's.
    let mut first = vec![f32::NAN; out_len];
    conv::conv2d_forward(&p, &x, &w, Some(&b), &mut first, ConvAlgo::Auto).unwrap();
    let t = entry(&p, TunedPass::Forward).expect("forward tuned");
    assert!(cands.contains(&t.algo), "{t:?}");
    assert_eq!(t.rule, ConvAlgo::Auto.resolve(&p).into());
    assert_eq!(t.seconds[0].0, t.rule, "the rule's pick is timed first");
    assert!(t.seconds.iter().all(|(_, s)| s.is_finite() && *s > 0.0));
    assert_eq!(tune::lookup(&p, TunedPass::Forward), t.algo);
    let mut forced = vec![0.0; out_len];
    conv::conv2d_forward_choice(&p, &x, &w, Some(&b), &mut forced, t.algo).unwrap();
    assert_eq!(bits(&first), bits(&forced));
    let mut again = vec![0.0; out_len];
    conv::conv2d_forward(&p, &x, &w, Some(&b), &mut again, ConvAlgo::Auto).unwrap();
    assert_eq!(bits(&first), bits(&again));

    // Both gradients.
    let mut gx = vec![f32::NAN; x.len()];
    conv::conv2d_backward_data(&p, &gy, &w, &mut gx, ConvAlgo::Auto).unwrap();
    let t = entry(&p, TunedPass::BackwardData).expect("backward data tuned");
    let mut gx_forced = vec![0.0; x.len()];
    conv::conv2d_backward_data_choice(&p, &gy, &w, &mut gx_forced, t.algo).unwrap();
    assert_eq!(bits(&gx), bits(&gx_forced));
    let (mut gw, mut gb) = (vec![f32::NAN; w.len()], vec![f32::NAN; 16]);
    conv::conv2d_backward_weight(&p, &x, &gy, &mut gw, Some(&mut gb), ConvAlgo::Auto).unwrap();
    let t = entry(&p, TunedPass::BackwardWeight).expect("backward weight tuned");
    // Winograd's weight gradient is timed only where it can win (64+ channels, 13x13+ maps).
    let wide =
        Conv2dParams::from_shapes([2, 64, 14, 14], [64, 64, 3, 3], [1, 1], [1; 4], [1, 1], 1)
            .unwrap();
    let wino = ConvAlgo::Winograd.into();
    assert!(tune::candidates(&wide, TunedPass::BackwardWeight).contains(&wino));
    assert!(!tune::candidates(&p, TunedPass::BackwardWeight).contains(&wino));
    assert!(t.seconds.iter().all(|(c, _)| c.algo != ConvAlgo::Winograd));
    let (mut gw_forced, mut gb_forced) = (vec![0.0; w.len()], vec![0.0; 16]);
    let gb_forced_ref = Some(&mut gb_forced[..]);
    conv::conv2d_backward_weight_choice(&p, &x, &gy, &mut gw_forced, gb_forced_ref, t.algo)
        .unwrap();
    assert_eq!(bits(&gw), bits(&gw_forced));
    assert_eq!(bits(&gb), bits(&gb_forced));

    // Prepared forwards tune on the caller's buffers, and keep the winner's weights.
    let mut scratch = vec![f32::NAN; out_len];
    let prepared = conv::prepare_forward_tuned(&p, &w, ConvAlgo::Auto, &x, &mut scratch).unwrap();
    let t = entry(&p, TunedPass::ForwardPrepared).expect("prepared forward tuned");
    assert_eq!(prepared.choice(), t.algo);
    assert_eq!(t.rule, ConvAlgo::Auto.resolve_prepared(&p).into());
    let mut y = vec![0.0; out_len];
    conv::conv2d_forward_prepared(&p, &x, &w, &prepared, Some(&b), &mut y, ConvAlgo::Auto).unwrap();
    let mut y_plain = vec![0.0; out_len];
    conv::conv2d_forward_choice(&p, &x, &w, Some(&b), &mut y_plain, t.algo).unwrap();
    assert_eq!(bits(&y), bits(&y_plain));
    // Once tuned, preparing again neither times nor changes the choice.
    let again = conv::prepare_forward(&p, &w, ConvAlgo::Auto).unwrap();
    assert_eq!(again.choice(), t.algo);

    // A shape with a single candidate (a 1x1 conv of 138 MFLOP whose input is too large for
    // indirect tiles' padded copy; direct summation only for grouped or small convs) is never
    // timed.
    let q = Conv2dParams::from_shapes(
        [1, 256, 130, 130],
        [16, 256, 1, 1],
        [1, 1],
        [0; 4],
        [1, 1],
        1,
    )
    .unwrap();
    assert_eq!(
        tune::candidates(&q, TunedPass::Forward),
        vec![ConvAlgo::Im2col.into()]
    );
    let mut yq = vec![0.0; q.output_len(q.validate().unwrap())];
    let xq = values(q.input_len(), 5);
    let wq = values(q.weight_len(), 6);
    conv::conv2d_forward(&q, &xq, &wq, None, &mut yq, ConvAlgo::Auto).unwrap();
    assert!(entry(&q, TunedPass::Forward).is_none());

    // Deterministic mode: the rules, whatever was tuned.
    let tuned = tune::entries().len();
    tune::set_enabled(false);
    for pass in [
        TunedPass::Forward,
        TunedPass::ForwardPrepared,
        TunedPass::BackwardData,
    ] {
        assert_eq!(tune::lookup(&p, pass), tune::rule_for(&p, pass));
    }
    let r = Conv2dParams::from_shapes([1, 16, 10, 10], [16, 16, 3, 3], [1, 1], [1; 4], [1, 1], 1)
        .unwrap();
    let mut yr = vec![0.0; r.output_len(r.validate().unwrap())];
    let xr = values(r.input_len(), 7);
    let wr = values(r.weight_len(), 8);
    conv::conv2d_forward(&r, &xr, &wr, None, &mut yr, ConvAlgo::Auto).unwrap();
    assert_eq!(
        tune::entries().len(),
        tuned,
        "nothing tuned in deterministic mode"
    );
    tune::set_enabled(true);

    // The cache file: created with a header, new choices appended, loaded by the next user.
    let dir = std::env::temp_dir().join(format!("ferroconv-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tune.tsv");
    let load = tune::set_cache_file(Some(&path)).unwrap();
    assert_eq!((load.loaded, load.skipped), (0, 0));
    conv::conv2d_forward(&r, &xr, &wr, None, &mut yr, ConvAlgo::Auto).unwrap();
    let chosen = entry(&r, TunedPass::Forward).expect("tuned").algo;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("# ferroconv conv tuning cache"));
    tune::clear();
    assert!(entry(&r, TunedPass::Forward).is_none());
    let load = tune::set_cache_file(Some(&path)).unwrap();
    assert_eq!((load.loaded, load.skipped), (1, 0));
    assert_eq!(entry(&r, TunedPass::Forward).expect("loaded").algo, chosen);
    assert_eq!(tune::cache_file().as_deref(), Some(path.as_path()));

    // A file too large, or a path that is not a file, is an error and changes nothing.
    let big = dir.join("big.tsv");
    std::fs::write(&big, vec![b'#'; (4 << 20) + 1]).unwrap();
    let e = tune::set_cache_file(Some(&big)).unwrap_err().0;
    assert!(
        e.starts_with("tune cache: ") && e.contains("more than"),
        "{e}"
    );
    let e = tune::set_cache_file(Some(&dir)).unwrap_err().0;
    assert!(e.starts_with("tune cache: cannot"), "{e}");
    assert_eq!(tune::cache_file().as_deref(), Some(path.as_path()));
    assert_eq!(tune::entries().len(), 1);
    tune::set_cache_file(None).unwrap();
    assert!(tune::cache_file().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
