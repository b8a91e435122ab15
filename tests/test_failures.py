"""Nothing lost, nothing silent: stops and kills at any moment, two runs into one folder,
diverged training, failed writes and every kind of bad input."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import gan_mnist
from conftest import SCRIPT, TINY, losses
from test_long_runs import generator_weights, same_arrays

QUICK = [*TINY, "--score-digits", "0"]  # the later flag wins: no scores


def checkpoint_epoch(path):
    with np.load(path) as f:
        return json.loads(str(f["meta"]))["epoch"]


def leftovers(*folders):
    return [name for folder in folders if os.path.isdir(folder)
            for name in os.listdir(folder) if name.startswith(".tmp")]


def start(tmp_path, *flags):
    return subprocess.Popen([sys.executable, SCRIPT, *flags, "--out-dir", str(tmp_path / "out"),
                             "--checkpoint-dir", str(tmp_path / "ck")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, text, timeout=120):
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


# ------------------------------------------------------- 1. the final model is never lost
def test_sigterm_after_the_last_epoch_line_still_writes_everything(tmp_path):
    process = start(tmp_path, "--epochs", "2", *TINY)
    wait_for_line(process, "Epoch 2/2:")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Done:" in stdout and "Interrupted" not in stdout and "Traceback" not in stderr
    assert (tmp_path / "out" / "generator.keras").exists()
    assert checkpoint_epoch(tmp_path / "ck" / "checkpoint.npz") == 2
    assert not leftovers(tmp_path / "out", tmp_path / "ck")


def test_resume_of_a_finished_run_writes_its_missing_files(main, tmp_path, capsys):
    """As after a kill during the final writes: the checkpoint holds the last epoch, files are gone."""
    assert main("--epochs", "2", *TINY) == 0
    out = tmp_path / "out"
    model = generator_weights(out / "generator.keras")
    kept = {n: (out / n).read_bytes() for n in ("losses.csv", "quality.csv")}
    for name in ("generator.keras", "losses.csv", "gan_loss.png", "progress.gif", "quality.csv", "quality.png"):
        (out / name).unlink()
    capsys.readouterr()
    assert main("--epochs", "2", *TINY, "--resume") == 0
    said = capsys.readouterr().out
    assert "The checkpoint already holds epoch 2 (--epochs 2): wrote the run's final files from it." in said
    assert same_arrays(generator_weights(out / "generator.keras"), model)
    for name, data in kept.items():
        assert (out / name).read_bytes() == data
    assert (out / "progress.gif").exists() and (out / "gan_loss.png").exists() and (out / "quality.png").exists()


# ------------------------------------------------------------- 2. one run per folder
def test_a_second_run_into_a_locked_folder_is_refused(main, tmp_path, capsys):
    import fcntl
    (tmp_path / "ck").mkdir()
    with open(tmp_path / "ck" / ".lock", "w") as held:  # as another running process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert main("--epochs", "1", *QUICK) == 2
        err = capsys.readouterr().err
        assert f"another gan_mnist.py run (process 4242) is using {tmp_path / 'ck'}" in err
        assert err.count("\n") == 1
        assert not (tmp_path / "out" / "losses.csv").exists()
    assert main("--epochs", "1", *QUICK) == 0  # the lock died with its holder


def test_two_processes_into_one_folder(tmp_path):
    first = start(tmp_path, "--epochs", "500", *QUICK, "--sample-every", "1000")
    wait_for_line(first, "Epoch 1/500:")
    second = subprocess.run([sys.executable, SCRIPT, "--epochs", "1", *QUICK, "--seed", "11",
                             "--out-dir", str(tmp_path / "other"), "--checkpoint-dir", str(tmp_path / "ck")],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert f"another gan_mnist.py run (process {first.pid}) is using" in second.stderr
    assert not (tmp_path / "other" / "losses.csv").exists()
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode == 130


def test_temporary_files_are_this_process_own_and_synced(tmp_path, monkeypatch):
    synced, seen = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    target = tmp_path / "file.txt"
    gan_mnist.save_atomically(str(target), lambda tmp: (seen.append(tmp), open(tmp, "w").write("x")))
    assert f".tmp-{os.getpid()}-file.txt" in seen[0]
    assert synced == [seen[0], str(tmp_path)]  # the file before the rename, the folder after
    assert target.read_text() == "x"


# ------------------------------------------------------------------ 3. diverged training
def test_a_huge_learning_rate_stops_at_once(main, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gan_mnist, "LEARNING_RATE", 0.9)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert "training diverged at epoch 1, step" in err and "LEARNING_RATE is 0.9" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


def test_nan_mid_run_keeps_the_last_good_checkpoint(main, tmp_path, monkeypatch, capsys):
    real = gan_mnist.make_train_step
    calls = []

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)
        def train_step():
            calls.append(1)
            d_loss, g_loss = step()
            return (float("nan"), g_loss) if len(calls) == 8 + 3 else (d_loss, g_loss)  # epoch 2, step 3
        return train_step
    monkeypatch.setattr(gan_mnist, "make_train_step", poisoned)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert "training diverged at epoch 2, step 3 (d_loss nan" in err
    assert "the checkpoint keeps epoch 1, the last good one" in err
    assert checkpoint_epoch(tmp_path / "ck" / "checkpoint.npz") == 1 and len(losses(tmp_path / "out")) == 1


def test_a_non_finite_weight_is_caught_before_the_checkpoint(main, tmp_path, monkeypatch, capsys):
    real = gan_mnist.make_train_step

    calls = []

    def poisoned(generator, *args, **kwargs):
        step = real(generator, *args, **kwargs)
        def train_step():
            calls.append(1)
            losses_ = step()
            if len(calls) == 8:  # the last step of epoch 1: its losses are still finite
                generator.weights[0].assign(np.full(generator.weights[0].shape, np.inf, np.float32))
            return losses_
        return train_step
    monkeypatch.setattr(gan_mnist, "make_train_step", poisoned)
    assert main("--epochs", "2", *QUICK, "--ema-decay", "0") == 1
    assert "diverged at the end of epoch 1 (a weight is not finite)" in capsys.readouterr().err
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


# ------------------------------------------------------------------- 5. failed writes
@pytest.mark.parametrize("name", ["checkpoint.npz", "losses.csv", "generator.keras"])
def test_an_output_that_is_a_folder_is_refused_before_training(main, tmp_path, capsys, name):
    folder = tmp_path / ("ck" if name == "checkpoint.npz" else "out") / name
    folder.mkdir(parents=True)
    assert main("--epochs", "1", *QUICK) == 2
    err = capsys.readouterr().err
    assert f"{folder} is a folder, not a file" in err and err.count("\n") == 1
    assert folder.is_dir() and not leftovers(tmp_path / "out", tmp_path / "ck")


def test_disk_full_while_saving_the_checkpoint(main, tmp_path, monkeypatch, capsys):
    real, calls = gan_mnist.save_checkpoint, []

    def full(path, arrays, meta):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's: half the file is written, then the disk is full
            def write(tmp):
                open(tmp, "wb").write(b"x" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            gan_mnist.save_atomically(path, write)
        real(path, arrays, meta)
    monkeypatch.setattr(gan_mnist, "save_checkpoint", full)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'ck' / 'checkpoint.npz'} (No space left on device); the checkpoint holds epoch 1" in err
    assert "resume with: python" in err and err.count("\n") == 1
    assert not leftovers(tmp_path / "out", tmp_path / "ck")
    assert checkpoint_epoch(tmp_path / "ck" / "checkpoint.npz") == 1
    monkeypatch.setattr(gan_mnist, "save_checkpoint", real)
    assert main("--epochs", "3", *QUICK, "--resume") == 0  # the resume command it gave works


def test_disk_full_while_saving_the_generator_then_resume(main, tmp_path, monkeypatch, capsys):
    real = gan_mnist.save_atomically

    def full(path, write):
        if path.endswith("generator.keras"):
            return real(path, lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        return real(path, write)
    monkeypatch.setattr(gan_mnist, "save_atomically", full)
    assert main("--epochs", "2", *QUICK) == 1
    assert "generator.keras (No space left on device); the checkpoint holds epoch 2" in capsys.readouterr().err
    monkeypatch.setattr(gan_mnist, "save_atomically", real)
    assert main("--epochs", "2", *QUICK, "--resume") == 0
    assert (tmp_path / "out" / "generator.keras").exists()


def test_too_little_free_space_is_refused_at_start(main, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gan_mnist.shutil, "disk_usage", lambda path: os.statvfs_result((0,) * 10) and
                        type("usage", (), {"free": 5_000_000})())
    assert main("--epochs", "1", *QUICK) == 2
    err = capsys.readouterr().err
    assert "only 5 MB free for" in err and "free some space or pick another folder" in err
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


# ------------------------------------------------------ 6. and 9. one line, no folders
@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be a whole number from 0 to 2**32 - 1, not -1"),
    (["--seed", str(2**32)], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--seed", str(2**40)], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--generate", "any.keras", "--seed", "-1"], "--seed must be a whole number from 0"),
    (["--data", "no_such.npz"], "data file no_such.npz not found"),
    (["--batch-size", "300", "--data", "subset", "--limit", "256"], "--batch-size 300 is larger than"),
])
def test_bad_input_is_one_line_and_creates_no_folder(main, tmp_path, capsys, flags, message):
    assert main(*flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 + ("usage:" in err) * err.split("error:")[0].count("\n")
    assert sorted(os.listdir(tmp_path)) == []


def test_generate_into_a_folder_is_refused(main, tmp_path, capsys):
    assert main("--epochs", "1", *QUICK) == 0
    assert main("--generate", str(tmp_path / "out" / "generator.keras"), "--out", str(tmp_path)) == 2
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("constant, value, message", [
    ("LEARNING_RATE", "0.0002", "LEARNING_RATE at the top of gan_mnist.py must be above 0 and below 1, not '0.0002'"),
    ("EPOCHS", 2.5, "EPOCHS at the top of gan_mnist.py must be a whole number of 1 or more, not 2.5"),
    ("BATCH_SIZE", 32.0, "BATCH_SIZE at the top of gan_mnist.py must be a whole number of 1 or more, not 32.0"),
    ("PRECISION", "float16", 'PRECISION at the top of gan_mnist.py must be "float32" or "bfloat16"'),
    ("FIXED_NOISE", "yes", "FIXED_NOISE at the top of gan_mnist.py must be True or False"),
])
def test_constants_of_the_wrong_type(main, monkeypatch, capsys, constant, value, message):
    monkeypatch.setattr(gan_mnist, constant, value)
    flags = {"EPOCHS": ["--epochs", "1"], "BATCH_SIZE": ["--batch-size", "32"]}  # leave that one alone
    assert main("--data", "subset", "--limit", "256", "--score-digits", "0",
                *[f for name, pair in flags.items() if name != constant for f in pair]) == 2
    assert message in capsys.readouterr().err


def test_wrong_constant_in_a_real_process_has_no_traceback(tmp_path):
    source = open(SCRIPT).read().replace("\nEPOCHS = 400 ", "\nEPOCHS = 2.5 ")
    script = tmp_path / "gan_mnist.py"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "EPOCHS at the top of gan_mnist.py must be a whole number" in result.stderr


def test_checkpoint_without_a_key_is_unreadable(main, tmp_path, capsys):
    assert main("--epochs", "1", *QUICK) == 0
    path = tmp_path / "ck" / "checkpoint.npz"
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    del meta["grid_rng"]
    arrays["meta"] = json.dumps(meta)
    np.savez(path, **arrays)
    assert main("--epochs", "2", *QUICK, "--resume") == 2
    assert f"checkpoint {path} is unreadable (KeyError)" in capsys.readouterr().err


# -------------------------------------------------- 7. and 8. stops: true messages
def test_stop_in_epoch_1_says_there_is_nothing_to_resume(main, tmp_path, monkeypatch, capsys):
    real = gan_mnist.make_train_step

    def interrupted(*args, **kwargs):
        step = real(*args, **kwargs)
        def train_step():
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the step
            return step()
        return train_step
    monkeypatch.setattr(gan_mnist, "make_train_step", interrupted)
    assert main("--epochs", "3", *QUICK) == 130
    out = capsys.readouterr().out
    assert "Stopped during epoch 1, before the first checkpoint: there is nothing to resume." in out
    assert "--resume" not in out
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


def test_sigterm_while_starting(tmp_path):
    process = start(tmp_path, "--epochs", "1", *QUICK)
    time.sleep(1.0)  # TensorFlow is still loading
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "Stopped while starting; nothing was written." in stdout


def test_sigterm_before_training_starts(tmp_path):
    process = start(tmp_path, "--epochs", "1", *QUICK)
    wait_for_line(process, "Config:")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "Stopped before training started; nothing was saved." in stdout
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


# ------------------------------------------------------------- 10. another --out-dir
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
