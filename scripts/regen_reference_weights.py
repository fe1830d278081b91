#!/usr/bin/env python3
"""Regenerates the random weights of shared/reference/deepseek-ocr-random-2layer exactly, as a model directory.

Usage: regen_reference_weights.py OUTDIR [--reference DIR]
Rule (the reference README): g = torch.Generator().manual_seed(1234); for each float tensor of keys.txt in sorted
name order, r = randn(shape, generator=g) * 0.02, plus 1.0 for norm weights. Every tensor is checked against
fingerprint.tsv (f64 sum and first three values). Writes OUTDIR/model.safetensors (~4 GB f32), and copies
config.json and the stand-in tokenizer.json beside it, so OUTDIR loads as a deepsynth model directory.
The parity tests read it from the path in DEEPSYNTH_REFERENCE_MODEL.
"""
import argparse
import json
import os
import re
import shutil

import torch
from safetensors.torch import save_file

NORM = re.compile(r"(norm|ln_|layernorm|layer_norm)[^.]*\.weight$")
NORM2 = re.compile(r"\.(norm\d?|neck\.[13])\.weight$")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--reference", default=os.path.join(here, "..", "..", "shared", "reference",
                                                        "deepseek-ocr-random-2layer"))
    args = ap.parse_args()
    ref = args.reference
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(ref, "keys.txt")) if line.strip()]
    fingerprint = {}
    for line in open(os.path.join(ref, "fingerprint.tsv")):
        cols = line.rstrip("\n").split("\t")
        fingerprint[cols[0]] = cols
    g = torch.Generator().manual_seed(1234)
    tensors = {}
    for name, shape, dtype in sorted(rows):
        if "float" not in dtype:
            continue  # the int64 position_ids buffer is not part of the released checkpoint
        r = torch.randn(json.loads(shape), generator=g, dtype=torch.float32) * 0.02
        if NORM.search(name) or NORM2.search(name):
            r += 1.0
        want = fingerprint[name]
        total = r.double().sum().item()
        assert abs(total - float(want[3])) < 1e-3 * max(1.0, abs(float(want[3]))), (name, total, want)
        first3 = [float(v) for v in want[4].split(",")]
        assert torch.allclose(r.flatten()[:3], torch.tensor(first3), rtol=1e-5, atol=1e-8), (name, want)
        tensors[name] = r
    os.makedirs(args.outdir, exist_ok=True)
    save_file(tensors, os.path.join(args.outdir, "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(ref, name), os.path.join(args.outdir, name))
    print(f"{len(tensors)} tensors checked against fingerprint.tsv and written to {args.outdir}")


if __name__ == "__main__":
    main()
