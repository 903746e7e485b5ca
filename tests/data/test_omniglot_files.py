"""Omniglot's handling of its files, on tiny stand-in archives: layouts, cache, and every bad input."""

from __future__ import annotations

import io
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maml_cli.data import Omniglot, OmniglotConfig
from maml_cli.errors import MamlError

CHARACTERS = {
    "images_background": ["Alpha/character01", "Alpha/character02", "Beta/character01"],
    "images_evaluation": ["Gamma/character01"],
}


def png(seed: int) -> bytes:
    """A 105x105 1-bit image like Omniglot's: a black stroke on white."""
    pixels = np.ones((105, 105), dtype=bool)
    row = 10 + seed % 80
    pixels[row : row + 8, 20:90] = False
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_archives(root: Path, drawers: int = 20, broken: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for archive, characters in CHARACTERS.items():
        with zipfile.ZipFile(root / f"{archive}.zip", "w") as zf:
            for c, character in enumerate(characters):
                for d in range(drawers):
                    member = f"{archive}/{character}/{c:04d}_{d + 1:02d}.png"
                    zf.writestr(member, b"not a png" if member == broken else png(7 * c + d))
    return root


def config(tmp_path: Path, **changes) -> OmniglotConfig:
    values = dict(
        root=str(tmp_path / "omniglot"),
        cache_dir=str(tmp_path / "cache"),
        download=False,
        split="lake",
        augment_splits=[],
    )
    return OmniglotConfig(**{**values, **changes})


@pytest.fixture(autouse=True)
def archives(tmp_path):
    return write_archives(tmp_path / "omniglot")


def test_reads_the_zip_archives_and_their_extracted_folders_alike(tmp_path):
    from_zip = Omniglot(config(tmp_path)).pool("train")
    extracted = tmp_path / "extracted"
    for archive in CHARACTERS:
        with zipfile.ZipFile(tmp_path / "omniglot" / f"{archive}.zip") as zf:
            zf.extractall(extracted)
    from_folders = Omniglot(config(tmp_path, root=str(extracted), cache_dir=str(tmp_path / "cache2"))).pool("train")
    assert from_folders.names == from_zip.names and torch.equal(from_folders.images, from_zip.images)


def test_macos_clutter_in_the_archives_and_their_extracted_folders_is_skipped(tmp_path):
    clean = Omniglot(config(tmp_path))
    for archive, characters in CHARACTERS.items():
        with zipfile.ZipFile(tmp_path / "omniglot" / f"{archive}.zip", "a") as zf:
            zf.writestr("__MACOSX/", b"")
            for member in (
                f"__MACOSX/{archive}/{characters[0]}/._0000_01.png",
                f"{archive}/.DS_Store",
                f"{archive}/{characters[0]}/._0000_01.png",
            ):
                zf.writestr(member, b"\x00\x05\x16\x07 AppleDouble, not a png")
            zf.extractall(tmp_path / "extracted")
    from_zip = Omniglot(config(tmp_path, cache_dir=str(tmp_path / "cache2")))
    from_folders = Omniglot(config(tmp_path, root=str(tmp_path / "extracted"), cache_dir=str(tmp_path / "cache3")))
    for data in (from_zip, from_folders):
        for split in clean.splits:
            assert data.pool(split).names == clean.pool(split).names
            assert torch.equal(data.pool(split).images, clean.pool(split).images)


def test_lake_split_puts_background_alphabets_in_train_and_val_and_evaluation_alphabets_in_test(tmp_path):
    data = Omniglot(config(tmp_path))
    assert data.pool("test").names == ("Gamma/character01",)
    assert len(data.pool("val").names) == 3 and data.num_classes("train") == 0  # fewer than 5 background alphabets


def test_images_are_resized_with_strokes_one_when_inverted_and_zero_otherwise(tmp_path):
    inverted = Omniglot(config(tmp_path, image_size=14)).pool("test").images
    plain = Omniglot(config(tmp_path, image_size=14, invert=False)).pool("test").images
    assert inverted.shape == (20, 1, 14, 14) and torch.equal(inverted, 255 - plain)
    assert inverted.float().mean() < 40  # mostly background (0), a bright stroke


def test_the_cache_is_one_file_and_a_corrupt_cache_file_is_rebuilt(tmp_path):
    first = Omniglot(config(tmp_path)).pool("val").images
    (cache,) = (tmp_path / "cache").iterdir()
    cache.write_bytes(b"truncated")
    assert torch.equal(Omniglot(config(tmp_path)).pool("val").images, first)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.name] and cache.stat().st_size > 1000


def test_missing_archives_without_download_name_both_files_and_the_folder(tmp_path):
    empty = tmp_path / "nowhere"
    with pytest.raises(MamlError, match=r"images_background\.zip and images_evaluation\.zip .* in " + str(empty)):
        Omniglot(config(tmp_path, root=str(empty)))


def test_a_failed_download_names_both_files_and_the_folder_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def offline(url, root, filename):
        Path(root, filename).parent.mkdir(parents=True, exist_ok=True)
        Path(root, filename).write_bytes(b"partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    target = tmp_path / "download-here"
    with pytest.raises(
        MamlError,
        match=r"cannot download Omniglot.*no network.*images_background\.zip and "
        r"images_evaluation\.zip .* in " + str(target),
    ):
        Omniglot(config(tmp_path, root=str(target), download=True))
    assert not list(target.iterdir())


def test_the_data_root_falls_back_to_maml_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_DATA_ROOT", str(tmp_path))
    assert Omniglot(config(tmp_path, root=None)).num_classes("test") == 1


def test_a_corrupt_zip_is_named(tmp_path):
    (tmp_path / "omniglot" / "images_evaluation.zip").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(MamlError, match=r"cannot read Omniglot archive .*images_evaluation\.zip"):
        Omniglot(config(tmp_path))


def test_an_unreadable_png_is_named_with_its_archive(tmp_path):
    member = "images_background/Beta/character01/0002_05.png"
    write_archives(tmp_path / "omniglot", broken=member)
    with pytest.raises(MamlError, match=r"cannot read image .*images_background\.zip:" + member):
        Omniglot(config(tmp_path))


def test_a_character_without_20_drawings_is_named(tmp_path):
    write_archives(tmp_path / "omniglot", drawers=19)
    with pytest.raises(MamlError, match=r"character images_background/Alpha/character01 has 19 images, expected 20"):
        Omniglot(config(tmp_path))


def test_the_maml_split_needs_the_complete_set(tmp_path):
    with pytest.raises(MamlError, match="maml split needs more than 1200 Omniglot characters, found 4"):
        Omniglot(config(tmp_path, split="maml"))
