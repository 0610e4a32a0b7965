//! Pointwise activations (ReLU, leaky ReLU, sigmoid, tanh, and the mobile networks' clip
//! (ReLU6), hard sigmoid, hard swish and SiLU), forward and backward, with PyTorch's semantics
//! at the edges: the ReLU family's gradient is taken from the *input* (zero where input <= 0
//! for ReLU, `negative_slope` where input <= 0 for leaky ReLU), sigmoid's and tanh's from the
//! saved *output*, so a backward pass never recomputes the forward. The piecewise-linear ones
//! (clip, hard sigmoid, hard swish) and SiLU read the input; they are plain loops (the
//! compiler vectorizes them): they run on small mobile-network maps, not in hot GEMM paths.
use crate::error::check_len;
use crate::simd::{self, dispatch, kernel, Isa};
use crate::vmath::for_each_chunk;
use crate::{bail, Result};

/// PyTorch's default `negative_slope` for `leaky_relu`.
pub const DEFAULT_NEGATIVE_SLOPE: f32 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu {
        negative_slope: f32,
    },
    Sigmoid,
    Tanh,
    /// min(max(x, min), max): ReLU6 is clip(0, 6). torch's hardtanh gradient (zero at the bounds).
    Clip {
        min: f32,
        max: f32,
    },
    /// max(0, min(1, alpha * x + beta)) (ONNX HardSigmoid; torch's hardsigmoid is alpha 1/6, beta 1/2).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x * relu6(x + 3) / 6.
    HardSwish,
    /// x * sigmoid(x).
    Silu,
    /// x ^ exponent, as torch.pow(x, exponent) (NaN for a negative x and a fractional exponent;
    /// gradient exponent * x ^ (exponent - 1), zero for exponent 0). Caffe's Power layer and
    /// within-channel LRN, ONNX's Pow by a constant.
    Pow {
        exponent: f32,
    },
}

impl Activation {
    /// Parses `'relu' | 'leaky_relu' | 'sigmoid' | 'tanh' | 'clip' | 'hardsigmoid' | 'hardswish'
    /// | 'silu' | 'pow'`. `alpha` is leaky_relu's negative slope (default 0.01), clip's lower
    /// bound (default -inf), hardsigmoid's slope (default 0.2) and pow's exponent (required);
    /// `beta` clip's upper bound (default +inf) and hardsigmoid's offset (default 0.5). Kinds
    /// without parameters ignore them.
    pub fn parse(kind: &str, alpha: Option<f64>, beta: Option<f64>) -> Result<Activation> {
        for (name, v) in [("alpha", alpha), ("beta", beta)] {
            if let Some(v) = v {
                // Clip's bounds may be infinite (ONNX's defaults); nothing may be NaN.
                if v.is_nan() || (v.is_infinite() && kind != "clip") {
                    bail!("{name}: expected a finite number, got {v}");
                }
            }
        }
        Ok(match kind {
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu {
                negative_slope: alpha.map_or(DEFAULT_NEGATIVE_SLOPE, |s| s as f32),
            },
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "clip" => {
                let (min, max) = (
                    alpha.unwrap_or(f64::NEG_INFINITY) as f32,
                    beta.unwrap_or(f64::INFINITY) as f32,
                );
                if min > max {
                    bail!("clip: alpha (the minimum, {min}) is above beta (the maximum, {max})");
                }
                Activation::Clip { min, max }
            }
            "hardsigmoid" => Activation::HardSigmoid {
                alpha: alpha.unwrap_or(0.2) as f32,
                beta: beta.unwrap_or(0.5) as f32,
            },
            "hardswish" => Activation::HardSwish,
            "silu" => Activation::Silu,
            "pow" => match alpha {
                Some(e) => Activation::Pow { exponent: e as f32 },
                None => bail!("pow: alpha (the exponent) is required"),
            },
            other => bail!(
                "kind: expected one of 'relu', 'leaky_relu', 'sigmoid', 'tanh', 'clip', \
                 'hardsigmoid', 'hardswish', 'silu', 'pow', got '{other}'"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Clip { .. } => "clip",
            Activation::HardSigmoid { .. } => "hardsigmoid",
            Activation::HardSwish => "hardswish",
            Activation::Silu => "silu",
            Activation::Pow { .. } => "pow",
        }
    }

    /// Whether the backward pass reads the forward input (else it reads the output).
    pub fn backward_reads_input(self) -> bool {
        !matches!(self, Activation::Sigmoid | Activation::Tanh)
    }
}

/// output = act(input), elementwise.
pub fn activation_forward(act: Activation, input: &[f32], output: &mut [f32]) -> Result<()> {
    check_len("output", output.len(), input.len())?;
    let isa = simd::isa();
    for_each_chunk(output, |start, y| {
        let x = &input[start..start + y.len()];
        match act {
            Activation::Relu => relu(isa, x, y),
            Activation::LeakyRelu { negative_slope } => leaky_relu(isa, x, y, negative_slope),
            Activation::Sigmoid => sigmoid(isa, x, y),
            Activation::Tanh => tanh(isa, x, y),
            Activation::Clip { min, max } => {
                for (o, &v) in y.iter_mut().zip(x) {
                    // NaN stays NaN, as torch's clamp.
                    *o = if v < min {
                        min
                    } else if v > max {
                        max
                    } else {
                        v
                    };
                }
            }
            Activation::HardSigmoid { alpha, beta } => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = (alpha * v + beta).clamp(0.0, 1.0);
                }
            }
            // Branches as torch's, so hardswish(-inf) is 0, not -inf * 0.
            Activation::HardSwish => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = if v <= -3.0 {
                        0.0
                    } else if v >= 3.0 {
                        v
                    } else {
                        v * (v + 3.0) / 6.0
                    };
                }
            }
            Activation::Silu => {
                sigmoid(isa, x, y);
                for (o, &v) in y.iter_mut().zip(x) {
                    *o *= v;
                }
            }
            Activation::Pow { exponent } => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = v.powf(exponent);
                }
            }
        }
    });
    Ok(())
}

