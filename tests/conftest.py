"""Shared helpers: run the real script (in a subprocess or in this process) on offline digits."""
import csv
import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gan_mnist.py")
sys.path.insert(0, ROOT)

# Tiny settings: 256 digits, batch 32 = 8 steps an epoch; 200 digits scored at each grid.
TINY = ["--data", "subset", "--limit", "256", "--batch-size", "32", "--score-digits", "200"]
# the later flag wins: no scores
QUICK = [*TINY, "--score-digits", "0"]
# seconds: the only limit on a wait, for what hangs (a loaded machine is only slow)
HANG = 1800


def pytest_configure(config):
    config.addinivalue_line("markers", "backends: also run on JAX (tests/test_backends.py)")
    # Keras' own get_weights() trips numpy 2's __array__(copy=...) deprecation: not ours
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword")


# ------------------------------------------------------------------------------ reading outputs
def losses(out_dir):
    """(epoch, d_loss, g_loss) rows of OUT_DIR/losses.csv, as written."""
    with open(os.path.join(out_dir, "losses.csv")) as f:
        return [(r["epoch"], r["d_loss"], r["g_loss"]) for r in csv.DictReader(f)]


def pixels(path):
    return np.asarray(Image.open(path).convert("L"))


def checkpoint(path):
    """(meta, {name: array}) of a checkpoint.npz."""
    with np.load(path) as f:
        arrays = dict(f)
    return json.loads(str(arrays.pop("meta"))), arrays


def same_arrays(a, b):
    """Two checkpoints' arrays, or two weight lists, equal name for name and bit for bit."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def generator_weights(path):
    import keras
    return keras.models.load_model(path, compile=False).get_weights()


def leftovers(folder):
    """The temporaries (.tmp-*) left in a folder."""
    return [name for name in os.listdir(folder) if name.startswith(".tmp")]


def refused(code, err, *names):
    """A refusal: exit code 2, one line on stderr and nothing else, naming each of `names`."""
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("gan_mnist.py: error: "), err
    assert all(str(name) in err for name in names), (names, err)


def build(random_dim=100):
    """The three models, built as gan_mnist.train builds them."""
    import gan_mnist
    generator = gan_mnist.get_generator(random_dim)
    discriminator = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5, turn=1))
    gan = gan_mnist.get_gan_network(discriminator, random_dim, generator,
                                    gan_mnist.get_optimizer(2e-4, 0.5, turn=2))
    return generator, discriminator, gan


# ---------------------------------------------------------------------------- running the script
def with_dirs(flags, tmp_path):
    return list(flags) if "--out-dir" in flags else [*flags, "--out-dir", str(tmp_path / "out")]


@pytest.fixture
def main(tmp_path):
    """main(*flags) -> exit code of gan_mnist.main(FLAGS) in this process: the command line's
    code path without the libraries' start-up again (most tests use this)."""
    import gan_mnist
    return lambda *flags: gan_mnist.main(with_dirs(flags, tmp_path))


def script(*flags, cwd, env=None):
    """`python gan_mnist.py FLAGS` in `cwd`, to the end."""
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                          timeout=HANG, cwd=cwd, env=env)


@pytest.fixture
def run(tmp_path):
    """run(*flags) -> CompletedProcess of `python gan_mnist.py FLAGS` (--out-dir tmp_path/out
    unless the flags name one)."""
    return lambda *flags, env=None: script(*with_dirs(flags, tmp_path), cwd=tmp_path, env=env)


def straight_run(folder, *flags):
    """gan_mnist.main(TINY + FLAGS) into folder/out, in this process, never stopped: what a
    stopped and resumed run must equal (same seed, same run in a process or another)."""
    import gan_mnist
    assert gan_mnist.main([*TINY, *flags, "--out-dir", str(folder / "out")]) == 0
    return folder / "out"


def start(tmp_path, *flags, env=None):
    """`python gan_mnist.py FLAGS` started in a session of its own, its output piped."""
    return subprocess.Popen([sys.executable, SCRIPT, *with_dirs(flags, tmp_path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                            start_new_session=True)


def wait_for_line(process, text):
    """Read the process's stdout until a line holds `text`; returns the lines read."""
    lines, deadline = [], time.time() + HANG
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r} in {lines}")


def patch_step(monkeypatch, after):
    """Make every training call that train() builds call after(n, generator, losses) once the
    call has returned (n = 1, 2, ... across the run); what it returns is what train() gets."""
    import gan_mnist
    real = gan_mnist.make_train_steps

    def make_train_steps(generator, *args):
        steps, calls = real(generator, *args), itertools.count(1)
        return lambda n: np.array([after(next(calls), generator, losses)
                                   for losses in np.array(steps(n))])
    monkeypatch.setattr(gan_mnist, "make_train_steps", make_train_steps)
