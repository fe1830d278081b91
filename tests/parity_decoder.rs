//! The MoE decoder against HF transformers' DeepseekOcr2TextModel (+ lm_head) on the fixture of
//! scripts/make_decoder_goldens.py: tiny config, every weight random, f32.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, assert_every_var_has_gradient, max_abs};
use deepsynth::engine::decoder::{Decoder, DecoderConfig, KvCache, Prompt};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoder").join(name)
}

fn config() -> DecoderConfig {
    DecoderConfig::from_file(&fixture("config.json")).unwrap()
}

fn weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap()
}

fn decoder() -> Decoder {
    Decoder::new(&config(), VarBuilder::from_tensors(weights(), DType::F32, &Device::Cpu)).unwrap()
}

struct Golden {
    /// [batch, len] u32.
    input_ids: Tensor,
    /// [batch, len, vocab].
    logits: Tensor,
    /// Per row, the greedy continuation.
    generated: Vec<Vec<u32>>,
    /// The same prompts but row 1 shortened to its last ids and left-padded (attention mask 0 on the padding).
    padded_ids: Tensor,
    padded_mask: Vec<Vec<i64>>,
    padded_generated: Vec<Vec<u32>>,
}

fn golden() -> Golden {
    let g = candle_core::safetensors::load(fixture("golden.safetensors"), &Device::Cpu).unwrap();
    let ids = |name: &str| g[name].to_dtype(DType::U32).unwrap();
    Golden {
        input_ids: ids("input_ids"),
        logits: g["logits"].clone(),
        generated: ids("generated_ids").to_vec2().unwrap(),
        padded_ids: ids("padded_input_ids"),
        padded_mask: g["padded_attention_mask"].to_vec2().unwrap(),
        padded_generated: ids("padded_generated_ids").to_vec2().unwrap(),
    }
}

