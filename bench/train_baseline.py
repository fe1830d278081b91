#!/usr/bin/env python3
"""The PyTorch + PEFT side of the training benchmark (bench/train.py runs it), and the mid-size benchmark model.

  make-mid TINY OUT  a model directory for `deepsynth train`: the tiny preset's (TINY, made by `deepsynth init`)
                     vision encoder and tokenizer, a ~60M-parameter decoder (MID_DECODER) and a projector to its
                     width, new weights made as `deepsynth init` makes them (N(0, 0.02), norms 1, biases 0).
  train MODEL DATA   LoRA fine-tuning of MODEL's decoder (its own weights, loaded into HF's DeepseekOcr2TextModel +
                     untied lm_head, experts one module each as in DeepSeek-OCR's checkpoint) on DATA's records,
                     the way `deepsynth train` does it: PEFT LoRA on the same layers, AdamW, linear decay, clipping
                     at 1.0, batches right-padded, cross-entropy on answer tokens + EOS only.

`train` prints one line `RESULT {json}`: samples/s of each window of WINDOW steps (the first one is warm-up), the
mean loss of each window, the trainable parameter count and the number of adapted layers.
Usage: /work/venv/bin/python bench/train_baseline.py train DIR cards.jsonl [--steps 32] [--window 8] [--threads 2]
"""
import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextMoe

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import make_decoder_goldens as dec  # noqa: E402
from make_peft_goldens import ALL_PROJECTIONS, PerExpertExperts  # noqa: E402

# The engine benchmark's decoder shape (bench/engine_baseline.py) with the tiny preset's byte-level vocabulary:
# layer 0 dense, 7 MoE layers of 16 routed experts (top-4) + 2 shared.
MID_DECODER = {
    "hidden_size": 768, "num_attention_heads": 12, "num_key_value_heads": 12, "num_hidden_layers": 8,
    "intermediate_size": 2048, "moe_intermediate_size": 128, "n_routed_experts": 16, "num_experts_per_tok": 4,
    "n_shared_experts": 2,
}
# Visual tokens of one tiny-preset page (512 px, Mode::Tiny): an 8x8 grid, a newline token after each row, the
# view separator. Every synthetic card fits one page (a few lines of at most ~15 characters).
PAGE_TOKENS = 73
# Tokenizer of the tiny preset: one id per UTF-8 byte (byte + 3); BOS 0, EOS 1.
BOS, EOS, FIRST_BYTE_ID = 0, 1, 3
DECODER_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")


def make_mid(tiny, out):
    config = json.loads((tiny / "config.json").read_text())
    lc = {**config["language_config"], **MID_DECODER}
    config["language_config"] = lc
    config["projector_config"]["n_embed"] = lc["hidden_size"]
    gen = torch.Generator().manual_seed(0)
    normal = lambda *shape: 0.02 * torch.randn(shape, generator=gen)  # noqa: E731
    with safe_open(tiny / "model.safetensors", framework="pt") as f:
        tensors = {n: f.get_tensor(n) for n in f.keys() if n.startswith(("model.sam_model.", "model.vision_model."))}
    hidden, projector_in = lc["hidden_size"], config["projector_config"]["input_dim"]
    tensors["model.projector.layers.weight"] = normal(hidden, projector_in)
    tensors["model.projector.layers.bias"] = torch.zeros(hidden)
    tensors["model.image_newline"] = normal(hidden)
    tensors["model.view_seperator"] = normal(hidden)
    decoder = dec.TextForCausalLM(dec.hf_config(lc))
    with torch.no_grad():
        for name, p in sorted(decoder.named_parameters()):
            p.copy_(torch.ones(p.shape) if name.endswith("norm.weight") else normal(*p.shape))
    decoder_tensors = dec.checkpoint_tensors(decoder, lc)
    dec.check_names(decoder_tensors)
    tensors.update(decoder_tensors)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny / "tokenizer.json", out / "tokenizer.json")
    save_file({n: t.contiguous() for n, t in tensors.items()}, out / "model.safetensors", metadata={"format": "pt"})
    # Written last: its presence means the directory is complete.
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out}: decoder {sum(t.numel() for t in decoder_tensors.values()):,} parameters, "
          f"{sum(t.numel() for t in tensors.values()):,} in all")


