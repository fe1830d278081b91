#!/usr/bin/env python3
"""Golden fixtures for PEFT interop of LoRA adapters (tests/parity_peft.rs), both ways, on the tiny decoder of
scripts/make_decoder_goldens.py (tests/fixtures/decoder/).

The HF reference decoder stores routed experts fused into 3-D parameters (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj` [E, H, I]), which PEFT's LoRA cannot target per expert. DeepSeek-OCR's own code (and so
its checkpoint and every adapter made for it) has one module per expert, `mlp.experts.{e}.{gate,up,down}_proj`.
This script swaps the fused experts for that module tree, so that the checkpoint loads by its own names and PEFT's
adapter keys are `base_model.model.<DeepSeek-OCR module path>.lora_{A,B}.weight`; it first checks that the swapped
model still gives the decoder fixture's golden logits.

Writes tests/fixtures/peft/:
  peft-adapter/         made by PEFT (`get_peft_model` + `save_pretrained`): r=4, alpha=8, every attention and MLP
                        projection (routed and shared experts included), seeded random A and B
  peft-rslora-adapter/  the same with use_rslora=True (scale alpha/sqrt(r)) on q_proj, v_proj and every down_proj
  golden.safetensors    input_ids (the decoder fixture's); logits with each PEFT adapter, and with
                        deepsynth-adapter/ loaded by `PeftModel.from_pretrained`

deepsynth-adapter/ is written by deepsynth: run the Rust test with DEEPSYNTH_WRITE_PEFT_FIXTURE=1 first, then this
script:
  DEEPSYNTH_WRITE_PEFT_FIXTURE=1 cargo test --test parity_peft
  /work/venv/bin/pip install peft && /work/venv/bin/python scripts/make_peft_goldens.py
"""
import json
import math
import shutil
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextMLP, DeepseekOcr2TextMoe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_decoder_goldens import RoutingMargins, TextForCausalLM, hf_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DECODER = ROOT / "tests" / "fixtures" / "decoder"
OUT = ROOT / "tests" / "fixtures" / "peft"
SEED = 11
# Every adaptable projection of the decoder: attention, the dense MLP, routed and shared experts (not the router
# `mlp.gate`, which is a bare parameter, nor lm_head).
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTERS = {
    "peft-adapter": LoraConfig(r=4, lora_alpha=8, target_modules=ALL_PROJECTIONS, lora_dropout=0.0,
                               task_type="CAUSAL_LM"),
    "peft-rslora-adapter": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                      lora_dropout=0.0, use_rslora=True),
}
# B's scale: the adapters' updates are comparable to the base projections, so that a wrong scale or a missed layer
# moves the logits far beyond the tolerance.
B_SCALE = 0.5


class PerExpertExperts(nn.ModuleList):
    """DeepSeek-OCR's routed experts, `experts.{e}.{gate,up,down}_proj`, with the call of the fused
    DeepseekOcr2TextExperts: each expert's output on its tokens, weighted by their routing weights, summed."""

    def __init__(self, config):
        super().__init__(DeepseekOcr2TextMLP(config, intermediate_size=config.moe_intermediate_size)
                         for _ in range(config.num_experts))

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for e, expert in enumerate(self):
            token, slot = torch.where(top_k_index == e)
            out.index_add_(0, token, expert(hidden_states[token]) * top_k_weights[token, slot, None])
        return out


def base_model(lc):
    """The decoder fixture in the HF reference with DeepSeek-OCR's module tree; its checkpoint loads by name."""
    config = hf_config(lc)
    model = TextForCausalLM(config).eval()
    for layer in model.model.layers:
        if isinstance(layer.mlp, DeepseekOcr2TextMoe):
            layer.mlp.experts = PerExpertExperts(config)
    model.load_state_dict(load_file(DECODER / "model.safetensors"), strict=True)
    return model


