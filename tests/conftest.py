"""Shared helpers: run the real script in a subprocess, on the bundled offline digits."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gan_mnist.py")
sys.path.insert(0, ROOT)

# Tiny settings: 256 digits, batch 32 = 8 steps per epoch.
TINY = ["--data", "subset", "--limit", "256", "--batch-size", "32"]


@pytest.fixture
def run(tmp_path):
    """run(*flags) -> CompletedProcess of `python gan_mnist.py FLAGS`, with --out-dir and
    --checkpoint-dir inside tmp_path unless the flags name them."""
    def run_script(*flags, timeout=300):
        flags = list(flags)
        if "--out-dir" not in flags:
            flags += ["--out-dir", str(tmp_path / "out")]
        if "--checkpoint-dir" not in flags:
            flags += ["--checkpoint-dir", str(tmp_path / "ck")]
        return subprocess.run([sys.executable, SCRIPT] + flags, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)
    return run_script
