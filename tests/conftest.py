"""Shared helpers: run the real script (in a subprocess or in this process) on offline digits."""
import csv
import itertools
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gan_mnist.py")
sys.path.insert(0, ROOT)

# Tiny settings: 256 digits, batch 32 = 8 steps per epoch; 200 digits scored at each grid.
TINY = ["--data", "subset", "--limit", "256", "--batch-size", "32", "--score-digits", "200"]
QUICK = [*TINY, "--score-digits", "0"]  # the later flag wins: no scores
HANG = 3600  # seconds: the only wall-clock limit, for a process that hangs; a loaded machine is only slow


def pytest_configure(config):
    config.addinivalue_line("markers", "backends: also run on Keras' JAX backend (tests/test_backends.py)")
    # Keras' own get_weights() trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


# ------------------------------------------------------------------------------- reading outputs
def losses(out_dir):
    """(epoch, d_loss, g_loss) rows of OUT_DIR/losses.csv, as written."""
    with open(os.path.join(out_dir, "losses.csv")) as f:
        return [(r["epoch"], r["d_loss"], r["g_loss"]) for r in csv.DictReader(f)]


def pixels(path):
    return np.asarray(Image.open(path).convert("L"))


def checkpoint_arrays(path):
    with np.load(path) as f:
        return [f[f"v{i}"] for i in range(len(f.files) - 1)]


def checkpoint_meta(path):
    with np.load(path) as f:
        return json.loads(str(f["meta"]))


def generator_weights(path):
    import keras
    return keras.models.load_model(path, compile=False).get_weights()


def same_arrays(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def leftovers(*folders):
    """The temporary files (.tmp-*) left in the folders."""
    return [name for folder in folders if os.path.isdir(folder)
            for name in os.listdir(folder) if name.startswith(".tmp")]


def ours(stderr):
    """stderr without the notices TensorFlow's C++ side prints as it loads (README: harmless)."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not re.match(r"WARNING: All log messages before absl|[IWE]\d{4} ", line))


def refused(code, err, *names):
    """A refusal: exit code 2, one line on stderr without a traceback, naming each of `names`."""
    err = ours(err)
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("gan_mnist.py: error: ") and "Traceback" not in err, err
    assert all(str(name) in err for name in names), (names, err)


def build(random_dim=100):
    """The three models, built as gan_mnist.train builds them."""
    import gan_mnist
    generator = gan_mnist.get_generator(random_dim)
    discriminator = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5, 1))
    gan = gan_mnist.get_gan_network(discriminator, random_dim, generator, gan_mnist.get_optimizer(2e-4, 0.5, 2))
    return generator, discriminator, gan


# ------------------------------------------------------------------------------ running the script
def with_dirs(flags, tmp_path):
    return list(flags) if "--out-dir" in flags else [*flags, "--out-dir", str(tmp_path / "out")]


@pytest.fixture
def main(tmp_path):
    """main(*flags) -> exit code of gan_mnist.main(FLAGS) in this process: the same code path
    as the command line without paying the libraries' start-up again (most tests use this)."""
    import gan_mnist
    return lambda *flags: gan_mnist.main(with_dirs(flags, tmp_path))


@pytest.fixture
def run(tmp_path):
    """run(*flags) -> CompletedProcess of `python gan_mnist.py FLAGS`, with --out-dir tmp_path/out
    unless the flags name one."""
    def run_script(*flags, env=None):
        return subprocess.run([sys.executable, SCRIPT] + with_dirs(flags, tmp_path), capture_output=True, text=True,
                              timeout=HANG, cwd=tmp_path, env=env)
    return run_script


def straight_run(folder, *flags):
    """`python gan_mnist.py TINY FLAGS` into folder/out, never stopped: what a stopped and
    resumed run must equal. Returns folder/out."""
    result = subprocess.run([sys.executable, SCRIPT, *TINY, *flags, "--out-dir", str(folder / "out")],
                            capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "out"


def start(tmp_path, *flags, env=None):
    """`python gan_mnist.py FLAGS` started in the background, its output piped."""
    return subprocess.Popen([sys.executable, SCRIPT, *with_dirs(flags, tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def wait_for_line(process, text, timeout=HANG):
    """Read the process's stdout until a line holds `text`; returns the lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r} in {lines}")


def patch_step(monkeypatch, after):
    """Make every training step that train() builds call after(n, generator, losses) once the call
    that ran it has returned (n = 1, 2, ... across the run); what it returns is what train() gets."""
    import gan_mnist
    real = gan_mnist.make_train_step

    def make_train_step(generator, *args, **kwargs):
        step, calls = real(generator, *args, **kwargs), itertools.count(1)
        return lambda steps: np.array([after(next(calls), generator, losses) for losses in np.array(step(steps))])
    monkeypatch.setattr(gan_mnist, "make_train_step", make_train_step)
