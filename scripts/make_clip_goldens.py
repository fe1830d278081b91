#!/usr/bin/env python3
"""Golden fixtures for the DeepEncoder's CLIP-style ViT and projector (tests/parity_clip.rs).

1. Tiny CLIP vs HF transformers (always): a `CLIPVisionModel` (width 32, 4 layers, 4 heads, FFN 64 quick_gelu,
   image 56, patch 14 -> a 4x4 grid + class = 17 positions) with EVERY weight random (seeded), exported under
   DeepSeek-OCR's names (`model.vision_model.*`, q/k/v fused into `qkv_proj` as [q; k; v] rows, `post_layernorm`
   dropped: DeepSeek-OCR has none), plus a random linear projector and `image_newline` / `view_seperator`.
   DeepSeek-OCR feeds SAM features, not pixels, as the patch embeddings. HF's CLIP only takes pixels, so the
   script runs HF's own modules by hand on given patch embeddings: embeddings = [class_embedding; patches] +
   position table, then HF's `pre_layrnorm`, then HF's `CLIPEncoder(inputs_embeds=...)` (no post-layernorm).
   It first checks that this manual path, fed HF's own `patch_embedding(pixels)`, reproduces
   `CLIPVisionModel(pixels).last_hidden_state`. Other grids (2x2, 3x3 shrinking, 6x6 growing) use the position
   table resized exactly as DeepSeek-OCR's `get_abs_pos` does it: `F.interpolate(mode="bicubic", antialias=True,
   align_corners=False)` on the patch positions, class position kept (HF's own interpolation has no antialias).
   The projector part follows DeepSeek-OCR's `_pixel_values_to_embedding` (Base mode, no tiles):
   cat([clip_out[:, 1:], sam.flatten(2).permute(0, 2, 1)], -1) -> Linear -> rows + image_newline -> view_seperator.
   Writes tests/fixtures/clip/: config.json (DeepSeek-OCR's format), model.safetensors, golden.safetensors.

2. Other resolution modes vs DeepSeek-OCR's own code (with --reference): runs DeepSeek-OCR's `VitModel`
   (DeepSeek-OCR-vllm/deepencoder/clip_sdpa.py, given by --deepseek-clip; not part of this repository; its unused
   flash_attn import is stubbed, the non-flash SDPA path runs) on the released-size random weights of the
   reference model directory, for the grids of Tiny (8x8), Small (10x10) and Large (20x20) modes. The input is a
   formula the Rust test recomputes (see `mode_input`), so only outputs are stored, and only every 32nd channel,
   to stay small: tests/fixtures/clip/reference-modes.safetensors (`positions_{g}` [1 + g², 32] the resized
   position table, `clip_out_{g}` [1, 1 + g², 32]).

Usage: /work/venv/bin/pip install torch transformers safetensors numpy easydict
       /work/venv/bin/python scripts/make_clip_goldens.py
       git -C <DeepSeek-OCR clone> show HEAD:DeepSeek-OCR-master/DeepSeek-OCR-vllm/deepencoder/clip_sdpa.py \
           > /tmp/clip_sdpa.py
       /work/venv/bin/python scripts/make_clip_goldens.py --reference /work/refmodel --deepseek-clip /tmp/clip_sdpa.py
"""
import argparse
import importlib.util
import json
import math
import re
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clip"
SEED = 11
BATCH = 2
RESIZED_GRIDS = (2, 3, 6)
MODE_GRIDS = (8, 10, 20)
MODE_CHANNEL_STRIDE = 32
# DeepSeek-OCR's config format: the CLIP block under vision_config.width["clip-l-14-224"]; ffn_hidden_size is the
# name DeepSeek-OCR's code gives the MLP width (not in the released block, where it is 4096 = 4 x width).
CLIP = {"heads": 4, "image_size": 56, "layers": 4, "patch_size": 14, "width": 32, "ffn_hidden_size": 64}
PROJECTOR = {"input_dim": 2 * CLIP["width"], "model_type": "mlp_projector", "n_embed": 48, "projector_type": "linear"}


def hf_model():
    config = CLIPVisionConfig(
        hidden_size=CLIP["width"], intermediate_size=CLIP["ffn_hidden_size"], num_hidden_layers=CLIP["layers"],
        num_attention_heads=CLIP["heads"], image_size=CLIP["image_size"], patch_size=CLIP["patch_size"],
        num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5, attn_implementation="eager")
    return CLIPVisionModel(config).eval()


