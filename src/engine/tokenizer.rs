//! Text <-> token ids through a model directory's `tokenizer.json` (HF tokenizers format), and the byte-level
//! tokenizer that `deepsynth init` writes for new models: one token per UTF-8 byte, no merges, so any text
//! round-trips and the vocabulary stays tiny.

use std::path::Path;

use anyhow::{anyhow, Context};

/// DeepSeek-OCR's special tokens, at the ids the released tokenizer gives the first three.
pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const PAD: &str = "<｜▁pad▁｜>";
/// The placeholder that a page's visual tokens replace, one per token.
pub const IMAGE: &str = "<image>";

/// Ids 0-2 are BOS, EOS and padding; the 256 byte tokens follow.
const FIRST_BYTE_ID: u32 = 3;
/// After the bytes: `<image>` (unless placed elsewhere), chat markers, and spare ids to a multiple of 8.
const BYTE_LEVEL_EXTRA: [&str; 4] = ["<|User|>", "<|Assistant|>", "<｜place▁holder▁no▁0｜>", "<｜place▁holder▁no▁1｜>"];
/// `<image>`'s id in the tiny vocabulary: right after the bytes.
pub const BYTE_LEVEL_IMAGE_ID: u32 = FIRST_BYTE_ID + 256;
pub const BYTE_LEVEL_VOCAB: usize = BYTE_LEVEL_IMAGE_ID as usize + 1 + BYTE_LEVEL_EXTRA.len();

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: u32,
    pub eos: u32,
    pub image: u32,
}

impl Tokenizer {
    /// Loads `tokenizer.json`; `bos`/`eos` come from the model config, `<image>` must be a token of its own.
    pub fn from_file(path: &Path, bos: u32, eos: u32) -> anyhow::Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: not a usable tokenizer.json: {e}", path.display()))?;
        let image = inner
            .token_to_id(IMAGE)
            .with_context(|| format!("{}: has no {IMAGE} token (the page placeholder)", path.display()))?;
        Ok(Self { inner, bos, eos, image })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of `text` alone: no BOS/EOS added (prompts are assembled by the caller).
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| anyhow!("cannot tokenize text: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow!("cannot decode token ids: {e}"))
    }
}

/// GPT-2's byte -> printable character map (what the ByteLevel pre-tokenizer and decoder use): printable Latin-1
/// bytes stand for themselves, the rest are shifted past 255. Returned in vocabulary order.
fn byte_chars() -> Vec<(u8, char)> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut chars: Vec<(u8, char)> = (0..=255u8).filter(|&b| printable(b)).map(|b| (b, char::from(b))).collect();
    for (shifted, b) in (256u32..).zip((0..=255u8).filter(|&b| !printable(b))) {
        chars.push((b, char::from_u32(shifted).expect("below the surrogates")));
    }
    chars
}

/// `tokenizer.json` for a byte-level vocabulary: BOS 0, EOS 1, padding 2, the bytes from 3, `<image>` at
/// `image_id` ([`BYTE_LEVEL_IMAGE_ID`] for a vocabulary of [`BYTE_LEVEL_VOCAB`] ids; the released model's id for
/// its full-size vocabulary), then the other added tokens.
pub fn byte_level_json(image_id: u32) -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    for (id, token) in [BOS, EOS, PAD].into_iter().enumerate() {
        vocab.insert(token.into(), id.into());
        added.push(special(id, token));
    }
    for (i, (_, c)) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), (FIRST_BYTE_ID as usize + i).into());
    }
    let extra_ids = (BYTE_LEVEL_IMAGE_ID as usize..).filter(|&id| id != image_id as usize);
    for (id, token) in std::iter::once((image_id as usize, IMAGE)).chain(extra_ids.zip(BYTE_LEVEL_EXTRA)) {
        vocab.insert(token.into(), id.into());
        added.push(special(id, token));
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte_level() -> Tokenizer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, byte_level_json(BYTE_LEVEL_IMAGE_ID).to_string()).unwrap();
        Tokenizer::from_file(&path, 0, 1).unwrap()
    }

    #[test]
    fn byte_level_round_trips_any_text_one_token_per_byte() {
        let tok = byte_level();
        assert_eq!(tok.vocab_size(), BYTE_LEVEL_VOCAB);
        assert_eq!(tok.image, 259);
        for text in ["Free OCR.", "Zoë — 東京\n\ttabs  and  spaces", " leading space"] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(ids.len(), text.len(), "{text:?}");
            assert!(ids.iter().all(|&id| (3..259).contains(&id)));
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        assert_eq!(tok.encode("!").unwrap(), [3]);
    }

    #[test]
    fn specials_are_single_tokens_and_left_out_of_decoding() {
        let tok = byte_level();
        assert_eq!(tok.encode("<image>\nA").unwrap(), [259, 3 + 188 + 10, 3 + 32]);
        assert_eq!(tok.decode(&[0, 3 + 32, 1]).unwrap(), "A");
    }

    #[test]
    fn the_reference_stand_in_tokenizer_has_the_released_ids() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/deepseek-ocr-random-2layer/tokenizer.json");
        let tok = Tokenizer::from_file(&path, 0, 1).unwrap();
        assert_eq!(tok.image, 128815);
        // The reference prompt "\nFree OCR." under the stand-in, as io-base-1024.safetensors has it.
        assert_eq!(tok.encode("\nFree OCR.").unwrap().len(), 10);
    }
}
