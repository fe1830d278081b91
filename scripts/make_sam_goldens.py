#!/usr/bin/env python3
"""Golden fixtures for the SAM encoder (tests/parity_sam.rs).

1. Tiny SAM with HF transformers' `SamVisionModel` (every weight random, seeded, at scales that keep activations
   O(1) and make relative positions matter), plus the two stride-2 compressor convs that HF's SAM lacks (torch
   Conv2d, added here). Exported under DeepSeek-OCR's names (`model.sam_model.*`, see HF_TO_DEEPSEEK).
   Writes tests/fixtures/sam/: config.json (DeepSeek-OCR's format: `vision_config.width.sam_vit_b`, with the keys
   that the released config leaves to code constants), model.safetensors, golden.safetensors: `pixels` [2,3,64,64],
   `neck_out` [2,16,8,8] (HF's last_hidden_state), `sam_out` [2,32,2,2] (after net_3).

   HF vs DeepSeek-OCR's `ImageEncoderViT` (deepencoder/sam_vary_sdpa.py): same blocks (windowed/global attention,
   zero padding to whole windows, decomposed relative positions from the unscaled queries, rel-pos tables linearly
   resized when the needed length differs), same neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d, eps 1e-6),
   exact GELU. Differences: HF names (`layers.N.layer_norm1`, `neck.conv1`, ...), no compressor, and HF rejects any
   input size but `image_size` and adds `pos_embed` unresized, while DeepSeek-OCR resizes it (bicubic, antialias)
   to the input's grid. So HF can golden only the native size.

2. --deepseek-sam FILE (DeepSeek-OCR's deepencoder/sam_vary_sdpa.py, e.g. `git -C <fetched repo> show
   HEAD:DeepSeek-OCR-master/DeepSeek-OCR-vllm/deepencoder/sam_vary_sdpa.py > /tmp/sam_vary_sdpa.py`; not
   committed here): the same tiny weights in DeepSeek-OCR's own ImageEncoderViT (its 256->512->1024 compressor
   swapped for the tiny one). It must agree with HF at 64 px; then it goldens other input sizes, which resize the
   position embedding and the global rel-pos tables: 40 px (grid 5: pos 8->5, windows padded 5->6, odd maps in the
   compressor) and 96 px (grid 12: both enlarged). Adds `pixels_40`, `sam_out_40`, `pixels_96`, `sam_out_96` (one
   image each).

3. With --reference-model DIR (the regenerated random DeepSeek-OCR weights): DeepSeek-OCR's code
   on the real-size SAM at Tiny 512, Small 640 and Large 1280 px, on the deterministic input of `noise_image`
   (integers / 1024, so Rust rebuilds it bit for bit). Writes tests/fixtures/sam/modes.safetensors with channel
   subsets to stay small: `tiny_512` [1,512,8,8] (channels ::2), `small_640` [1,128,10,10] (channels ::8),
   `large_1280` [1,64,20,20] (channels ::16). Also checks that Base 1024 reproduces the reference's `sam_out`.

Usage: /work/venv/bin/python scripts/make_sam_goldens.py --deepseek-sam FILE [--reference-model DIR]
"""
import argparse
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import SamVisionConfig, SamVisionModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "sam"
REFERENCE_IO = ROOT.parent / "shared" / "reference" / "deepseek-ocr-random-2layer" / "io-base-1024.safetensors"
SEED = 11
BATCH = 2
# image 64 / patch 8 -> an 8x8 grid; window 3 pads it to 9 (3x3 windows); blocks 1 and 3 global.
SAM_VIT = {
    "width": 32, "layers": 4, "heads": 2, "global_attn_indexes": [1, 3], "downsample_channels": [24, 32],
    "image_size": 64, "patch_size": 8, "window_size": 3, "out_chans": 16,
}
HF_TO_DEEPSEEK = [
    ("vision_encoder.", "model.sam_model."), ("patch_embed.projection.", "patch_embed.proj."), ("layers.", "blocks."),
    ("layer_norm1.", "norm1."), ("layer_norm2.", "norm2."),
    ("neck.conv1.", "neck.0."), ("neck.norm1.", "neck.1."), ("neck.conv2.", "neck.2."), ("neck.norm2.", "neck.3."),
]


def deepseek_name(hf):
    for a, b in HF_TO_DEEPSEEK:
        hf = hf.replace(a, b)
    return hf


def hf_name(deepseek):
    for a, b in reversed(HF_TO_DEEPSEEK):
        deepseek = deepseek.replace(b, a)
    return deepseek


def hf_sam(sv, attn="eager"):
    return SamVisionModel(SamVisionConfig(
        hidden_size=sv["width"], num_hidden_layers=sv["layers"], num_attention_heads=sv["heads"],
        global_attn_indexes=sv["global_attn_indexes"], image_size=sv["image_size"], patch_size=sv["patch_size"],
        window_size=sv["window_size"], output_channels=sv["out_chans"], mlp_ratio=4.0, layer_norm_eps=1e-6,
        qkv_bias=True, use_abs_pos=True, use_rel_pos=True, hidden_act="gelu", attn_implementation=attn)).eval()


def compressor(sv):
    c = [sv["out_chans"], *sv["downsample_channels"]]
    return nn.Sequential(*(nn.Conv2d(c[i], c[i + 1], 3, stride=2, padding=1, bias=False) for i in range(len(c) - 1)))


def randomise(named_params, gen):
    """Every parameter, in sorted name order: norm weights 1 + 0.1 N, biases 0.1 N, position tables 0.5 N,
    matrices and conv kernels N / sqrt(fan_in)."""
    with torch.no_grad():
        for name, p in sorted(named_params):
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "pos" in name:
                p.copy_(0.5 * r)
            else:
                p.copy_(r / math.sqrt(p[0].numel()))


