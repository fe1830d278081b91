//! Pages: the renderer, PIL-exact preprocessing (against DeepSeek-OCR's own pixels and Pillow goldens made by
//! scripts/make_page_goldens.py), and `deepsynth render`.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{deepsynth, fails, files_in, ok, repo};
use deepsynth::page::{self, layout, pad_square, render, Mode, RenderConfig};
use image::RgbImage;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/page").join(name)
}

/// A file of the reference run; CI lays shared/ beside the repository (and there it must be found). A clone on its
/// own has no shared/: there the test says it is skipped.
fn reference(name: &str) -> Option<PathBuf> {
    let path = repo().join("../shared/reference/deepseek-ocr-random-2layer").join(name);
    if path.exists() || std::env::var_os("CI").is_some() {
        return Some(path);
    }
    eprintln!("skipped: {} not found (shared/ is not beside the repository)", path.display());
    None
}

/// The uint8 [H, W, 3] goldens that Pillow produced, by name.
fn golden(name: &str) -> RgbImage {
    let bytes = std::fs::read(fixture("goldens.safetensors")).expect("read goldens");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("parse goldens");
    let view = tensors.tensor(name).unwrap_or_else(|e| panic!("golden {name}: {e}"));
    let shape = view.shape();
    RgbImage::from_raw(shape[1] as u32, shape[0] as u32, view.data().to_vec()).expect("golden size")
}

