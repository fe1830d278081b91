//! The auxiliary glyph loss (`glyph_loss_weight`): a linear head on each visual token names the characters drawn
//! in its cell, so that the vision encoder learns to see glyphs from dense, local targets instead of only through
//! the decoder's attention (a fresh model learns that far more slowly). The head belongs to training only: it is
//! saved beside a checkpoint's weights (for resuming), never into the model.

use anyhow::{ensure, Context};
use candle_core::{DType, Device, Tensor, Var};

use crate::engine::model::Model;
use crate::page;

/// The head's weight name, and the file it is saved to in a checkpoint.
pub const NAME: &str = "glyph_head.weight";
pub const FILE: &str = "glyph_head.safetensors";
/// Target of a slot that is not scored: a row without text, or a character that is not a single token.
const SKIP: u32 = u32::MAX;

pub struct GlyphHead {
    /// [per_cell · vocab, hidden].
    pub weight: Var,
    /// Characters per visual token along a line.
    per_cell: usize,
    /// Visual tokens per page side.
    grid: usize,
    /// Token rows and character columns the page margin takes.
    row0: usize,
    col0: usize,
    /// Blank cells' (and lines' ends') target: the space.
    blank: u32,
    vocab: usize,
}

impl GlyphHead {
    /// A fresh head for `model`, whose page geometry must put whole characters of one line in each visual token:
    /// pages as large as the model's input square, lines one token row apart, margins on the token grid.
    pub fn new(model: &Model, device: &Device) -> anyhow::Result<Self> {
        let cfg = &model.config;
        let render = &cfg.deepsynth.render;
        let stride = cfg.sam.stride() as u32;
        let size = cfg.deepsynth.mode.size();
        let char_width = render.char_width();
        ensure!(
            render.width == size
                && render.height == size
                && render.line_pitch == stride
                && render.margin.is_multiple_of(stride)
                && stride.is_multiple_of(char_width),
            "glyph_loss_weight needs pages of {size} px whose lines are one visual token ({stride} px) apart, with \
             margins on the token grid and a whole number of characters per token; this model draws {}x{} pages, \
             {} px lines, {} px margins, {char_width} px characters (the reader preset fits)",
            render.width,
            render.height,
            render.line_pitch,
            render.margin
        );
        let blank = single_id(model, ' ')?.context("the tokenizer has no single token for a space")?;
        let per_cell = (stride / char_width) as usize;
        let vocab = cfg.decoder.vocab_size;
        let hidden = cfg.decoder.hidden_size;
        let weight = Var::from_tensor(&(Tensor::randn(0f32, 0.02, (per_cell * vocab, hidden), device)?))?;
        let (row0, col0) = ((render.margin / stride) as usize, (render.margin / char_width) as usize);
        Ok(Self { weight, per_cell, grid: cfg.grid(), row0, col0, blank, vocab })
    }

    /// Each cell's characters, page after page, row by row: [pages · grid² · per_cell] token ids.
    pub fn targets(&self, model: &Model, text: &str) -> anyhow::Result<Vec<u32>> {
        let (row0, col0) = (self.row0, self.col0);
        let mut targets = Vec::new();
        for lines in page::layout(text, &model.config.deepsynth.render)? {
            for r in 0..self.grid {
                // Rows without a line are not scored: blank cells would swamp the few that hold text.
                let line: Option<Vec<char>> =
                    r.checked_sub(row0).and_then(|i| lines.get(i)).map(|l| l.chars().collect());
                for slot in 0..self.grid * self.per_cell {
                    targets.push(match (&line, slot.checked_sub(col0)) {
                        (None, _) => SKIP,
                        (Some(line), Some(j)) if j < line.len() => single_id(model, line[j])?.unwrap_or(SKIP),
                        (Some(_), _) => self.blank,
                    });
                }
            }
        }
        Ok(targets)
    }

