"""Few-shot classification from your own images, in one of two layouts under the data root:

- ``train/``, ``val/``, ``test/``, each holding one sub-folder of images per class;
- one sub-folder per class, the classes split into train/val/test in the proportions ``split_ratios``,
  shuffled with ``split_seed``.

Images of any size and colour mode become ``channels`` x ``image_size`` x ``image_size`` (see
``images``); files without an image extension are ignored. Classes may hold different numbers of
images. The decoded images are cached, keyed by the files' names, sizes and modification times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maml_cli.data.config import DatasetConfig, Resample, choice
from maml_cli.data.dataset import ImageDataset
from maml_cli.data.images import load_class_folders
from maml_cli.data.sampler import ClassPool
from maml_cli.data.splits import SPLITS, ratio_split
from maml_cli.data.storage import cached, data_roots, find_root, fingerprint
from maml_cli.errors import MamlError


@dataclass
class FolderConfig(DatasetConfig):
    name: str = "folder"
    image_size: int = 28
    channels: int = 3  # 1 = grayscale, 3 = RGB
    resample: Resample = Resample.bilinear
    split_ratios: list[float] = field(default_factory=lambda: [0.64, 0.16, 0.20])  # for a single folder of classes
    split_seed: int = 0
    augment_splits: list[str] = field(default_factory=list)


class ImageFolder(ImageDataset):
    config = FolderConfig
    name = config.name

    def __init__(self, cfg: FolderConfig):
        root = find_root(cfg, lambda r: r.is_dir())
        if root is None:
            searched = ", ".join(str(r) for r in data_roots(cfg))
            raise MamlError(
                f"image folder not found (looked in {searched}); set dataset.root to a folder of "
                "class folders, or of train/, val/ and test/ folders of class folders"
            )
        present = [s for s in SPLITS if (root / s).is_dir()]
        if present and len(present) < len(SPLITS):
            missing = [s for s in SPLITS if s not in present]
            raise MamlError(
                f"{root} has {', '.join(s + '/' for s in present)} but no "
                f"{', '.join(s + '/' for s in missing)}: give all of "
                "train/, val/ and test/, or only class folders (split by split_ratios)"
            )
        folders = {s: root / s for s in SPLITS} if present else {"all": root}
        channels, size, resample = int(cfg.channels), int(cfg.image_size), choice(cfg.resample)
        key = {
            "root": str(root.resolve()),
            "files": fingerprint(root),
            "channels": channels,
            "image_size": size,
            "resample": resample,
        }

        def build() -> dict[str, Any]:
            loaded = {n: load_class_folders(f, channels, size, resample) for n, f in folders.items()}
            return {
                n: {"images": x, "counts": y.bincount(minlength=len(c)), "classes": c}
                for n, (x, y, c) in loaded.items()
            }

        data = cached(cfg, "folder", key, build)
        pools = {n: ClassPool(d["images"], d["counts"], tuple(d["classes"])) for n, d in data.items()}
        if not present:
            split = ratio_split(pools["all"].names, list(cfg.split_ratios), int(cfg.split_seed))
            pools = {s: pools["all"].select(index) for s, index in split.items()}
        super().__init__(pools, list(cfg.augment_splits))
