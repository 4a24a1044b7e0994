//! What the kernel tests share: the two wgpu backends the kernels are dispatched on, the f32
//! tolerance, deterministic inputs, the inputs of a norm with its output and gradients, and
//! the comparison.

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::{Autodiff, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

/// The wgpu backend as burn's `Wgpu` alias builds it here: under burn-fusion.
pub type Gpu = Wgpu;
/// burn-cubecl's wgpu backend without fusion.
pub type GpuPlain = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// Both sides compute in f32 and sum in different orders: they agree to rounding, 1e-4
/// relative to the largest reference value.
pub const TOL_F32: f32 = 1e-4;

/// Deterministic values in [-2, 2) (xorshift, so no dependency on a random crate's stream).
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// A tensor's values as f32 on the host.
pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// `|got - want| <= tol * max(1, max |want|)` element by element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let magnitude = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * magnitude,
            "{what}[{i}]: got {g}, want {w} (tolerance {})",
            tol * magnitude
        );
    }
}

/// Inputs of one norm case: x (plus `offset`), affine weights of `features` values (the
/// channels of a group norm, the row width of a layer norm; scale around 1, shift around 0)
/// and the weights `w` of the loss `sum(out * w)`, whose gradient with respect to the output
/// is `w`. All values derive from the shape and `seed`.
pub struct NormInputs<const D: usize> {
    pub shape: [usize; D],
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub w: Vec<f32>,
}

/// The names of [`NormInputs::run`]'s four results, for messages.
pub const NORM_RESULTS: [&str; 4] = ["output", "dx", "dgamma", "dbeta"];

impl<const D: usize> NormInputs<D> {
    pub fn new(shape: [usize; D], features: usize, seed: u64, offset: f32) -> Self {
        let len = shape.iter().product();
        let seed = shape.iter().fold(seed, |s, &d| s * 31 + d as u64);
        Self {
            shape,
            x: values(seed, len).iter().map(|v| v + offset).collect(),
            gamma: values(seed + 1, features)
                .iter()
                .map(|v| 1.0 + v / 4.0)
                .collect(),
            beta: values(seed + 2, features).iter().map(|v| v / 4.0).collect(),
            w: values(seed + 3, len),
        }
    }

    /// Rounds every input to f16, so that an f16 run and the f32 reference see the same
    /// values.
    pub fn round_to_f16(&mut self) {
        for data in [&mut self.x, &mut self.gamma, &mut self.beta, &mut self.w] {
            for x in data.iter_mut() {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
    }

    /// Output and gradients of x, gamma, beta through `norm` on `Autodiff<B>`, the inputs
    /// cast to `dtype`.
    pub fn run<B: Backend>(
        &self,
        device: &B::Device,
        dtype: DType,
        norm: impl FnOnce(
            Tensor<Autodiff<B>, D>,
            Tensor<Autodiff<B>, 1>,
            Tensor<Autodiff<B>, 1>,
        ) -> Tensor<Autodiff<B>, D>,
    ) -> [Vec<f32>; 4] {
        let (out, dx, weights) = self.differentiate(device, dtype, true, norm);
        let [dgamma, dbeta] = weights.map(|grad| grad.expect("gradient of a weight"));
        [out, dx, dgamma, dbeta]
    }

    /// Output and x's gradient through `norm` on `Autodiff<B>` in f32 with gamma and beta
    /// frozen (as every norm of a LoRA-trained UNet is), checking that neither got a
    /// gradient.
    pub fn run_frozen<B: Backend>(
        &self,
        device: &B::Device,
        norm: impl FnOnce(
            Tensor<Autodiff<B>, D>,
            Tensor<Autodiff<B>, 1>,
            Tensor<Autodiff<B>, 1>,
        ) -> Tensor<Autodiff<B>, D>,
    ) -> [Vec<f32>; 2] {
        let (out, dx, weights) = self.differentiate(device, DType::F32, false, norm);
        assert!(
            weights.iter().all(Option::is_none),
            "frozen weights got gradients"
        );
        [out, dx]
    }

    /// Output, x's gradient and the weights' (which require gradients if `trained`).
    fn differentiate<B: Backend>(
        &self,
        device: &B::Device,
        dtype: DType,
        trained: bool,
        norm: impl FnOnce(
            Tensor<Autodiff<B>, D>,
            Tensor<Autodiff<B>, 1>,
            Tensor<Autodiff<B>, 1>,
        ) -> Tensor<Autodiff<B>, D>,
    ) -> (Vec<f32>, Vec<f32>, [Option<Vec<f32>>; 2]) {
        let features = [self.gamma.len()];
        let tensor = |data: &[f32], shape| {
            Tensor::<Autodiff<B>, D>::from_data(TensorData::new(data.to_vec(), shape), device)
                .cast(dtype)
        };
        let weight = |data: &[f32]| {
            Tensor::<Autodiff<B>, 1>::from_data(TensorData::new(data.to_vec(), features), device)
                .cast(dtype)
                .set_require_grad(trained)
        };
        let x = tensor(&self.x, self.shape).require_grad();
        let (gamma, beta) = (weight(&self.gamma), weight(&self.beta));
        let out = norm(x.clone(), gamma.clone(), beta.clone());
        let grads = (out.clone() * tensor(&self.w, self.shape))
            .cast(DType::F32)
            .sum()
            .backward();
        (
            to_vec(out),
            to_vec(x.grad(&grads).expect("gradient of x")),
            [gamma, beta].map(|weight| weight.grad(&grads).map(to_vec)),
        )
    }

    /// The forward alone on `B` (no autodiff), the inputs in f32.
    pub fn infer<B: Backend>(
        &self,
        device: &B::Device,
        norm: impl FnOnce(Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, D>,
    ) -> Vec<f32> {
        let features = [self.gamma.len()];
        let x = Tensor::<B, D>::from_data(TensorData::new(self.x.clone(), self.shape), device);
        let weight = |data: &[f32]| {
            Tensor::<B, 1>::from_data(TensorData::new(data.to_vec(), features), device)
        };
        to_vec(norm(x, weight(&self.gamma), weight(&self.beta)))
    }
}

/// Each of `got` against `want` (as [`NormInputs::run`] returns them) to `tol`.
pub fn assert_norm_close(what: &str, got: &[Vec<f32>; 4], want: &[Vec<f32>; 4], tol: f32) {
    for (name, (g, w)) in NORM_RESULTS.iter().zip(got.iter().zip(want)) {
        assert_close(&format!("{name} {what}"), g, w, tol);
    }
}
