//! Pillow's bicubic resize of 8-bit RGB images (`Image.resize(size, Image.BICUBIC)`), reproduced bit for bit so
//! that preprocessed pixels match DeepSeek-OCR's: a separable convolution (horizontal pass first), the cubic
//! kernel with a = -0.5 stretched by the downscale factor (antialiasing), weights normalised per output pixel then
//! fixed to 22 fractional bits, and each pass rounded and clamped to 8 bits.

use image::RgbImage;

/// Fractional bits of the fixed-point weights: 32 bits less 8 for the pixel and 2 of headroom for the kernel's
/// overshoot (Pillow's PRECISION_BITS).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The bicubic convolution kernel with a = -0.5, support 2 (Keys'; Pillow's and PyTorch's antialiased one).
pub(crate) fn cubic(x: f64) -> f64 {
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

/// The source pixels one output pixel reads: `first` and one fixed-point weight per pixel from there.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// The taps of every output pixel along one axis, computed in Pillow's order of floating-point operations.
fn axis_taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the kernel by the factor, so that every source pixel contributes (antialiasing).
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let inv_filter_scale = 1.0 / filter_scale;
    (0..out_size)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            // `as i64` truncates toward zero like C's (int): that is Pillow's rounding of the window ends.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (first..end).map(|x| cubic((x as f64 - center + 0.5) * inv_filter_scale)).collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    // Round half away from zero, then truncate (C's (int)).
                    (if w < 0.0 { fixed - 0.5 } else { fixed + 0.5 }) as i32
                })
                .collect();
            Taps { first, weights }
        })
        .collect()
}

/// A weighted sum of 8-bit samples, rounded and clamped back to 8 bits.
fn convolve(samples: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let sum = samples.zip(weights).fold(1i32 << (PRECISION_BITS - 1), |acc, (v, &w)| acc + i32::from(v) * w);
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

fn resize_horizontal(src: &RgbImage, width: u32) -> RgbImage {
    let taps = axis_taps(src.width() as usize, width as usize);
    RgbImage::from_fn(width, src.height(), |x, y| {
        let t = &taps[x as usize];
        let at = |c: usize| {
            let row = (t.first..t.first + t.weights.len()).map(|sx| src.get_pixel(sx as u32, y)[c]);
            convolve(row, &t.weights)
        };
        image::Rgb([at(0), at(1), at(2)])
    })
}

fn resize_vertical(src: &RgbImage, height: u32) -> RgbImage {
    let taps = axis_taps(src.height() as usize, height as usize);
    RgbImage::from_fn(src.width(), height, |x, y| {
        let t = &taps[y as usize];
        let at = |c: usize| {
            let column = (t.first..t.first + t.weights.len()).map(|sy| src.get_pixel(x, sy as u32)[c]);
            convolve(column, &t.weights)
        };
        image::Rgb([at(0), at(1), at(2)])
    })
}

/// Resizes `src` to `width` x `height` as Pillow's `resize(..., BICUBIC)` does; an axis whose size does not change
/// is not filtered (a same-size resize is a copy).
pub fn resize_bicubic(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    match (width != src.width(), height != src.height()) {
        (false, false) => src.clone(),
        (true, false) => resize_horizontal(src, width),
        (false, true) => resize_vertical(src, height),
        (true, true) => resize_vertical(&resize_horizontal(src, width), height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (from, to) in [(1024, 512), (300, 43), (90, 200), (5, 2)] {
            for t in axis_taps(from, to) {
                let sum: i32 = t.weights.iter().sum();
                // Each weight is rounded on its own, so the sum is off by at most half a unit per weight.
                assert!((sum - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i32, "{from}->{to}: {sum}");
            }
        }
    }

    #[test]
    fn halving_reads_eight_pixels_around_each_centre() {
        // Scale 2: support 4, so output pixel 10 (centre 21) reads source pixels 17..25.
        let taps = axis_taps(1024, 512);
        assert_eq!((taps[10].first, taps[10].weights.len()), (17, 8));
        assert_eq!(taps[0].first, 0);
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 13, 127]));
        let out = resize_bicubic(&flat, 11, 50);
        assert!(out.pixels().all(|p| p.0 == [200, 13, 127]));
    }
}
