"""Checkpoints and --resume: exact continuation (256 and 60,000 digits), Ctrl-C, refused
checkpoints with the real reason, a finished run's files, resuming into another folder."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import gan_mnist
from conftest import (HANG, QUICK, SCRIPT, TINY, checkpoint_arrays, edit_checkpoint_meta, generator_weights, losses,
                      pixels, same_arrays)


@pytest.mark.backends
def test_stopped_then_resumed_equals_uninterrupted(main, run, tmp_path):
    settings = ["--sample-every", "1000", *TINY]  # grids at epochs 1 and 3 only
    assert main("--epochs", "3", *settings, "--out-dir", str(tmp_path / "full"),
                "--checkpoint-dir", str(tmp_path / "full_ck")) == 0
    assert main("--epochs", "1", *settings) == 0
    resumed = run("--epochs", "3", *settings, "--resume")  # a new process, as after a crash
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout and "after epoch 1" in resumed.stdout
    assert losses(tmp_path / "out") == losses(tmp_path / "full") and len(losses(tmp_path / "out")) == 3
    scores = (tmp_path / "out" / "scores.csv").read_text()
    assert [row.split(",")[0] for row in scores.splitlines()] == ["epoch", "1", "3"]
    assert scores == (tmp_path / "full" / "scores.csv").read_text()
    # every variable: both networks, the EMA copy, optimizer slots, random states
    assert same_arrays(checkpoint_arrays(tmp_path / "ck" / "checkpoint.npz"),
                       checkpoint_arrays(tmp_path / "full_ck" / "checkpoint.npz"))
    assert same_arrays(generator_weights(tmp_path / "out" / "generator.keras"),
                       generator_weights(tmp_path / "full" / "generator.keras"))
    assert np.array_equal(pixels(tmp_path / "out" / "gan_generated_image_epoch_3.png"),
                          pixels(tmp_path / "full" / "gan_generated_image_epoch_3.png"))
    assert Image.open(tmp_path / "out" / "progress.gif").n_frames == 2  # epochs 1 and 3


@pytest.fixture(scope="module")
def digits_60k(tmp_path_factory):
    """The bundled digits tiled to 60,000, saved like Keras' mnist.npz (about 47 MB)."""
    with np.load(gan_mnist.SUBSET_PATH) as f:
        x_train = np.tile(f["x_train"], (12, 1, 1))
    path = tmp_path_factory.mktemp("data") / "mnist_60k.npz"
    np.savez(path, x_train=x_train)
    return path


@pytest.mark.backends
def test_same_seed_and_resume_on_60000_digits(main, tmp_path, digits_60k):
    """Two epochs of 468 steps straight, against one epoch then --resume."""
    flags = ["--data", str(digits_60k), "--sample-every", "1000", "--score-digits", "0"]
    assert main("--epochs", "2", *flags, "--out-dir", str(tmp_path / "a"),
                "--checkpoint-dir", str(tmp_path / "a_ck")) == 0
    assert main("--epochs", "1", *flags) == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")[:1]
    assert main("--epochs", "2", *flags, "--resume") == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")
    assert same_arrays(checkpoint_arrays(tmp_path / "ck" / "checkpoint.npz"),
                       checkpoint_arrays(tmp_path / "a_ck" / "checkpoint.npz"))


