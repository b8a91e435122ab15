"""Shared helpers: run the real script (in a subprocess or in this process) on offline digits."""
import csv
import itertools
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


def checkpoint_epoch(path):
    import json
    with np.load(path) as f:
        return json.loads(str(f["meta"]))["epoch"]


def edit_checkpoint_meta(path, edit):
    """Rewrite the checkpoint's JSON meta after edit(meta) changed it in place, as if an older
    version (or damage) had written it; the arrays stay as they are."""
    import json
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    arrays["meta"] = json.dumps(meta)
    np.savez(path, **arrays)


def generator_weights(path):
    import keras
    return keras.models.load_model(path, compile=False).get_weights()


def same_arrays(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def leftovers(*folders):
    """The temporary files (.tmp-*) left in the folders."""
    return [name for folder in folders if os.path.isdir(folder)
            for name in os.listdir(folder) if name.startswith(".tmp")]


def build(random_dim=100, turns=(1, 2)):
    """The three models, built as gan_mnist.train builds them (turns: the shared Adam counter's)."""
    import gan_mnist
    generator = gan_mnist.get_generator(random_dim)
    discriminator = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5, turns[0]))
    gan = gan_mnist.get_gan_network(discriminator, random_dim, generator,
                                    gan_mnist.get_optimizer(2e-4, 0.5, turns[1]))
    return generator, discriminator, gan


# ------------------------------------------------------------------------------ running the script
def with_dirs(flags, tmp_path):
    flags = list(flags)
    if "--out-dir" not in flags:
        flags += ["--out-dir", str(tmp_path / "out")]
    if "--checkpoint-dir" not in flags:
        flags += ["--checkpoint-dir", str(tmp_path / "ck")]
    return flags


@pytest.fixture
def main(tmp_path):
    """main(*flags) -> exit code of gan_mnist.main(FLAGS) in this process: the same code path
    as the command line without paying the libraries' start-up again (most tests use this)."""
    import gan_mnist

    def run_main(*flags):
        try:
            return gan_mnist.main(with_dirs(flags, tmp_path))
        except SystemExit as e:  # argparse
            return e.code
    return run_main


@pytest.fixture
def run(tmp_path):
    """run(*flags) -> CompletedProcess of `python gan_mnist.py FLAGS`, with --out-dir and
    --checkpoint-dir inside tmp_path unless the flags name them."""
    def run_script(*flags, timeout=HANG):
        return subprocess.run([sys.executable, SCRIPT] + with_dirs(flags, tmp_path), capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)
    return run_script


def straight_run(folder, *flags):
    """`python gan_mnist.py TINY FLAGS` into folder/out and folder/ck, never stopped: what a
    stopped and resumed run must equal. Returns the folder."""
    result = subprocess.run([sys.executable, SCRIPT, *TINY, *flags, "--out-dir", str(folder / "out"),
                             "--checkpoint-dir", str(folder / "ck")], capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


def start(tmp_path, *flags, env=None):
    """`python gan_mnist.py FLAGS` started in the background, its output piped."""
    return subprocess.Popen([sys.executable, SCRIPT, *with_dirs(flags, tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


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
    """Make every training step that train() builds call after(n, generator, losses) once the
    step has run (n = 1, 2, ... across the run); what it returns is what train() gets."""
    import gan_mnist
    real = gan_mnist.make_train_step

    def make_train_step(generator, *args, **kwargs):
        step, calls = real(generator, *args, **kwargs), itertools.count(1)

        def train_step():
            return after(next(calls), generator, step())
        return train_step
    monkeypatch.setattr(gan_mnist, "make_train_step", make_train_step)
