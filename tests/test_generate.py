"""Saved generators: --generate draws the run's grids again, and a file that is not a
generator of this script is refused with its real trouble."""
import os
import stat

import numpy as np
import pytest

import gan_mnist
from conftest import TINY, pixels


@pytest.mark.backends
def test_generate_from_a_saved_generator(main, run, tmp_path, capsys):
    assert main("--epochs", "2", *TINY) == 0
    model = tmp_path / "out" / "generator.keras"
    result = run("--generate", str(model), "--out", str(tmp_path / "new" / "digits.png"))
    assert result.returncode == 0, result.stderr
    grid = pixels(tmp_path / "new" / "digits.png")
    assert grid.shape == (1000, 1000) and grid.std() > 10
    # the same seed draws the same noise as the training run's fixed grids
    assert np.array_equal(grid, pixels(tmp_path / "out" / "gan_generated_image_epoch_2.png"))
    assert main("--generate", str(model), "--out", str(tmp_path / "b.png"), "--seed", "3") == 0
    assert not np.array_equal(grid, pixels(tmp_path / "b.png"))
    assert main("--generate", str(tmp_path / "nope.keras")) == 2
    assert "generator file" in capsys.readouterr().err
    (tmp_path / "junk.keras").write_text("not a model")
    assert main("--generate", str(tmp_path / "junk.keras")) == 2
    assert "cannot load a generator from" in capsys.readouterr().err


def test_generate_into_a_folder_or_an_unwritable_place(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    model = str(tmp_path / "out" / "generator.keras")
    assert main("--generate", model, "--out", str(tmp_path)) == 2
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main("--generate", model, "--out", str(tmp_path / "a_file" / "x.png")) == 2
    err = capsys.readouterr().err  # H15: the flag in use is --out
    assert f"cannot write to folder {tmp_path / 'a_file'}" in err and err.endswith("pick another --out\n")


def test_a_model_with_two_inputs_is_refused(main, tmp_path, capsys):
    """H9: one line, not a TypeError."""
    import keras
    a, b = keras.Input((100,)), keras.Input((100,))
    keras.Model([a, b], keras.layers.Dense(784)(keras.layers.Add()([a, b]))).save(tmp_path / "two.keras")
    for flags in (["--generate", str(tmp_path / "two.keras")], ["--score", str(tmp_path / "two.keras")]):
        assert main(*flags) == 2
        err = capsys.readouterr().err
        assert "is not a generator of this script: it must take one vector of noise" in err
        assert err.count("\n") == 1


def test_a_generator_file_that_cannot_be_read_says_so(main, tmp_path, capsys, monkeypatch):
    """H11 and H15: the permission or the folder is named, not the contents."""
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    model = str(tmp_path / "out" / "generator.keras")

    def no_permission(file, *args, **kwargs):
        if str(file) == model:
            raise PermissionError(13, "Permission denied", str(file))
        return open(file, *args, **kwargs)
    monkeypatch.setattr(gan_mnist, "open", no_permission, raising=False)
    for flag in ("--generate", "--score"):
        assert main(flag, model) == 2
        err = capsys.readouterr().err
        assert f"cannot read generator file {model} (Permission denied)" in err and "chmod" in err
    monkeypatch.undo()
    assert main("--generate", str(tmp_path / "out")) == 2
    assert f"generator file {tmp_path / 'out'} is a folder, not a file" in capsys.readouterr().err


# ---------------------------------------------------------- an output never replaces an input (J8)
def test_out_replaces_only_a_png_that_generate_wrote(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    model = tmp_path / "out" / "generator.keras"
    kept = {}
    (tmp_path / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    (tmp_path / "other.txt").write_text("mine")
    os.symlink(tmp_path / "other.txt", tmp_path / "link.png")
    refused = {
        str(model): "does not end in .png",
        str(tmp_path / "ck" / "checkpoint.npz"): "does not end in .png",
        str(tmp_path / "out" / "gan_generated_image_epoch_1.png"): "is not a grid that --generate wrote",
        str(tmp_path / "notes.png"): "is not a grid that --generate wrote",
        str(tmp_path / "link.png"): "is a symbolic link",
    }
    for path in refused:
        kept[path] = open(path, "rb").read()
    for path, message in refused.items():
        assert main("--generate", str(model), "--out", path) == 2, path
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (path, err)
        assert open(path, "rb").read() == kept[path] and os.path.islink(tmp_path / "link.png")
    # its own grid: written, then replaced by a second --generate
    grid = tmp_path / "digits.png"
    assert main("--generate", str(model), "--out", str(grid)) == 0
    first = grid.read_bytes()
    assert main("--generate", str(model), "--out", str(grid), "--seed", "3") == 0
    assert grid.read_bytes() != first
    assert not np.array_equal(pixels(grid), pixels(tmp_path / "out" / "gan_generated_image_epoch_1.png"))


def test_out_refuses_a_folder_a_training_run_holds(main, tmp_path, capsys):
    """J8: a running training's folder is locked; --generate does not write into it."""
    import fcntl
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    model = tmp_path / "out" / "generator.keras"
    (tmp_path / "busy").mkdir()
    with open(tmp_path / "busy" / ".lock", "w") as lock:  # as a training run holds it
        lock.write("4242\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main("--generate", str(model), "--out", str(tmp_path / "busy" / "x.png")) == 2
        assert "which a gan_mnist.py run (process 4242) is using" in capsys.readouterr().err
    assert not (tmp_path / "busy" / "x.png").exists()
    assert main("--generate", str(model), "--out", str(tmp_path / "busy" / "x.png")) == 0  # free again


def test_out_refuses_a_device(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    os.mkfifo(tmp_path / "pipe.png")
    assert main("--generate", str(tmp_path / "out" / "generator.keras"), "--out", str(tmp_path / "pipe.png")) == 2
    assert "is not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.png").st_mode)
