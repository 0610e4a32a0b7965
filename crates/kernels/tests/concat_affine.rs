//! concat_channels_affine (channel concat + per-channel scale/shift + optional ReLU in one pass)
//! against concat_channels followed by the affine map written out plainly, on both SIMD paths and
//! 1 and 2 threads, plus its argument errors.
use ferroconv_kernels::elementwise::{concat_channels, concat_channels_affine};
use ferroconv_kernels::simd;

mod common;
use common::{fill, levels, lock, with_threads as in_pool};

/// (channels per input, batch, plane): one input, a zero-channel input, odd sizes, plane 1, and
/// one big enough to split over threads.
const CASES: [(&[usize], usize, usize); 5] = [
    (&[3], 2, 5),
    (&[4, 0, 7, 1], 3, 6),
    (&[5, 2], 1, 1),
    (&[2, 3, 4], 2, 49),
    (&[64, 32, 32], 4, 28 * 28),
];

fn run(channels: &[usize], batch: usize, plane: usize, relu: bool) -> (Vec<f32>, Vec<f32>) {
    let inputs: Vec<Vec<f32>> = channels
        .iter()
        .enumerate()
        .map(|(k, &c)| fill(batch * c * plane, k as u32 + 1))
        .collect();
    let views: Vec<&[f32]> = inputs.iter().map(|v| &v[..]).collect();
    let total: usize = channels.iter().sum();
    let scale = fill(total, 20);
    let shift = fill(total, 21);
    let mut got = vec![f32::NAN; batch * total * plane];
    concat_channels_affine(
        &views, channels, batch, plane, &scale, &shift, relu, &mut got,
    )
    .unwrap();
    let mut want = vec![0.0; got.len()];
    concat_channels(&views, channels, batch, plane, &mut want).unwrap();
    for (i, v) in want.iter_mut().enumerate() {
        let c = (i / plane) % total;
        let t = *v * scale[c] + shift[c];
        *v = if relu && t < 0.0 { 0.0 } else { t };
    }
    (got, want)
}

#[test]
fn matches_concat_then_affine_on_both_paths_and_thread_counts() {
    let _g = lock();
    for level in levels() {
        simd::set_level(level);
        for (channels, batch, plane) in CASES {
            for relu in [false, true] {
                for threads in [1, 2] {
                    let (got, want) = in_pool(threads, || run(channels, batch, plane, relu));
                    // Same expression, same rounding: exact.
                    assert_eq!(
                        got,
                        want,
                        "{channels:?} b{batch} plane {plane} relu {relu} {threads} threads {}",
                        level.name()
                    );
                }
            }
        }
    }
}

#[test]
fn errors_name_the_argument() {
    let a = vec![0.0; 2 * 3 * 4];
    let b = vec![0.0; 2 * 2 * 4];
    let s = vec![1.0; 5];
    let mut out = vec![0.0; 2 * 5 * 4];
    let err = |inputs: &[&[f32]], ch: &[usize], scale: &[f32], out: &mut [f32]| {
        concat_channels_affine(inputs, ch, 2, 4, scale, &s, false, out)
            .unwrap_err()
            .0
    };
    assert_eq!(
        err(&[&a, &b], &[3], &s, &mut out),
        "channels: expected 2 numbers (one per input), got 1"
    );
    assert_eq!(
        err(&[&a, &b[1..]], &[3, 2], &s, &mut out),
        "inputs[1]: expected 16 elements, got 15"
    );
    assert_eq!(
        err(&[&a, &b], &[3, 2], &s[..4], &mut out),
        "scale: expected 5 elements, got 4"
    );
    assert_eq!(
        err(&[&a, &b], &[3, 2], &s, &mut out[..39]),
        "output: expected 40 elements, got 39"
    );
}
