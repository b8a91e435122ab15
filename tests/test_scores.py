"""The scores: the bundled digit classifier, its numbers, scores.csv/png, --score, and
data/score_grid.py, which scores a grid picture."""
import csv
import json
import os
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import ROOT, TINY, edit_checkpoint_meta


@pytest.fixture(scope="module")
def scorer():
    return gan_mnist.DigitScorer(gan_mnist.CLASSIFIER)


def scores(out_dir):
    with open(os.path.join(out_dir, "scores.csv")) as f:
        return list(csv.DictReader(f))


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
    assert real["frechet_distance"] < 10 and real["classifier_score"] > 9
    assert real["top_share"] < 0.15  # the bundled digits are 500 of each class
    for name, scores in bad.items():
        assert scores["frechet_distance"] > 30 * real["frechet_distance"], name
        assert scores["classifier_score"] < 1.5, name
    assert bad["blank"]["top_share"] == 1.0
    for scores in [real, *bad.values()]:
        assert scores["shares"].shape == (10,) and scores["shares"].sum() == pytest.approx(1.0)
        assert scores["top_share"] == scores["shares"].max()
        assert 1.0 <= scores["classifier_score"] <= 10.0


def test_a_young_generator_scores_in_between(main, tmp_path, scorer):
    """Raw generator after 14 epochs of the subset: digit-like strokes, not yet digits."""
    assert main("--epochs", "14", "--sample-every", "7", "--data", "subset", "--ema-decay", "0") == 0
    rows = scores(tmp_path / "out")
    assert [row["epoch"] for row in rows] == ["1", "7", "14"]
    first, last = rows[0], rows[-1]
    assert float(last["frechet_distance"]) < float(first["frechet_distance"]) - 50
    x_train, _ = gan_mnist.load_mnist_data("subset")
    real = scorer(x_train[:2000])
    shuffled = scorer(np.stack([d[np.random.default_rng(1).permutation(784)] for d in x_train[:2000]]))
    assert real["frechet_distance"] < float(last["frechet_distance"]) < shuffled["frechet_distance"]
    assert shuffled["classifier_score"] < float(last["classifier_score"]) < real["classifier_score"]


@pytest.mark.backends
def test_scores_are_deterministic_and_score_flag_repeats_the_runs_last(main, tmp_path, scorer, capsys):
    assert main("--epochs", "2", "--sample-every", "1000", *TINY) == 0
    rows = scores(tmp_path / "out")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == gan_mnist.SCORE_COLUMNS
    for row in rows:
        assert sum(float(row[f"share_{d}"]) for d in range(10)) == pytest.approx(1.0, abs=1e-3)
    generator = gan_mnist.load_generator(str(tmp_path / "out" / "generator.keras"))
    noise = gan_mnist.score_noise(10, 100, 200)  # TINY scores 200 digits
    a, b = (scorer.rate(generator, noise) for _ in range(2))
    assert a["frechet_distance"] == b["frechet_distance"] and np.array_equal(a["shares"], b["shares"])
    assert gan_mnist.score_row(2, a)[1:] == [float(v) if "." in v else int(v) for v in list(rows[-1].values())[1:]]
    capsys.readouterr()
    assert main("--score", str(tmp_path / "out" / "generator.keras"), "--score-digits", "200") == 0
    out = capsys.readouterr().out
    assert "Real held-out MNIST digits (the top of the scale): FD 2." in out
    assert f"FD {a['frechet_distance']:.2f}  score {a['classifier_score']:.2f}" in out
    assert (tmp_path / "out" / "scores.png").stat().st_size > 10_000
    with np.load(tmp_path / "ck" / "checkpoint.npz") as f:
        assert len(json.loads(str(f["meta"]))["scores"]) == 2


def test_no_scores_with_score_digits_0(main, tmp_path, capsys):
    """0 means no scores, in training and for --score alike: there it is refused."""
    assert main("--epochs", "1", *TINY, "--score-digits", "0") == 0
    assert not (tmp_path / "out" / "scores.csv").exists()
    assert "FD" not in capsys.readouterr().out
    assert main("--score", str(tmp_path / "out" / "generator.keras"), "--score-digits", "0") == 2
    assert "--score-digits 0 scores no digits: pass 100 or more with --score" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_npz", "other_input_size"])
