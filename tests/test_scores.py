"""The scores: the bundled digit classifier, its numbers, scores.csv, --score, and
data/score_grid.py, which scores a grid picture."""
import csv
import os
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import ROOT, TINY, checkpoint, refused, script

FD, SCORE, TOP, SHARE, MIX = 1, 2, 3, 4, 15  # columns of a score row (gan_mnist.SCORE_COLUMNS)


@pytest.fixture(scope="module")
def scorer():
    return gan_mnist.DigitScorer()


def scores(out_dir):
    with open(os.path.join(out_dir, "scores.csv")) as f:
        return list(csv.reader(f))


def test_real_digits_beat_noise_blank_and_shuffled_digits(scorer):
    x_train, _ = gan_mnist.load_mnist_data("subset")
    rng = np.random.default_rng(0)
    real = scorer(x_train[:2000])
    bad = {"noise": scorer(rng.uniform(-1, 1, (2000, 784)).astype(np.float32)),
           "blank": scorer(np.full((2000, 784), -1.0, np.float32)),
           "shuffled": scorer(np.stack([digit[rng.permutation(784)] for digit in x_train[:2000]]))}
    # 500 of each class
    assert real[FD] < 10 and real[SCORE] > 9 and real[SHARE] < 0.15 and real[MIX] < 0.01
    for name, row in bad.items():
        assert row[FD] > 30 * real[FD] and row[SCORE] < 1.5, name
    assert bad["blank"][SHARE] == 1.0
    share = gan_mnist.MNIST_CLASS_COUNTS[bad["blank"][TOP]] / 60000
    assert bad["blank"][MIX] == pytest.approx(-np.log(share))
    for row in [real, *bad.values()]:
        assert len(row) == len(gan_mnist.SCORE_COLUMNS) and sum(row[5:15]) == pytest.approx(1.0)
        assert row[SHARE] == max(row[5:15]) and 1.0 <= row[SCORE] <= 10.0


def test_scores_are_deterministic_and_score_flag_repeats_the_runs_last(main, tmp_path, scorer,
                                                                       capsys):
    assert main("--epochs", "2", "--sample-every", "1000", *TINY) == 0
    rows = scores(tmp_path / "out")
    assert rows[0] == gan_mnist.SCORE_COLUMNS and [row[0] for row in rows[1:]] == ["1", "2"]
    generator = gan_mnist.load_generator(str(tmp_path / "out" / "generator.keras"))
    noise = gan_mnist.draw_noise(np.random.default_rng((10, 1)), 100, 200)  # TINY scores 200
    a, b = (scorer(generator(noise, training=False), 2) for _ in range(2))
    assert a == b and [str(round(x, 4)) for x in a] == rows[-1]
    assert len(checkpoint(tmp_path / "out" / "checkpoint.npz")[0]["scores"]) == 2
    capsys.readouterr()
    assert main("--score", str(tmp_path / "out" / "generator.keras"), "--score-digits", "200") == 0
    assert f"FD {a[FD]:.2f}  score {a[SCORE]:.2f}" in capsys.readouterr().out
    assert (tmp_path / "out" / "scores.png").stat().st_size > 10_000


def test_no_scores_with_score_digits_0(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    assert not (tmp_path / "out" / "scores.csv").exists() and "FD" not in capsys.readouterr().out
    refused(main("--score", str(tmp_path / "out" / "generator.keras"), "--score-digits", "0"),
            capsys.readouterr().err, "--score-digits")


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_npz", "other_input_size",
                                    "object_array", "a folder"])
def test_bad_classifier_file_exits_2(main, tmp_path, capsys, damage):
    """Refused before anything is written, for training and for --score, with advice about it."""
    path = tmp_path / "classifier.npz"
    with np.load(gan_mnist.bundled("digit_classifier.npz")) as f:
        arrays = dict(f)
    if damage == "truncated":
        path.write_bytes(open(gan_mnist.bundled("digit_classifier.npz"), "rb").read()[:100_000])
    elif damage == "not_npz":
        path.write_text("hello")
    elif damage == "other_input_size":
        # a layer for 32x32 inputs
        np.savez(path, **{**arrays, "w6": np.zeros((5 * 5 * 64 * 4, 64), np.float32)})
    elif damage == "object_array":
        np.savez(path, **{**arrays, "w0": np.array([None, 1], dtype=object)})
    elif damage == "a folder":
        path.mkdir()
    for flags in (["--epochs", "1", *TINY], ["--score", "any.keras"]):
        code = main(*flags, "--classifier", str(path))
        err = capsys.readouterr().err
        refused(code, err, path, "--score-digits 0")
    assert not (tmp_path / "out").exists()


def test_keras_json_s_channels_first_changes_nothing(tmp_path):
    """The scorer's layers say channels_last: a keras.json of channels_first leaves them."""
    (tmp_path / "keras.json").write_text('{"image_data_format": "channels_first"}')
    model = os.path.join(ROOT, "samples", "mnist", "generator.keras")
    result = script("--score", model, "--score-digits", "200", cwd=tmp_path,
                    env={**os.environ, "KERAS_HOME": str(tmp_path)})
    assert result.returncode == 0 and "FD " in result.stdout, result.stderr


sys.path.insert(0, os.path.join(ROOT, "data"))
import score_grid  # noqa: E402  (data/score_grid.py, the measuring script)


def test_score_a_grid_png(tmp_path, capsys):
    """data/score_grid.py scores the 100 digits of a grid drawn as plot_generated_images draws."""
    x_train, _ = gan_mnist.load_mnist_data("subset", limit=100)
    real = gan_mnist.plot_generated_images(lambda noise, training: x_train, x_train,
                                           str(tmp_path / "real.png"))
    cut = score_grid.grid_digits(real)
    assert cut.shape == (100, 784) and cut.min() >= -1 and cut.max() <= 1
    assert np.abs(cut - x_train).mean() < 0.15  # cut out where they were drawn
    noise = np.random.default_rng(0).uniform(-1, 1, (100, 784)).astype(np.float32)
    gan_mnist.plot_generated_images(lambda _, training: noise, noise, str(tmp_path / "noise.png"))
    assert score_grid.main([str(tmp_path / "noise.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    real_fd, noise_fd = (float(line.split("FD ")[1].split()[0]) for line in lines)
    assert real_fd < 20 and noise_fd > 200
    (tmp_path / "bad.png").write_text("not an image")
    assert score_grid.main([str(tmp_path / "bad.png")]) == 2
    assert "cannot read an image from" in capsys.readouterr().err