def randomise(module, gen):
    """Every parameter, in sorted name order: norm weights 1 + 0.1 N, biases 0.1 N, embeddings N,
    matrices (and the conv) N / sqrt(fan_in)."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if re.search(r"(norm|layrnorm)[^.]*\.weight$", name):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif "class_embedding" in name or "position_embedding" in name:
                p.copy_(r)
            else:
                p.copy_(r / math.sqrt(p[0].numel()))


def resized_positions(table, grid):
    """DeepSeek-OCR's get_abs_pos: the class position kept, the square patch grid resized bicubic + antialias."""
    cls, patches = table[:1], table[1:]
    src = int(math.sqrt(patches.shape[0]))
    if src == grid:
        return table
    dim = table.shape[-1]
    patches = patches.view(1, src, src, dim).permute(0, 3, 1, 2).to(torch.float32)
    new = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([cls, new.permute(0, 2, 3, 1).reshape(grid * grid, dim)], dim=0)


def run_clip(vision, patch_embeds):
    """HF's CLIP modules on given patch embeddings [B, C, h, w] -> last hidden state [B, 1 + h*w, C]."""
    batch, dim, h, w = patch_embeds.shape
    emb = vision.embeddings
    patches = patch_embeds.flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(batch, 1, dim), patches], dim=1)
    x = x + resized_positions(emb.position_embedding.weight, h)[None]
    return vision.encoder(inputs_embeds=vision.pre_layrnorm(x)).last_hidden_state


def checkpoint_tensors(model, projector, newline, separator):
    """The state dict under DeepSeek-OCR's names (HF's `encoder.` is DeepSeek-OCR's `transformer.`, all under
    `model.vision_model.`), q/k/v fused into qkv_proj, post_layernorm dropped."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out = {}
    for name, t in state.items():
        if name.startswith("post_layernorm") or "position_ids" in name:
            continue
        m = re.fullmatch(r"(.*self_attn)\.([qkv])_proj\.(weight|bias)", name)
        if m and m.group(2) != "q":
            continue
        if m:
            t = torch.cat([state[f"{m.group(1)}.{p}_proj.{m.group(3)}"] for p in "qkv"], dim=0).contiguous()
            name = f"{m.group(1)}.qkv_proj.{m.group(3)}"
        out["model.vision_model." + re.sub(r"^encoder\.", "transformer.", name)] = t
    out["model.projector.layers.weight"] = projector.weight.detach().contiguous()
    out["model.projector.layers.bias"] = projector.bias.detach().contiguous()
    out["model.image_newline"] = newline.contiguous()
    out["model.view_seperator"] = separator.contiguous()
    return out


def check_names(tensors):
    """Each name must be one of the released checkpoint's CLIP / projector names (reference keys.txt)."""
    layer = r"model\.vision_model\.transformer\.layers\.\d+\."
    patterns = [
        r"model\.vision_model\.embeddings\.(class_embedding|patch_embedding\.weight|position_embedding\.weight)",
        r"model\.vision_model\.pre_layrnorm\.(weight|bias)",
        layer + r"(layer_norm1|layer_norm2|self_attn\.qkv_proj|self_attn\.out_proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        r"model\.projector\.layers\.(weight|bias)", r"model\.(image_newline|view_seperator)",
    ]
    for name in tensors:
        assert any(re.fullmatch(p, name) for p in patterns), f"unexpected tensor name {name}"


def image_tokens(projected, newline, separator):
    """DeepSeek-OCR's single-view layout: [h*w, n] -> rows each followed by image_newline, then view_seperator."""
    hw, n = projected.shape
    h = w = int(hw ** 0.5)
    rows = torch.cat([projected.view(h, w, n), newline[None, None, :].expand(h, 1, n)], dim=1).view(-1, n)
    return torch.cat([rows, separator[None, :]], dim=0)


