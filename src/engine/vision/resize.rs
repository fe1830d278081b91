//! PyTorch's `F.interpolate` (align_corners=False) as matrices: one axis of size n_in -> n_out is y = M · x with
//! M [n_out, n_in], so a resize is one or two matmuls and trains like any other op. Candle has no bicubic resize.

use candle_core::{Device, Result, Tensor};

use crate::page::resample::cubic;

/// M for `mode="bicubic", antialias=True` (PyTorch's separable anti-aliased kernel, as in PIL): Keys' cubic with
/// a = -0.5, stretched by the scale when shrinking, weights normalised per output.
fn bicubic_antialias(n_in: usize, n_out: usize) -> Vec<f64> {
    let scale = n_in as f64 / n_out as f64;
    // Shrinking widens the kernel (support 2 input pixels per output pixel's width), enlarging does not.
    let (support, stretch) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
    let mut m = vec![0.0; n_out * n_in];
    for (i, row) in m.chunks_mut(n_in).enumerate() {
        let center = scale * (i as f64 + 0.5);
        // PyTorch truncates towards zero here, then clamps.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, n_in as i64) as usize;
        for (j, w) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *w = cubic((j as f64 - center + 0.5) * stretch);
        }
        let total: f64 = row.iter().sum();
        if total != 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    m
}

/// M for `mode="linear"` (no anti-aliasing): source position scale · (i + 0.5) - 0.5, clamped at 0, between its two
/// neighbours.
fn linear(n_in: usize, n_out: usize) -> Vec<f64> {
    let scale = n_in as f64 / n_out as f64;
    let mut m = vec![0.0; n_out * n_in];
    for (i, row) in m.chunks_mut(n_in).enumerate() {
        let src = (scale * (i as f64 + 0.5) - 0.5).max(0.0);
        let lo = (src as usize).min(n_in - 1);
        let hi = (lo + 1).min(n_in - 1);
        let frac = src - lo as f64;
        row[lo] += 1.0 - frac;
        row[hi] += frac;
    }
    m
}

fn matrix(m: Vec<f64>, n_in: usize, n_out: usize, like: &Tensor) -> Result<Tensor> {
    let m: Vec<f32> = m.into_iter().map(|w| w as f32).collect();
    Tensor::from_vec(m, (n_out, n_in), &Device::Cpu)?.to_dtype(like.dtype())?.to_device(like.device())
}

/// A grid [h_in, w_in, C] resized to [h, w, C] as `F.interpolate(mode="bicubic", antialias=True)` does it.
pub fn bicubic_antialias_grid(grid: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (h_in, w_in, c) = grid.dims3()?;
    let rows = matrix(bicubic_antialias(h_in, h), h_in, h, grid)?;
    let cols = matrix(bicubic_antialias(w_in, w), w_in, w, grid)?;
    // Rows: [h, h_in] · [h_in, w_in·C]; then columns, batched over the h output rows: [w, w_in] · [w_in, C].
    let x = rows.matmul(&grid.reshape((h_in, w_in * c))?)?.reshape((h, w_in, c))?;
    cols.unsqueeze(0)?.broadcast_as((h, w, w_in))?.contiguous()?.matmul(&x)
}

/// Rows of a table [n_in, C] resized to [n, C] as `F.interpolate(mode="linear")` does it along n.
pub fn linear_rows(table: &Tensor, n: usize) -> Result<Tensor> {
    let n_in = table.dim(0)?;
    matrix(linear(n_in, n), n_in, n, table)?.matmul(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize_1d(m: Vec<f64>, x: &[f64]) -> Vec<f64> {
        m.chunks(x.len()).map(|row| row.iter().zip(x).map(|(w, v)| w * v).sum()).collect()
    }

    // Expected values printed by PyTorch 2 for x = [0, 1, 4, 9, 16, 25, 36, 49] (i²):
    // F.interpolate(x[None, None], size=n, mode=...) with align_corners=False.
    const SQUARES: [f64; 8] = [0.0, 1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0];

    #[test]
    fn bicubic_antialias_matches_pytorch_when_shrinking_and_enlarging() {
        // mode="bicubic", antialias=True, size 5 and 12.
        let want5 = [0.1559009, 3.6476254, 12.1877231, 26.3568548, 44.5934920];
        let want12 = [
            -0.0657895, 0.2941176, 1.3611111, 3.3611111, 6.25, 10.0277778, 14.6944444, 20.25, 26.6944444, 34.0277778,
            43.5294118, 49.8552632,
        ];
        for (n, want) in [(5, &want5[..]), (12, &want12[..])] {
            let got = resize_1d(bicubic_antialias(8, n), &SQUARES);
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "size {n}: got {got:?}, want {want:?}");
            }
        }
    }

    #[test]
    fn linear_matches_pytorch_and_is_identity_at_the_same_size() {
        let want5 = [0.3, 3.7, 12.5, 26.1, 45.1];
        let got = resize_1d(linear(8, 5), &SQUARES);
        assert!(got.iter().zip(want5).all(|(g, w)| (g - w).abs() < 1e-9), "{got:?}");
        assert_eq!(resize_1d(linear(8, 8), &SQUARES), SQUARES);
        assert_eq!(resize_1d(bicubic_antialias(8, 8), &SQUARES), SQUARES);
    }

    #[test]
    fn grid_resize_is_separable_per_channel() {
        // A grid whose channel 0 varies along rows only and channel 1 along columns only: each output channel
        // must be the 1-D resize of its profile, broadcast along the other axis.
        let data: Vec<f32> =
            (0..8).flat_map(|i| (0..8).flat_map(move |j| [SQUARES[i] as f32, SQUARES[j] as f32])).collect();
        let grid = Tensor::from_vec(data, (8, 8, 2), &Device::Cpu).unwrap();
        let out = bicubic_antialias_grid(&grid, 5, 12).unwrap();
        assert_eq!(out.dims(), [5, 12, 2]);
        let out = out.to_vec3::<f32>().unwrap();
        let (rows, cols) =
            (resize_1d(bicubic_antialias(8, 5), &SQUARES), resize_1d(bicubic_antialias(8, 12), &SQUARES));
        for i in 0..5 {
            for j in 0..12 {
                assert!((out[i][j][0] as f64 - rows[i]).abs() < 1e-4 && (out[i][j][1] as f64 - cols[j]).abs() < 1e-4);
            }
        }
    }
}
