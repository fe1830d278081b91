//! Decoding's matrix products on the CPU: y = x·Wᵀ for a few rows of x, split over W's rows across all cores.
//!
//! A decoded token reads every weight once, so decoding runs at memory bandwidth; candle's CPU kernel runs this
//! shape on one core (measured on 2 cores: a 98 MB lm_head in 10 ms, this kernel 6 ms).

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Output rows per parallel task.
const BLOCK: usize = 64;
/// Up to this many rows of x take this path (decoding steps of small batches); more rows are a matrix product.
const MAX_ROWS: usize = 4;

/// x [rows, in] · Wᵀ for W [out, in], when both are f32 on the CPU, x has at most [`MAX_ROWS`] rows, and neither
/// takes part in a backward pass (this product records none); None otherwise.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (rows, in_dim) = x.dims2()?;
    let suitable = rows <= MAX_ROWS
        && x.device().is_cpu()
        && (x.dtype(), w.dtype()) == (DType::F32, DType::F32)
        && !x.track_op()
        && !w.track_op();
    if !suitable {
        return Ok(None);
    }
    let (out_dim, w_in) = w.dims2()?;
    if w_in != in_dim {
        return Ok(None); // the ordinary path reports the mismatch
    }
    let x = x.contiguous()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = w.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*x_storage, &*w_storage) else { return Ok(None) };
    let (Some((x0, x1)), Some((w0, w1))) = (x_layout.contiguous_offsets(), w_layout.contiguous_offsets()) else {
        return Ok(None);
    };
    let (xv, wv) = (&xs.as_slice::<f32>()?[x0..x1], &ws.as_slice::<f32>()?[w0..w1]);
    // Computed output-major ([out, rows]) so that each task writes one contiguous block.
    let mut yt = vec![0f32; out_dim * rows];
    yt.par_chunks_mut(BLOCK * rows).enumerate().for_each(|(block, chunk)| {
        for (i, outs) in chunk.chunks_mut(rows).enumerate() {
            let o = block * BLOCK + i;
            let weights = &wv[o * in_dim..(o + 1) * in_dim];
            for (r, y) in outs.iter_mut().enumerate() {
                *y = dot(weights, &xv[r * in_dim..(r + 1) * in_dim]);
            }
        }
    });
    let y: Vec<f32> = (0..rows).flat_map(|r| yt.iter().skip(r).step_by(rows).copied()).collect();
    Ok(Some(Tensor::from_vec(y, (rows, out_dim), &Device::Cpu)?))
}

/// A dot product with 16 independent partial sums, which the compiler turns into vector instructions.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_pattern as random;

    #[test]
    fn equals_the_matrix_product_and_declines_what_it_cannot_do() {
        let w = random(&[200, 37], 1);
        for rows in 1..=4 {
            let x = random(&[rows, 37], rows as u64);
            let fast = matmul_t(&x, &w).unwrap().expect("a few f32 rows on the CPU");
            let slow = x.matmul(&w.t().unwrap()).unwrap();
            let diff = (fast - slow).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        }
        assert!(matmul_t(&random(&[5, 37], 1), &w).unwrap().is_none());
        let var = candle_core::Var::from_tensor(&random(&[1, 37], 2)).unwrap();
        assert!(matmul_t(var.as_tensor(), &w).unwrap().is_none(), "a variable needs the backward pass");
    }
}
