//! Adding to a few rows of a large table (the sparse puzzle table's SignSGD update). Burn's `select_assign`
//! returns a new tensor, and on Flex it copies the whole table first even when nothing else holds it: at ARC's
//! million rows that is 2 GB per optimiser step. The Flex kernel here adds in place when the trainer holds the
//! only reference (it lets go of every other copy before the update); otherwise it falls back to burn's op.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};

/// `table[rows[i]] += delta[i]` through burn's select-add (a new tensor on every backend).
pub(crate) fn composed_add_rows<B: Backend>(
    table: FloatTensor<B>,
    rows: IntTensor<B>,
    delta: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_select_add(table, 0, rows, delta)
}

pub(crate) mod flex {
    use burn::backend::Flex;
    use burn::tensor::DType;
    use burn_flex::FlexTensor;

    use super::*;

    /// In place when `table` is a uniquely held, contiguous f32 matrix and `delta` is f32; burn's op otherwise
    /// (and with the fast path off, [`crate::kernels::with_fast_path`]).
    pub fn add_rows(mut table: FlexTensor, rows: FlexTensor, delta: FlexTensor) -> FlexTensor {
        let shape = table.layout().shape().clone();
        let whole = table.layout().contiguous_offsets() == Some((0, shape.num_elements()));
        if !crate::kernels::fast_path()
            || shape.num_dims() != 2
            || table.dtype() != DType::F32
            || delta.dtype() != DType::F32
            || !whole
        {
            return composed_add_rows::<Flex>(table, rows, delta);
        }
        let (num_rows, width) = (shape[0], shape[1]);
        let ids: Vec<i64> = rows.clone().into_data().convert::<i64>().to_vec().expect("integer row ids");
        let delta = delta.to_contiguous();
        let fits = delta.layout().num_elements() == ids.len() * width;
        if !fits || ids.iter().any(|&r| r < 0 || r as usize >= num_rows) || !table.is_unique() {
            return composed_add_rows::<Flex>(table, rows, delta);
        }
        let values: &[f32] = delta.storage();
        let data = table.try_storage_mut::<f32>().expect("checked unique");
        for (i, &r) in ids.iter().enumerate() {
            let dst = &mut data[r as usize * width..(r as usize + 1) * width];
            for (d, v) in dst.iter_mut().zip(&values[i * width..(i + 1) * width]) {
                *d += v;
            }
        }
        table
    }
}
