"""The script as a user runs it: one tiny epoch end to end, the grid schedule, same seed same
run, importing it, and a quiet start-up."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gan_mnist
from conftest import HANG, ROOT, SCRIPT, TINY, checkpoint_arrays, generator_weights, losses, pixels, same_arrays


@pytest.mark.backends
def test_smoke_one_tiny_epoch(run, tmp_path):
    result = run("--epochs", "1", *TINY)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    grid = out / "gan_generated_image_epoch_1.png"
    assert Image.open(grid).size == (1000, 1000)
    grey = pixels(grid)
    assert grey.std() > 10, "the grid is blank"
    assert (grey > 250).mean() > 0.05, "no white background between the 100 digits"
    [(epoch, d_loss, g_loss)] = losses(out)
    assert epoch == "1" and 0 < float(d_loss) < 5 and 0 < float(g_loss) < 10
    for name in ("gan_loss.png", "progress.gif", "generator.keras", "scores.csv", "scores.png"):
        assert (out / name).stat().st_size > 100, name
    assert (tmp_path / "ck" / "checkpoint.npz").exists()
    assert "Epoch 1/1: d_loss" in result.stdout and "| FD " in result.stdout
    # not a terminal (a log file, a pipe): no progress bar, so every line of the log is readable
    assert "\r" not in result.stderr + result.stdout and "it/s" not in result.stderr
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")], "temporary files left behind"
    assert sorted(os.listdir(tmp_path)) == ["ck", "out"]  # nothing written to the working folder


def test_grids_at_epoch_1_every_sample_every_and_last(main, tmp_path):
    assert main("--epochs", "4", "--sample-every", "3", *TINY) == 0
    grids = sorted(p for p in os.listdir(tmp_path / "out") if p.startswith("gan_generated"))
    assert grids == [f"gan_generated_image_epoch_{e}.png" for e in (1, 3, 4)]
    assert [row[0] for row in losses(tmp_path / "out")] == ["1", "2", "3", "4"]
    gif = Image.open(tmp_path / "out" / "progress.gif")
    assert gif.n_frames == 3 and max(gif.size) <= 400
    assert not np.array_equal(pixels(tmp_path / "out" / grids[0]), pixels(tmp_path / "out" / grids[-1]))


@pytest.mark.backends
def test_same_seed_same_run(main, run, tmp_path):
    runs = []
    for name, train in (("a", main), ("b", run)):  # in this process, and in a fresh one
        result = train("--epochs", "2", *TINY, "--out-dir", str(tmp_path / name))
        assert getattr(result, "returncode", result) == 0
        runs.append((losses(tmp_path / name),
                     pixels(tmp_path / name / "gan_generated_image_epoch_2.png")))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert main("--epochs", "2", *TINY, "--seed", "11", "--out-dir", str(tmp_path / "c")) == 0
    assert losses(tmp_path / "c") != runs[0][0]


def test_importing_does_nothing(tmp_path):
    code = "import gan_mnist, os; print(sorted(os.listdir('.')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(gan_mnist.__file__)})
    assert result.returncode == 0 and result.stdout.strip() == "[]"


def test_start_up_shows_no_library_notices(tmp_path):
    """A CPU user's first stderr line is ours, not TensorFlow's CUDA or oneDNN notices."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, SCRIPT, "--generate", str(tmp_path / "none.keras")], env=env,
                            capture_output=True, text=True, timeout=HANG, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"gan_mnist.py: error: generator file {tmp_path / 'none.keras'} "
                                          "not found: pass the generator.keras that a training run wrote to "
                                          "its --out-dir"]


def test_start_up_filter_passes_every_other_line(tmp_path):
    code = ("import os, gan_mnist\n"
            "with gan_mnist.quiet_start_up():\n"
            "    os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR\\n')\n"
            "    os.write(2, b'a real problem\\n')\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": os.path.dirname(gan_mnist.__file__)})
    assert result.returncode == 0 and "a real problem" in result.stderr and "cuInit" not in result.stderr


def test_ema_leaves_training_alone_and_decay_0_samples_the_raw_generator(main, tmp_path):
    runs = {}
    for decay in ("0", "0.999"):
        out, ck = tmp_path / f"out{decay}", tmp_path / f"ck{decay}"
        assert main("--epochs", "2", *TINY, "--ema-decay", decay, "--out-dir", str(out),
                    "--checkpoint-dir", str(ck)) == 0
        runs[decay] = (losses(out), checkpoint_arrays(ck / "checkpoint.npz"),
                       generator_weights(out / "generator.keras"), pixels(out / "gan_generated_image_epoch_2.png"))
    (raw_losses, raw_ck, raw_model, raw_grid), (ema_losses, ema_ck, ema_model, ema_grid) = runs["0"], runs["0.999"]
    assert raw_losses == ema_losses  # training is untouched by the EMA
    assert same_arrays(raw_ck[:8], ema_ck[:8])  # the raw generator's weights come first
    assert same_arrays(raw_model, raw_ck[:8])  # --ema-decay 0: grids and file from the raw generator
    assert not same_arrays(ema_model, ema_ck[:8])
    assert any(same_arrays(ema_model, ema_ck[i:i + 8]) for i in range(8, len(ema_ck) - 7))
    assert not np.array_equal(raw_grid, ema_grid)
    # --ema-decay 0's grid is exactly the raw generator's: redraw it from the EMA run's raw weights
    generator = gan_mnist.get_generator(100)
    generator.set_weights(ema_ck[:8])
    noise = gan_mnist.grid_noise(np.random.default_rng(gan_mnist.SEED), 100)
    gan_mnist.plot_generated_images(generator, noise, str(tmp_path / "raw.png"))
    assert np.array_equal(pixels(tmp_path / "raw.png"), raw_grid)