def randomise_lora(model, r, gen):
    """A ~ U(-1/sqrt(in), 1/sqrt(in)) as PEFT's init; B ~ B_SCALE N / sqrt(r) instead of PEFT's zeros."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".lora_A." in name:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif ".lora_B." in name:
                p.copy_(B_SCALE * torch.randn(p.shape, generator=gen) / math.sqrt(r))


def logits_with_routing_check(model, hf_model, lc, input_ids):
    """Logits of `model` (hf_model, or PEFT's wrapper around it); asserts that no token's top-k expert choice is a
    near-tie, which float rounding on the Rust side could flip."""
    margins = RoutingMargins(hf_model, lc["num_experts_per_tok"], lc["n_routed_experts"])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    assert margins.min_gap > 1e-4, f"routing near-tie ({margins.min_gap:.2e}): pick another SEED"
    return logits, margins.min_gap


def sort_target_modules(path):
    """PEFT writes target_modules from a set, in an order that changes from run to run; sorted, the fixture does not."""
    config = json.loads(path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def check_keys(peft_model, adapter_dir):
    """Every tensor of the saved adapter is one PEFT holds, under the DeepSeek-OCR module path, with equal values."""
    saved = load_file(adapter_dir / "adapter_model.safetensors")
    # Not "auto": that reads the config at base_model_name_or_path, where the decoder fixture's (unlike the released
    # one) has no top-level vocab_size; PEFT would take the vocabulary as resized and add the embeddings.
    held = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    assert sorted(saved) == sorted(held), sorted(set(saved) ^ set(held))
    for key, t in saved.items():
        assert key.startswith("base_model.model.model.layers."), key
        assert torch.equal(t, held[key]), key
    return len(saved) // 2


def main():
    lc = json.loads((DECODER / "config.json").read_text())["language_config"]
    decoder_golden = load_file(DECODER / "golden.safetensors")
    input_ids, base_logits = decoder_golden["input_ids"], decoder_golden["logits"]
    golden = {"input_ids": input_ids}

    model = base_model(lc)
    logits, _ = logits_with_routing_check(model, model, lc, input_ids)
    diff = (logits - base_logits).abs().max().item()
    assert diff < 1e-5, f"per-expert modules differ from the fused reference by {diff:e}"
    print(f"per-expert module tree vs the decoder golden: max |diff| {diff:.1e}")

    gen = torch.Generator().manual_seed(SEED)
    for name, config in ADAPTERS.items():
        hf_model = base_model(lc)
        peft_model = get_peft_model(hf_model, config)
        randomise_lora(peft_model, config.r, gen)
        adapter_dir = OUT / name
        shutil.rmtree(adapter_dir, ignore_errors=True)
        peft_model.save_pretrained(adapter_dir)
        (adapter_dir / "README.md").unlink()  # PEFT's model card template: nothing the adapter needs
        sort_target_modules(adapter_dir / "adapter_config.json")
        layers = check_keys(peft_model, adapter_dir)
        logits, gap = logits_with_routing_check(peft_model, hf_model, lc, input_ids)
        golden[name.replace("-", "_") + "_logits"] = logits
        change = (logits - base_logits).abs().max().item()
        print(f"{name}: {layers} layers, logits moved by up to {change:.2f}, min routing gap {gap:.2e}")

    ours = OUT / "deepsynth-adapter"
    assert (ours / "adapter_config.json").exists(), \
        f"{ours} is missing: run DEEPSYNTH_WRITE_PEFT_FIXTURE=1 cargo test --test parity_peft first"
    hf_model = base_model(lc)
    peft_model = PeftModel.from_pretrained(hf_model, ours)
    layers = check_keys(peft_model, ours)
    logits, gap = logits_with_routing_check(peft_model, hf_model, lc, input_ids)
    golden["deepsynth_adapter_logits"] = logits
    change = (logits - base_logits).abs().max().item()
    config = peft_model.peft_config["default"]
    scales = {m.scaling["default"] for m in peft_model.modules() if isinstance(m, LoraLayer)}
    assert scales == {config.lora_alpha / config.r}, scales
    print(f"deepsynth-adapter via PeftModel.from_pretrained: {layers} layers, scale {scales}, logits moved by up to "
          f"{change:.2f}, min routing gap {gap:.2e}")

    save_file({k: v.contiguous() for k, v in golden.items()}, OUT / "golden.safetensors", metadata={"format": "pt"})
    print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
