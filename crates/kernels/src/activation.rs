//! Pointwise activations (ReLU, leaky ReLU, sigmoid, tanh), forward and backward, with
//! PyTorch's semantics at the edges: the ReLU family's gradient is taken from the *input*
//! (zero where input <= 0 for ReLU, `negative_slope` where input <= 0 for leaky ReLU), sigmoid's
//! and tanh's from the saved *output*, so a backward pass never recomputes the forward.
use crate::error::check_len;
use crate::simd::{self, dispatch, kernel, Isa};
use crate::vmath::for_each_chunk;
use crate::{bail, Result};

/// PyTorch's default `negative_slope` for `leaky_relu`.
pub const DEFAULT_NEGATIVE_SLOPE: f32 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { negative_slope: f32 },
    Sigmoid,
    Tanh,
}

impl Activation {
    /// Parses `'relu' | 'leaky_relu' | 'sigmoid' | 'tanh'`. `negative_slope` is used by
    /// leaky_relu only (default 0.01) but must be finite whenever it is given.
    pub fn parse(kind: &str, negative_slope: Option<f64>) -> Result<Activation> {
        if let Some(s) = negative_slope {
            if !s.is_finite() {
                bail!("negativeSlope: expected a finite number, got {s}");
            }
        }
        Ok(match kind {
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu {
                negative_slope: negative_slope.map_or(DEFAULT_NEGATIVE_SLOPE, |s| s as f32),
            },
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            other => bail!(
                "kind: expected one of 'relu', 'leaky_relu', 'sigmoid', 'tanh', got '{other}'"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }

    /// Whether the backward pass reads the forward input (else it reads the output).
    pub fn backward_reads_input(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu { .. })
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
