//! Bicubic resizing of a grid of vectors, as PyTorch's `F.interpolate(mode="bicubic", antialias=True,
//! align_corners=False)` does it (DeepSeek-OCR resizes position embeddings that way for other resolutions).
//!
//! The antialiased kernel is separable: each axis is a fixed [out, in] weight matrix, so the resize is two matmuls
//! and has a backward pass for free (the position embeddings stay trainable at every resolution).

use candle_core::{Device, Result, Tensor};

/// Keys' cubic convolution kernel with a = -0.5, the one PyTorch's (and PIL's) antialiased bicubic uses; the
/// plain, non-antialiased bicubic uses a = -0.75 instead.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The [output, input] weights along one axis. Output i is centred on input coordinate (i + 0.5)·scale; when
/// shrinking (scale > 1) the kernel is stretched by scale, which is the antialiasing. Taps outside the input are
/// dropped and each row renormalised to sum to 1 (no edge padding), as PyTorch does.
fn axis_weights(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let stretch = scale.max(1.0);
    let support = 2.0 * stretch;
    let mut weights = vec![0f32; output * input];
    for (i, row) in weights.chunks_mut(input).enumerate() {
        let center = scale * (i as f64 + 0.5);
        // PyTorch truncates toward zero here; below zero the clamp makes that moot.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as usize).min(input);
        let taps: Vec<f64> = (lo..hi).map(|j| cubic((j as f64 - center + 0.5) / stretch)).collect();
        let total: f64 = taps.iter().sum();
        for (j, w) in (lo..hi).zip(taps) {
            row[j] = (w / total) as f32;
        }
    }
    weights
}

fn axis_matrix(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(axis_weights(input, output), (output, input), device)
}

/// grid [h, w, c] -> [out_h, out_w, c].
pub fn bicubic_antialiased(grid: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (h, w, c) = grid.dims3()?;
    let dtype = grid.dtype();
    let rows = axis_matrix(h, out_h, grid.device())?.to_dtype(dtype)?;
    let cols = axis_matrix(w, out_w, grid.device())?.to_dtype(dtype)?;
    // Rows: [out_h, h] · [h, w·c]; then columns: [out_w, w] · [out_h][w, c] batched over out_h.
    let by_rows = rows.matmul(&grid.reshape((h, w * c))?)?.reshape((out_h, w, c))?;
    cols.unsqueeze(0)?.broadcast_as((out_h, out_w, w))?.contiguous()?.matmul(&by_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_rows_sum_to_one() {
        let eye = axis_weights(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                assert!((eye[i * 5 + j] - f32::from(i == j)).abs() < 1e-7);
            }
        }
        for (input, output) in [(16, 8), (16, 10), (16, 20), (4, 3)] {
            for row in axis_weights(input, output).chunks(input) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn halving_uses_the_kernel_stretched_by_two() {
        // 4 -> 2: output 0 is centred at input coordinate 1.0; its taps at inputs 0..3 sit at distances
        // 0.25, 0.25, 0.75, 1.25 once divided by the stretch 2 (the last one negative lobe); output 1 mirrors it.
        let w = axis_weights(4, 2);
        let taps = [cubic(0.25), cubic(0.25), cubic(0.75), cubic(1.25)];
        let total: f64 = taps.iter().sum();
        for j in 0..4 {
            assert!((w[j] as f64 - taps[j] / total).abs() < 1e-7, "{w:?}");
            assert!((w[4 + j] - w[3 - j]).abs() < 1e-7, "{w:?}");
        }
        assert!(w[3] < 0.0);
    }
}
