"""Saved generators: --generate draws the run's grids again, writes only a PNG, never over an
input or into a running training's folder, finds out first whether it can, and a file that is
not a generator of this script is refused."""
import fcntl
import os

import numpy as np
import pytest

from conftest import QUICK, TINY, pixels, refused


def test_generate_from_a_saved_generator(main, tmp_path):
    assert main("--epochs", "2", *TINY) == 0
    model = tmp_path / "out" / "generator.keras"
    grid = tmp_path / "out" / "gan_generated_image_epoch_2.png"
    digits = tmp_path / "new" / "digits.png"
    assert main("--generate", str(model), "--out", str(digits)) == 0
    # the same seed draws the same noise as the training run's fixed grids: the same file
    assert digits.read_bytes() == grid.read_bytes()
    assert main("--generate", str(model), "--out", str(digits), "--seed", "3") == 0  # replaced
    assert not np.array_equal(pixels(digits), pixels(grid))
    assert main("--generate", str(model)) == 0 and (tmp_path / "out" / "generated.png").exists()


@pytest.mark.parametrize("kind", ["missing", "junk", "a folder", "two inputs"])
def test_what_is_not_a_generator_is_refused(main, tmp_path, capsys, kind):
    path = tmp_path / "model.keras"
    if kind == "junk":
        path.write_text("not a model")
    elif kind == "a folder":
        path.mkdir()
    elif kind == "two inputs":
        import keras
        a, b = keras.Input((100,)), keras.Input((100,))
        keras.Model([a, b], keras.layers.Dense(784)(keras.layers.Add()([a, b]))).save(path)
    refused(main("--generate", str(path), "--out", str(tmp_path / "g.png")),
            capsys.readouterr().err, path)
    refused(main("--score", str(path)), capsys.readouterr().err, path)
    assert not (tmp_path / "g.png").exists()


def test_out_never_replaces_an_input_nor_writes_into_a_running_training(main, tmp_path, capsys):
    """Only a .png, never the generator, the checkpoint or a link to the generator; not into the
    folder of a training that holds its lock."""
    assert main("--epochs", "1", *QUICK) == 0
    model = tmp_path / "out" / "generator.keras"
    checkpoint = tmp_path / "out" / "checkpoint.npz"
    os.symlink(model, tmp_path / "out" / "link.png")
    kept = {path: path.read_bytes() for path in (model, checkpoint)}
    for out in (model, checkpoint, tmp_path / "out", tmp_path / "out" / "link.png"):
        refused(main("--generate", str(model), "--out", str(out)), capsys.readouterr().err, "--out")
    with open(tmp_path / "out" / ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        grid = tmp_path / "out" / "gan_generated_image_epoch_1.png"
        refused(main("--generate", str(model), "--out", str(grid)), capsys.readouterr().err,
                "another run")
    assert {path: path.read_bytes() for path in kept} == kept


def test_out_that_cannot_be_written_is_refused_before_the_generator_is_read(main, tmp_path,
                                                                            capsys):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "x.png"
    refused(main("--generate", str(tmp_path / "no_such.keras"), "--out", str(out)),
            capsys.readouterr().err, "--out", tmp_path / "a_file")
