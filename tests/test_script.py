"""The script as a user runs it: a tiny run end to end, the committed gallery made again, the
grid schedule, same seed same run, a plain offline run, train() as the article calls it, --help
at once, importing it, and the backends it refuses."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gan_mnist
from conftest import (QUICK, ROOT, SCRIPT, TINY, checkpoint, generator_weights, losses, pixels,
                      refused, same_arrays, script)

# no network: Keras' MNIST download fails at once, as offline
OFFLINE = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "KERAS_HOME": "keras_home"}


@pytest.mark.backends
def test_a_plain_offline_run_end_to_end(tmp_path):
    """`python gan_mnist.py`, tiny, with no network: it says so and takes the bundled subset, into
    runs/subset*/ of the working folder, which the clone's .gitignore names; every output, no
    temporary left, nothing on standard error (no TensorFlow notices either)."""
    result = script("--epochs", "1", "--limit", "256", "--batch-size", "32", "--score-digits",
                    "200", cwd=tmp_path, env={**OFFLINE, "KERAS_BACKEND": gan_mnist.BACKEND})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "using the bundled 5,000-digit subset" in result.stdout
    out = tmp_path / "runs" / "subset-first256"
    grid = out / "gan_generated_image_epoch_1.png"
    assert Image.open(grid).size == (1000, 1000) and Image.open(grid).mode == "L"
    assert pixels(grid).std() > 10 and (pixels(grid) > 250).mean() > 0.05, "a blank grid"
    [(epoch, d_loss, g_loss)] = losses(out)
    assert epoch == "1" and 0 < float(d_loss) < 5 and 0 < float(g_loss) < 10
    for name in ("gan_loss.png", "progress.gif", "generator.keras", "scores.csv", "scores.png"):
        assert (out / name).stat().st_size > 100, name
    assert "Epoch 1/1: d_loss" in result.stdout and "| FD " in result.stdout
    assert sorted(os.listdir(out))[:2] == [".lock", "checkpoint.npz"]
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]
    assert sorted(os.listdir(tmp_path)) == ["keras_home", "runs"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/subset/losses.csv"], cwd=ROOT)
    assert ignored.returncode == 0, "runs/ is not in .gitignore"


def test_the_subset_gallery_is_made_again(main, tmp_path):
    """Same seed, same bytes: the committed samples/subset/ came from `python gan_mnist.py`
    offline (400 epochs); its first 20 epochs are this run's grids, losses and scores (on CPUs
    with AVX-512, samples/README.md says which)."""
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
    grid = model.replace("generator.keras", "gan_generated_image_epoch_400.png")
    assert (tmp_path / "g.png").read_bytes() == open(grid, "rb").read()


def test_grids_at_epoch_1_every_sample_every_and_last(main, tmp_path):
    assert main("--epochs", "4", "--sample-every", "3", *QUICK) == 0
    grids = sorted(p for p in os.listdir(tmp_path / "out") if p.startswith("gan_generated"))
    assert grids == [f"gan_generated_image_epoch_{e}.png" for e in (1, 3, 4)]
    assert [row[0] for row in losses(tmp_path / "out")] == ["1", "2", "3", "4"]
    gif = Image.open(tmp_path / "out" / "progress.gif")
    assert gif.n_frames == 3 and max(gif.size) <= 400
    assert not np.array_equal(*(pixels(tmp_path / "out" / grid) for grid in grids[::2]))


@pytest.mark.backends
def test_same_seed_same_run(main, tmp_path):
    """The same losses and grid again; another seed differs. (A run and its resumption in
    another process are compared bit for bit in tests/test_resume.py and test_stops.py.)"""
    runs = []
    for name, seed in (("a", "10"), ("b", "10"), ("c", "11")):
        assert main("--epochs", "1", *TINY, "--seed", seed, "--out-dir", str(tmp_path / name)) == 0
        grid = pixels(tmp_path / name / "gan_generated_image_epoch_1.png")
        runs.append((losses(tmp_path / name), grid))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])
    assert runs[2][0] != runs[0][0] and not np.array_equal(runs[2][1], runs[0][1])


def test_train_is_called_as_the_article_calls_it(tmp_path):
    """train(2, 128) after `import gan_mnist`: the constants' settings, its own data."""
    code = "import gan_mnist as g; g.SCORE_DIGITS = 0; g.LIMIT = 512; g.train(2, 128)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env={**OFFLINE, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert "Epoch 2/2" in result.stdout and "4 steps per epoch" in result.stdout
    assert len(losses(tmp_path / "runs" / "subset-first512")) == 2