#[test]
fn logits_match_transformers() {
    let (model, g) = (decoder(), golden());
    let logits = model.forward(&model.embed(&g.input_ids).unwrap(), None).unwrap();
    assert_close(&logits, &g.logits, "full pass", 1e-4, 1e-5);
    // The fixture is not degenerate: positions and rows predict different tokens.
    let argmax = g.logits.argmax(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap();
    assert!(argmax.iter().collect::<std::collections::HashSet<_>>().len() > 8);
}

#[test]
fn cached_incremental_decoding_matches_full_pass() {
    let (model, g) = (decoder(), golden());
    let embeds = model.embed(&g.input_ids).unwrap();
    let len = embeds.dim(1).unwrap();
    let mut cache = model.new_cache();
    // Prefill 6 positions, a chunk of 4 (the mask then spans cached and new positions), then one at a time.
    let mut chunks = vec![(0, 6), (6, 4)];
    chunks.extend((10..len).map(|i| (i, 1)));
    let mut pieces = Vec::new();
    for (start, n) in chunks {
        pieces.push(model.forward(&embeds.narrow(1, start, n).unwrap(), Some(&mut cache)).unwrap());
        assert_eq!(cache.seq_len(), start + n);
    }
    let incremental = Tensor::cat(&pieces, 1).unwrap();
    let full = model.forward(&embeds, None).unwrap();
    let diff = max_abs(&(&incremental - &full).unwrap());
    assert!(diff < 1e-5, "cached vs full pass: {diff:e}");
    assert_close(&incremental, &g.logits, "cached pass", 1e-4, 1e-5);
}

#[test]
fn greedy_generation_matches_transformers() {
    let (model, g) = (decoder(), golden());
    let eos = model.config().eos_token_id;
    let new_tokens = g.generated[0].len();
    let ours = model.generate_greedy(&Prompt::new(model.embed(&g.input_ids).unwrap()), new_tokens, Some(eos)).unwrap();
    assert_eq!(ours, g.generated);
}

#[test]
fn generation_stops_each_row_at_eos() {
    let (model, g) = (decoder(), golden());
    // Pretend row 0's fifth token is EOS: row 0 ends there, row 1 runs on until it meets that token, if ever.
    let eos = g.generated[0][4];
    assert!(!g.generated[0][..4].contains(&eos));
    let ours = model.generate_greedy(&Prompt::new(model.embed(&g.input_ids).unwrap()), 12, Some(eos)).unwrap();
    assert_eq!(ours[0], g.generated[0][..5]);
    let row1_end = g.generated[1].iter().position(|&t| t == eos).map_or(12, |i| i + 1);
    assert_eq!(ours[1], g.generated[1][..row1_end]);
}

/// The padded golden batch as our prompt: each row's real (unmasked) ids embedded, then left-padded again.
fn padded_prompt(model: &Decoder, g: &Golden) -> (Prompt, Vec<Tensor>) {
    let rows: Vec<Tensor> = g
        .padded_mask
        .iter()
        .enumerate()
        .map(|(b, mask)| {
            let pad = mask.iter().take_while(|&&m| m == 0).count();
            let row = g.padded_ids.get(b).unwrap();
            model.embed(&row.narrow(0, pad, mask.len() - pad).unwrap()).unwrap()
        })
        .collect();
    (Prompt::left_padded(&rows).unwrap(), rows)
}

#[test]
fn left_padded_generation_matches_transformers() {
    let (model, g) = (decoder(), golden());
    let (prompt, _) = padded_prompt(&model, &g);
    assert_eq!(prompt.left_pad, [0, 6]);
    let ours = model.generate_greedy(&prompt, g.padded_generated[0].len(), Some(model.config().eos_token_id)).unwrap();
    assert_eq!(ours, g.padded_generated);
}

#[test]
fn left_padding_leaves_each_row_as_if_alone() {
    let (model, g) = (decoder(), golden());
    let (prompt, rows) = padded_prompt(&model, &g);
    let mut cache = KvCache::with_left_padding(model.config().num_hidden_layers, prompt.left_pad.clone());
    let batched = model.forward(&prompt.embeds, Some(&mut cache)).unwrap();
    // One cached step more: the padding must stay masked for later positions too.
    let next = model.embed(&Tensor::new(&[[7u32], [9]], &Device::Cpu).unwrap()).unwrap();
    let step = model.forward(&next, Some(&mut cache)).unwrap();
    for (b, row) in rows.iter().enumerate() {
        let pad = prompt.left_pad[b];
        let alone_input = Tensor::cat(&[row, &next.get(b).unwrap()], 0).unwrap().unsqueeze(0).unwrap();
        let alone = model.forward(&alone_input, None).unwrap().squeeze(0).unwrap();
        let len = row.dim(0).unwrap();
        let ours = Tensor::cat(&[batched.get(b).unwrap().narrow(0, pad, len).unwrap(), step.get(b).unwrap()], 0);
        let diff = max_abs(&(ours.unwrap() - alone).unwrap());
        assert!(diff < 1e-5, "row {b}: padded vs alone differ by {diff:e}");
    }
}

#[test]
fn every_weight_gets_a_gradient() {
    // A VarMap-backed model (as training builds it), set to the fixture's weights, whose prompts reach every
    // expert of every MoE layer (the golden script asserts it).
    let mut varmap = VarMap::new();
    let model = Decoder::new(&config(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    varmap.load(fixture("model.safetensors")).unwrap();
    let ids = golden().input_ids;
    let len = ids.dim(1).unwrap();
    let hidden = model.hidden_states(&model.embed(&ids.narrow(1, 0, len - 1).unwrap()).unwrap(), None, true).unwrap();
    let logits = model.logits(&hidden).unwrap().flatten_to(1).unwrap();
    let targets = ids.narrow(1, 1, len - 1).unwrap().flatten_all().unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
    let grads = loss.backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    assert_eq!(vars.len(), weights().len(), "the model must use every tensor of the checkpoint");
    assert_every_var_has_gradient(&vars, &grads);
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = weights();
    tensors.remove("model.layers.2.mlp.experts.5.up_proj.weight").unwrap();
    let err = Decoder::new(&config(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("model.layers.2.mlp.experts.5.up_proj.weight"), "{msg}");
}

#[test]
fn mis_shaped_tensor_is_named_with_both_shapes() {
    let mut tensors = weights();
    // k_proj serves 2 key/value heads of 16: [32, 64]; give it 4 heads' worth.
    let name = "model.layers.1.self_attn.k_proj.weight";
    tensors.insert(name.into(), Tensor::zeros((64, 64), DType::F32, &Device::Cpu).unwrap());
    let err = Decoder::new(&config(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains("expected: [32, 64]") && msg.contains("got: [64, 64]"), "{msg}");
}
