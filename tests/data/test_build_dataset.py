"""``build_dataset``: one entry point for typed configs and Hydra's DictConfigs alike."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from maml_cli.data import FewShotDataset, FolderConfig, ImageFolder, Sinusoid, SinusoidConfig, build_dataset
from maml_cli.errors import MamlError


def test_builds_the_dataset_named_by_a_typed_config():
    data = build_dataset(SinusoidConfig(amplitude=[1.0, 2.0]))
    assert isinstance(data, Sinusoid) and isinstance(data, FewShotDataset) and data.amplitude == (1.0, 2.0)


def test_accepts_structured_and_plain_dictconfigs_with_enum_or_text_choices(tmp_path, class_tree):
    root = class_tree(tmp_path / "classes", {name: 3 for name in "abcde"})
    structured = OmegaConf.structured(FolderConfig(root=str(root), cache_dir=str(tmp_path / "c"), image_size=5))
    plain = OmegaConf.create({**OmegaConf.to_container(structured, enum_to_str=True), "resample": "lanczos"})
    for cfg in (structured, plain):
        data = build_dataset(cfg)
        assert isinstance(data, ImageFolder) and data.input_shape == (3, 5, 5)
        assert sum(data.num_classes(s) for s in data.splits) == 5


def test_an_unknown_dataset_lists_the_known_ones():
    with pytest.raises(MamlError, match="unknown dataset 'cifar'; choose one of omniglot, sinusoid, miniimagenet"):
        build_dataset(OmegaConf.create({"name": "cifar"}))


def test_an_unknown_resample_filter_lists_the_known_ones(tmp_path, class_tree):
    root = class_tree(tmp_path / "classes", {"a": 2})
    with pytest.raises(MamlError, match="resample='cubic' is not supported; choose one of lanczos, bilinear"):
        build_dataset(
            OmegaConf.create(
                {
                    "name": "folder",
                    "root": str(root),
                    "cache_dir": str(tmp_path / "c"),
                    "image_size": 5,
                    "channels": 3,
                    "resample": "cubic",
                    "split_ratios": [1, 0, 0],
                    "split_seed": 0,
                    "augment_splits": [],
                }
            )
        )