/// Asserts two images are equal byte for byte; on failure says how many values differ and by how much at most.
fn assert_same_pixels(ours: &RgbImage, pil: &RgbImage, what: &str) {
    assert_eq!(ours.dimensions(), pil.dimensions(), "{what}: size");
    let diffs: Vec<u8> = ours.as_raw().iter().zip(pil.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
    let differing = diffs.iter().filter(|&&d| d > 0).count();
    let max = diffs.iter().max().copied().unwrap_or(0);
    assert_eq!(differing, 0, "{what}: {differing} of {} values differ from PIL, by up to {max}", diffs.len());
}

#[test]
fn base_mode_reproduces_deepseek_ocr_pixels() {
    let (Some(png), Some(io)) = (reference("input-base-1024.png"), reference("io-base-1024.safetensors")) else {
        return;
    };
    let image = page::load_image(&png).unwrap();
    let ours = page::preprocess(&image, Mode::Base, &Device::Cpu).unwrap();
    let io = candle_core::safetensors::load(io, &Device::Cpu).unwrap();
    let theirs = io["images_ori"].squeeze(0).unwrap();
    assert_eq!(ours.dims(), theirs.dims());
    let max = ours.sub(&theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let max: f32 = max.to_scalar().unwrap();
    assert!(max <= 1e-6, "max |ours - reference| = {max}");
}

#[test]
fn padding_matches_pil_image_ops_pad() {
    for (name, sizes) in [("blocks300x200", &[64, 128][..]), ("blocks90x140", &[64, 128, 200]), ("thin128x5", &[64])] {
        let image = page::load_image(&fixture(&format!("{name}.png"))).unwrap();
        for &size in sizes {
            let what = format!("pad_{name}_{size}");
            assert_same_pixels(&pad_square(&image, size), &golden(&what), &what);
        }
    }
}

#[test]
fn halving_the_reference_strip_matches_pil_bicubic() {
    let strip = page::load_image(&fixture("refstrip1024x176.png")).unwrap();
    let ours = page::resample::resize_bicubic(&strip, 512, 88);
    assert_same_pixels(&ours, &golden("resize_refstrip_512"), "1024 -> 512 bicubic");
}

#[test]
fn jpeg_decodes_upright_like_pil() {
    let ours = page::load_image(&fixture("blocks90x140-exif6.jpg")).unwrap();
    // EXIF orientation 6: the stored 90x140 picture is shown rotated, 140 wide.
    assert_eq!(ours.dimensions(), (140, 90));
    // JPEG decoders legitimately differ: zune-jpeg (the image crate's) upsamples 4:2:0 chroma and converts colour
    // with other rounding than PIL's libjpeg-turbo. Measured here: 8932 of 37800 values differ, by at most 8, 0.33
    // on average. A wrong orientation or a broken decode would be off by far more.
    let pil = golden("decode_blocks90x140-exif6");
    let diffs: Vec<u8> = ours.as_raw().iter().zip(pil.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
    let max = *diffs.iter().max().unwrap();
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    assert!(max <= 8 && mean < 0.5, "JPEG decode differs from PIL by up to {max}, {mean:.3} on average");
}

#[test]
fn every_mode_gives_a_normalised_square() {
    let image = page::load_image(&fixture("blocks300x200.png")).unwrap();
    for mode in [Mode::Tiny, Mode::Small, Mode::Base, Mode::Large] {
        let t = page::preprocess(&image, mode, &Device::Cpu).unwrap();
        let s = mode.size() as usize;
        assert_eq!(t.dims(), &[3, s, s]);
        // The top-left corner is padding: grey 127 normalised.
        let corner: f32 = t.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_scalar().unwrap();
        assert_eq!(corner, (127.0 / 255.0 - 0.5) / 0.5);
    }
}

const PROSE: &str = "Zürich's bakers — «Bäckerei Müller» — sell Ελληνικά ψωμιά and русский хлеб. \
    Ångström, façade, naïve, œuvre, ÿ, Ç, Ø, ß. The quick brown fox jumps over the lazy dog; \
    pack my box with five dozen liquor jugs (gqpjy)!";

/// Several copies of PROSE, as words separated by spaces.
fn long_text() -> String {
    format!("{PROSE} ").repeat(4)
}

fn small_page() -> RenderConfig {
    RenderConfig { width: 256, height: 256, ..RenderConfig::default() }
}

fn ink_rows(page: &RgbImage) -> Vec<u32> {
    (0..page.height()).filter(|&y| (0..page.width()).any(|x| page.get_pixel(x, y)[0] < 255)).collect()
}

#[test]
fn rendering_is_deterministic() {
    let a = render(PROSE, &RenderConfig::default()).unwrap();
    let b = render(PROSE, &RenderConfig::default()).unwrap();
    assert_eq!(a, b);
    assert!(!ink_rows(&a[0]).is_empty(), "the page has text on it");
}

#[test]
fn no_ink_falls_in_the_margins() {
    let text = PROSE.repeat(6);
    for config in [small_page(), RenderConfig::default(), RenderConfig { margin: 40, ..small_page() }] {
        let pages = render(&text, &config).unwrap();
        let m = config.margin;
        for (n, page) in pages.iter().enumerate() {
            assert_eq!(page.dimensions(), (config.width, config.height));
            for (x, y, p) in page.enumerate_pixels() {
                let inside = (m..config.width - m).contains(&x) && (m..config.height - m).contains(&y);
                assert!(inside || p.0 == [255; 3], "ink at ({x}, {y}) on page {} with margin {m}", n + 1);
            }
        }
    }
}

#[test]
fn long_text_fills_several_pages_without_losing_words() {
    let text = long_text();
    let pages = layout(&text, &small_page()).unwrap();
    assert!(pages.len() >= 3, "{} pages", pages.len());
    // 224 px inside the margins: 14 columns of 16 px, 7 lines of 32 px.
    assert!(pages.iter().all(|lines| lines.len() <= 7));
    assert!(pages[..pages.len() - 1].iter().all(|lines| lines.len() == 7), "only the last page is short");
    assert!(pages.iter().flatten().all(|line| line.chars().count() <= 14));
    let laid_out: Vec<String> = pages.iter().flatten().cloned().collect();
    let words: Vec<&str> = text.split_whitespace().collect();
    // No word here is longer than a line, so wrapping only moves words to new lines.
    assert_eq!(laid_out.join(" ").split_whitespace().collect::<Vec<_>>(), words);
    let rendered = render(&text, &small_page()).unwrap();
    assert_eq!(rendered.len(), pages.len());
    assert!(rendered.iter().all(|page| !ink_rows(page).is_empty()), "every page has ink");
}

#[test]
fn a_line_break_starts_a_new_line() {
    assert_eq!(layout("alpha\nbeta\n\n\tgamma\r\n", &small_page()).unwrap(), [["alpha", "beta", "", "    gamma"]]);
    let config = small_page();
    let second_line = config.margin + config.line_pitch..config.margin + 2 * config.line_pitch;
    let joined = render("ab cd", &config).unwrap();
    let broken = render("ab\ncd", &config).unwrap();
    assert!(!ink_rows(&joined[0]).iter().any(|y| second_line.contains(y)));
    assert!(ink_rows(&broken[0]).iter().any(|y| second_line.contains(y)));
}

#[test]
fn a_word_longer_than_a_line_is_broken() {
    let lines = &layout("x abcdefghijklmnopqrstuvwxyz y", &small_page()).unwrap()[0];
    assert_eq!(lines, &["x", "abcdefghijklmn", "opqrstuvwxyz y"]);
}

#[test]
fn glyphs_the_font_lacks_render_as_boxes() {
    let pages = render("中文 😀", &small_page()).unwrap();
    assert_eq!(pages.len(), 1);
    assert!(!ink_rows(&pages[0]).is_empty(), "replacement boxes are visible");
    assert_eq!(render("", &small_page()).unwrap().len(), 1, "an empty text is one blank page");
}

#[test]
fn pages_too_small_for_the_type_are_refused() {
    let tiny = RenderConfig { width: 40, height: 40, ..RenderConfig::default() };
    let err = render("text", &tiny).unwrap_err().to_string();
    assert!(err.contains("no room"), "{err}");
    assert!(render("text", &RenderConfig { width: 0, ..RenderConfig::default() }).is_err());
}

fn png_size(path: &Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{} is not a valid image: {e}", path.display()));
    assert_eq!(image::ImageFormat::from_path(path).unwrap(), image::ImageFormat::Png);
    (image.width(), image.height())
}

#[test]
fn cli_writes_pngs_of_the_asked_size() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.txt");
    std::fs::write(&doc, "\u{feff}Hello, page.\nΓειά σου, Мир.").unwrap();
    let out = dir.path().join("out.png");
    ok(["render", "--document", doc.to_str().unwrap(), "--output", out.to_str().unwrap(), "--width", "300"]);
    assert_eq!(png_size(&out), (300, 1024));
    // The file's byte-order mark is not drawn.
    let expected = render("Hello, page.\nΓειά σου, Мир.", &RenderConfig { width: 300, ..RenderConfig::default() });
    assert_eq!(image::open(&out).unwrap().to_rgb8(), expected.unwrap()[0]);
    assert_eq!(files_in(dir.path()), ["doc.txt", "out.png"]);
    // Same input, same bytes.
    let again = dir.path().join("again.png");
    ok(["render", "--document", doc.to_str().unwrap(), "--output", again.to_str().unwrap(), "--width", "300"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn cli_numbers_the_pages_of_a_long_text() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("long.txt");
    std::fs::write(&doc, long_text()).unwrap();
    let out = dir.path().join("page.png");
    let args = ["--width", "256", "--height", "256", "--font-size", "26", "--margin", "16"];
    ok(["render", "--document", doc.to_str().unwrap(), "--output", out.to_str().unwrap()].into_iter().chain(args));
    let expected = layout(&long_text(), &small_page()).unwrap().len();
    let names = files_in(dir.path());
    let pages: Vec<&String> = names.iter().filter(|n| n.starts_with("page-")).collect();
    assert_eq!(pages.len(), expected, "{names:?}");
    assert!(!names.contains(&"page.png".to_string()));
    for n in 1..=expected {
        assert_eq!(png_size(&dir.path().join(format!("page-{n}.png"))), (256, 256));
    }
}

#[test]
fn cli_shows_an_image_document_as_the_padded_model_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("input.png");
    let doc = fixture("blocks300x200.png");
    ok(["render", "--document", doc.to_str().unwrap(), "--output", out.to_str().unwrap(), "--mode", "tiny"]);
    let shown = image::open(&out).unwrap().to_rgb8();
    assert_eq!(shown, pad_square(&page::load_image(&doc).unwrap(), 512));
}

#[test]
fn cli_errors_name_the_file_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let missing = dir.path().join("missing.txt");
    let err = fails(["render", "--document", missing.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("missing.txt"), "{err}");

    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let err = fails(["render", "--document", latin1.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("latin1.txt") && err.contains("UTF-8") && err.contains("byte 3"), "{err}");

    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let err = fails(["render", "--document", broken.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(err.contains("broken.png"), "{err}");

    let text = dir.path().join("t.txt");
    std::fs::write(&text, "text").unwrap();
    let err =
        fails(["render", "--document", text.to_str().unwrap(), "--output", out.to_str().unwrap(), "--width", "20"]);
    assert!(err.contains("no room"), "{err}");

    assert_eq!(files_in(dir.path()), ["broken.png", "latin1.txt", "t.txt"]);
    assert!(deepsynth(["render", "--help"]).stdout.windows(6).any(|w| w == b"page-1"), "--help explains page names");
}
