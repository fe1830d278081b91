#!/usr/bin/env python3
"""Time per 1024 px page of HF transformers' SamVisionModel (+ the two compressor convs) on the real-size SAM
weights of a DeepSeek-OCR model directory, at a fixed thread count: the baseline for our encoder
(tests/parity_sam.rs prints ours). Also checks that HF reproduces the reference's `sam_out` on `images_ori`.

Usage: /work/venv/bin/python scripts/bench_sam.py MODEL_DIR [--threads 2] [--runs 3] [--attn eager|sdpa]
"""
import argparse
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from make_sam_goldens import REFERENCE_IO, compressor, hf_name, hf_sam


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--attn", default="eager", help="HF attention implementation (SAM supports eager and sdpa)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sv = {"width": 768, "layers": 12, "heads": 12, "global_attn_indexes": [2, 5, 8, 11],
          "downsample_channels": [512, 1024], "image_size": 1024, "patch_size": 16, "window_size": 14,
          "out_chans": 256}
    model, comp = hf_sam(sv, args.attn), compressor(sv).eval()
    with safe_open(Path(args.model_dir) / "model.safetensors", framework="pt") as f:
        names = [n for n in f.keys() if n.startswith("model.sam_model.")]
        state = {hf_name(n): f.get_tensor(n).float() for n in names if ".net_" not in n}
        for i, conv in enumerate(comp):
            conv.weight.data = f.get_tensor(f"model.sam_model.net_{i + 2}.weight").float()
    model.load_state_dict(state, strict=True)

    reference = load_file(REFERENCE_IO)
    pixels = reference["images_ori"].float()
    times = []
    with torch.inference_mode():
        for _ in range(args.runs + 1):  # the first run warms up
            start = time.perf_counter()
            out = comp(model(pixel_values=pixels).last_hidden_state)
            times.append(time.perf_counter() - start)
    diff = (out - reference["sam_out"].float()).abs().max().item()
    print(f"HF SamVisionModel ({args.attn}) + compressor, {args.threads} threads: "
          f"{min(times[1:]):.2f} s per 1024 px page (best of {args.runs}; all {[round(t, 2) for t in times]}), "
          f"max abs diff to the reference's sam_out {diff:.2e}")


if __name__ == "__main__":
    main()