/// data = relu(data), in place. The backward of an in-place ReLU can pass `data` as the
/// "input": its positive entries are exactly the input's.
pub fn relu_inplace(data: &mut [f32]) {
    let isa = simd::isa();
    for_each_chunk(data, |_, y| relu_self(isa, y));
}

/// grad_input = d(loss)/d(input) given grad_output. ReLU and leaky ReLU read `input`, sigmoid
/// and tanh read `output` (the forward result); the buffer a kind does not read may be empty.
pub fn activation_backward(
    act: Activation,
    input: &[f32],
    output: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    let n = grad_output.len();
    check_len("gradInput", grad_input.len(), n)?;
    let (used, used_name, unused, unused_name) = if act.backward_reads_input() {
        (input, "input", output, "output")
    } else {
        (output, "output", input, "input")
    };
    check_len(used_name, used.len(), n)?;
    if !unused.is_empty() && unused.len() != n {
        bail!(
            "{unused_name}: expected {n} elements (or 0: {} backward does not read it), got {}",
            act.name(),
            unused.len()
        );
    }
    let isa = simd::isa();
    for_each_chunk(grad_input, |start, gi| {
        let range = start..start + gi.len();
        let (s, g) = (&used[range.clone()], &grad_output[range]);
        match act {
            Activation::Relu => relu_backward(isa, s, g, gi),
            Activation::LeakyRelu { negative_slope } => {
                leaky_relu_backward(isa, s, g, gi, negative_slope)
            }
            Activation::Sigmoid => sigmoid_backward(isa, s, g, gi),
            Activation::Tanh => tanh_backward(isa, s, g, gi),
            // torch's hardtanh_backward: the gradient passes strictly inside the bounds.
            Activation::Clip { min, max } => {
                for ((o, &v), &d) in gi.iter_mut().zip(s).zip(g) {
                    *o = if v > min && v < max { d } else { 0.0 };
                }
            }
            Activation::HardSigmoid { alpha, beta } => {
                for ((o, &v), &d) in gi.iter_mut().zip(s).zip(g) {
                    let t = alpha * v + beta;
                    *o = if t > 0.0 && t < 1.0 { d * alpha } else { 0.0 };
                }
            }
            // torch's hardswish_backward: 0 below -3, the input's gradient above 3.
            Activation::HardSwish => {
                for ((o, &v), &d) in gi.iter_mut().zip(s).zip(g) {
                    *o = if v < -3.0 {
                        0.0
                    } else if v <= 3.0 {
                        d * (v / 3.0 + 0.5)
                    } else {
                        d
                    };
                }
            }
            Activation::Silu => {
                sigmoid(isa, s, gi);
                for ((o, &v), &d) in gi.iter_mut().zip(s).zip(g) {
                    let sg = *o;
                    *o = d * sg * (1.0 + v * (1.0 - sg));
                }
            }
            // torch's pow_backward: zero for exponent 0 (not 0 * inf at x = 0).
            Activation::Pow { exponent } => {
                for ((o, &v), &d) in gi.iter_mut().zip(s).zip(g) {
                    *o = if exponent == 0.0 {
                        0.0
                    } else {
                        d * exponent * v.powf(exponent - 1.0)
                    };
                }
            }
        }
    });
    Ok(())
}

