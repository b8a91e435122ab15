"""Saved generators: --generate draws the run's grids again, writes only a PNG, finds out first
whether it can, and a file that is not a generator of this script is refused."""
import numpy as np
import pytest

from conftest import QUICK, TINY, pixels, refused


@pytest.mark.backends
def test_generate_from_a_saved_generator(main, run, tmp_path, capsys):
    assert main("--epochs", "2", *TINY) == 0
    model = tmp_path / "out" / "generator.keras"
    result = run("--generate", str(model), "--out", str(tmp_path / "new" / "digits.png"))
    assert result.returncode == 0, result.stderr
    # the same seed draws the same noise as the training run's fixed grids: the same file
    assert (tmp_path / "new" / "digits.png").read_bytes() == (tmp_path / "out" / "gan_generated_image_epoch_2.png").read_bytes()
    assert main("--generate", str(model), "--out", str(tmp_path / "new" / "digits.png"), "--seed", "3") == 0  # replaced
    assert not np.array_equal(pixels(tmp_path / "new" / "digits.png"), pixels(tmp_path / "out" / "gan_generated_image_epoch_2.png"))
    assert main("--generate", str(model)) == 0 and (tmp_path / "out" / "generated.png").exists()  # beside the model


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
    for flag in ("--generate", "--score"):
        refused(main(flag, str(path), "--out", str(tmp_path / "g.png")), capsys.readouterr().err, path)
    assert not (tmp_path / "g.png").exists()


def test_out_never_replaces_an_input(main, tmp_path, capsys):
    """Only a .png: never the generator, the checkpoint or the data."""
    assert main("--epochs", "1", *QUICK) == 0
    model, checkpoint = tmp_path / "out" / "generator.keras", tmp_path / "out" / "checkpoint.npz"
    kept = {path: path.read_bytes() for path in (model, checkpoint)}
    for out in (model, checkpoint, tmp_path / "out"):
        refused(main("--generate", str(model), "--out", str(out)), capsys.readouterr().err, "--out")
    assert {path: path.read_bytes() for path in kept} == kept


def test_out_that_cannot_be_written_is_refused_before_the_generator_is_read(main, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    refused(main("--generate", str(tmp_path / "no_such.keras"), "--out", str(tmp_path / "a_file" / "x.png")),
            capsys.readouterr().err, "--out", tmp_path / "a_file" / "x.png")