def load_decoder(model_dir):
    """HF's decoder + lm_head with DeepSeek-OCR's per-expert module tree, holding MODEL's decoder weights."""
    lc = json.loads((model_dir / "config.json").read_text())["language_config"]
    config = dec.hf_config(lc)
    config._attn_implementation = "sdpa"  # HF's default (hf_config asks for eager, for the goldens)
    model = dec.TextForCausalLM(config)
    for layer in model.model.layers:
        if isinstance(layer.mlp, DeepseekOcr2TextMoe):
            layer.mlp.experts = PerExpertExperts(config)
    with safe_open(model_dir / "model.safetensors", framework="pt") as f:
        state = {n: f.get_tensor(n).float() for n in f.keys() if n.startswith(DECODER_PREFIXES)}
    model.load_state_dict(state, strict=True)
    return model, lc


def examples(path, max_instruction, max_answer):
    """(prompt ids with PAGE_TOKENS placeholders, answer ids + EOS) per record, cut as `deepsynth train` cuts."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        assert len(r["text"].splitlines()) <= 12 and max(map(len, r["text"].splitlines())) <= 28, \
            f"{r['id']}: the card may not fit one page"
        ids = lambda s: [b + FIRST_BYTE_ID for b in s.encode("utf-8")]  # noqa: E731
        prompt = [BOS] + [-1] * PAGE_TOKENS + ids("\n") + ids(r["instruction"])[:max_instruction]
        out.append((prompt, ids(r["answer"])[:max_answer] + [EOS]))
    return out


def batch_tensors(batch, visual, embed):
    """inputs_embeds [B, T, H] (the page positions from `visual` [B, PAGE_TOKENS, H]), attention mask and labels
    (-100: not scored), right padded. As on the Rust side the answer's last input is its last token: position p
    predicts target p + 1 and the last position predicts EOS."""
    rows = [(prompt + answer[:-1], len(prompt) - 1, answer) for prompt, answer in batch]
    longest = max(len(ids) for ids, _, _ in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100)
    for b, (row, start, targets) in enumerate(rows):
        ids[b, : len(row)] = torch.tensor([max(i, 0) for i in row])
        mask[b, : len(row)] = 1
        labels[b, start : start + len(targets)] = torch.tensor(targets)
    with torch.no_grad():
        embeds = embed(ids)
    embeds[:, 1 : 1 + PAGE_TOKENS] = visual
    return embeds, mask, labels


def train(args):
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model, lc = load_decoder(args.model)
    lora = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=ALL_PROJECTIONS)
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable, total = model.get_nb_trainable_parameters()
    adapted = sum(1 for n, _ in model.named_parameters() if n.endswith("lora_A.default.weight"))
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / args.steps))
    data = examples(args.data, 128, 64)
    # The frozen vision's tokens: fixed per document, as the Rust side's cache holds them after the first epoch.
    visual = 0.02 * torch.randn(len(data), PAGE_TOKENS, lc["hidden_size"])
    embed = model.get_input_embeddings()
    load_s = time.perf_counter() - start
    model.train()
    rng = random.Random(args.seed)
    order = []
    window_s, window_loss, losses, tick = [], [], [], time.perf_counter()
    for step in range(args.steps):
        chosen = []
        while len(chosen) < args.batch:
            if not order:
                order = list(range(len(data)))
                rng.shuffle(order)
            chosen.append(order.pop())
        embeds, mask, labels = batch_tensors([data[i] for i in chosen], visual[chosen], embed)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % args.window == 0 or step + 1 == args.steps:
            now = time.perf_counter()
            window_s.append(len(losses) * args.batch / (now - tick))
            window_loss.append(sum(losses) / len(losses))
            losses, tick = [], now
    return {"threads": torch.get_num_threads(), "load_s": load_s, "samples_per_second": window_s,
            "window_loss": window_loss, "trainable_parameters": trainable,
            "decoder_parameters": total - trainable,
            "adapted_layers": adapted}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-mid")
    p.add_argument("tiny", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("train")
    p.add_argument("model", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.command == "make-mid":
        make_mid(args.tiny, args.out)
        return
    torch.set_num_threads(args.threads)
    print("RESULT " + json.dumps(train(args)), flush=True)


if __name__ == "__main__":
    main()