def test_ctrl_c_stops_cleanly_and_resume_matches(main, tmp_path):
    out, ck = tmp_path / "out", tmp_path / "ck"
    cmd = [sys.executable, SCRIPT, "--epochs", "500", "--sample-every", "1000", *TINY,
           "--out-dir", str(out), "--checkpoint-dir", str(ck)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + HANG
    while not (ck / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # the checkpoint exists: training has begun
    stdout, stderr = process.communicate(timeout=HANG)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    done = len(losses(out))
    assert 1 <= done < 500
    assert f"the checkpoint holds epoch {done}. Resume with: python {SCRIPT}" in stdout
    assert "--resume" in stdout.splitlines()[-1]
    assert main("--epochs", str(done + 1), "--sample-every", "1000", *TINY, "--resume") == 0
    assert main("--epochs", str(done + 1), "--sample-every", "1000", *TINY,
                "--out-dir", str(tmp_path / "straight"), "--checkpoint-dir", str(tmp_path / "s_ck")) == 0
    assert losses(out) == losses(tmp_path / "straight")
    assert same_arrays(checkpoint_arrays(ck / "checkpoint.npz"), checkpoint_arrays(tmp_path / "s_ck" / "checkpoint.npz"))


def test_broken_or_mismatched_checkpoint_is_refused(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY) == 0
    path = tmp_path / "ck" / "checkpoint.npz"
    outputs = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}
    assert main("--epochs", "2", "--data", "subset", "--limit", "256", "--batch-size", "16", "--resume") == 2
    assert "was made with batch_size=32, not 16" in capsys.readouterr().err
    assert main("--epochs", "2", "--data", "subset", "--limit", "128", "--batch-size", "32", "--resume") == 2
    assert "digits=256, not 128" in capsys.readouterr().err
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as if the machine died mid-write without rename
    assert main("--epochs", "2", *TINY, "--resume") == 2
    assert f"checkpoint {path} is damaged" in capsys.readouterr().err
    assert path.read_bytes() == data[: len(data) // 2]  # nothing overwritten
    assert {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")} == outputs


def test_checkpoint_without_a_key_is_damaged(main, tmp_path, capsys):
    assert main("--epochs", "1", *QUICK) == 0
    path = tmp_path / "ck" / "checkpoint.npz"
    edit_checkpoint_meta(path, lambda meta: meta.pop("grid_rng"))
    assert main("--epochs", "2", *QUICK, "--resume") == 2
    assert f"checkpoint {path} is damaged (KeyError)" in capsys.readouterr().err


def test_unreadable_checkpoint_is_not_called_damaged(main, tmp_path, capsys, monkeypatch):
    """H6: no permission to read an intact checkpoint: say so, never advise deleting it."""
    assert main("--epochs", "1", *QUICK) == 0
    path = str(tmp_path / "ck" / "checkpoint.npz")
    data = open(path, "rb").read()

    def no_permission(file, *args, **kwargs):  # as a checkpoint another user owns, mode 600
        if str(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return open(file, *args, **kwargs)
    monkeypatch.setattr(gan_mnist, "open", no_permission, raising=False)
    assert main("--epochs", "2", *QUICK, "--resume") == 2
    err = capsys.readouterr().err
    assert f"cannot read checkpoint {path} (Permission denied)" in err and "permission to read it" in err
    assert "delete" not in err and "damaged" not in err and err.count("\n") == 1
    assert open(path, "rb").read() == data


def test_resume_with_a_mistyped_checkpoint_dir_creates_nothing(main, tmp_path, capsys):
    """H3: the common typo; refused before any folder or lock exists."""
    assert main("--epochs", "2", *QUICK, "--resume", "--checkpoint-dir", str(tmp_path / "typo" / "ck")) == 2
    assert f"no checkpoint at {tmp_path / 'typo' / 'ck' / 'checkpoint.npz'} to resume" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


def test_resume_of_a_finished_run_writes_its_missing_files(main, tmp_path, capsys):
    """As after a kill during the final writes: the checkpoint holds the last epoch, files are gone."""
    assert main("--epochs", "2", *TINY) == 0
    out = tmp_path / "out"
    model = generator_weights(out / "generator.keras")
    kept = {n: (out / n).read_bytes() for n in ("losses.csv", "scores.csv")}
    for name in ("generator.keras", "losses.csv", "gan_loss.png", "progress.gif", "scores.csv", "scores.png"):
        (out / name).unlink()
    capsys.readouterr()
    assert main("--epochs", "2", *TINY, "--resume") == 0
    said = capsys.readouterr().out
    assert "The checkpoint already holds epoch 2 (--epochs 2): wrote the run's final files from it." in said
    assert same_arrays(generator_weights(out / "generator.keras"), model)
    for name, data in kept.items():
        assert (out / name).read_bytes() == data
    assert (out / "progress.gif").exists() and (out / "gan_loss.png").exists() and (out / "scores.png").exists()


def test_resume_into_another_folder_says_what_it_lacks(main, tmp_path, capsys):
    assert main("--epochs", "3", "--sample-every", "1", *QUICK) == 0
    capsys.readouterr()
    assert main("--epochs", "4", "--sample-every", "1", *QUICK, "--resume", "--out-dir", str(tmp_path / "new")) == 0
    said = capsys.readouterr().out
    assert f"Note: {tmp_path / 'new'} lacks the grids of epochs 1, 2, which the checkpoint cannot redraw" in said
    new = sorted(p for p in os.listdir(tmp_path / "new") if p.startswith("gan_generated"))
    assert new == ["gan_generated_image_epoch_3.png", "gan_generated_image_epoch_4.png"]
    assert (tmp_path / "new" / "gan_generated_image_epoch_3.png").read_bytes() == \
        (tmp_path / "out" / "gan_generated_image_epoch_3.png").read_bytes()  # redrawn exactly
    assert len(losses(tmp_path / "new")) == 4


def test_a_linked_checkpoint_stays_linked(main, tmp_path):
    """J10: a checkpoint.npz linked onto another disk is rewritten there, and the link kept."""
    assert main("--epochs", "1", *QUICK) == 0
    store = tmp_path / "store"
    store.mkdir()
    os.replace(tmp_path / "ck" / "checkpoint.npz", store / "real.npz")
    os.symlink(store / "real.npz", tmp_path / "ck" / "checkpoint.npz")
    assert main("--epochs", "2", *QUICK, "--resume") == 0
    assert os.path.islink(tmp_path / "ck" / "checkpoint.npz")
    with np.load(store / "real.npz") as f:
        assert json.loads(str(f["meta"]))["epoch"] == 2


def test_resume_of_a_finished_run_with_fewer_epochs_keeps_its_grids(main, tmp_path, capsys):
    """J10: --resume --epochs 2 of a finished 3-epoch run rewrites its final files, the GIF with
    all its grids (the last epoch's included), and counts them right."""
    assert main("--epochs", "3", *QUICK) == 0
    assert main("--epochs", "2", *QUICK, "--resume") == 0
    out = capsys.readouterr().out
    assert "Done: 2 grids" in out
    from PIL import Image
    assert Image.open(tmp_path / "out" / "progress.gif").n_frames == 2


def test_the_adam_counter_is_a_setting_of_the_checkpoint(main, tmp_path, capsys):
    """A run whose Adams count their own steps resumes only so, and a checkpoint from before the
    setting existed was made so: continuing either with the shared counter would change the run."""
    assert main("--epochs", "1", *QUICK, "--adam-counter", "own") == 0
    path = tmp_path / "ck" / "checkpoint.npz"
    assert main("--epochs", "2", *QUICK, "--resume") == 2
    assert "was made with adam_counter='own', not 'shared': resume with --adam-counter own" in capsys.readouterr().err
    edit_checkpoint_meta(path, lambda meta: meta["config"].pop("adam_counter"))
    assert main("--epochs", "2", *QUICK, "--resume") == 2
    assert "was made with adam_counter='own', not 'shared'" in capsys.readouterr().err
    assert main("--epochs", "2", *QUICK, "--adam-counter", "own", "--resume") == 0
    assert len(losses(tmp_path / "out")) == 2
