//! Text -> page images: black DejaVu Sans Mono (embedded in the binary) on white, word-wrapped to the page width,
//! explicit line breaks kept, as many pages as the text needs. Deterministic: the same text and config give the
//! same bytes, on any machine (no system fonts, integer glyph positions).

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use anyhow::{ensure, Context, Result};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

/// Tabs advance to the next multiple of this many columns.
const TAB_STOP: usize = 4;
/// Largest page side accepted (a 16k x 16k RGB page is already 768 MiB).
const MAX_SIDE: u32 = 16384;

/// Page geometry and type size. The defaults give a 1024 px square page (DeepSeek-OCR's Base mode) at 26 px per
/// em, where a DejaVu Sans Mono glyph advances 16 px: one character per 16 px vision patch, which the tiny-reader
/// experiment suggests for small models. A 256 px page with the same type holds 14 columns by 7 lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// Page width in pixels.
    pub width: u32,
    /// Page height in pixels.
    pub height: u32,
    /// Font size in pixels per em (as PIL's `ImageFont.truetype` size).
    pub font_size: f32,
    /// Baseline-to-baseline distance in pixels.
    pub line_pitch: u32,
    /// Blank border on each side, in pixels: no ink falls there.
    pub margin: u32,
}

impl Default for RenderConfig {
    fn default() -> Self {
        let font_size = 26.0;
        Self { width: 1024, height: 1024, font_size, line_pitch: Self::natural_line_pitch(font_size), margin: 16 }
    }
}

impl RenderConfig {
    /// The pitch that suits `font_size`: the font's ascent-to-descent height rounded up, plus one pixel of lead
    /// (32 px at 26 px per em).
    pub fn natural_line_pitch(font_size: f32) -> u32 {
        let face = Face::new(font_size);
        (face.ascent + face.descent).ceil() as u32 + 1
    }

    /// The advance of a character in pixels (every character of the monospaced font but wide ones).
    pub fn char_width(&self) -> u32 {
        Face::new(self.font_size).advance('M')
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            (1..=MAX_SIDE).contains(&self.width) && (1..=MAX_SIDE).contains(&self.height),
            "page size {}x{} must be between 1 and {MAX_SIDE} pixels a side",
            self.width,
            self.height
        );
        ensure!(
            self.font_size.is_finite() && (1.0..=1000.0).contains(&self.font_size),
            "font size {} must be between 1 and 1000 pixels",
            self.font_size
        );
        ensure!(self.line_pitch >= 1, "line pitch must be at least 1 pixel");
        Ok(())
    }
}

/// The embedded font at one size, with the vertical metrics that place lines.
struct Face {
    font: FontRef<'static>,
    scale: PxScale,
    /// Pixels above the baseline that glyphs may reach.
    ascent: f32,
    /// Pixels below the baseline that glyphs may reach (positive).
    descent: f32,
}

impl Face {
    fn new(font_size: f32) -> Self {
        let font = FontRef::try_from_slice(dejavu::sans_mono::regular()).expect("the embedded DejaVu font parses");
        // ab_glyph scales by ascent-to-descent height; convert from pixels per em as PIL and CSS size fonts.
        let units_per_em = font.units_per_em().expect("DejaVu has units per em");
        let scale = PxScale::from(font_size * font.height_unscaled() / units_per_em);
        let scaled = font.as_scaled(scale);
        let (ascent, descent) = (scaled.ascent(), -scaled.descent());
        Self { font, scale, ascent, descent }
    }

    /// A character's advance, rounded to whole pixels so that every glyph sits on the pixel grid. Characters the
    /// font lacks take the advance of its .notdef glyph, the box drawn in their place.
    fn advance(&self, c: char) -> u32 {
        self.font.as_scaled(self.scale).h_advance(self.font.glyph_id(c)).round() as u32
    }

    fn draw_line(&self, page: &mut RgbImage, line: &str, left: u32, baseline: u32) {
        let mut x = left;
        for c in line.chars() {
            let glyph = self.font.glyph_id(c).with_scale_and_position(self.scale, point(x as f32, baseline as f32));
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    let px = bounds.min.x as i64 + i64::from(gx);
                    let py = bounds.min.y as i64 + i64::from(gy);
                    if (0..i64::from(page.width())).contains(&px) && (0..i64::from(page.height())).contains(&py) {
                        let value = 255 - (coverage.clamp(0.0, 1.0) * 255.0).round() as u8;
                        let pixel = page.get_pixel_mut(px as u32, py as u32);
                        // Overlapping glyph edges keep the darker value.
                        if value < pixel[0] {
                            *pixel = Rgb([value; 3]);
                        }
                    }
                });
            }
            x += self.advance(c);
        }
    }
}

