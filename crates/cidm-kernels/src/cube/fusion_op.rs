//! What the kernels' burn-fusion integrations share: registering a fused operation as a
//! custom operation of the fusion stream.

use burn::tensor::{ops::FloatTensor, DType, Shape};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend,
};
use burn_ir::{CustomOpIr, OperationIr, OperationOutput, TensorIr};

/// Registers the custom operation `name` on `inputs` with outputs of the given shapes and
/// dtypes; `op` builds the operation that runs the kernels from its description (which it
/// reads the tensors' handles from when the stream executes it). Returns the outputs.
pub(crate) fn register_custom<B, Op, const I: usize, const O: usize>(
    name: &'static str,
    inputs: [FloatTensor<Fusion<B>>; I],
    outputs: [(Shape, DType); O],
    op: impl FnOnce(CustomOpIr) -> Op,
) -> [FloatTensor<Fusion<B>>; O]
where
    B: FusionBackend,
    Op: Operation<B::FusionRuntime> + 'static,
{
    let client = inputs[0].client.clone();
    let outputs =
        outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let streams = OperationStreams::with_inputs(&inputs);
    let desc = CustomOpIr::new(name, &inputs.map(|input| input.into_ir()), &outputs);
    client
        .register(streams, OperationIr::Custom(desc.clone()), op(desc))
        .outputs()
}