kernel! {
    // `x < 0 ? 0 : x` rather than max(x, 0), so NaN stays NaN as in torch.
    fn relu(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = if v < 0.0 { 0.0 } else { v };
        }
    }
}

kernel! {
    fn relu_self(y: &mut [f32]) {
        for v in y.iter_mut() {
            *v = if *v < 0.0 { 0.0 } else { *v };
        }
    }
}

kernel! {
    fn leaky_relu(x: &[f32], y: &mut [f32], slope: f32) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = if v > 0.0 { v } else { v * slope };
        }
    }
}

kernel! {
    // torch's threshold_backward: `x <= 0 ? 0 : grad`.
    fn relu_backward(x: &[f32], g: &[f32], gi: &mut [f32]) {
        for ((o, &v), &d) in gi.iter_mut().zip(x).zip(g) {
            *o = if v <= 0.0 { 0.0 } else { d };
        }
    }
}

kernel! {
    // torch's leaky_relu_backward: `x > 0 ? grad : grad * slope`.
    fn leaky_relu_backward(x: &[f32], g: &[f32], gi: &mut [f32], slope: f32) {
        for ((o, &v), &d) in gi.iter_mut().zip(x).zip(g) {
            *o = if v > 0.0 { d } else { d * slope };
        }
    }
}

kernel! {
    fn sigmoid_backward(y: &[f32], g: &[f32], gi: &mut [f32]) {
        for ((o, &s), &d) in gi.iter_mut().zip(y).zip(g) {
            *o = d * (1.0 - s) * s;
        }
    }
}

kernel! {
    fn tanh_backward(y: &[f32], g: &[f32], gi: &mut [f32]) {
        for ((o, &t), &d) in gi.iter_mut().zip(y).zip(g) {
            *o = d * (1.0 - t * t);
        }
    }
}

fn sigmoid(isa: Isa, x: &[f32], y: &mut [f32]) {
    dispatch!(isa,
        // SAFETY: the avx2 arm runs only on CPUs with AVX2 and FMA.
        avx2 => unsafe { crate::vmath::avx2::sigmoid(x, y) },
        // SAFETY: the neon arm runs only on CPUs with NEON.
        neon => unsafe { crate::vmath::neon::sigmoid(x, y) },
        _ => {
            for (o, &v) in y.iter_mut().zip(x) {
                // e^-|x| never overflows, so large negative inputs give tiny values, not 1/inf.
                let e = (-v.abs()).exp();
                let s = 1.0 / (1.0 + e);
                *o = if v < 0.0 { e * s } else { s };
            }
        }
    )
}

fn tanh(isa: Isa, x: &[f32], y: &mut [f32]) {
    dispatch!(isa,
        // SAFETY: the avx2 arm runs only on CPUs with AVX2 and FMA.
        avx2 => unsafe { crate::vmath::avx2::tanh(x, y) },
        // SAFETY: the neon arm runs only on CPUs with NEON.
        neon => unsafe { crate::vmath::neon::tanh(x, y) },
        _ => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.tanh();
            }
        }
    )
}
