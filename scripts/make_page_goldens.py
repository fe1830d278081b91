#!/usr/bin/env python3
"""Golden fixtures for deepsynth's image preprocessing (tests/page.rs): PIL's own padding and bicubic resizing.

Needs only Pillow and numpy, e.g. in a venv outside the repo:
    python3 -m venv /work/venv-pil && /work/venv-pil/bin/pip install pillow numpy
    /work/venv-pil/bin/python scripts/make_page_goldens.py [--reference PATH/input-base-1024.png]

Writes into tests/fixtures/page/:
- small test images with sharp edges (PNG, and one JPEG, drawn here from a fixed seed) and a strip cropped from the reference page;
- goldens.safetensors: uint8 [H, W, 3] arrays, named after what made them:
  `decode_blocks90x140-exif6` = a JPEG as DeepSeek-OCR loads it (EXIF orientation applied, RGB);
  `pad_<image>_<S>` = ImageOps.pad(image, (S, S), color=(127, 127, 127)) as DeepSeek-OCR calls it;
  `resize_refstrip_512` = the 1024-wide reference strip resized to half size with BICUBIC (antialiased downscale).
The safetensors file is written by hand (8-byte header length, JSON header, raw bytes) to need no other package.
"""

import argparse
import json
import struct
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageOps

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "page"
REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared/reference/deepseek-ocr-random-2layer/input-base-1024.png"
# DeepSeek-OCR pads with tuple(int(x * 255) for x in mean), mean = 0.5.
GREY = (int(0.5 * 255),) * 3


def blocks(width, height, seed):
    """Hard-edged rectangles and lines over gradients and a one-pixel checkerboard: ringing, clamping, rounding."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), (xs + ys) % 2 * 255], axis=-1)
    pixels = pixels.astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
        y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    draw.line((0, 0, width - 1, height - 1), fill=(0, 0, 0), width=3)
    draw.line((0, height - 1, width - 1, 0), fill=(255, 255, 255), width=1)
    return image


def save_safetensors(path, arrays):
    header, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
        header[name] = {"dtype": "U8", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"pillow": PIL.__version__, "numpy": np.__version__}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference page (1024x1024 PNG)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    # Sizes chosen so that PIL's round() (half to even) matters: 300x200 -> 64 gives a 43-px-high image at
    # offset round(10.5) = 10; 90x140 -> 200 gives width round(128.57) = 129 at offset round(35.5) = 36;
    # 128x5 -> 64 gives height round(2.5) = 2. 90x140 -> 200 also upscales.
    images = {"blocks300x200": blocks(300, 200, 1), "blocks90x140": blocks(90, 140, 2), "thin128x5": blocks(128, 5, 3)}
    sizes = {"blocks300x200": [64, 128], "blocks90x140": [64, 128, 200], "thin128x5": [64]}
    goldens = {}
    for name, image in images.items():
        image.save(OUT / f"{name}.png")
        reread = Image.open(OUT / f"{name}.png").convert("RGB")
        for size in sizes[name]:
            goldens[f"pad_{name}_{size}"] = np.asarray(ImageOps.pad(reread, (size, size), color=GREY))

    # A JPEG (4:2:0 chroma) tagged with EXIF orientation 6 (rotate 90 degrees clockwise to view): DeepSeek-OCR
    # loads pages with ImageOps.exif_transpose(...).convert("RGB").
    exif = Image.Exif()
    exif[0x0112] = 6
    images["blocks90x140"].save(OUT / "blocks90x140-exif6.jpg", quality=90, exif=exif)
    photo = ImageOps.exif_transpose(Image.open(OUT / "blocks90x140-exif6.jpg")).convert("RGB")
    goldens["decode_blocks90x140-exif6"] = np.asarray(photo)

    # The first two text lines of the reference page, full width: a real 1024 -> 512 antialiased downscale.
    strip = Image.open(args.reference).convert("RGB").crop((0, 40, 1024, 216))
    strip.save(OUT / "refstrip1024x176.png")
    strip = Image.open(OUT / "refstrip1024x176.png").convert("RGB")
    goldens["resize_refstrip_512"] = np.asarray(strip.resize((512, 88), Image.Resampling.BICUBIC))

    save_safetensors(OUT / "goldens.safetensors", goldens)
    for name, array in goldens.items():
        print(f"{name}: {array.shape}")


if __name__ == "__main__":
    main()
