//! Conv argument errors. (Every algorithm's numbers are checked in conv_algorithms.rs.)
mod common;

use common::conv::params;
use ferroconv_kernels::conv::{conv2d_forward, ConvAlgo};

#[test]
fn bad_arguments_are_errors() {
    let mut p = params((1, 4, 5, 5), (6, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 3);
    assert!(p.validate().unwrap_err().0.contains("divisible by groups"));
    p.groups = 1;
    p.kernel_h = 7;
    assert!(p
        .validate()
        .unwrap_err()
        .0
        .contains("larger than the padded input"));
    p.kernel_h = 3;
    let mut out = vec![0.0; 4];
    let err =
        conv2d_forward(&p, &[0.0; 3], &[0.0; 216], None, &mut out, ConvAlgo::Auto).unwrap_err();
    assert_eq!(err.0, "input: expected 100 elements, got 3");
}
