"""Reading images into tensors: the one place image files are decoded, shared by the image datasets
and by deployment. Images of any size and colour mode (16-bit ones scaled to 8 bits) are converted to
``channels`` (1: grayscale, 3: RGB) and resized (not cropped) to ``image_size`` x ``image_size`` with the
given PIL filter."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from maml_cli.data.config import Resample, choice
from maml_cli.data.storage import is_clutter
from maml_cli.errors import MamlError

MODES = {1: "L", 3: "RGB"}
FILTERS = {r.value: Image.Resampling[r.name.upper()] for r in Resample}
SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def _open(source: Path | bytes | np.ndarray) -> Image.Image:
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer image (PIL modes ``I;16*``, ``I``) scaled to 8 bits by the maximum of its
    samples' type (65535 becomes 255), where PIL's own conversion would clip it to 255; others unchanged."""
    if not img.mode.startswith("I"):
        return img
    pixels = np.asarray(img)
    top = 65535 if img.format in ("PNG", "PPM") else np.iinfo(pixels.dtype).max  # 16-bit files, even in mode I
    scaled = pixels.astype(np.float64) * (255 / top)
    return Image.fromarray(np.clip(scaled.round(), 0, 255).astype(np.uint8))


def decode_image(
    source: Path | bytes | np.ndarray, channels: int, image_size: int, resample: Any, name: str | None = None
) -> Tensor:
    """``uint8 [channels, image_size, image_size]`` from an image file, its bytes or an ``HxW[xC]`` uint8
    array; errors name ``name``."""
    if channels not in MODES:
        raise MamlError(f"channels={channels} is not supported; choose 1 (grayscale) or 3 (RGB)")
    if choice(resample) not in FILTERS:
        raise MamlError(f"resample={choice(resample)!r} is not supported; choose one of {', '.join(FILTERS)}")
    try:
        with _open(source) as img:
            img = _eight_bit(img).convert(MODES[channels]).resize((image_size, image_size), FILTERS[choice(resample)])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise MamlError(f"cannot read image {name or source}: {err}") from err
    return torch.from_numpy(np.array(img, dtype=np.uint8).reshape(image_size, image_size, channels)).permute(2, 0, 1)


def load_image(path: str | Path, channels: int, image_size: int, resample: Any = "bilinear") -> Tensor:
    """``float32 [channels, image_size, image_size]`` in [0, 1], as the datasets feed models."""
    return decode_image(Path(path), channels, image_size, resample).float().div_(255)


def decode_images(
    named: Iterable[tuple[str, Path | bytes | np.ndarray]], count: int, channels: int, image_size: int, resample: Any
) -> Tensor:
    """``uint8 [count, C, H, W]`` from ``count`` (name, source) pairs; shows progress when slow."""
    images = torch.empty(count, channels, image_size, image_size, dtype=torch.uint8)
    pairs = tqdm(named, total=count, desc="decoding images", unit="img", delay=2, mininterval=1, leave=False)
    for i, (name, source) in enumerate(pairs):
        images[i] = decode_image(source, channels, image_size, resample, name)
    return images


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; other and hidden files are ignored."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not is_clutter(p.name) and p.is_file()
    )


def load_class_folders(
    folder: str | Path, channels: int, image_size: int, resample: Any = "bilinear"
) -> tuple[Tensor, Tensor, list[str]]:
    """The images of ``folder/<class>/*``: ``uint8 [N, C, H, W]`` (divide by 255 for a model's input),
    their labels ``int64 [N]`` (``0..classes-1``, images grouped by class) and the class names, sorted."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MamlError(f"image folder {folder} does not exist")
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not is_clutter(d.name))  # no __MACOSX/
    if not classes:
        raise MamlError(f"{folder} has no class folders; put each class's images in a sub-folder named after the class")
    files = [image_files(d) for d in classes]
    for d, f in zip(classes, files):
        if not f:
            raise MamlError(f"class folder {d} has no images (looked for {', '.join(sorted(SUFFIXES))})")
    paths = [p for f in files for p in f]
    images = decode_images(((str(p), p) for p in paths), len(paths), channels, image_size, resample)
    labels = torch.arange(len(classes)).repeat_interleave(torch.tensor([len(f) for f in files]))
    return images, labels, [d.name for d in classes]
