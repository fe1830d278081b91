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
    let pages = match Document::from_file(document)? {
        Document::Image(image) => vec![pad_square(&image, mode.size())],
        Document::Text(text) => render(&text, config)?,
    };
    let paths = page_paths(output, pages.len());
    for (page, path) in pages.iter().zip(&paths) {
        write_png(page, path)?;
    }
    Ok(paths)
}

/// What a question is about: text (rendered to pages) or a page image.
#[derive(Debug, Clone)]
pub enum Document {
    Text(String),
    Image(RgbImage),
}

impl Document {
    /// A PNG/JPEG file is an image, another file is UTF-8 text; a string that names no file is the text itself.
    pub fn from_arg(arg: &str) -> anyhow::Result<Self> {
        let path = Path::new(arg);
        if path.is_file() {
            Self::from_file(path)
        } else {
            Ok(Self::Text(arg.to_string()))
        }
    }

    /// A PNG/JPEG page, or a UTF-8 text file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if preprocess::is_image(&bytes) {
            let image = decode_image(&bytes).with_context(|| format!("cannot decode image {}", path.display()))?;
            return Ok(Self::Image(image));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is neither UTF-8 text nor a PNG/JPEG image (invalid UTF-8 at byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        Ok(Self::Text(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text)))
    }
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
