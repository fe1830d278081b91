//! Pages: what the vision encoder sees.
//!
//! `render` draws text on white pages with an embedded font; `preprocess` turns a page or an image document into
//! the model's normalised pixel tensor exactly as DeepSeek-OCR does (PIL padding, bicubic resize); `resample` is
//! PIL's bicubic resize itself. `render_document` is `deepsynth render`: a text file or an image to PNG files.

pub mod preprocess;
pub mod render;
pub mod resample;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;

pub use preprocess::{decode_image, load_image, pad_square, preprocess, Mode};
pub use render::{layout, render, RenderConfig};

/// Renders `document` to PNG: a text file to its pages, a PNG/JPEG image (known by its first bytes) to the padded
/// square the model sees in `mode`. One page goes to `output` itself; several go to `<stem>-1.<ext>`,
/// `<stem>-2.<ext>`, ... beside it. Returns the files written.
pub fn render_document(document: &Path, output: &Path, config: &RenderConfig, mode: Mode) -> Result<Vec<PathBuf>> {
    let bytes = std::fs::read(document).with_context(|| format!("cannot read {}", document.display()))?;
    let pages = if preprocess::is_image(&bytes) {
        let image = decode_image(&bytes).with_context(|| format!("cannot decode image {}", document.display()))?;
        vec![pad_square(&image, mode.size())]
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is neither UTF-8 text nor a PNG/JPEG image (invalid UTF-8 at byte {})",
                document.display(),
                e.valid_up_to()
            )
        })?;
        // A byte-order mark is an encoding signature, not text to draw.
        render(text.strip_prefix('\u{feff}').unwrap_or(text), config)?
    };
    let paths = page_paths(output, pages.len());
    for (page, path) in pages.iter().zip(&paths) {
        write_png(page, path)?;
    }
    Ok(paths)
}

/// `page.png` for one page; `page-1.png`, `page-2.png`, ... for several.
fn page_paths(output: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![output.to_path_buf()];
    }
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "page".into());
    let ext = output.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    (1..=count).map(|n| output.with_file_name(format!("{stem}-{n}{ext}"))).collect()
}

/// Encodes `image` as PNG and writes it atomically (temporary file beside, then rename).
pub fn write_png(image: &RgbImage, path: &Path) -> Result<()> {
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {} as PNG", path.display()))?;
    crate::data::io::write_atomic(path, &png)
}