def tiny():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = hf_model()
    randomise(model, gen)
    width, n_embed, grid = CLIP["width"], PROJECTOR["n_embed"], CLIP["image_size"] // CLIP["patch_size"]
    projector = torch.nn.Linear(PROJECTOR["input_dim"], n_embed)
    randomise(projector, gen)
    newline = torch.randn(n_embed, generator=gen)
    separator = torch.randn(n_embed, generator=gen)
    vision = model  # transformers 5 has no vision_model wrapper inside CLIPVisionModel
    golden = {}
    with torch.no_grad():
        # The manual path is HF's model: fed HF's own patch embeddings of an image, it gives HF's output.
        pixels = torch.randn(1, 3, CLIP["image_size"], CLIP["image_size"], generator=gen)
        whole = model(pixel_values=pixels).last_hidden_state
        manual = run_clip(vision, vision.embeddings.patch_embedding(pixels))
        assert torch.allclose(whole, manual, atol=1e-6), (whole - manual).abs().max()

        patch_embeds = torch.randn(BATCH, width, grid, grid, generator=gen)
        clip_out = run_clip(vision, patch_embeds)
        features = torch.cat([clip_out[:, 1:], patch_embeds.flatten(2).permute(0, 2, 1)], dim=-1)
        projected = projector(features)
        golden.update(patch_embeds=patch_embeds, clip_out=clip_out, projector_out=projected,
                      image_tokens=image_tokens(projected[0], newline, separator))
        for g in RESIZED_GRIDS:
            embeds = torch.randn(1, width, g, g, generator=gen)
            golden[f"patch_embeds_{g}"] = embeds
            golden[f"positions_{g}"] = resized_positions(vision.embeddings.position_embedding.weight, g)
            golden[f"clip_out_{g}"] = run_clip(vision, embeds)
    tensors = checkpoint_tensors(model, projector, newline, separator)
    check_names(tensors)
    OUT.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["DeepseekOCRForCausalLM"], "model_type": "deepseek_vl_v2",
              "projector_config": PROJECTOR,
              "vision_config": {"model_type": "vision", "width": {"clip-l-14-224": CLIP}}}
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_file(tensors, OUT / "model.safetensors", metadata={"format": "pt"})
    save_file({k: v.contiguous() for k, v in golden.items()}, OUT / "golden.safetensors")
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"params {sum(t.numel() for t in tensors.values())}, clip_out |max| {clip_out.abs().max().item():.3f}, "
          f"projector_out |max| {projected.abs().max().item():.3f}")


def mode_input(width, grid):
    """The deterministic stand-in for SAM features that tests/parity_clip.rs recomputes:
    x[c, i, j] = 2 sin(0.37 c + 1.3 i + 0.71 j + 0.1 grid), in f64, then f32."""
    c = torch.arange(width, dtype=torch.float64)[:, None, None]
    i = torch.arange(grid, dtype=torch.float64)[None, :, None]
    j = torch.arange(grid, dtype=torch.float64)[None, None, :]
    return (2.0 * torch.sin(0.37 * c + 1.3 * i + 0.71 * j + 0.1 * grid)).to(torch.float32)[None]


def deepseek_vit(path, reference):
    """DeepSeek-OCR's own VitModel (CLIP-L) with the reference directory's `model.vision_model.*` weights."""
    sys.modules.setdefault("flash_attn", types.SimpleNamespace(flash_attn_qkvpacked_func=None, flash_attn_func=None))
    spec = importlib.util.spec_from_file_location("deepseek_clip_sdpa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vit = module.build_clip_l().eval()
    prefix = "model.vision_model."
    with safe_open(str(Path(reference) / "model.safetensors"), "pt") as f:
        state = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    assert missing == ["embeddings.position_ids"] and not unexpected, (missing, unexpected)
    return module, vit


def modes(reference, deepseek_clip):
    module, vit = deepseek_vit(deepseek_clip, reference)
    width = vit.embeddings.embed_dim
    channels = slice(0, width, MODE_CHANNEL_STRIDE)
    out = {}
    with torch.no_grad():
        table = vit.embeddings.position_embedding(vit.embeddings.position_ids)
        for g in MODE_GRIDS:
            x = mode_input(width, g)
            positions = module.get_abs_pos(table, g * g + 1).reshape(g * g + 1, width)
            out[f"positions_{g}"] = positions[:, channels]
            y = vit(x, x)
            out[f"clip_out_{g}"] = y[:, :, channels]
            print(f"grid {g}: clip_out {tuple(y.shape)}, |max| {y.abs().max().item():.3f}")
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "reference-modes.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", help="model directory with the regenerated reference weights")
    ap.add_argument("--deepseek-clip", help="DeepSeek-OCR's deepencoder/clip_sdpa.py")
    args = ap.parse_args()
    if args.reference:
        assert args.deepseek_clip, "--reference needs --deepseek-clip"
        modes(args.reference, args.deepseek_clip)
    else:
        tiny()


if __name__ == "__main__":
    main()
