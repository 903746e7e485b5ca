"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015): 1623 handwritten characters of 50 alphabets,
drawn by 20 people each.

Reads the official ``images_background.zip`` and ``images_evaluation.zip`` (or the folders they
extract to, ``<archive>/<alphabet>/<character>/<id>_<drawer>.png``) from the data root (see
``storage``), downloading them when ``download`` is set. The 1-bit PNGs are made 8-bit grayscale
(for which PIL honours every ``resample`` filter), resized to ``image_size`` and, with ``invert``,
inverted so strokes are 1 on a 0 background. The resized images, ``uint8 [1623, 20, 1, H, W]``, are
cached, keyed by the archives' content, ``image_size`` and ``resample``. Splits: see ``splits``.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from maml_cli.data.config import DatasetConfig, Resample, choice
from maml_cli.data.dataset import ImageDataset
from maml_cli.data.images import decode_images
from maml_cli.data.sampler import ClassPool
from maml_cli.data.splits import omniglot_split
from maml_cli.data.storage import cached, data_roots, find_root, fingerprint, is_clutter
from maml_cli.errors import MamlError

URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
ARCHIVES = ("images_background", "images_evaluation")
DRAWERS = 20
FILES = " and ".join(f"{a}.zip" for a in ARCHIVES)


class OmniglotSplit(str, Enum):
    maml = "maml"  # 1100/100/423 characters, seeded shuffle as in the original MAML code
    lake = "lake"  # background alphabets (train, minus a seeded validation slice) / evaluation alphabets


@dataclass
class OmniglotConfig(DatasetConfig):
    channels: ClassVar[int] = 1  # grayscale
    name: str = "omniglot"
    split: OmniglotSplit = OmniglotSplit.maml
    split_seed: int = 1
    image_size: int = 28
    resample: Resample = Resample.lanczos
    invert: bool = True  # strokes become 1 on a 0 background, as in the MAML code
    augment_splits: list[str] = field(default_factory=lambda: ["train"])  # rotations 0/90/180/270 as new classes
    download: bool = True


class Omniglot(ImageDataset):
    config = OmniglotConfig
    name = config.name

    def __init__(self, cfg: OmniglotConfig):
        sources = _locate(cfg)
        size, resample = int(cfg.image_size), choice(cfg.resample)
        key = {"sources": {a: fingerprint(p) for a, p in sources.items()}, "image_size": size, "resample": resample}
        data = cached(cfg, "omniglot", key, lambda: _build(sources, size, resample))
        images = 255 - data["images"] if cfg.invert else data["images"]
        names = [c.split("/", 1)[1] for c in data["classes"]]  # <alphabet>/<character>
        split = omniglot_split(data["classes"], choice(cfg.split), int(cfg.split_seed))
        pools = {s: ClassPool.from_blocks(images[idx], [names[i] for i in idx]) for s, idx in split.items()}
        super().__init__(pools, list(cfg.augment_splits))


def _source(root: Path, archive: str) -> Path | None:
    """The archive's zip file under ``root``, else its extracted folder, else None."""
    return next((p for p in (root / f"{archive}.zip", root / archive) if p.exists()), None)


def _locate(cfg: OmniglotConfig) -> dict[str, Path]:
    """Each archive's zip or folder, downloaded into the preferred root if no root has them all."""
    root = find_root(cfg, lambda r: all(_source(r, a) for a in ARCHIVES))
    if root is None:
        root = data_roots(cfg)[0]
        if not cfg.download:
            searched = ", ".join(str(r) for r in data_roots(cfg))
            raise MamlError(
                f"Omniglot not found (looked in {searched}): put {FILES} from {URL} in {root}, or set download=true"
            )
        _download(root, [a for a in ARCHIVES if _source(root, a) is None])
    return {a: _source(root, a) for a in ARCHIVES}


def _download(root: Path, archives: list[str]) -> None:
    from torchvision.datasets.utils import download_url

    for archive in archives:
        try:
            download_url(URL + f"{archive}.zip", root, f"{archive}.zip")
        except Exception as err:  # network errors come in many types
            (root / f"{archive}.zip").unlink(missing_ok=True)
            raise MamlError(
                f"cannot download Omniglot ({err}); download {FILES} from {URL} and put them in {root}"
            ) from err


def _pngs(source: Path, stack: ExitStack) -> dict[str, tuple[str, Callable[[], Path | bytes]]]:
    """``<archive>/<alphabet>/<character>/<file>.png`` -> (name for messages, reader) in a zip or folder,
    without macOS clutter (``__MACOSX/``, ``._*``)."""
    if source.is_dir():
        pngs = {p.relative_to(source.parent).as_posix(): p for p in source.rglob("*.png")}
        return {rel: (str(p), lambda p=p: p) for rel, p in pngs.items() if not is_clutter(rel)}
    try:
        archive = stack.enter_context(zipfile.ZipFile(source))
    except (zipfile.BadZipFile, OSError) as err:
        raise MamlError(
            f"cannot read Omniglot archive {source} ({err}); replace it with a fresh copy of {URL}{source.name}"
        ) from err

    def read(member: str) -> bytes:
        try:
            return archive.read(member)
        except (zipfile.BadZipFile, zlib.error, OSError) as err:
            raise MamlError(f"corrupt file {member} in Omniglot archive {source} ({err}); replace the archive") from err

    return {
        m: (f"{source}:{m}", lambda m=m: read(m))
        for m in archive.namelist()
        if m.endswith(".png") and not is_clutter(m)
    }


def _build(sources: dict[str, Path], size: int, resample: str) -> dict[str, Any]:
    """Every character's images, ``uint8 [characters, DRAWERS, 1, size, size]``, and the character ids."""
    with ExitStack() as stack:
        files = {rel: entry for source in sources.values() for rel, entry in _pngs(source, stack).items()}
        characters: dict[str, list[str]] = {}
        for rel in sorted(files):
            characters.setdefault(rel.rsplit("/", 1)[0], []).append(rel)
        for character, pngs in characters.items():
            if len(pngs) != DRAWERS or character.count("/") != 2:
                raise MamlError(
                    f"Omniglot character {character} has {len(pngs)} images, expected {DRAWERS} in "
                    "<archive>/<alphabet>/<character>/; replace the archives with fresh copies"
                )
        named = ((files[rel][0], files[rel][1]()) for pngs in characters.values() for rel in pngs)
        images = decode_images(named, len(characters) * DRAWERS, OmniglotConfig.channels, size, resample)
    return {
        "images": images.view(len(characters), DRAWERS, OmniglotConfig.channels, size, size),
        "classes": list(characters),
    }
