#!/usr/bin/env python3
"""The transformers side of the engine benchmark (bench/engine.py runs it), and the benchmark decoder's weights.

  make-decoder DIR   writes the ~110M-parameter benchmark decoder once (seeded random weights, made as
                     scripts/make_decoder_goldens.py makes the test fixture): config.json in DeepSeek-OCR's format,
                     model.safetensors under DeepSeek-OCR's names, prompt.safetensors (`input_ids` [1, PROMPT_LEN]).
  decoder DIR        HF's DeepseekOcr2TextModel + untied lm_head on those weights: prefill, then greedy decode steps.
  vision MODEL IO    HF's SamVisionModel + the two compressor convs + HF's CLIP encoder (fed SAM features) + the
                     linear projector on a DeepSeek-OCR model directory's weights, for the reference page.

Each measuring command prints one line `RESULT {json}`, with the same fields as benches/engine.rs prints.
Usage: /work/venv/bin/python bench/engine_baseline.py decoder DIR [--threads 2] [--runs 3] [--new-tokens 64]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import make_decoder_goldens as dec  # noqa: E402
from make_clip_goldens import image_tokens, run_clip  # noqa: E402
from make_sam_goldens import compressor, hf_name, hf_sam  # noqa: E402

SEED = 17
PROMPT_LEN = 512
# A mid-size decoder of DeepSeek-OCR's shape (DESIGN.md section 2, scaled down): layer 0 dense, the other 7 MoE
# with 16 routed experts (top-4) and 2 shared experts; vocabulary 32k. Keys not listed are the fixture's.
BENCH_CONFIG = {
    **dec.LANGUAGE_CONFIG,
    "hidden_size": 768, "num_attention_heads": 12, "num_key_value_heads": 12, "num_hidden_layers": 8,
    "intermediate_size": 2048, "moe_intermediate_size": 128, "n_routed_experts": 16, "num_experts_per_tok": 4,
    "n_shared_experts": 2, "routed_scaling_factor": 1.0, "vocab_size": 32000, "max_position_embeddings": 2048,
}
# SAM keys that DeepSeek-OCR's config leaves to code constants (the released `sam_vit_b` block has the others).
SAM_CONSTANTS = {"image_size": 1024, "patch_size": 16, "window_size": 14, "out_chans": 256}


def rss_mib():
    """Peak and current resident set size (MiB), from /proc/self/status as the Rust side reads it."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0]) / 1024
    return fields["VmHWM"], fields["VmRSS"]


def make_decoder(out):
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = dec.TextForCausalLM(dec.hf_config(BENCH_CONFIG)).eval()
    dec.randomise(model, gen)
    tensors = dec.checkpoint_tensors(model, BENCH_CONFIG)
    dec.check_names(tensors)
    input_ids = torch.randint(2, BENCH_CONFIG["vocab_size"], (1, PROMPT_LEN), generator=gen)
    config = {"architectures": ["DeepseekOCRForCausalLM"], "model_type": "deepseek_vl_v2",
              "language_config": BENCH_CONFIG}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    save_file({"input_ids": input_ids.contiguous()}, out / "prompt.safetensors")
    # Written last: its presence means the directory is complete.
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    print(f"wrote {out}: {sum(t.numel() for t in tensors.values()):,} parameters")


def hf_decoder_state(tensors, lc):
    """DeepSeek-OCR's names -> HF's: each MoE layer's experts fused into gate_up_proj [E, 2I, H], down_proj
    [E, H, I] (the inverse of make_decoder_goldens.checkpoint_tensors)."""
    state = {n: t for n, t in tensors.items() if ".mlp.experts." not in n}
    for layer in range(lc["first_k_dense_replace"], lc["num_hidden_layers"]):
        base = f"model.layers.{layer}.mlp.experts."
        experts = [{p: tensors[f"{base}{e}.{p}_proj.weight"] for p in ("gate", "up", "down")}
                   for e in range(lc["n_routed_experts"])]
        state[base + "gate_up_proj"] = torch.stack([torch.cat([x["gate"], x["up"]]) for x in experts])
        state[base + "down_proj"] = torch.stack([x["down"] for x in experts])
    return state


def decoder(args):
    lc = json.loads((args.dir / "config.json").read_text())["language_config"]
    start = time.perf_counter()
    config = dec.hf_config(lc)
    config._attn_implementation = args.attn
    model = dec.TextForCausalLM(config).eval()
    model.load_state_dict(hf_decoder_state(load_file(args.dir / "model.safetensors"), lc), strict=True, assign=True)
    load_s = time.perf_counter() - start
    ids = load_file(args.dir / "prompt.safetensors")["input_ids"]

    def generate():
        """Prefill (hidden states of every position, logits of the last), then single-position greedy steps:
        the same loop as the Rust side, on HF's model forward (no `generate` bookkeeping)."""
        start = time.perf_counter()
        out = model.model(input_ids=ids, use_cache=True)  # starts a DynamicCache
        nxt = model.lm_head(out.last_hidden_state[:, -1]).argmax(-1, keepdim=True)
        prefill = time.perf_counter() - start
        tokens = [nxt.item()]
        start = time.perf_counter()
        while len(tokens) < args.new_tokens:
            out = model.model(input_ids=nxt, cache=out.cache, use_cache=True)
            nxt = model.lm_head(out.last_hidden_state[:, -1]).argmax(-1, keepdim=True)
            tokens.append(nxt.item())
        return prefill, time.perf_counter() - start, tokens

    prefill_s, decode_s = [], []
    with torch.inference_mode():
        generate()  # warm-up
        for _ in range(args.runs):
            prefill, decode, tokens = generate()
            prefill_s.append(prefill)
            decode_s.append(decode)
    peak, now = rss_mib()
    return {"threads": torch.get_num_threads(), "load_s": load_s, "prompt_len": ids.shape[1],
            "decode_steps": args.new_tokens - 1, "prefill_s": prefill_s, "decode_s": decode_s, "ids": tokens,
            "peak_rss_mib": peak, "rss_mib": now, "attn": model.config._attn_implementation,
            "experts": model.config._experts_implementation}


