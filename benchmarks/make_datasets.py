"""Write the offline image folders the prior ablations (docs/results.md) use.

    python -m benchmarks.make_datasets --out /work/data

* ``fmnist_classes/<class>/*.png`` and ``fmnist_flat/*.png``: the 60,000 Fashion-MNIST training
  images from Debian's dataset-fashion-mnist, as grayscale PNGs, class-per-folder and flat;
* ``glyphs/<digit>/*.png``: 9,000 28x28 grayscale digits drawn with the system's TrueType fonts
  under random affine distortions and stroke widths: a stroke dataset, unlike garments, of the
  size of the issue's handwritten-digit folder (MNIST itself is not available offline);
* ``colour/*.png``: about 9,600 colour images with transparency, 64x64: the clip art of Debian's
  ``openclipart-png`` and the 32x32 icons of ``oxygen-icon-theme``, each fitted into a transparent
  square; every third is written as a palette PNG with a transparent index, the rest as RGBA
  (the tool composites transparency on black).
"""

from __future__ import annotations

import argparse
import gzip
import random
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FASHION = Path("/usr/share/datasets/fashion-mnist")
COLOUR_SOURCES = [Path("/usr/share/openclipart/png"), Path("/usr/share/icons/oxygen/base/32x32")]
NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    _, _, ndim = struct.unpack(">HBB", raw[:4])
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_folders(out: Path) -> None:
    images, labels = idx(FASHION / "train-images-idx3-ubyte.gz"), idx(FASHION / "train-labels-idx1-ubyte.gz")
    for i, (x, y) in enumerate(zip(images, labels)):
        for path in (out / "fmnist_classes" / NAMES[y] / f"{i:05d}.png", out / "fmnist_flat" / f"{i:05d}.png"):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x, "L").save(path)


def glyph(digit: int, rng: random.Random, fonts: list[str]) -> Image.Image:
    font = ImageFont.truetype(rng.choice(fonts), rng.randint(56, 76))
    canvas = Image.new("L", (112, 112), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((56, 56), str(digit), fill=255, font=font, anchor="mm", stroke_width=rng.randint(0, 4), stroke_fill=255)
    angle, shear = rng.uniform(-18, 18), rng.uniform(-0.3, 0.3)
    canvas = canvas.rotate(angle, resample=Image.BILINEAR, center=(56, 56))
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * 56, 0, 1, 0), resample=Image.BILINEAR)
    box = canvas.getbbox() or (0, 0, 112, 112)
    digit_img = canvas.crop(box)
    scale = 20 / max(digit_img.size)  # MNIST's convention: the digit fits a 20x20 box in a 28x28 image
    digit_img = digit_img.resize((max(1, round(digit_img.width * scale)), max(1, round(digit_img.height * scale))),
                                 Image.LANCZOS)
    image = Image.new("L", (28, 28), 0)
    image.paste(digit_img, ((28 - digit_img.width) // 2 + rng.randint(-2, 2),
                            (28 - digit_img.height) // 2 + rng.randint(-2, 2)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))


def glyph_folder(out: Path, n: int = 9000, seed: int = 0) -> None:
    fonts = sorted(str(p) for p in Path("/usr/share/fonts/truetype").rglob("*.ttf"))
    rng = random.Random(seed)
    for i in range(n):
        digit = i % 10
        path = out / "glyphs" / str(digit) / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        glyph(digit, rng, fonts).save(path)


def colour_folder(out: Path, size: int = 64) -> None:
    files = sorted(p for root in COLOUR_SOURCES for p in root.rglob("*.png"))
    if not files:
        raise SystemExit("no colour sources: apt-get install openclipart-png oxygen-icon-theme")
    (out / "colour").mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as source:
                image = source.convert("RGBA")
        except (Image.DecompressionBombError, OSError):  # a few clip arts are huge or damaged: left out
            continue
        image.thumbnail((size, size), Image.LANCZOS)
        square = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        square.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        if i % 3 == 0:  # a palette image: 255 colours, index 255 transparent
            quantized = square.convert("RGB").quantize(255)
            indices = np.array(quantized)
            indices[np.array(square.getchannel("A")) < 128] = 255
            palette = Image.fromarray(indices, "P")
            palette.putpalette((quantized.getpalette() + [0] * 768)[:765] + [0, 0, 0])
            palette.save(out / "colour" / f"{i:05d}.png", transparency=255)
        else:
            square.save(out / "colour" / f"{i:05d}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/work/data")
    parser.add_argument("--only", choices=("fashion", "glyphs", "colour"))
    args = parser.parse_args()
    out = Path(args.out)
    if args.only in (None, "fashion"):
        fashion_folders(out)
    if args.only in (None, "glyphs"):
        glyph_folder(out)
    if args.only in (None, "colour"):
        colour_folder(out)
