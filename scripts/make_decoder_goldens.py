#!/usr/bin/env python3
"""Golden fixtures for the MoE decoder (tests/parity_decoder.rs), made with HF transformers' reference code.

The reference is `DeepseekOcr2TextModel` (plain multi-head attention + the DeepSeek-V2 MoE: softmax router, top-k
without renormalisation, shared experts), with an untied `lm_head` on top, which is DeepSeek-OCR's decoder. Every
weight is randomised (seeded) at a scale that keeps activations O(1), so routing and greedy decoding are decisive
rather than near-ties that float rounding could flip.

Writes tests/fixtures/decoder/: config.json (DeepSeek-OCR's format: the decoder under `language_config`),
model.safetensors (DeepSeek-OCR's tensor names, f32), golden.safetensors (input_ids, logits, generated_ids, and a
left-padded batch: padded_input_ids, padded_attention_mask, padded_generated_ids).

Usage: python3 -m venv /work/venv && /work/venv/bin/pip install torch transformers safetensors numpy
       /work/venv/bin/python scripts/make_decoder_goldens.py
"""
import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import DeepseekOcr2TextConfig, DeepseekOcr2TextModel, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextPreTrainedModel

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "decoder"
SEED = 7
BATCH, PROMPT_LEN, NEW_TOKENS = 2, 16, 12
SHORT = 10  # the padded batch: row 0 as it is, row 1's last SHORT ids left-padded to PROMPT_LEN
# Hidden 64, 4 query heads over 2 key/value heads (exercises grouped-query attention), layer 0 dense, 2 MoE layers
# with 8 experts top-3 and 2 shared experts; a non-default routed_scaling_factor so that its use is tested.
# rms_norm_eps and rope_theta are left out, as in the released config: the loader's defaults (1e-6, 10000) apply.
LANGUAGE_CONFIG = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 1,
    "first_k_dense_replace": 1,
    "hidden_size": 64,
    "intermediate_size": 128,
    "kv_lora_rank": None,
    "lm_head": True,
    "max_position_embeddings": 128,
    "moe_intermediate_size": 32,
    "n_group": 1,
    "n_routed_experts": 8,
    "n_shared_experts": 2,
    "num_attention_heads": 4,
    "num_experts_per_tok": 3,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "q_lora_rank": None,
    "qk_nope_head_dim": 0,
    "qk_rope_head_dim": 0,
    "rm_head": False,
    "routed_scaling_factor": 1.5,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "float32",
    "use_mla": False,
    "v_head_dim": 0,
    "vocab_size": 300,
}


class TextForCausalLM(DeepseekOcr2TextPreTrainedModel, GenerationMixin):
    """DeepseekOcr2TextModel plus an untied lm_head, so that transformers' own `generate` drives decoding."""

    def __init__(self, config):
        super().__init__(config)
        self.model = DeepseekOcr2TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        return CausalLMOutputWithPast(logits=self.lm_head(out.last_hidden_state), cache=out.cache)


def hf_config(lc):
    layers = lc["num_hidden_layers"]
    dense = lc["first_k_dense_replace"]
    mlp_layer_types = ["dense"] * dense + ["sparse"] * (layers - dense)
    return DeepseekOcr2TextConfig(
        vocab_size=lc["vocab_size"], hidden_size=lc["hidden_size"], intermediate_size=lc["intermediate_size"],
        moe_intermediate_size=lc["moe_intermediate_size"], num_hidden_layers=layers,
        num_attention_heads=lc["num_attention_heads"], num_key_value_heads=lc["num_key_value_heads"],
        n_routed_experts=lc["n_routed_experts"], n_shared_experts=lc["n_shared_experts"],
        num_experts_per_tok=lc["num_experts_per_tok"], mlp_layer_types=mlp_layer_types,
        routed_scaling_factor=lc["routed_scaling_factor"], topk_method=lc["topk_method"], n_group=1, topk_group=1,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=lc["max_position_embeddings"], bos_token_id=lc["bos_token_id"],
        eos_token_id=lc["eos_token_id"], pad_token_id=lc["eos_token_id"], tie_word_embeddings=False,
        attn_implementation="eager",
    )


