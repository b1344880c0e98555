//! Moving a tensor between Burn's generic `Tensor<B, D>` and burn-flex's `FlexTensor`, for
//! the host kernels that work on flex's buffers (`few_rows`, `adamw`, and the models'
//! training operations, `models::host_train`).

use std::any::Any;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

/// The flex tensor behind `t`, or `None` on another backend (or a quantized tensor).
pub fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<FlexTensor> {
    match t.into_primitive() {
        TensorPrimitive::Float(p) => {
            let any: Box<dyn Any> = Box::new(p);
            any.downcast::<FlexTensor>().ok().map(|b| *b)
        }
        TensorPrimitive::QFloat(_) => None,
    }
}

/// `t` as a tensor of `B`, or `None` when `B`'s float tensor is not burn-flex's.
pub fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Option<Tensor<B, D>> {
    let any: Box<dyn Any> = Box::new(t);
    let p = *any.downcast::<B::FloatTensorPrimitive>().ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(p)))
}

/// `t` contiguous from its first element (copied when it is a strided view or starts at an
/// offset into its buffer).
pub fn contiguous(t: FlexTensor) -> FlexTensor {
    match t.layout().contiguous_offsets() {
        Some((0, _)) => t,
        _ => t.to_contiguous(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn round_trip_and_contiguous_copy_of_a_transposed_view() {
        let device = Default::default();
        let t = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]),
            &device,
        );
        let f = to_flex(t.clone().transpose()).expect("flex");
        let c = contiguous(f);
        assert_eq!(c.storage::<f32>()[..6], [1., 4., 2., 5., 3., 6.]);
        let back: Tensor<Flex, 2> = from_flex(c).expect("flex");
        back.into_data().assert_eq(&t.transpose().into_data(), true);
    }
}