def test_help_and_a_bad_flag_answer_before_the_libraries_load(tmp_path):
    """No TensorFlow, Keras or JAX is imported for --help or a bad flag (so they answer at once),
    and their only output is theirs."""
    for flags in (["--help"], ["--epochs", "abc"]):
        result = subprocess.run([sys.executable, "-X", "importtime", SCRIPT, *flags], cwd=tmp_path,
                                capture_output=True, text=True)
        imported = re.findall(r"\| +(\w+)$", result.stderr, flags=re.M)
        assert not {"keras", "tensorflow", "jax", "numpy"} & set(imported), result.args
        ours = "".join(line for line in result.stderr.splitlines(True) if "import time" not in line)
        if flags == ["--help"]:
            assert result.returncode == 0 and result.stdout.startswith("usage: gan_mnist.py")
            assert ours == "" and "--checkpoint-seconds" in result.stdout
        else:
            refused(result.returncode, ours, "--epochs", "abc", "gan_mnist.py --help")
    assert os.listdir(tmp_path) == []


def test_importing_writes_nothing_and_leaves_xla_flags_as_found(tmp_path):
    """Importing loads the libraries (the flag JAX reads as it starts, then put back) and writes
    nothing. JAX's XLA reads its flags as JAX starts (seen: a spy on its start), during the import:
    a flag it does not know stops it."""
    code = ("import os, jax._src.xla_bridge as xb; start = xb.backends; seen = []\n"
            "xb.backends = lambda: seen.append(os.environ.get('XLA_FLAGS')) or start()\n"
            "import gan_mnist; print(os.listdir('.'), os.environ.get('XLA_FLAGS'), seen[0])")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "KERAS_BACKEND")}
    env["PYTHONPATH"] = ROOT
    for flags in (None, "--xla_cpu_enable_fast_math=false"):
        given = {**env, "KERAS_BACKEND": "jax", **({"XLA_FLAGS": flags} if flags else {})}
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                                text=True, env=given)
        read = f"{flags or ''} --xla_gpu_deterministic_ops=true"
        assert result.returncode == 0 and result.stdout == f"[] {flags} {read}\n", result.stderr
    unknown = {**env, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_no_such_flag"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            env=unknown)
    assert result.returncode != 0 and result.stdout == b""


def test_ema_leaves_training_alone_and_decay_0_samples_the_raw_generator(main, tmp_path):
    runs = {}
    for decay in ("0", "0.999"):
        out = tmp_path / f"out{decay}"
        assert main("--epochs", "2", *QUICK, "--ema-decay", decay, "--out-dir", str(out)) == 0
        _, arrays = checkpoint(out / "checkpoint.npz")
        runs[decay] = (losses(out), arrays, generator_weights(out / "generator.keras"),
                       pixels(out / "gan_generated_image_epoch_2.png"))
    (raw_losses, raw_ck, raw_model, raw_grid), (ema_losses, ema_ck, ema_model, ema_grid) = (
        runs.values())
    assert raw_losses == ema_losses  # training is untouched by the EMA
    raw = [a for name, a in raw_ck.items() if name.startswith("generator/")]
    ema_run_raw = [a for name, a in ema_ck.items() if name.startswith("generator/")]
    assert len(raw) == 8 and same_arrays(raw, ema_run_raw)
    assert same_arrays(raw_model, raw)  # --ema-decay 0: grids and file from the raw generator
    assert same_arrays(ema_model, [a for name, a in ema_ck.items() if name.startswith("ema/")])
    assert not same_arrays(ema_model, raw) and not np.array_equal(raw_grid, ema_grid)


def test_the_helper_scripts_use_names_the_script_has():
    """data/make_digit_classifier.py, data/score_grid.py, tests/benchmark.py call gan_mnist.py."""
    for path in ("data/make_digit_classifier.py", "data/score_grid.py", "tests/benchmark.py"):
        with open(os.path.join(ROOT, path)) as f:
            names = set(re.findall(r"gan_mnist\.([A-Za-z_]\w*)", f.read())) - {"py"}
        assert names and not [n for n in names if not hasattr(gan_mnist, n)], (path, names)


# ----------------------------------------------------------------------- backends it cannot run on
def script_with(tmp_path, env, *flags):
    (tmp_path / "keras_home").mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return script(*flags, cwd=tmp_path, env={**clean, "KERAS_HOME": "keras_home", **env})


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
        "            raise ModuleNotFoundError('No module named tensorflow', name='tensorflow')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n")
    result = script_with(tmp_path, {"PYTHONPATH": str(tmp_path / "site")}, "--epochs", "1")
    refused(result.returncode, result.stderr, "tensorflow", "KERAS_BACKEND")