def load_deepseek_module(path):
    """DeepSeek-OCR's sam_vary_sdpa.py, imported with a stand-in for `flash_attn` (imported there, never called)."""
    sys.modules.setdefault("flash_attn", types.SimpleNamespace(flash_attn_qkvpacked_func=None))
    spec = importlib.util.spec_from_file_location("sam_vary_sdpa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deepseek_sam(module, sv, net_2, net_3):
    """ImageEncoderViT built as DeepSeek-OCR's _build_sam does, for the sizes in sv."""
    from functools import partial
    enc = module.ImageEncoderViT(
        depth=sv["layers"], embed_dim=sv["width"], img_size=sv["image_size"], mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=sv["heads"], patch_size=sv["patch_size"],
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=sv["global_attn_indexes"],
        window_size=sv["window_size"], out_chans=sv["out_chans"])
    enc.net_2, enc.net_3 = net_2, net_3
    return enc.eval()


def noise_image(size, seed):
    """[1, 3, size, size] pseudo-random values k / 1024, k in -1024..=1024, from an integer hash of the flat index
    (tests/parity_sam.rs computes the same)."""
    h = np.arange(3 * size * size, dtype=np.uint64)
    h = (h * np.uint64(2654435761) + np.uint64(seed)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    k = (h % np.uint64(2049)).astype(np.int64) - 1024
    return torch.from_numpy((k.astype(np.float32) / 1024.0).reshape(1, 3, size, size))


def tiny(deepseek):
    sv = SAM_VIT
    gen = torch.Generator().manual_seed(SEED)
    model, comp = hf_sam(sv), compressor(sv)
    randomise(list(model.named_parameters()) + [(f"net.{n}", p) for n, p in comp.named_parameters()], gen)
    pixels = torch.randn(BATCH, 3, sv["image_size"], sv["image_size"], generator=gen)
    with torch.no_grad():
        neck_out = model(pixel_values=pixels).last_hidden_state
        sam_out = comp(neck_out)
    tensors = {deepseek_name(n): t.detach().contiguous() for n, t in model.state_dict().items()}
    for i, conv in enumerate(comp):
        tensors[f"model.sam_model.net_{i + 2}.weight"] = conv.weight.detach().contiguous()
    golden = {"pixels": pixels, "neck_out": neck_out, "sam_out": sam_out}
    print(f"tiny: {sum(t.numel() for t in tensors.values())} params, |neck_out| max "
          f"{neck_out.abs().max():.3f}, |sam_out| max {sam_out.abs().max():.3f}")

    # The same weights in DeepSeek-OCR's own code: equal at the native size, then the resizing sizes.
    enc = deepseek_sam(deepseek, sv, comp[0], comp[1])
    prefix = "model.sam_model."
    enc.load_state_dict({n[len(prefix):]: t for n, t in tensors.items()}, strict=True)
    with torch.no_grad():
        diff = (enc(pixels) - sam_out).abs().max().item()
        assert diff < 1e-5, f"DeepSeek-OCR's code and HF disagree at the native size: {diff}"
        print(f"tiny: DeepSeek-OCR's ImageEncoderViT vs HF at 64 px: max abs diff {diff:.2e}")
        for size in (40, 96):
            x = torch.randn(1, 3, size, size, generator=gen)
            golden[f"pixels_{size}"], golden[f"sam_out_{size}"] = x, enc(x)
            print(f"tiny: {size} px -> {tuple(golden[f'sam_out_{size}'].shape)}")

    OUT.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["DeepseekOCRForCausalLM"], "model_type": "deepseek_vl_v2",
              "vision_config": {"image_size": sv["image_size"], "model_type": "vision", "width": {"sam_vit_b": sv}}}
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_file(tensors, OUT / "model.safetensors", metadata={"format": "pt"})
    save_file({k: v.contiguous() for k, v in golden.items()}, OUT / "golden.safetensors")


def real_size(deepseek, model_dir):
    prefix = "model.sam_model."
    with safe_open(Path(model_dir) / "model.safetensors", framework="pt") as f:
        state = {n[len(prefix):]: f.get_tensor(n).float() for n in f.keys() if n.startswith(prefix)}
    sv = {"width": 768, "layers": 12, "heads": 12, "global_attn_indexes": [2, 5, 8, 11], "image_size": 1024,
          "patch_size": 16, "window_size": 14, "out_chans": 256}
    net_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1, bias=False)
    net_3 = nn.Conv2d(512, 1024, 3, stride=2, padding=1, bias=False)
    enc = deepseek_sam(deepseek, sv, net_2, net_3)
    enc.load_state_dict(state, strict=True)
    reference = load_file(REFERENCE_IO)
    out = {}
    with torch.no_grad():
        base = enc(reference["images_ori"].float())
        diff = (base - reference["sam_out"].float()).abs().max().item()
        print(f"real: Base 1024 vs the reference's sam_out: max abs diff {diff:.2e} "
              f"(|sam_out| max {reference['sam_out'].abs().max():.3f})")
        for name, size, step in (("tiny_512", 512, 2), ("small_640", 640, 8), ("large_1280", 1280, 16)):
            y = enc(noise_image(size, seed=size))
            out[name] = y[:, ::step].contiguous()
            print(f"real: {size} px -> {tuple(y.shape)}, stored {tuple(out[name].shape)}, |max| {y.abs().max():.4f}")
    save_file(out, OUT / "modes.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deepseek-sam", required=True, help="DeepSeek-OCR's deepencoder/sam_vary_sdpa.py")
    ap.add_argument("--reference-model", help="model directory with the regenerated random weights")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    deepseek = load_deepseek_module(args.deepseek_sam)
    tiny(deepseek)
    if args.reference_model:
        real_size(deepseek, args.reference_model)
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
