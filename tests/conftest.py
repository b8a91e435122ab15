"""Shared helpers: run the real script (in a subprocess or in this process) on offline digits."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gan_mnist.py")
sys.path.insert(0, ROOT)

# Tiny settings: 256 digits, batch 32 = 8 steps per epoch; 200 digits scored at each grid.
TINY = ["--data", "subset", "--limit", "256", "--batch-size", "32", "--score-digits", "200"]


def losses(out_dir):
    """(epoch, d_loss, g_loss) rows of OUT_DIR/losses.csv, as written."""
    with open(os.path.join(out_dir, "losses.csv")) as f:
        return [(r["epoch"], r["d_loss"], r["g_loss"]) for r in csv.DictReader(f)]


def pixels(path):
    return np.asarray(Image.open(path).convert("L"))


def build(random_dim=100):
    """The three models, built as gan_mnist.train builds them."""
    import gan_mnist
    generator = gan_mnist.get_generator(random_dim)
    discriminator = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5))
    gan = gan_mnist.get_gan_network(discriminator, random_dim, generator,
                                    gan_mnist.get_optimizer(2e-4, 0.5))
    return generator, discriminator, gan


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
    as the command line without paying TensorFlow's start-up again (most tests use this)."""
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
    def run_script(*flags, timeout=300):
        return subprocess.run([sys.executable, SCRIPT] + with_dirs(flags, tmp_path), capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)
    return run_script


def pytest_configure(config):
    # Keras' own get_weights() trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
