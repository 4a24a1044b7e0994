//! What the kernels' burn-fusion integrations share: a fused operation registered as a custom
//! operation of the fusion stream, run there on the inner backend's tensors.

use core::fmt;

use burn::tensor::{ops::FloatTensor, DType, Shape};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend, FusionRuntime,
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

/// The kernels on `B`'s tensors: `I` inputs and scalar settings `P` to `O` outputs.
pub(crate) type Kernels<B, P, const I: usize, const O: usize> =
    fn([FloatTensor<B>; I], P) -> [FloatTensor<B>; O];

/// One custom operation of the fusion stream: when the stream executes it, `run` gets the
/// inner tensors of the description's inputs and its results are registered as the
/// description's outputs.
struct KernelOp<B: FusionBackend, P, const I: usize, const O: usize> {
    desc: CustomOpIr,
    params: P,
    run: Kernels<B, P, I, O>,
}

impl<B: FusionBackend, P: fmt::Debug, const I: usize, const O: usize> fmt::Debug
    for KernelOp<B, P, I, O>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelOp")
            .field("desc", &self.desc)
            .field("params", &self.params)
            .finish()
    }
}

impl<B, P, const I: usize, const O: usize> Operation<B::FusionRuntime> for KernelOp<B, P, I, O>
where
    B: FusionBackend,
    P: Copy + Send + Sync + fmt::Debug,
{
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let (inputs, outputs) = self.desc.as_fixed::<I, O>();
        let inputs = inputs
            .each_ref()
            .map(|input| handles.get_float_tensor::<B>(input));
        for (output, result) in outputs.iter().zip((self.run)(inputs, self.params)) {
            handles.register_float_tensor::<B>(&output.id, result);
        }
    }
}

/// Registers the custom operation `name` on `inputs`, with outputs of the given shapes and
/// dtypes, that runs `run` with `params` on the inner backend when the stream executes it.
/// Returns the outputs.
pub(crate) fn register_custom<B, P, const I: usize, const O: usize>(
    name: &'static str,
    inputs: [FloatTensor<Fusion<B>>; I],
    outputs: [(Shape, DType); O],
    params: P,
    run: Kernels<B, P, I, O>,
) -> [FloatTensor<Fusion<B>>; O]
where
    B: FusionBackend,
    P: Copy + Send + Sync + fmt::Debug + 'static,
{
    let client = inputs[0].client.clone();
    let outputs =
        outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let streams = OperationStreams::with_inputs(&inputs);
    let desc = CustomOpIr::new(name, &inputs.map(|input| input.into_ir()), &outputs);
    let op = KernelOp::<B, P, I, O> {
        desc: desc.clone(),
        params,
        run,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .outputs()
}
