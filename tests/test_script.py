"""The script as a user runs it: one tiny epoch end to end, the committed gallery made again, the
grid schedule, same seed same run, where a run writes, importing it, and the backends it refuses."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gan_mnist
from conftest import HANG, QUICK, ROOT, SCRIPT, TINY, checkpoint_arrays, generator_weights, losses, pixels, refused, same_arrays


@pytest.mark.backends
def test_smoke_one_tiny_epoch(run, tmp_path):
    result = run("--epochs", "1", *TINY)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    grid = out / "gan_generated_image_epoch_1.png"
    assert Image.open(grid).size == (1000, 1000) and Image.open(grid).mode == "L"
    grey = pixels(grid)
    assert grey.std() > 10, "the grid is blank"
    assert (grey > 250).mean() > 0.05, "no white background between the 100 digits"
    [(epoch, d_loss, g_loss)] = losses(out)
    assert epoch == "1" and 0 < float(d_loss) < 5 and 0 < float(g_loss) < 10
    for name in ("gan_loss.png", "progress.gif", "generator.keras", "scores.csv", "scores.png", "checkpoint.npz"):
        assert (out / name).stat().st_size > 100, name
    assert "Epoch 1/1: d_loss" in result.stdout and "| FD " in result.stdout
    # not a terminal (a log file, a pipe): no progress bar, so every line of the log is readable
    assert "\r" not in result.stderr + result.stdout and "it/s" not in result.stderr
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")], "temporary files left behind"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing written to the working folder


def test_the_subset_gallery_is_made_again(main, tmp_path):
    """Same seed, same bytes: the committed samples/subset/ came from `python gan_mnist.py` offline
    (400 epochs); its first 20 epochs are this run's grids, losses and scores (on CPUs with AVX-512,
    samples/README.md says which)."""
    assert main("--data", "subset", "--epochs", "20") == 0
    gallery, out = os.path.join(ROOT, "samples", "subset"), tmp_path / "out"
    for epoch in (1, 20):
        name = f"gan_generated_image_epoch_{epoch}.png"
        assert (out / name).read_bytes() == open(os.path.join(gallery, name), "rb").read(), name
    assert losses(out) == losses(gallery)[:20]
    with open(os.path.join(gallery, "scores.csv")) as f:
        assert (out / "scores.csv").read_text().splitlines() == f.read().splitlines()[:3]


def test_generate_draws_the_full_mnist_runs_last_grid_again(main, tmp_path):
    model = os.path.join(ROOT, "samples", "mnist", "generator.keras")
    assert main("--generate", model, "--seed", "10", "--out", str(tmp_path / "g.png")) == 0
    assert (tmp_path / "g.png").read_bytes() == open(model.replace("generator.keras",
                                                                   "gan_generated_image_epoch_400.png"), "rb").read()


def test_grids_at_epoch_1_every_sample_every_and_last(main, tmp_path):
    assert main("--epochs", "4", "--sample-every", "3", *QUICK) == 0
    grids = sorted(p for p in os.listdir(tmp_path / "out") if p.startswith("gan_generated"))
    assert grids == [f"gan_generated_image_epoch_{e}.png" for e in (1, 3, 4)]
    assert [row[0] for row in losses(tmp_path / "out")] == ["1", "2", "3", "4"]
    gif = Image.open(tmp_path / "out" / "progress.gif")
    assert gif.n_frames == 3 and max(gif.size) <= 400
    assert not np.array_equal(pixels(tmp_path / "out" / grids[0]), pixels(tmp_path / "out" / grids[-1]))


def test_same_seed_same_run(main, run, tmp_path):
    runs = []
    for name, train in (("a", main), ("b", run)):  # in this process, and in a fresh one
        result = train("--epochs", "2", *TINY, "--out-dir", str(tmp_path / name))
        assert getattr(result, "returncode", result) == 0
        runs.append((losses(tmp_path / name), pixels(tmp_path / name / "gan_generated_image_epoch_2.png")))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])
    assert main("--epochs", "2", *TINY, "--seed", "11", "--out-dir", str(tmp_path / "c")) == 0
    assert losses(tmp_path / "c") != runs[0][0]


def test_a_plain_run_writes_into_a_folder_git_ignores(tmp_path):
    """Not into the committed gallery: runs/{data}/ holds the outputs and the checkpoint."""
    result = subprocess.run([sys.executable, SCRIPT, "--epochs", "1", *QUICK], capture_output=True, text=True,
                            timeout=HANG, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / "subset-first256"
    assert (folder / "checkpoint.npz").exists() and (folder / "generator.keras").exists()
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/subset/losses.csv"], cwd=ROOT)
    assert ignored.returncode == 0, "runs/ is not in .gitignore"


def test_importing_does_nothing_and_leaves_the_environment_alone(tmp_path):
    code = "import os; before = dict(os.environ); import gan_mnist; print(sorted(os.listdir('.')), before == os.environ)"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": ROOT})
    assert result.returncode == 0 and result.stdout.split() == ["[]", "True"], result.stderr[-2000:]


def test_ema_leaves_training_alone_and_decay_0_samples_the_raw_generator(main, tmp_path):
    runs = {}
    for decay in ("0", "0.999"):
        out = tmp_path / f"out{decay}"
        assert main("--epochs", "2", *QUICK, "--ema-decay", decay, "--out-dir", str(out)) == 0
        runs[decay] = (losses(out), checkpoint_arrays(out / "checkpoint.npz"),
                       generator_weights(out / "generator.keras"), pixels(out / "gan_generated_image_epoch_2.png"))
    (raw_losses, raw_ck, raw_model, raw_grid), (ema_losses, ema_ck, ema_model, ema_grid) = runs["0"], runs["0.999"]
    assert raw_losses == ema_losses  # training is untouched by the EMA
    assert same_arrays(raw_ck[:8], ema_ck[:8])  # the raw generator's weights come first
    assert same_arrays(raw_model, raw_ck[:8])  # --ema-decay 0: grids and file from the raw generator
    assert not same_arrays(ema_model, ema_ck[:8])
    assert any(same_arrays(ema_model, ema_ck[i:i + 8]) for i in range(8, len(ema_ck) - 7))
    assert not np.array_equal(raw_grid, ema_grid)


def test_the_helper_scripts_use_names_the_script_has():
    """data/make_digit_classifier.py, data/score_grid.py and tests/benchmark.py call into gan_mnist.py."""
    import re
    for path in ("data/make_digit_classifier.py", "data/score_grid.py", "tests/benchmark.py"):
        with open(os.path.join(ROOT, path)) as f:
            names = set(re.findall(r"gan_mnist\.([A-Za-z_]\w*)", f.read())) - {"py"}
        assert names and not [n for n in names if not hasattr(gan_mnist, n)], (path, names)


# ---------------------------------------------------------------------- backends it cannot run on
def script_with(tmp_path, env, *flags):
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    (tmp_path / "keras_home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True, cwd=tmp_path,
                          env={**clean, "KERAS_HOME": str(tmp_path / "keras_home"), **env})


@pytest.mark.parametrize("backend", ["torch", "nonsense", "numpy"])
def test_an_unsupported_backend_is_one_line(tmp_path, backend):
    result = script_with(tmp_path, {"KERAS_BACKEND": backend}, "--epochs", "1")
    refused(result.returncode, result.stderr, "KERAS_BACKEND")
    assert os.listdir(tmp_path) == ["keras_home"]


def test_where_only_jax_is_installed_the_plain_command_says_what_to_do(tmp_path):
    """No TensorFlow installed (a finder that says so), Keras' default backend: one line."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n")
    result = script_with(tmp_path, {"PYTHONPATH": str(tmp_path / "site")}, "--epochs", "1")
    refused(result.returncode, result.stderr, "tensorflow", "KERAS_BACKEND")
