//! Image documents and rendered pages -> the model's pixel tensor, as DeepSeek-OCR prepares its global view when
//! it does not crop: `ImageOps.pad(image, (S, S), color=(127, 127, 127))` (bicubic resize keeping the aspect
//! ratio, centred on a grey canvas), then torchvision's ToTensor and Normalize(mean = 0.5, std = 0.5).

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::resample::resize_bicubic;

/// The padding colour: DeepSeek-OCR fills with `int(x * 255)` of its normalisation mean 0.5, i.e. 127 (not 128).
pub const PAD_GREY: u8 = 127;
/// Per-channel normalisation (the same for R, G and B).
pub const MEAN: f32 = 0.5;
pub const STD: f32 = 0.5;

/// DeepSeek-OCR's single-view resolution modes (Gundam's tiling is not a single square).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tiny,
    Small,
    #[default]
    Base,
    Large,
}

impl Mode {
    /// The side of the square model input, in pixels.
    pub fn size(self) -> u32 {
        match self {
            Mode::Tiny => 512,
            Mode::Small => 640,
            Mode::Base => 1024,
            Mode::Large => 1280,
        }
    }
}

/// Whether `bytes` start like a PNG or a JPEG file (the formats an image document may have).
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a PNG or JPEG as DeepSeek-OCR loads pages: EXIF orientation applied, then converted to 8-bit RGB
/// (alpha dropped, grey replicated).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    let mut decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .context("cannot read the image header")?
        .into_decoder()
        .context("not a PNG or JPEG image")?;
    let orientation = decoder.orientation().context("cannot read the image orientation")?;
    let mut image = DynamicImage::from_decoder(decoder).context("cannot decode the image")?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

/// Reads and decodes an image file (see [`decode_image`]).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_image(&bytes).with_context(|| format!("cannot decode image {}", path.display()))
}

/// Python's `round()` of a non-negative float: half to even.
fn py_round(x: f64) -> u32 {
    x.round_ties_even() as u32
}

/// PIL's `ImageOps.pad(image, (size, size), BICUBIC, color=PAD_GREY)`: the longer side becomes `size`, the shorter
/// `round(short / long * size)` (computed in that order, as PIL does), and the result is pasted at offset
/// `round((size - short) * 0.5)` on a grey canvas.
pub fn pad_square(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut canvas = RgbImage::from_pixel(size, size, Rgb([PAD_GREY; 3]));
    if w == 0 || h == 0 {
        return canvas;
    }
    let side = f64::from(size);
    let (new_w, new_h) = match w.cmp(&h) {
        std::cmp::Ordering::Equal => (size, size),
        std::cmp::Ordering::Greater => (size, py_round(f64::from(h) / f64::from(w) * side)),
        std::cmp::Ordering::Less => (py_round(f64::from(w) / f64::from(h) * side), size),
    };
    if new_w == 0 || new_h == 0 {
        return canvas;
    }
    let resized = resize_bicubic(image, new_w, new_h);
    if (new_w, new_h) == (size, size) {
        return resized;
    }
    let x = py_round(f64::from(size - new_w) * 0.5);
    let y = py_round(f64::from(size - new_h) * 0.5);
    image::imageops::replace(&mut canvas, &resized, i64::from(x), i64::from(y));
    canvas
}

/// ToTensor then Normalize: a [3, H, W] f32 tensor of `(v / 255 - MEAN) / STD`, in f32 arithmetic as torch does.
pub fn to_tensor(image: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = image.dimensions();
    let plane = w as usize * h as usize;
    let mut data = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for (c, &v) in pixel.0.iter().enumerate() {
            data[c * plane + i] = (f32::from(v) / 255.0 - MEAN) / STD;
        }
    }
    Ok(Tensor::from_vec(data, (3, h as usize, w as usize), device)?)
}

/// An image document or a rendered page -> the model input [3, S, S] for `mode` (S = `mode.size()`).
pub fn preprocess(image: &RgbImage, mode: Mode, device: &Device) -> Result<Tensor> {
    to_tensor(&pad_square(image, mode.size()), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!((py_round(10.5), py_round(35.5), py_round(2.5), py_round(2.51)), (10, 36, 2, 3));
    }

    #[test]
    fn a_wide_image_is_centred_vertically_on_grey() {
        let white = RgbImage::from_pixel(300, 100, Rgb([255; 3]));
        let out = pad_square(&white, 60);
        // 100 / 300 * 60 = 20 rows of image at offset round(20.0) = 20.
        assert_eq!(out.get_pixel(30, 19).0, [PAD_GREY; 3]);
        assert_eq!(out.get_pixel(30, 20).0, [255; 3]);
        assert_eq!(out.get_pixel(30, 39).0, [255; 3]);
        assert_eq!(out.get_pixel(30, 40).0, [PAD_GREY; 3]);
    }

    #[test]
    fn normalisation_maps_0_and_255_to_minus_one_and_one() {
        let image = RgbImage::from_fn(2, 1, |x, _| Rgb([if x == 0 { 0 } else { 255 }, 127, 0]));
        let t = to_tensor(&image, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 1, 2]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[..2], [-1.0, 1.0]);
        assert!((v[2] - (127.0 / 255.0 - 0.5) / 0.5).abs() < 1e-7);
        assert_eq!(v[4..], [-1.0, -1.0]);
    }

    #[test]
    fn modes_have_deepseek_ocr_sizes() {
        let sizes: Vec<u32> = [Mode::Tiny, Mode::Small, Mode::Base, Mode::Large].map(Mode::size).to_vec();
        assert_eq!(sizes, [512, 640, 1024, 1280]);
    }
}