def hf_clip_state(tensors):
    """DeepSeek-OCR's `model.vision_model.*` -> HF CLIPVisionModel names: `transformer.` is `encoder.`, the fused
    qkv_proj rows [q; k; v] split into q/k/v_proj (the inverse of make_clip_goldens.checkpoint_tensors)."""
    prefix = "model.vision_model."
    state = {}
    for name, t in tensors.items():
        name = name[len(prefix):].replace("transformer.", "encoder.", 1)
        if ".qkv_proj." in name:
            for part, chunk in zip("qkv", t.chunk(3, dim=0)):
                state[name.replace("qkv_proj", f"{part}_proj")] = chunk.contiguous()
        else:
            state[name] = t
    return state


def vision(args):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = json.loads((args.model / "config.json").read_text())
    widths = config["vision_config"]["width"]
    sv = {**SAM_CONSTANTS, **widths["sam_vit_b"]}
    cv = widths["clip-l-14-224"]
    pc = config["projector_config"]
    start = time.perf_counter()
    sam, comp = hf_sam(sv, args.attn), compressor(sv).eval()
    clip = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=cv["width"], intermediate_size=cv.get("ffn_hidden_size", 4 * cv["width"]),
        num_hidden_layers=cv["layers"], num_attention_heads=cv["heads"], image_size=cv["image_size"],
        patch_size=cv["patch_size"], hidden_act="quick_gelu", layer_norm_eps=1e-5,
        attn_implementation=args.attn)).eval()
    projector = nn.Linear(pc["input_dim"], pc["n_embed"])
    with safe_open(args.model / "model.safetensors", framework="pt") as f:
        get = lambda n: f.get_tensor(n).float()  # noqa: E731
        names = list(f.keys())
        sam.load_state_dict({hf_name(n): get(n) for n in names
                             if n.startswith("model.sam_model.") and ".net_" not in n}, strict=True, assign=True)
        for i, conv in enumerate(comp):
            conv.weight.data = get(f"model.sam_model.net_{i + 2}.weight")
        missing, unexpected = clip.load_state_dict(
            hf_clip_state({n: get(n) for n in names if n.startswith("model.vision_model.")}), strict=False,
            assign=True)
        # DeepSeek-OCR has no post-layernorm (run_clip skips it); position_ids is a buffer.
        assert not unexpected and all(m.startswith("post_layernorm") for m in missing), (missing, unexpected)
        projector.weight.data = get("model.projector.layers.weight")
        projector.bias.data = get("model.projector.layers.bias")
        newline, separator = get("model.image_newline"), get("model.view_seperator")
    load_s = time.perf_counter() - start
    io = load_file(args.io)
    pixels = io["images_ori"].float()

    def page():
        """One page -> its visual tokens, with the time of each part."""
        t = [time.perf_counter()]
        sam_out = comp(sam(pixel_values=pixels).last_hidden_state)
        t.append(time.perf_counter())
        clip_out = run_clip(clip, sam_out)
        t.append(time.perf_counter())
        features = torch.cat([clip_out[:, 1:], sam_out.flatten(2).permute(0, 2, 1)], dim=-1)
        projected = projector(features)
        tokens = image_tokens(projected[0], newline, separator)
        t.append(time.perf_counter())
        parts = dict(zip(["sam", "clip", "projector"], [b - a for a, b in zip(t, t[1:])]))
        return t[-1] - t[0], parts, projected, tokens

    with torch.inference_mode():
        _, _, projected, tokens = page()  # warm-up
        max_abs_diff = (projected - io["projector_out"].float()).abs().max().item()
        page_s = []
        for _ in range(args.runs):
            seconds, parts, _, _ = page()
            page_s.append(seconds)
    peak, now = rss_mib()
    return {"threads": torch.get_num_threads(), "load_s": load_s, "page_s": page_s, "tokens": tokens.shape[0],
            "max_abs_diff": max_abs_diff, "parts_s": parts, "peak_rss_mib": peak, "rss_mib": now,
            "attn": args.attn}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-decoder")
    p.add_argument("dir", type=Path)
    for name in ("decoder", "vision"):
        p = sub.add_parser(name)
        if name == "decoder":
            p.add_argument("dir", type=Path)
            p.add_argument("--new-tokens", type=int, default=64)
        else:
            p.add_argument("model", type=Path)
            p.add_argument("io", type=Path)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--attn", default="sdpa", help="HF attention implementation (sdpa: HF's default)")
    args = ap.parse_args()
    if args.command == "make-decoder":
        make_decoder(args.dir)
        return
    torch.set_num_threads(args.threads)
    result = decoder(args) if args.command == "decoder" else vision(args)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
