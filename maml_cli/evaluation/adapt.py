"""``maml-adapt``: deploy a meta-learned classifier on your own images.

The support folder holds one sub-folder of labelled images per class (N classes, K images each,
read from the folders); the query folder holds the images to classify. Images are converted as the
checkpoint's dataset config says: colour mode, size, resampling filter and inversion. The W&B run
(``job_type=adapt``) lines up with the training run and declares the checkpoint as its input (see
``Trained.open_run``); it holds the predictions as a table.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
import wandb

from maml_cli.config import AdaptConfig
from maml_cli.data import load_class_folders
from maml_cli.data.images import decode_images, image_files
from maml_cli.errors import MamlError
from maml_cli.evaluation.restore import load_trained, restore_learner
from maml_cli.runs.checkpoints import atomic_write
from maml_cli.runs.tracking import task_tag
from maml_cli.runtime import resolve_device

log = logging.getLogger(__name__)

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # cells a spreadsheet may run as formulas start so (OWASP)


def adapt_folders(config: AdaptConfig, output_dir: Path) -> Path:
    """Adapt on ``config.support``, classify every image of ``config.query``; the path of the CSV written."""
    trained = load_trained(config)
    if trained.task_kind != "classification":
        raise MamlError(
            f"maml-adapt deploys image classifiers, but checkpoint {trained.path} was trained with {trained.describe()}"
        )
    output = _output(config, output_dir)
    dataset = trained.config.dataset  # how the training images were made
    size, channels, resample = dataset.image_size, dataset.channels, dataset.resample
    images, labels, classes = load_class_folders(config.support, channels, size, resample)
    if len(classes) < 2:
        raise MamlError(
            f"support folder {config.support} has 1 class ({classes[0]}), but at least 2 classes are "
            "needed: put each class's images in its own sub-folder"
        )
    trained.check_ways(len(classes), f"support folder {config.support}")
    files = _query_files(Path(config.query).expanduser())
    queries = decode_images(((str(p), p) for p in files), len(files), channels, size, resample)

    device = resolve_device(config.device)
    spec = SimpleNamespace(task_kind="classification", input_shape=(channels, size, size))
    learner = restore_learner(trained, spec, device)
    invert = getattr(dataset, "invert", False)
    x_support, x_query = (_inputs(t, invert).to(device) for t in (images, queries))
    steps = trained.config.algorithm.eval_steps if config.steps is None else config.steps
    params = learner.adapt(x_support, labels.to(device), steps=steps, lr=config.lr)
    logits = learner.predict(params, x_query, step=steps)[:, : len(classes)]
    probability, label = logits.softmax(-1).max(-1)

    rows = [
        [_cell(path.name), _cell(classes[k]), f"{p:.6f}"]
        for path, k, p in zip(files, label.tolist(), probability.tolist())
    ]
    table = io.StringIO(newline="")
    csv.writer(table).writerows([["file", "class", "probability"], *rows])
    atomic_write(output, table.getvalue().encode())  # all at once: a file already there stays whole if this fails
    shots = torch.bincount(labels).tolist()
    settings = {
        "support": config.support,
        "query": config.query,
        "output": str(output),
        "steps": steps,
        "lr": config.lr,
        "classes": classes,
        "support_images": shots,
    }
    with trained.open_run("adapt", config.logger, output_dir, task_tag(len(classes), min(shots)), settings) as run:
        data = [[name, label, float(p)] for name, label, p in rows]
        run.log({"adapt/predictions": wandb.Table(columns=["file", "class", "probability"], data=data)})
        run.summary.update({"adapt/classes": len(classes), "adapt/query_images": len(files)})
    log.info(
        "adapted to %d classes (%s support images each) in %d steps; %d predictions in %s",
        len(classes),
        shots[0] if len(set(shots)) == 1 else f"{min(shots)}-{max(shots)}",
        steps,
        len(files),
        output,
    )
    return output


def _output(config: AdaptConfig, output_dir: Path) -> Path:
    """The CSV's path, its folder made; refused before any work if no file can be written there."""
    output = Path(config.output).expanduser() if config.output else output_dir / "predictions.csv"
    if output.is_dir():
        raise MamlError(
            f"output={output} is a folder; give the path of a CSV file, e.g. output={output / 'predictions.csv'}"
        )
    blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise MamlError(
            f"cannot write output={output}: {blocker} is a file, not a folder; give the path of a CSV file in a folder"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output.parent).close()
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise MamlError(
            f"cannot write output={output}: {err.strerror or err}{where}; give the path of a CSV file "
            "in a folder you can write"
        ) from None
    return output


def _cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text: prefixed with ``'`` if it starts like a formula
    (OWASP's defence against CSV injection)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _query_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise MamlError(f"query folder {folder} does not exist")
    files = image_files(folder)
    if not files:
        raise MamlError(f"query folder {folder} has no images; put the images to classify directly in it")
    return files


def _inputs(images: torch.Tensor, invert: bool) -> torch.Tensor:
    """``uint8`` images as the model's float inputs in [0, 1], inverted like the training data if it was."""
    x = images.float().div_(255)
    return 1 - x if invert else x