def test_the_helper_scripts_use_names_the_script_has():
    """data/make_digit_classifier.py, data/score_grid.py and tests/benchmark.py call into gan_mnist.py: a rename there
    must not leave them broken."""
    import re
    from conftest import ROOT
    for path in ("data/make_digit_classifier.py", "data/score_grid.py", "tests/benchmark.py"):
        with open(os.path.join(ROOT, path)) as f:
            names = set(re.findall(r"gan_mnist\.([A-Za-z_]\w*)", f.read())) - {"py"}
        assert names and not [n for n in names if not hasattr(gan_mnist, n)], (path, names)


# ------------------------------------------------------------------- start-up: crashes and backends
def fake_package(tmp_path, name, code):
    folder = tmp_path / "fake" / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(code)
    return str(tmp_path / "fake")


def script_with(tmp_path, env, *flags):
    """The script with ENV, its own empty KERAS_HOME unless ENV names one, no TF_CPP_MIN_LOG_LEVEL."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    (tmp_path / "keras_home").mkdir(exist_ok=True)
    env = {"KERAS_HOME": str(tmp_path / "keras_home"), **env}
    return subprocess.run([sys.executable, SCRIPT, *flags], env={**clean, **env}, capture_output=True, text=True,
                          cwd=tmp_path)


def test_a_crash_while_loading_still_shows_its_message(tmp_path):
    """J2: TensorFlow aborting while it loads (an old CPU) prints its fatal line; the held-back
    notices are only the known harmless ones."""
    fake = fake_package(tmp_path, "tensorflow", (
        "import os\n"
        "os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "os.write(2, b'F0000 cpu_feature_guard.cc:217] The TensorFlow library was compiled to use AVX "
        "instructions, but these aren\\'t available on your machine.\\n')\n"
        "os.abort()\n"))
    result = script_with(tmp_path, {"PYTHONPATH": fake}, "--epochs", "1")
    assert result.returncode == -signal.SIGABRT
    assert "compiled to use AVX instructions, but these aren't available on your machine" in result.stderr
    assert "cuInit" not in result.stderr


@pytest.mark.parametrize("backend", ["torch", "nonsense", "numpy"])
def test_an_unsupported_backend_is_one_line_before_keras_loads(tmp_path, backend):
    """J5: the script's own line, not Keras' traceback, for any backend it does not run on."""
    result = script_with(tmp_path, {"KERAS_BACKEND": backend}, "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"gan_mnist.py: error: Keras' backend here is {backend!r} (KERAS_BACKEND), which this script does "
        "not support: it runs on tensorflow or jax; run KERAS_BACKEND=tensorflow python gan_mnist.py"]


def test_where_only_jax_is_installed_the_plain_command_says_what_to_type(tmp_path):
    """K1: no TensorFlow installed (a finder that says so), default backend: one line naming JAX."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n")
    result = script_with(tmp_path, {"PYTHONPATH": str(tmp_path / "site")}, "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        "gan_mnist.py: error: Keras' backend here is tensorflow (the default), but TensorFlow is not installed; "
        "run KERAS_BACKEND=jax python gan_mnist.py (JAX is installed)"]


def test_the_backend_in_keras_json_is_the_one_used(tmp_path):
    """K1: a user's keras.json picks the backend as it does for Keras; KERAS_BACKEND still wins."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keras.json").write_text('{"backend": "jax"}')
    code = "import gan_mnist, keras; print(gan_mnist.BACKEND, keras.backend.backend())"
    for env, expected in (({}, "jax jax"), ({"KERAS_BACKEND": "tensorflow"}, "tensorflow tensorflow")):
        result = subprocess.run([sys.executable, "-c", code], env={**{k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"},
                                "KERAS_HOME": str(tmp_path / "home"), "PYTHONPATH": ROOT, **env},
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.split() == expected.split(), result.stderr[-2000:]


@pytest.mark.parametrize("config, message", [
    ('{"floatx": "int8"}', "sets floatx to 'int8', which Keras refuses"),
    ('{"image_data_format": "channels_sideways"}', "sets image_data_format to 'channels_sideways', which Keras refuses"),
])
def test_a_keras_json_that_keras_refuses_is_one_line(tmp_path, config, message):
    """J4: Keras raises at import for these; the script says which file and what to fix."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keras.json").write_text(config)
    result = script_with(tmp_path, {"KERAS_HOME": str(tmp_path / "home")}, "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_keras_json_floatx_does_not_change_the_run(run, tmp_path):
    """J4: floatx float16 in keras.json changed Adam's learning rate and the noise; the script
    computes in float32 whatever it says, and says so."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keras.json").write_text('{"floatx": "float16", "image_data_format": "channels_first"}')
    plain = run("--epochs", "2", *TINY, "--out-dir", str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "a_ck"))
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "home")}
    other = subprocess.run([sys.executable, SCRIPT, "--epochs", "2", *TINY, "--out-dir", str(tmp_path / "b"),
                            "--checkpoint-dir", str(tmp_path / "b_ck")], env=env, capture_output=True, text=True,
                           timeout=HANG, cwd=tmp_path)
    assert plain.returncode == 0 and other.returncode == 0, other.stderr[-2000:]
    assert "Note: keras.json sets floatx float16 and channels_first; this script computes in float32" in other.stdout
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert same_arrays(checkpoint_arrays(tmp_path / "a_ck" / "checkpoint.npz"),
                       checkpoint_arrays(tmp_path / "b_ck" / "checkpoint.npz"))