def randomise(model, gen):
    """Every parameter, in sorted name order: norms ~ 1 + 0.1 N, embeddings ~ N, matrices ~ N / sqrt(fan_in)."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * r)
            elif "embed_tokens" in name:
                p.copy_(r)
            elif name == "lm_head.weight":
                p.copy_(3.0 * r / math.sqrt(p.shape[-1]))  # logits of a few units: greedy picks are clear-cut
            else:
                p.copy_(r / math.sqrt(p.shape[-1]))


def checkpoint_tensors(model, lc):
    """The state dict under DeepSeek-OCR's names: fused experts split into experts.{e}.{gate,up,down}_proj."""
    inter = lc["moe_intermediate_size"]
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().contiguous()
        if name.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H]: gate rows first (chunk(2) in the reference)
            base = name[: -len("gate_up_proj")]
            for e in range(t.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = t[e, :inter].contiguous()
                out[f"{base}{e}.up_proj.weight"] = t[e, inter:].contiguous()
        elif name.endswith("mlp.experts.down_proj"):  # [E, H, I]
            base = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = t[e].contiguous()
        else:
            out[name] = t
    return out


def check_names(tensors):
    """Each name must follow a pattern of the released checkpoint's decoder (reference/.../keys.txt)."""
    patterns = [
        r"model\.embed_tokens\.weight", r"model\.norm\.weight", r"lm_head\.weight",
        r"model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight",
        r"model\.layers\.\d+\.self_attn\.[qkvo]_proj\.weight",
        r"model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight",
        r"model\.layers\.\d+\.mlp\.gate\.weight",
        r"model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight",
        r"model\.layers\.\d+\.mlp\.shared_experts\.(gate|up|down)_proj\.weight",
    ]
    for name in tensors:
        assert any(re.fullmatch(p, name) for p in patterns), f"unexpected tensor name {name}"


class RoutingMargins:
    """Records, on every router call, each token's gap between the k-th and (k+1)-th expert probability, and which
    experts were picked: near-ties would make the fixture fragile, unrouted experts would leave code untested."""

    def __init__(self, model, k, n_experts):
        self.k, self.min_gap, self.hits = k, float("inf"), {}
        for i, layer in enumerate(model.model.layers):
            if hasattr(layer.mlp, "gate"):
                layer.mlp.gate.register_forward_hook(self.hook(i))
                self.hits[i] = torch.zeros(n_experts, dtype=torch.long)

    def hook(self, layer):
        def record(_module, _inputs, output):
            router_logits, _, indices = output
            top = router_logits.softmax(-1).topk(self.k + 1, dim=-1).values
            self.min_gap = min(self.min_gap, (top[:, self.k - 1] - top[:, self.k]).min().item())
            self.hits[layer] += torch.bincount(indices.flatten(), minlength=len(self.hits[layer]))
        return record


def min_top2_gap(step_logits):
    """The smallest gap between the best and second-best logit over generation steps: greedy's safety margin."""
    top2 = torch.stack(step_logits, dim=1).topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).min().item()


def main():
    lc = LANGUAGE_CONFIG
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = TextForCausalLM(hf_config(lc)).eval()
    randomise(model, gen)
    margins = RoutingMargins(model, lc["num_experts_per_tok"], lc["n_routed_experts"])

    # Prompt ids avoid BOS/EOS (0, 1) so that EOS in the output can only come from the model.
    input_ids = torch.randint(2, lc["vocab_size"], (BATCH, PROMPT_LEN), generator=gen)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    unrouted = {layer: (hits == 0).nonzero().flatten().tolist() for layer, hits in margins.hits.items()}
    assert all(not v for v in unrouted.values()), f"experts without tokens in the prompt pass: {unrouted}"

    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=NEW_TOKENS,
                         do_sample=False, eos_token_id=lc["eos_token_id"], pad_token_id=lc["eos_token_id"],
                         output_logits=True, return_dict_in_generate=True)
    generated = out.sequences[:, PROMPT_LEN:]
    assert generated.shape[1] == NEW_TOKENS, "generation stopped early (EOS): pick another SEED"
    assert (generated != lc["eos_token_id"]).all(), "EOS generated: pick another SEED"
    for row in generated.tolist():
        assert len(set(row)) >= 4, f"generation repeats itself ({row}): pick another SEED"
    greedy_gap = min_top2_gap(out.logits)

    # Left padding (rows of different lengths in one batch): padding ids are EOS, masked out by attention_mask.
    padded_ids = input_ids.clone()
    padded_ids[1, : PROMPT_LEN - SHORT] = lc["eos_token_id"]
    padded_ids[1, PROMPT_LEN - SHORT :] = input_ids[1, -SHORT:]
    attention_mask = torch.ones_like(padded_ids)
    attention_mask[1, : PROMPT_LEN - SHORT] = 0
    out = model.generate(padded_ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                         eos_token_id=lc["eos_token_id"], pad_token_id=lc["eos_token_id"], output_logits=True,
                         return_dict_in_generate=True)
    padded_generated = out.sequences[:, PROMPT_LEN:]
    assert padded_generated.shape[1] == NEW_TOKENS and (padded_generated != lc["eos_token_id"]).all()
    assert not torch.equal(padded_generated[1], generated[1]), "the short row should continue differently"
    greedy_gap = min(greedy_gap, min_top2_gap(out.logits))
    assert greedy_gap > 1e-3 and margins.min_gap > 1e-4, (greedy_gap, margins.min_gap)

    tensors = checkpoint_tensors(model, lc)
    check_names(tensors)
    OUT.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["DeepseekOCRForCausalLM"], "model_type": "deepseek_vl_v2", "language_config": lc}
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_file(tensors, OUT / "model.safetensors", metadata={"format": "pt"})
    save_file({"input_ids": input_ids.contiguous(), "logits": logits.contiguous(),
               "generated_ids": generated.contiguous(), "padded_input_ids": padded_ids.contiguous(),
               "padded_attention_mask": attention_mask.contiguous(),
               "padded_generated_ids": padded_generated.contiguous()}, OUT / "golden.safetensors")
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"params {sum(t.numel() for t in tensors.values())}, logits |max| {logits.abs().max().item():.3f}")
    print(f"min routing gap {margins.min_gap:.2e}, min greedy logit gap {greedy_gap:.2e}")
    print(f"generated {generated.tolist()}, padded batch {padded_generated.tolist()}")


if __name__ == "__main__":
    main()
