"""Wrong checkpoints and unfit folders are one-line errors (MamlError), never tracebacks."""

import errno
import os
import shutil
import tempfile

import pytest

from maml_cli.config import AdaptConfig, EvalConfig
from maml_cli.errors import MamlError
from maml_cli.evaluation import adapt_folders, evaluate
from maml_cli.runs import load_checkpoint, save_checkpoint
from tests.evaluation.evaluation_helpers import cli
from tests.evaluation.test_adapt import image


def test_a_missing_checkpoint_is_one_line_on_stderr(tmp_path):
    done = cli("eval", f"checkpoint={tmp_path / 'nope.pt'}", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: no checkpoint file at {tmp_path / 'nope.pt'}"


def test_a_run_directory_without_best_checkpoint(tmp_path):
    with pytest.raises(MamlError, match="no checkpoint file at .*best.pt"):
        evaluate(EvalConfig(run=str(tmp_path)), tmp_path)


def test_a_truncated_checkpoint(sinusoid_run, tmp_path):
    data = (sinusoid_run / "checkpoints" / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MamlError, match="truncated, corrupt or not a maml-cli checkpoint"):
        evaluate(EvalConfig(checkpoint=str(tmp_path / "cut.pt")), tmp_path)


def test_weights_of_another_model(sinusoid_run, tmp_path):
    state = load_checkpoint(sinusoid_run / "checkpoints" / "best.pt")
    state["config"]["model"]["hidden"] = [20, 20]
    save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(
        MamlError,
        match=r"was trained with model mlp hidden=\[20, 20\] for sinusoid regression, "
        r"but its weights do not fit that model \(size mismatch",
    ):
        evaluate(EvalConfig(checkpoint=str(tmp_path / "other.pt")), tmp_path)


def test_more_ways_than_the_head_has_outputs(omniglot_run, omniglot_root, tmp_path):
    config = EvalConfig(run=str(omniglot_run), data_root=str(omniglot_root), ways=6)
    with pytest.raises(MamlError, match="ways=6 has 6 classes, but .* 5-way omniglot: its head tells at most 5"):
        evaluate(config, tmp_path)


def test_checkpoint_and_run_exclude_each_other():
    with pytest.raises(MamlError, match="exactly one of checkpoint=PATH"):
        EvalConfig(checkpoint="a.pt", run="b")
    with pytest.raises(MamlError, match="exactly one of checkpoint=PATH"):
        AdaptConfig(support="s", query="q")


@pytest.fixture
def folders(tmp_path):
    """Two classes of support images and one query image; tests then spoil them."""
    for name in ("a", "b"):
        image(tmp_path / "support" / name / "0.png", (28, 28))
    image(tmp_path / "query" / "0.png", (28, 28))
    return tmp_path


def adapt(run, folders, **changes):
    config = AdaptConfig(run=str(run), support=str(folders / "support"), query=str(folders / "query"), **changes)
    return adapt_folders(config, folders / "out")


def test_a_support_folder_with_one_class(omniglot_run, folders):
    shutil.rmtree(folders / "support" / "b")
    with pytest.raises(
        MamlError,
        match=r"support folder .*support has 1 class \(a\), but at least 2 classes are "
        r"needed: put each class's images in its own sub-folder",
    ):
        adapt(omniglot_run, folders)


def test_an_output_that_is_a_folder_is_refused_and_left_as_it_was(omniglot_run, folders):
    (folders / "results").mkdir()
    (folders / "results" / "keep.csv").write_text("mine")
    with pytest.raises(
        MamlError,
        match=rf"^output={folders / 'results'} is a folder; give the path of a CSV file, "
        rf"e\.g\. output={folders / 'results' / 'predictions.csv'}$",
    ):
        adapt(omniglot_run, folders, output=str(folders / "results"))
    assert [(p.name, p.read_text()) for p in (folders / "results").iterdir()] == [("keep.csv", "mine")]


def test_an_output_inside_a_file_is_one_line_and_the_file_is_left_as_it_was(omniglot_run, folders):
    (folders / "notes.txt").write_text("mine")
    output = folders / "notes.txt" / "sub" / "predictions.csv"
    done = cli(
        "adapt",
        f"run={omniglot_run}",
        f"support={folders / 'support'}",
        f"query={folders / 'query'}",
        f"output={output}",
        f"hydra.run.dir={folders / 'out'}",
        cwd=folders,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Error: cannot write output={output}: {folders / 'notes.txt'} is a file, not a "
        "folder; give the path of a CSV file in a folder"
    )
    assert (folders / "notes.txt").read_text() == "mine"


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(omniglot_run, folders, monkeypatch):
    def read_only(dir):  # what a folder without write permission does (root, running the tests, may write anywhere)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(
        MamlError,
        match=rf"cannot write output=.*p\.csv: Permission denied \({folders / 'locked'}\); "
        "give the path of a CSV file in a folder you can write",
    ):
        adapt(omniglot_run, folders, output=str(folders / "locked" / "p.csv"))


def test_a_failed_write_leaves_an_earlier_csv_whole_and_no_stray_file(omniglot_run, folders, monkeypatch):
    earlier = folders / "p.csv"
    earlier.write_text("file,class,probability\nold.png,a,0.900000\n")
    before = sorted(p.name for p in folders.iterdir())

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(MamlError, match=r"cannot write .*p\.csv: No space left on device"):
        adapt(omniglot_run, folders, output=str(earlier))
    assert earlier.read_text() == "file,class,probability\nold.png,a,0.900000\n"
    assert sorted(p.name for p in folders.iterdir()) == before


def test_an_empty_class_folder(omniglot_run, folders):
    (folders / "support" / "c").mkdir()
    with pytest.raises(MamlError, match="class folder .*c has no images"):
        adapt(omniglot_run, folders)


def test_more_classes_than_the_head_has_outputs(omniglot_run, folders):
    for name in "cdef":
        image(folders / "support" / name / "0.png", (28, 28))
    with pytest.raises(MamlError, match="has 6 classes, but .* its head tells at most 5 classes apart"):
        adapt(omniglot_run, folders)


def test_an_empty_query_folder(omniglot_run, folders):
    (folders / "query" / "0.png").unlink()
    with pytest.raises(MamlError, match="has no images"):
        adapt(omniglot_run, folders)


def test_a_regression_checkpoint_cannot_classify_images(sinusoid_run, folders):
    with pytest.raises(MamlError, match="deploys image classifiers, .* for sinusoid regression"):
        adapt(sinusoid_run, folders)
