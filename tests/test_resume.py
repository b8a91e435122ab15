"""Checkpoints and --resume: exact continuation (256 and 60,000 digits), refused checkpoints, a
finished run's files, a linked checkpoint, and a checkpoint kept elsewhere (--checkpoint-dir)."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

import gan_mnist
from conftest import QUICK, TINY, checkpoint_arrays, checkpoint_meta, generator_weights, losses, pixels, refused, same_arrays


@pytest.mark.backends
def test_stopped_then_resumed_equals_uninterrupted(main, run, tmp_path):
    """And --steps-per-call changes nothing trained: 1 a call straight through, 3 + 3 + 2, then 8 (the default)."""
    settings = ["--sample-every", "1000", *TINY]  # grids at epochs 1 and 3 only
    assert main("--epochs", "3", *settings, "--steps-per-call", "1", "--out-dir", str(tmp_path / "full")) == 0
    assert main("--epochs", "1", *settings, "--steps-per-call", "3") == 0
    resumed = run("--epochs", "3", *settings, "--resume")  # a new process, as after a crash
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout and "after epoch 1" in resumed.stdout
    out, full = tmp_path / "out", tmp_path / "full"
    assert losses(out) == losses(full) and len(losses(out)) == 3
    assert (out / "scores.csv").read_text() == (full / "scores.csv").read_text()
    # every variable: both networks, the EMA copy, optimizer slots, random states
    assert same_arrays(checkpoint_arrays(out / "checkpoint.npz"), checkpoint_arrays(full / "checkpoint.npz"))
    assert same_arrays(generator_weights(out / "generator.keras"), generator_weights(full / "generator.keras"))
    assert np.array_equal(pixels(out / "gan_generated_image_epoch_3.png"), pixels(full / "gan_generated_image_epoch_3.png"))
    assert Image.open(out / "progress.gif").n_frames == 2  # epochs 1 and 3
    assert gan_mnist.BACKEND == "tensorflow" or "tensorflow" not in sys.modules  # JAX runs without loading it


def test_a_checkpoint_of_other_settings_or_damaged_is_refused(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY) == 0
    path = tmp_path / "out" / "checkpoint.npz"
    outputs = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}
    refused(main("--epochs", "2", *TINY, "--batch-size", "16", "--resume"), capsys.readouterr().err, path, "batch_size")
    refused(main("--epochs", "2", *TINY, "--limit", "128", "--resume"), capsys.readouterr().err, path, "digits")
    refused(main("--epochs", "2", *TINY, "--seed", "3", "--resume"), capsys.readouterr().err, path, "seed")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as if the machine died mid-write without rename
    refused(main("--epochs", "2", *TINY, "--resume"), capsys.readouterr().err, path, "damaged")
    path.write_bytes(data)
    assert {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")} == outputs  # nothing written
    with np.load(path) as f:
        arrays = dict(f)
    np.savez(path, **{k: v for k, v in arrays.items() if k != "v3"})  # a variable missing
    refused(main("--epochs", "2", *TINY, "--resume"), capsys.readouterr().err, path)


def test_resume_refuses_other_digits_under_the_same_name(main, tmp_path, capsys):
    """The same data file rewritten with other digits (same count) is not resumed."""
    with np.load(gan_mnist.SUBSET_PATH) as f:
        x = f["x_train"][:256]
    np.savez(tmp_path / "mine.npz", x_train=x)
    flags = ["--data", str(tmp_path / "mine.npz"), "--batch-size", "32", "--score-digits", "0"]
    assert main("--epochs", "1", *flags) == 0
    np.savez(tmp_path / "mine.npz", x_train=x[::-1])
    refused(main("--epochs", "2", *flags, "--resume"), capsys.readouterr().err, "digits_sha256")


def test_resume_without_a_checkpoint_creates_nothing(main, tmp_path, capsys):
    """The common typo in --out-dir: refused before any folder exists."""
    refused(main("--epochs", "2", *QUICK, "--resume", "--out-dir", str(tmp_path / "typo")),
            capsys.readouterr().err, tmp_path / "typo" / "checkpoint.npz")
    assert sorted(os.listdir(tmp_path)) == []


def test_resume_of_a_finished_run_writes_its_generator(main, tmp_path, capsys):
    """As after a stop during the final writes: the checkpoint holds the last epoch."""
    assert main("--epochs", "2", *TINY) == 0
    out = tmp_path / "out"
    model = generator_weights(out / "generator.keras")
    (out / "generator.keras").unlink()
    kept = {n: (out / n).read_bytes() for n in ("losses.csv", "scores.csv", "checkpoint.npz")}
    capsys.readouterr()
    assert main("--epochs", "2", *TINY, "--resume") == 0
    assert "after epoch 2 (of --epochs 2)" in capsys.readouterr().out
    assert same_arrays(generator_weights(out / "generator.keras"), model)
    assert {n: (out / n).read_bytes() for n in kept} == kept


def test_a_linked_checkpoint_stays_linked(main, tmp_path):
    """A checkpoint.npz linked onto another disk is rewritten there, and the link kept."""
    assert main("--epochs", "1", *QUICK) == 0
    (tmp_path / "store").mkdir()
    os.replace(tmp_path / "out" / "checkpoint.npz", tmp_path / "store" / "real.npz")
    os.symlink(tmp_path / "store" / "real.npz", tmp_path / "out" / "checkpoint.npz")
    assert main("--epochs", "2", *QUICK, "--resume") == 0
    assert os.path.islink(tmp_path / "out" / "checkpoint.npz")
    assert checkpoint_meta(tmp_path / "store" / "real.npz")["epoch"] == 2


def test_a_checkpoint_dir_of_its_own(main, tmp_path):
    """--checkpoint-dir (a mounted Drive, say): the checkpoint there, the outputs in --out-dir."""
    ck = ["--checkpoint-dir", str(tmp_path / "drive")]
    assert main("--epochs", "1", *QUICK, *ck) == 0
    assert sorted(os.listdir(tmp_path / "drive")) == [".lock", "checkpoint.npz"]
    assert not (tmp_path / "out" / "checkpoint.npz").exists()
    assert main("--epochs", "2", *QUICK, *ck, "--resume") == 0
    assert len(losses(tmp_path / "out")) == 2 and checkpoint_meta(tmp_path / "drive" / "checkpoint.npz")["epoch"] == 2