    /// Mean cross-entropy of the head's predictions over the scored slots of documents' visual tokens
    /// ([pages · tokens_per_page, hidden] each, `<image>` order) against their [`GlyphHead::targets`]; `None` when
    /// no page of the batch has text.
    pub fn loss(&self, visuals: &[Tensor], targets: &[Vec<u32>]) -> anyhow::Result<Option<Tensor>> {
        let device = self.weight.device();
        let per_page = self.grid * (self.grid + 1) + 1;
        let mut cells = Vec::new();
        let mut scored_targets = Vec::new();
        let mut rows = Vec::new();
        let mut offset = 0;
        for (visual, doc_targets) in visuals.iter().zip(targets) {
            let pages = visual.dim(0)? / per_page;
            ensure!(
                doc_targets.len() == pages * self.grid * self.grid * self.per_cell,
                "glyph targets do not match the pages"
            );
            rows.push(visual.to_dtype(DType::F32)?);
            for p in 0..pages {
                for r in 0..self.grid {
                    for c in 0..self.grid {
                        // Rows end with an image_newline token; the page with the view separator.
                        cells.push((offset + p * per_page + r * (self.grid + 1) + c) as u32);
                    }
                }
            }
            scored_targets.extend_from_slice(doc_targets);
            offset += visual.dim(0)?;
        }
        if scored_targets.iter().all(|&t| t == SKIP) {
            return Ok(None);
        }
        let cells = Tensor::new(cells, device)?;
        let features = Tensor::cat(&rows, 0)?.index_select(&cells, 0)?;
        let logits = features.matmul(&self.weight.as_tensor().t()?)?.reshape(((), self.vocab))?;
        let keep: Vec<u32> = (0..scored_targets.len() as u32).filter(|&i| scored_targets[i as usize] != SKIP).collect();
        let kept: Vec<u32> = keep.iter().map(|&i| scored_targets[i as usize]).collect();
        let logits = logits.index_select(&Tensor::new(keep, device)?, 0)?;
        Ok(Some(candle_nn::loss::cross_entropy(&logits, &Tensor::new(kept, device)?)?))
    }
}

/// The character's token id when it is exactly one token.
fn single_id(model: &Model, c: char) -> anyhow::Result<Option<u32>> {
    let ids = model.tokenizer.encode(c.encode_utf8(&mut [0; 4]))?;
    Ok((ids.len() == 1).then(|| ids[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::preset::{self, InstructionChoice, Preset};

    #[test]
    fn targets_follow_the_reader_page_grid() {
        let dir = tempfile::tempdir().unwrap();
        preset::init(Preset::Reader, InstructionChoice::Prompt, dir.path(), 0).unwrap();
        let model = Model::load(dir.path(), &Device::Cpu).unwrap();
        let head = GlyphHead::new(&model, &Device::Cpu).unwrap();
        let targets = head.targets(&model, "AB\nC").unwrap();
        // 8x8 visual tokens of two characters each: 16 slots a row.
        assert_eq!(targets.len(), 8 * 8 * 2);
        let id = |c: char| single_id(&model, c).unwrap().unwrap();
        let blank = id(' ');
        let mut row0 = [blank; 16];
        row0[..2].copy_from_slice(&[id('A'), id('B')]);
        let mut row1 = [blank; 16];
        row1[0] = id('C');
        assert_eq!(&targets[..16], &row0[..]);
        assert_eq!(&targets[16..32], &row1[..]);
        assert!(targets[32..].iter().all(|&t| t == SKIP), "rows without text are not scored");

        // The tiny preset's tokens hold parts of two lines: no head for it.
        let tiny = dir.path().join("tiny");
        preset::init(Preset::Tiny, InstructionChoice::Prompt, &tiny, 0).unwrap();
        let err = GlyphHead::new(&Model::load(&tiny, &Device::Cpu).unwrap(), &Device::Cpu).err().unwrap();
        assert!(format!("{err:#}").contains("glyph_loss_weight"), "{err:#}");
    }
}
