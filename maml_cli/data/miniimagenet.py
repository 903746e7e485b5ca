"""mini-ImageNet (Vinyals et al., 2016) in the split of Ravi & Larochelle (2017): 64/16/20 classes of 600
RGB images. It cannot be downloaded; the data root (see ``storage``) must hold one of two forms:

- ``train.csv``, ``val.csv``, ``test.csv`` (columns ``filename,label``) and the ``images/`` folder they
  name: decoded once, resized to ``image_size``, and cached;
- ``mini-imagenet-cache-{train,val,test}.pkl``: pickled dicts of ``image_data`` (``uint8 [N, 84, 84, 3]``)
  and ``class_dict`` (class -> list of indices into ``image_data``); used where both forms are present.
  Unpickling can run code stored in the file: use only pickles from a source you trust.
"""

from __future__ import annotations

import csv
import pickle
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from maml_cli.data.config import DatasetConfig, Resample, choice
from maml_cli.data.dataset import ImageDataset
from maml_cli.data.images import decode_images
from maml_cli.data.sampler import ClassPool
from maml_cli.data.splits import SPLITS
from maml_cli.data.storage import cached, data_roots, find_root, fingerprint
from maml_cli.errors import MamlError

CSVS = [f"{s}.csv" for s in SPLITS]
PICKLES = [f"mini-imagenet-cache-{s}.pkl" for s in SPLITS]


def _has_csv(root: Path) -> bool:
    return all((root / f).is_file() for f in CSVS) and (root / "images").is_dir()


def _has_pickles(root: Path) -> bool:
    return all((root / f).is_file() for f in PICKLES)


@dataclass
class MiniImageNetConfig(DatasetConfig):
    channels: ClassVar[int] = 3  # RGB
    name: str = "miniimagenet"
    image_size: int = 84
    resample: Resample = Resample.bilinear


class MiniImageNet(ImageDataset):
    config = MiniImageNetConfig
    name = config.name

    def __init__(self, cfg: MiniImageNetConfig):
        root = find_root(cfg, lambda r: _has_pickles(r) or _has_csv(r))
        if root is None:
            searched = ", ".join(str(r) for r in data_roots(cfg))
            raise MamlError(
                f"mini-ImageNet not found (looked in {searched}); it cannot be downloaded "
                f"automatically: put either {', '.join(CSVS)} and the images/ folder, "
                f"or {', '.join(PICKLES)}, in {data_roots(cfg)[0]} (or set dataset.root)"
            )
        size, resample = int(cfg.image_size), choice(cfg.resample)
        if _has_pickles(root):
            pools = {s: _from_pickle(root / f, size, resample) for s, f in zip(SPLITS, PICKLES)}
        else:
            images = fingerprint(root / "images")
            pools = {}
            for split, name in zip(SPLITS, CSVS):
                key = {"csv": fingerprint(root / name), "images": images, "image_size": size, "resample": resample}
                data = cached(cfg, f"miniimagenet-{split}", key, partial(_from_csv, root, name, size, resample))
                pools[split] = ClassPool(data["images"], data["counts"], tuple(data["classes"]))
        super().__init__(pools)


def _from_csv(root: Path, name: str, size: int, resample: str) -> dict[str, Any]:
    """The images listed in ``root/name``, grouped by label (sorted; CSV order within a label)."""
    try:
        with (root / name).open(newline="") as f:
            header, *rows = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise MamlError(f"cannot read {root / name} ({err}); expected a CSV with columns filename,label") from err
    if header != ["filename", "label"] or not rows or any(len(row) != 2 for row in rows):
        raise MamlError(f"{root / name} is not a CSV with columns filename,label and one row per image")
    rows.sort(key=lambda row: row[1])
    counts = Counter(label for _, label in rows)
    classes = sorted(counts)
    named = ((str(root / "images" / file), root / "images" / file) for file, _ in rows)
    images = decode_images(named, len(rows), MiniImageNetConfig.channels, size, resample)
    return {"images": images, "counts": torch.tensor([counts[c] for c in classes]), "classes": classes}


def _from_pickle(path: Path, size: int, resample: str) -> ClassPool:
    try:
        with path.open("rb") as f:
            data = pickle.load(f)  # noqa: S301 -- the format is a pickle; see the module docstring
        images = np.asarray(data["image_data"], dtype=np.uint8)
        classes = sorted(data["class_dict"])
        index = [int(i) for c in classes for i in data["class_dict"][c]]
        counts = torch.tensor([len(data["class_dict"][c]) for c in classes])
    except Exception as err:  # unpickling fails in many ways
        raise MamlError(
            f"cannot read mini-ImageNet pickle {path} ({err!r}); expected a dict with image_data "
            "(uint8 [N, 84, 84, 3]) and class_dict (class -> indices)"
        ) from err
    if images.ndim != 4 or images.shape[-1] != 3 or (index and max(index) >= len(images)):
        raise MamlError(
            f"{path}: image_data has shape {images.shape} for indices up to {max(index, default=0)}; "
            "expected [N, 84, 84, 3] covering every index of class_dict"
        )
    images = images[index]
    if images.shape[1:3] != (size, size):
        named = ((f"{path}[{i}]", image) for i, image in zip(index, images))
        tensor = decode_images(named, len(images), MiniImageNetConfig.channels, size, resample)
    else:
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ClassPool(tensor, counts, tuple(classes))
