"""The scores: the bundled digit classifier, its numbers, scores.csv, --score, and
data/score_grid.py, which scores a grid picture."""
import csv
import os
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import ROOT, TINY, checkpoint_meta, refused

FD, SCORE, TOP, SHARE, MIX = 1, 2, 3, 4, 15  # columns of a score row (gan_mnist.SCORE_COLUMNS)


@pytest.fixture(scope="module")
def scorer():
    return gan_mnist.DigitScorer(gan_mnist.CLASSIFIER)


def scores(out_dir):
    with open(os.path.join(out_dir, "scores.csv")) as f:
        return list(csv.reader(f))


def test_classifier_file_is_small_and_says_where_it_came_from():
    assert os.path.getsize(gan_mnist.CLASSIFIER) < 1_000_000
    with np.load(gan_mnist.CLASSIFIER) as f:
        assert float(f["test_accuracy"]) >= 0.99
        assert "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db" in str(f["source"])


def test_real_digits_beat_noise_blank_and_shuffled_digits(scorer):
    x_train, _ = gan_mnist.load_mnist_data("subset")
    rng = np.random.default_rng(0)
    real = scorer(x_train[:2000])
    bad = {"noise": scorer(rng.uniform(-1, 1, (2000, 784)).astype(np.float32)),
           "blank": scorer(np.full((2000, 784), -1.0, np.float32)),
           "shuffled": scorer(np.stack([digit[rng.permutation(784)] for digit in x_train[:2000]]))}
    assert real[FD] < 10 and real[SCORE] > 9 and real[SHARE] < 0.15 and real[MIX] < 0.01  # 500 of each class
    for name, row in bad.items():
        assert row[FD] > 30 * real[FD] and row[SCORE] < 1.5, name
    assert bad["blank"][SHARE] == 1.0
    assert bad["blank"][MIX] == pytest.approx(-np.log(gan_mnist.MNIST_CLASS_SHARES[bad["blank"][TOP]]))
    for row in [real, *bad.values()]:
        assert len(row) == len(gan_mnist.SCORE_COLUMNS) and sum(row[5:15]) == pytest.approx(1.0)
        assert row[SHARE] == max(row[5:15]) and 1.0 <= row[SCORE] <= 10.0


def test_scores_are_deterministic_and_score_flag_repeats_the_runs_last(main, tmp_path, scorer, capsys):
    assert main("--epochs", "2", "--sample-every", "1000", *TINY) == 0
    rows = scores(tmp_path / "out")
    assert rows[0] == gan_mnist.SCORE_COLUMNS and [row[0] for row in rows[1:]] == ["1", "2"]
    generator = gan_mnist.load_generator(str(tmp_path / "out" / "generator.keras"))
    noise = gan_mnist.score_noise(10, 100, 200)  # TINY scores 200 digits
    a, b = (scorer(generator(noise, training=False), 2) for _ in range(2))
    assert a == b and [str(round(x, 4)) for x in a] == rows[-1]
    assert len(checkpoint_meta(tmp_path / "out" / "checkpoint.npz")["scores"]) == 2
    capsys.readouterr()
    assert main("--score", str(tmp_path / "out" / "generator.keras"), "--score-digits", "200") == 0
    assert f"FD {a[FD]:.2f}  score {a[SCORE]:.2f}" in capsys.readouterr().out
    assert (tmp_path / "out" / "scores.png").stat().st_size > 10_000


def test_no_scores_with_score_digits_0(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    assert not (tmp_path / "out" / "scores.csv").exists() and "FD" not in capsys.readouterr().out
    refused(main("--score", str(tmp_path / "out" / "generator.keras"), "--score-digits", "0"),
            capsys.readouterr().err, "--score-digits")


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_npz", "other_input_size", "object_array", "a folder"])
def test_bad_classifier_file_exits_2(main, tmp_path, capsys, damage):
    """Refused before anything is written, for training and for --score, with advice about it."""
    path = tmp_path / "classifier.npz"
    with np.load(gan_mnist.CLASSIFIER) as f:
        arrays = dict(f)
    if damage == "truncated":
        path.write_bytes(open(gan_mnist.CLASSIFIER, "rb").read()[:100_000])
    elif damage == "not_npz":
        path.write_text("hello")
    elif damage == "other_input_size":
        np.savez(path, **{**arrays, "w6": np.zeros((5 * 5 * 64 * 4, 64), np.float32)})  # a layer for 32x32 inputs
    elif damage == "object_array":
        np.savez(path, **{**arrays, "w0": np.array([None, 1], dtype=object)})
    elif damage == "a folder":
        path.mkdir()
    for flags in (["--epochs", "1", *TINY], ["--score", "any.keras"]):
        code = main(*flags, "--classifier", str(path))
        err = capsys.readouterr().err
        refused(code, err, path, "--score-digits 0")
        assert "git checkout" not in err  # that advice is for the bundled file
    assert not (tmp_path / "out").exists()


sys.path.insert(0, os.path.join(ROOT, "data"))
import score_grid  # noqa: E402  (data/score_grid.py, the measuring script)


def test_score_a_grid_png(tmp_path, capsys):
    """data/score_grid.py scores the 100 digits of a grid image, as plot_generated_images draws them."""
    x_train, _ = gan_mnist.load_mnist_data("subset", limit=100)
    real = gan_mnist.plot_generated_images(lambda noise, training: x_train, x_train, str(tmp_path / "real.png"))
    cut = score_grid.grid_digits(real)
    assert cut.shape == (100, 784) and cut.min() >= -1 and cut.max() <= 1
    assert np.abs(cut - x_train).mean() < 0.15  # cut out where they were drawn
    noise = np.random.default_rng(0).uniform(-1, 1, (100, 784)).astype(np.float32)
    gan_mnist.plot_generated_images(lambda noise_, training: noise, noise, str(tmp_path / "noise.png"))
    assert score_grid.main([str(tmp_path / "noise.png")]) == 0
    real_fd, noise_fd = (float(line.split("FD ")[1].split()[0]) for line in capsys.readouterr().out.splitlines())
    assert real_fd < 20 and noise_fd > 200
    (tmp_path / "bad.png").write_text("not an image")
    assert score_grid.main([str(tmp_path / "bad.png")]) == 2
    assert "cannot read an image from" in capsys.readouterr().err
