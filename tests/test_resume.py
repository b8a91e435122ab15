"""Checkpoints and --resume: an exact continuation (whatever the steps a call, fresh grid noise
too), a checkpoint edited, cut or of other settings refused in one line, a finished run's files,
a linked checkpoint, and when a checkpoint is written."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

import gan_mnist
from conftest import (QUICK, TINY, checkpoint, generator_weights, losses, pixels, refused,
                      same_arrays)


@pytest.mark.backends
def test_stopped_then_resumed_equals_uninterrupted(main, run, tmp_path):
    """And --steps-per-call changes nothing trained: 1 a call straight through, 3 + 3 + 2, then
    the default; fresh noise for every grid (--no-fixed-noise) continues its stream."""
    settings = ["--sample-every", "1000", "--no-fixed-noise", *TINY]
    assert main("--epochs", "2", *settings, "--steps-per-call", "1", "--out-dir",
                str(tmp_path / "full")) == 0
    assert main("--epochs", "1", *settings, "--steps-per-call", "3") == 0
    resumed = run("--epochs", "2", *settings, "--resume")  # a new process, as after a crash
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout and "after epoch 1" in resumed.stdout
    out, full = tmp_path / "out", tmp_path / "full"
    assert losses(out) == losses(full) and len(losses(out)) == 2
    assert (out / "scores.csv").read_text() == (full / "scores.csv").read_text()
    # every variable: both networks, the EMA copy, optimizer slots, random states
    assert same_arrays(checkpoint(out / "checkpoint.npz")[1],
                       checkpoint(full / "checkpoint.npz")[1])
    assert same_arrays(generator_weights(out / "generator.keras"),
                       generator_weights(full / "generator.keras"))
    for epoch in (1, 2):
        grid = f"gan_generated_image_epoch_{epoch}.png"
        assert np.array_equal(pixels(out / grid), pixels(full / grid))
    assert Image.open(out / "progress.gif").n_frames == 2  # epochs 1 and 2
    assert gan_mnist.BACKEND == "tensorflow" or "tensorflow" not in sys.modules  # JAX without TF


def edited(meta, arrays):
    """Hand edits and damage (a checkpoint cut short and put together again)."""
    first = next(iter(arrays))
    yield "another seed", {**meta, "config": {**meta["config"], "seed": 3}}, arrays
    yield "epoch a string", {**meta, "epoch": "1"}, arrays
    yield "epoch 10**12", {**meta, "epoch": 10**12}, arrays
    yield "epoch -5", {**meta, "epoch": -5}, arrays
    yield "no config", {k: v for k, v in meta.items() if k != "config"}, arrays
    yield "grid_rng damaged", {**meta, "grid_rng": [1]}, arrays
    yield "10 of its arrays", meta, dict(list(arrays.items())[:10])
    yield "no random state", meta, dict(list(arrays.items())[:-1])
    yield "an array more", meta, {**arrays, "extra": np.zeros(3)}
    yield "a reshaped array", meta, {**arrays, first: arrays[first].reshape(-1)}
    yield "NaN weights", meta, {**arrays, first: arrays[first] * np.nan}


def test_a_checkpoint_edited_cut_or_of_other_settings_is_refused(main, tmp_path, capsys):
    """Each in one line, exit code 2, the outputs as they were."""
    assert main("--epochs", "1", *TINY) == 0
    path = tmp_path / "out" / "checkpoint.npz"
    outputs = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}
    for flag, value, name in (("--batch-size", "16", "batch_size"), ("--limit", "128", "digits"),
                              ("--seed", "3", "seed"), ("--score-digits", "300", "score_digits")):
        refused(main("--epochs", "2", *TINY, flag, value, "--resume"), capsys.readouterr().err,
                path, name)
    data = path.read_bytes()
    meta, arrays = checkpoint(path)
    for why, meta_, arrays_ in edited(meta, arrays):
        np.savez(path, meta=json.dumps(meta_), **arrays_)
        refused(main("--epochs", "2", *TINY, "--resume"), capsys.readouterr().err, path)
        path.write_bytes(data)
    path.write_bytes(data[:len(data) // 2])  # as if the machine died mid-write without rename
    refused(main("--epochs", "2", *TINY, "--resume"), capsys.readouterr().err, path, "damaged")
    path.write_bytes(data)
    assert {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")} == outputs


def test_resume_refuses_other_digits_under_the_same_name(main, tmp_path, capsys):
    """The same data file rewritten with other digits (same count) is not resumed."""
    with np.load(gan_mnist.bundled("mnist_5k.npz")) as f:
        x = f["x_train"][:256]
    np.savez(tmp_path / "mine.npz", x_train=x)
    flags = ["--data", str(tmp_path / "mine.npz"), "--batch-size", "32", "--score-digits", "0"]
    assert main("--epochs", "1", *flags) == 0
    np.savez(tmp_path / "mine.npz", x_train=x[::-1])
    refused(main("--epochs", "2", *flags, "--resume"), capsys.readouterr().err, "digits_sha256")


def test_resume_without_a_checkpoint_creates_nothing(main, tmp_path, capsys, monkeypatch):
    """The common typo in --out-dir: refused before any folder exists or any data are loaded
    (with {data}, before MNIST's download)."""
    monkeypatch.setattr(gan_mnist, "load_mnist_data", None)
    for out in (tmp_path / "typo", tmp_path / "runs" / "{data}"):
        refused(main("--epochs", "2", *QUICK, "--resume", "--out-dir", str(out)),
                capsys.readouterr().err, out / "checkpoint.npz")
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
    assert checkpoint(tmp_path / "store" / "real.npz")[0]["epoch"] == 2


def test_checkpoints_after_epoch_1_then_at_most_every_checkpoint_seconds(main, tmp_path,
                                                                          monkeypatch):
    """A clock that moves a second a reading (about 9 an epoch here): --checkpoint-seconds 25
    writes after epoch 1, then when 25 s have passed, and at the last epoch."""
    clock = iter(range(10**6))
    monkeypatch.setattr(gan_mnist.time, "perf_counter", lambda: next(clock))
    written = []
    real = gan_mnist.Run.save_checkpoint
    monkeypatch.setattr(gan_mnist.Run, "save_checkpoint",
                        lambda run: written.append(len(run.history)) or real(run))
    # a grid every epoch; the loss plot (as the scores and the GIF) only with a checkpoint
    drawn = []
    monkeypatch.setattr(gan_mnist, "plot_loss", lambda history, path: drawn.append(len(history)))
    assert main("--epochs", "7", *QUICK, "--sample-every", "1", "--checkpoint-seconds", "25") == 0
    assert written[0] == 1 and written[-1] == 7 and 2 < len(written) < 6, written
    assert drawn == written
    assert len(losses(tmp_path / "out")) == 7