def test_bad_classifier_file_exits_2(main, tmp_path, capsys, damage):
    """Refused before anything is written, for training and for --score."""
    path = tmp_path / "classifier.npz"
    data = open(gan_mnist.CLASSIFIER, "rb").read()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "not_npz":
        path.write_text("hello")
    elif damage == "other_input_size":
        with np.load(gan_mnist.CLASSIFIER) as f:
            arrays = dict(f)
        arrays["w6"] = np.zeros((5 * 5 * 64 * 4, 64), np.float32)  # a dense layer for 32x32 inputs
        np.savez(path, **arrays)
    for flags in (["--epochs", "1", *TINY], ["--score", "any.keras"]):
        assert main(*flags, "--classifier", str(path)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"digit classifier {path}" in err
        assert "--score-digits 0" in err
    assert not (tmp_path / "out").exists()


sys.path.insert(0, os.path.join(ROOT, "data"))
import score_grid  # noqa: E402  (data/score_grid.py, the measuring script)


def grid_score(*argv):
    return score_grid.main([str(a) for a in argv])


def test_score_a_grid_png(main, tmp_path, scorer, capsys):
    """data/score_grid.py scores the 100 digits of a grid image, as drawn by plot_generated_images;
    --score takes generators only, and says where grids are scored."""
    x_train, _ = gan_mnist.load_mnist_data("subset", limit=100)
    real = gan_mnist.plot_generated_images(lambda noise, training: x_train, x_train, str(tmp_path / "real.png"))
    cut = score_grid.grid_digits(real)
    assert cut.shape == (100, 784) and cut.min() >= -1 and cut.max() <= 1
    assert np.abs(cut - x_train).mean() < 0.15  # cut out where they were drawn
    noise = np.random.default_rng(0).uniform(-1, 1, (100, 784)).astype(np.float32)
    gan_mnist.plot_generated_images(lambda noise_, training: noise, noise, str(tmp_path / "noise.png"))
    assert grid_score(tmp_path / "noise.png") == 0
    out = capsys.readouterr().out.splitlines()
    real_fd, noise_fd = (float(line.split("FD ")[1].split()[0]) for line in out)
    assert real_fd < 20 and noise_fd > 200
    (tmp_path / "bad.png").write_text("not an image")
    assert grid_score(tmp_path / "bad.png") == 2
    assert "cannot read an image from" in capsys.readouterr().err
    assert main("--score", str(tmp_path / "noise.png")) == 2
    assert f"run python data/score_grid.py {tmp_path / 'noise.png'}" in capsys.readouterr().err


def classifier_with(tmp_path, **changes):
    with np.load(gan_mnist.CLASSIFIER) as f:
        arrays = dict(f)
    arrays.update(changes)
    path = tmp_path / "classifier.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, trouble", [
    ("strings", "holds w0 as <U8, not floats"),
    ("int32", "holds w0 as int32, not floats"),
    ("bool", "holds w0 as bool, not floats"),
    ("nan", "holds values in w0 that are not finite"),
    ("short_reference", "has reference_mean of shape (10,), not (64,)"),
])
def test_a_classifier_of_the_right_shapes_but_wrong_values_is_refused(main, tmp_path, capsys, change, trouble):
    """H8: a classifier whose arrays fit but hold strings, integers, booleans or NaN, or whose
    reference statistics are cut, would score garbage (or fail after epoch 1): refused at start."""
    with np.load(gan_mnist.CLASSIFIER) as f:
        w0, mean = f["w0"], f["reference_mean"]
    changes = {"strings": {"w0": w0.astype("U8")}, "int32": {"w0": w0.astype(np.int32)},
               "bool": {"w0": w0 > 0}, "nan": {"w0": np.full_like(w0, np.nan)},
               "short_reference": {"reference_mean": mean[:10]}}[change]
    path = classifier_with(tmp_path, **changes)
    assert main("--epochs", "1", *TINY, "--classifier", str(path)) == 2
    err = capsys.readouterr().err
    assert f"digit classifier {path} does not fit this scoring network: it {trouble}" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", [(50, 50), (5, 5), (1000, 40)])
def test_score_of_an_image_that_is_not_a_grid(main, tmp_path, capsys, size):
    """H10: no made-up scores for a 50x50 picture, no traceback for a 5x5 or 1000x40 one."""
    from PIL import Image
    path = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1], dtype=np.uint8)).save(path)
    assert grid_score(path) == 2
    captured = capsys.readouterr()
    assert f"{path} is {size[0]}x{size[1]} pixels, not a 10x10 grid of digits" in captured.err
    assert captured.out == ""  # not even the real digits' line


def test_the_mix_kl_sums_up_the_class_shares(main, tmp_path, scorer, capsys):
    """0 for MNIST's own mix, small for real digits, large for one class only; in scores.csv,
    on the epoch line, and completed for a checkpoint made before it existed."""
    assert gan_mnist.mix_kl(gan_mnist.MNIST_CLASS_SHARES) == pytest.approx(0, abs=1e-12)
    x_train, _ = gan_mnist.load_mnist_data("subset")
    assert scorer(x_train[:2000])["mix_kl"] < 0.01
    one_class = np.eye(10)[1]
    assert gan_mnist.mix_kl(one_class) == pytest.approx(np.log(1 / gan_mnist.MNIST_CLASS_SHARES[1]))
    assert main("--epochs", "2", "--sample-every", "1", *TINY) == 0
    rows = scores(tmp_path / "out")
    for row in rows:
        shares = [float(row[f"share_{d}"]) for d in range(10)]
        assert float(row["mix_kl"]) == pytest.approx(gan_mnist.mix_kl(shares), abs=2e-3)
    assert f"mix KL {float(rows[-1]['mix_kl']):.3f}" in capsys.readouterr().out
    # a checkpoint of an earlier version: its rows under "quality" and without the mix KL, resumed
    edit_checkpoint_meta(tmp_path / "ck" / "checkpoint.npz",
                         lambda meta: meta.update(quality=[row[:-1] for row in meta.pop("scores")]))
    assert main("--epochs", "3", "--sample-every", "1", *TINY, "--resume") == 0
    again = scores(tmp_path / "out")
    assert [row["mix_kl"] for row in again[:2]] == [row["mix_kl"] for row in rows] and len(again) == 3