/// Lays `text` out in pages of lines, exactly as [`render`] draws it: the text of each page, line by line (what a
/// transcription of the page should read). Tabs are expanded, carriage returns and other control characters
/// dropped, trailing blank lines removed; an empty text gives one empty page.
pub fn layout(text: &str, config: &RenderConfig) -> Result<Vec<Vec<String>>> {
    config.validate()?;
    let face = Face::new(config.font_size);
    let (per_line_px, per_page) = capacity(config, &face)?;
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        wrap(&clean(paragraph), |c| face.advance(c), per_line_px, &mut lines);
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    if lines.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    Ok(lines.chunks(per_page).map(<[String]>::to_vec).collect())
}

/// Renders `text` to one or more white pages of `config.width` x `config.height` (see [`layout`]).
pub fn render(text: &str, config: &RenderConfig) -> Result<Vec<RgbImage>> {
    let pages = layout(text, config)?;
    let face = Face::new(config.font_size);
    let first_baseline = config.margin + face.ascent.ceil() as u32;
    Ok(pages
        .iter()
        .map(|lines| {
            let mut page = RgbImage::from_pixel(config.width, config.height, Rgb([255; 3]));
            for (i, line) in lines.iter().enumerate() {
                face.draw_line(&mut page, line, config.margin, first_baseline + i as u32 * config.line_pitch);
            }
            page
        })
        .collect())
}

/// The usable line width in pixels and the number of lines per page, or why the page cannot hold any text.
fn capacity(config: &RenderConfig, face: &Face) -> Result<(u32, usize)> {
    let inner_w = config.width.saturating_sub(config.margin.saturating_mul(2));
    let inner_h = config.height.saturating_sub(config.margin.saturating_mul(2));
    let line_height = face.ascent.ceil() as u32 + face.descent.ceil() as u32;
    let cell = face.advance('M');
    ensure!(
        inner_w >= cell && inner_h >= line_height,
        "a {}x{} page with {} px margins has no room for one {} px character (needs {}x{} inside the margins)",
        config.width,
        config.height,
        config.margin,
        config.font_size,
        cell,
        line_height
    );
    let per_page = (inner_h - line_height) / config.line_pitch + 1;
    Ok((inner_w, usize::try_from(per_page).context("lines per page")?))
}

/// One paragraph with tabs expanded to spaces and control characters removed.
fn clean(paragraph: &str) -> String {
    let mut out = String::with_capacity(paragraph.len());
    let mut column = 0;
    for c in paragraph.chars() {
        if c == '\t' {
            let spaces = TAB_STOP - column % TAB_STOP;
            out.extend(std::iter::repeat_n(' ', spaces));
            column += spaces;
        } else if !c.is_control() {
            out.push(c);
            column += 1;
        }
    }
    out
}

/// Greedy word wrap of one paragraph into lines at most `max` pixels wide, appended to `lines`. Lines break at
/// runs of spaces (dropped there); a word wider than a whole line is broken between characters. Leading spaces
/// (indentation) are kept; an empty paragraph is an empty line.
fn wrap(paragraph: &str, advance: impl Fn(char) -> u32, max: u32, lines: &mut Vec<String>) {
    let mut line = String::new();
    let mut used = 0;
    for token in tokens(paragraph) {
        let width: u32 = token.chars().map(&advance).sum();
        if used + width <= max {
            line.push_str(token);
            used += width;
            continue;
        }
        lines.push(std::mem::take(&mut line).trim_end().to_string());
        used = 0;
        if token.starts_with(' ') {
            continue;
        }
        for c in token.chars() {
            let w = advance(c);
            if used + w > max && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            line.push(c);
            used += w;
        }
    }
    lines.push(line.trim_end().to_string());
}

/// Splits a paragraph into alternating runs of spaces and of other characters.
fn tokens(paragraph: &str) -> impl Iterator<Item = &str> {
    let mut rest = paragraph;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let end = rest.find(|c: char| (c == ' ') != (first == ' ')).unwrap_or(rest.len());
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(text: &str, max_chars: u32) -> Vec<String> {
        let mut lines = Vec::new();
        wrap(text, |_| 1, max_chars, &mut lines);
        lines
    }

    #[test]
    fn wraps_at_spaces_and_breaks_long_words() {
        assert_eq!(wrapped("the quick brown fox", 10), ["the quick", "brown fox"]);
        assert_eq!(wrapped("a abcdefghijkl b", 5), ["a", "abcde", "fghij", "kl b"]);
        assert_eq!(wrapped("  indented", 20), ["  indented"]);
        assert_eq!(wrapped("", 5), [""]);
    }

    #[test]
    fn tabs_expand_to_the_next_stop_and_controls_vanish() {
        assert_eq!(clean("a\tb\r\u{7}"), "a   b");
        assert_eq!(clean("abcd\te"), "abcd    e");
    }

    #[test]
    fn default_type_is_one_glyph_per_16_px_patch() {
        let config = RenderConfig::default();
        assert_eq!(Face::new(config.font_size).advance('x'), 16);
        assert_eq!(config.line_pitch, 32);
    }
}
