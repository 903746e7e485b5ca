"""Your own image folders: both layouts, any image size and colour mode, ragged classes, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maml_cli.data import FolderConfig, ImageFolder, load_class_folders, load_image
from maml_cli.errors import MamlError


def load(root: Path, tmp_path: Path, **changes) -> ImageFolder:
    return ImageFolder(FolderConfig(root=str(root), cache_dir=str(tmp_path / "cache"), image_size=6, **changes))


@pytest.fixture
def split_folders(tmp_path, class_tree) -> Path:
    root = tmp_path / "splits"
    class_tree(root / "train", {"cat": 4, "dog": 6, "emu": 5})
    class_tree(root / "val", {"fox": 3, "gnu": 3})
    class_tree(root / "test", {"hen": 4, "ibis": 3}, seed=50)
    return root


def test_train_val_test_folders_are_the_splits_and_their_sub_folders_the_classes(split_folders, tmp_path):
    data = load(split_folders, tmp_path)
    assert data.pool("train").names == ("cat", "dog", "emu") and data.pool("train").counts.tolist() == [4, 6, 5]
    assert [data.num_classes(s) for s in data.splits] == [3, 2, 2]
    assert data.input_shape == (3, 6, 6)


def test_any_size_and_colour_mode_becomes_the_configured_channels_and_size(tmp_path, image_file):
    root = tmp_path / "mixed"
    for i, (mode, size, suffix) in enumerate(
        [
            ("RGB", (30, 20), "png"),
            ("L", (5, 9), "png"),
            ("RGBA", (8, 8), "png"),
            ("P", (16, 12), "gif"),
            ("1", (10, 10), "bmp"),
            ("RGB", (7, 7), "jpg"),
        ]
    ):
        image_file(root / "a" / f"{i}.{suffix}", size, mode, seed=i)
        image_file(root / "b" / f"{i}.{suffix}", size, mode, seed=10 + i)
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / ".DS_Store").write_bytes(b"\x00")
    for channels in (1, 3):
        images, labels, names = load_class_folders(root, channels, image_size=6)
        assert images.shape == (12, channels, 6, 6) and images.dtype == torch.uint8
        assert labels.tolist() == [0] * 6 + [1] * 6 and names == ["a", "b"]


@pytest.mark.parametrize("suffix, mode", [("png", "I;16"), ("pgm", "I")])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path, suffix, mode):
    deep = np.random.default_rng(0).permutation(np.linspace(0, 65535, 144).round().astype(np.uint16)).reshape(12, 12)
    Image.fromarray(deep).save(tmp_path / f"deep.{suffix}")
    Image.fromarray((deep / 257).round().astype(np.uint8)).save(tmp_path / "eight.png")
    assert Image.open(tmp_path / f"deep.{suffix}").mode == mode  # PIL's own conversion clips these to 255
    for channels in (1, 3):
        image = load_image(tmp_path / f"deep.{suffix}", channels, image_size=12)
        assert (image - load_image(tmp_path / "eight.png", channels, image_size=12)).abs().max() <= 1 / 255
        assert image.min() == 0 and image.max() == 1 and abs(image.mean() - 0.5) < 0.01


def test_load_image_gives_a_float_image_in_zero_one(tmp_path, image_file):
    pixels = image_file(tmp_path / "x.png", (6, 6), "L")
    image = load_image(tmp_path / "x.png", channels=1, image_size=6)
    assert image.shape == (1, 6, 6) and image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(pixels).float().div(255).unsqueeze(0))


def test_a_single_folder_of_classes_is_split_by_seeded_ratios(tmp_path, class_tree):
    root = class_tree(tmp_path / "all", {f"class{i}": 2 + i % 3 for i in range(10)})
    data = load(root, tmp_path, split_ratios=[0.6, 0.2, 0.2])
    names = [set(data.pool(s).names) for s in data.splits]
    assert [len(n) for n in names] == [6, 2, 2] and set.union(*names) == {f"class{i}" for i in range(10)}
    assert load(root, tmp_path, split_ratios=[0.6, 0.2, 0.2]).pool("val").names == data.pool("val").names
    assert load(root, tmp_path, split_ratios=[0.6, 0.2, 0.2], split_seed=5).pool("val").names != data.pool("val").names
    cls = data.pool("train").names[1]
    offset = int(data.pool("train").counts[0])
    images, labels, all_names = load_class_folders(root, 3, 6)
    assert torch.equal(
        data.pool("train").images[offset : offset + int(data.pool("train").counts[1])],
        images[labels == all_names.index(cls)],
    )


def test_ragged_classes_sample_within_their_own_sizes(split_folders, tmp_path):
    data = load(split_folders, tmp_path)
    batch = data.sampler("train", 3, 1, 3).sample(20)
    assert batch.x_support.shape == (20, 3, 3, 6, 6) and batch.x_query.shape == (20, 9, 3, 6, 6)
    with pytest.raises(MamlError, match=r"shots\+queries=5 but class 'cat' in split 'train' of folder has only 4"):
        data.sampler("train", 3, 1, 4)


def test_rotation_augmentation_applies_to_configured_splits(split_folders, tmp_path):
    data = load(split_folders, tmp_path, augment_splits=["train"])
    assert [data.num_classes(s) for s in data.splits] == [12, 2, 2]


def test_an_empty_class_folder_is_named(split_folders, tmp_path):
    (split_folders / "val" / "yak").mkdir()
    with pytest.raises(MamlError, match=r"class folder .*val/yak has no images"):
        load(split_folders, tmp_path)


def test_an_unreadable_image_is_named(split_folders, tmp_path):
    (split_folders / "test" / "hen" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(MamlError, match=r"cannot read image .*test/hen/broken\.jpg"):
        load(split_folders, tmp_path)


def test_an_incomplete_split_layout_is_refused(split_folders, tmp_path):
    shutil.rmtree(split_folders / "val")
    with pytest.raises(MamlError, match="has train/, test/ but no val/: give all of train/, val/ and test/"):
        load(split_folders, tmp_path)


def test_bad_split_ratios_and_missing_root_are_refused(tmp_path, class_tree):
    root = class_tree(tmp_path / "all", {"a": 2, "b": 2})
    with pytest.raises(MamlError, match=r"split_ratios=\[0.5, 0.5, 0.5\] must be three non-negative fractions"):
        load(root, tmp_path, split_ratios=[0.5, 0.5, 0.5])
    with pytest.raises(MamlError, match="image folder not found"):
        load(tmp_path / "missing", tmp_path)


def test_macos_clutter_is_neither_a_class_nor_an_image(split_folders, tmp_path):
    clean = load(split_folders, tmp_path)
    for clutter in (
        "__MACOSX/train/cat/._00.png",
        "train/__MACOSX/._cat",
        "train/cat/._00.png",
        "train/.DS_Store",
        "val/fox/.DS_Store",
    ):
        (split_folders / clutter).parent.mkdir(parents=True, exist_ok=True)
        (split_folders / clutter).write_bytes(b"\x00\x05\x16\x07 AppleDouble, not an image")
    data = load(split_folders, tmp_path / "other")
    for split in data.splits:
        assert data.pool(split).names == clean.pool(split).names
        assert torch.equal(data.pool(split).images, clean.pool(split).images)


def test_a_split_of_one_class_says_a_task_needs_two(split_folders, tmp_path):
    shutil.rmtree(split_folders / "val" / "gnu")
    with pytest.raises(MamlError, match=r"ways=2 but split 'val' of folder has only 1 class; a task needs at least 2"):
        load(split_folders, tmp_path).sampler("val", 2, 1, 1)
