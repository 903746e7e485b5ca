"""A regular (non-editable) install ships the Hydra configs and runs from any directory."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("maml_cli-*.whl"))


def test_the_wheel_contains_every_config_file(wheel):
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("maml_cli/conf/")}
    expected = {f"maml_cli/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and expected <= shipped


def test_an_installed_wheel_composes_its_config_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import sys, maml_cli; from maml_cli.cli.train import main;"
        "print('package:', maml_cli.__file__); sys.argv = ['maml-train', '--cfg', 'job', 'dataset=omniglot']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert f"package: {site}" in result.stdout
    assert "name: omniglot" in result.stdout
