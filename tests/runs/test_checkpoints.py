"""Checkpoint files: written all at once with the mode the umask allows, read safely, one clear error per fault."""

import errno
import os
import stat

import numpy as np
import pytest
import torch

from maml_cli.errors import MamlError
from maml_cli.runs.checkpoints import FORMAT, atomic_write, load_checkpoint, save_checkpoint


def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    monkeypatch.setattr("os.replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(MamlError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "good.pt", {"learner": {"w": torch.zeros(1000)}})
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MamlError, match="truncated, corrupt or not a maml-cli checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(MamlError, match="is not a maml-cli checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": FORMAT, "code": np.dtype("float32")}, tmp_path / "unsafe.pt")  # needs full unpickling
    with pytest.raises(MamlError, match="not a maml-cli checkpoint"):
        load_checkpoint(tmp_path / "unsafe.pt")


def test_a_full_disk_keeps_the_earlier_checkpoint_byte_for_byte(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1, "learner": {"w": torch.arange(3.0)}})
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(MamlError) as error:
        save_checkpoint(path, {"step": 2, "learner": {"w": torch.zeros(3)}})
    assert str(error.value) == f"cannot write {path}: No space left on device; any earlier last.pt is left as it was"
    assert path.read_bytes() == before
    assert list(path.parent.iterdir()) == [path]  # the partial temporary file is gone


def test_a_read_only_directory_gives_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "run" / "results.json"
    atomic_write(path, b"{}")
    if os.geteuid() == 0:  # root writes through chmod: refuse new names in the directory as it would
        real = os.open
        monkeypatch.setattr(
            "os.open",
            lambda name, flags, *args: (
                (_ for _ in ()).throw(PermissionError(errno.EACCES, os.strerror(errno.EACCES), name))
                if flags & os.O_CREAT
                else real(name, flags, *args)
            ),
        )
    else:
        path.parent.chmod(0o500)
    try:
        with pytest.raises(MamlError) as error:
            atomic_write(path, b'{"step": 2}')
    finally:
        path.parent.chmod(0o755)
    assert str(error.value) == f"cannot write {path}: Permission denied; any earlier results.json is left as it was"
    assert path.read_bytes() == b"{}"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_that_the_umask_allows(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "last.pt", {"step": 1})
        atomic_write(tmp_path / "results.json", b"{}")
    finally:
        os.umask(old)
    assert [stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("last.pt", "results.json")] == [mode, mode]
