"""mini-ImageNet from tiny stand-ins of both on-disk forms: CSV + images/, and pickled split caches."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maml_cli.data import MiniImageNet, MiniImageNetConfig
from maml_cli.errors import MamlError

SPLITS = ("train", "val", "test")
CLASSES, PER_CLASS = 5, 6


def split_images(split: str) -> tuple[np.ndarray, list[str]]:
    """8x8 RGB images, image ``i`` of class ``i % CLASSES`` (classes interleaved, as files often are)."""
    rng = np.random.default_rng(SPLITS.index(split))
    labels = [f"n{SPLITS.index(split)}{i % CLASSES:07d}" for i in range(CLASSES * PER_CLASS)]
    return rng.integers(0, 256, (CLASSES * PER_CLASS, 8, 8, 3), dtype=np.uint8), labels


def write_pickles(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        images, labels = split_images(split)
        class_dict = {c: [i for i, label in enumerate(labels) if label == c] for c in sorted(set(labels))}
        with (root / f"mini-imagenet-cache-{split}.pkl").open("wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f)
    return root


def write_csvs(root: Path) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        images, labels = split_images(split)
        with (root / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for i, (image, label) in enumerate(zip(images, labels)):
                Image.fromarray(image).save(root / "images" / f"{split}{i:03d}.png")
                writer.writerow([f"{split}{i:03d}.png", label])
    return root


def load(root: Path, tmp_path: Path, image_size: int = 8) -> MiniImageNet:
    return MiniImageNet(MiniImageNetConfig(root=str(root), cache_dir=str(tmp_path / "cache"), image_size=image_size))


@pytest.mark.parametrize("image_size", [8, 4])
def test_both_forms_give_the_same_classes_and_images(tmp_path, image_size):
    from_pickles = load(write_pickles(tmp_path / "pkl"), tmp_path, image_size)
    from_csvs = load(write_csvs(tmp_path / "csv"), tmp_path, image_size)
    for split in SPLITS:
        assert from_pickles.pool(split).names == from_csvs.pool(split).names
        assert torch.equal(from_pickles.pool(split).images, from_csvs.pool(split).images)
    assert from_csvs.input_shape == (3, image_size, image_size)


def test_classes_are_sorted_with_every_image_of_a_class_together(tmp_path):
    data = load(write_pickles(tmp_path / "pkl"), tmp_path)
    images, labels = split_images("val")
    pool = data.pool("val")
    assert pool.names == tuple(sorted(set(labels))) and pool.counts.tolist() == [PER_CLASS] * CLASSES
    first_class = torch.from_numpy(images[[i for i, label in enumerate(labels) if label == pool.names[0]]])
    assert torch.equal(pool.images[:PER_CLASS], first_class.permute(0, 3, 1, 2))


def test_batches_are_rgb_with_the_documented_shapes(tmp_path):
    batch = load(write_csvs(tmp_path / "csv"), tmp_path).sampler("train", 5, 1, 5).sample(2)
    assert batch.x_support.shape == (2, 5, 3, 8, 8) and batch.x_query.shape == (2, 25, 3, 8, 8)
    assert 0 <= batch.x_query.min() and batch.x_query.max() <= 1


def test_impossible_tasks_name_the_limits(tmp_path):
    data = load(write_pickles(tmp_path / "pkl"), tmp_path)
    with pytest.raises(MamlError, match="ways=6 but split 'test' of miniimagenet has only 5 classes; choose ways <= 5"):
        data.sampler("test", 6, 1, 1)
    with pytest.raises(MamlError, match=r"shots\+queries=7 but class 'n10000000' in split 'val' .* only 6 images"):
        data.episodes("val", 2, 2, 5, num_tasks=1)


def test_a_missing_dataset_says_which_files_to_put_where(tmp_path):
    with pytest.raises(
        MamlError,
        match=r"cannot be downloaded.*train\.csv, val\.csv, test\.csv and the images/ "
        r"folder, or mini-imagenet-cache-train\.pkl.* in " + str(tmp_path / "none"),
    ):
        load(tmp_path / "none", tmp_path)


def test_an_unreadable_csv_is_named(tmp_path):
    root = write_csvs(tmp_path / "csv")
    (root / "val.csv").write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(MamlError, match=r"val\.csv"):
        load(root, tmp_path)


def test_a_csv_naming_a_missing_image_names_the_image(tmp_path):
    root = write_csvs(tmp_path / "csv")
    (root / "images" / "test004.png").unlink()
    with pytest.raises(MamlError, match=r"cannot read image .*test004\.png"):
        load(root, tmp_path)


def test_an_unreadable_pickle_is_named(tmp_path):
    root = write_pickles(tmp_path / "pkl")
    (root / "mini-imagenet-cache-test.pkl").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(MamlError, match=r"cannot read mini-ImageNet pickle .*mini-imagenet-cache-test\.pkl"):
        load(root, tmp_path)


def test_a_pickle_without_the_expected_keys_is_named(tmp_path):
    root = write_pickles(tmp_path / "pkl")
    with (root / "mini-imagenet-cache-val.pkl").open("wb") as f:
        pickle.dump({"images": []}, f)
    with pytest.raises(MamlError, match=r"mini-imagenet-cache-val\.pkl .*expected a dict with image_data"):
        load(root, tmp_path)
