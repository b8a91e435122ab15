"""Stops and failures: Ctrl-C and SIGTERM at each stage (each test waits for a state the program
announces, or drives it in this process), diverged training and failed writes."""
import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import HANG, QUICK, SCRIPT, TINY, checkpoint_epoch, leftovers, losses, patch_step, start, wait_for_line


# --------------------------------------------------------------------------------------- stops
def test_sigterm_while_the_libraries_load(tmp_path):
    """A stand-in tqdm that announces itself and waits holds the start-up at a known point."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "tqdm.py").write_text("import time\nprint('loading tqdm', flush=True)\ntime.sleep(120)\n")
    process = start(tmp_path, "--epochs", "1", *QUICK, env={**os.environ, "PYTHONPATH": str(stub)})
    wait_for_line(process, "loading tqdm")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=HANG)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "Stopped while starting; nothing was written." in stdout
    assert sorted(os.listdir(tmp_path)) == ["stub"]


def test_stop_before_training_starts_leaves_nothing(main, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the models are built: exit 130, and the folders it had made are gone (H3)."""
    real = gan_mnist.get_generator

    def interrupted(random_dim):
        os.kill(os.getpid(), signal.SIGINT)
        return real(random_dim)
    monkeypatch.setattr(gan_mnist, "get_generator", interrupted)
    assert main("--epochs", "1", *QUICK) == 130
    assert "Stopped before training started; nothing was saved." in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == []


def test_stop_in_epoch_1_says_there_is_nothing_to_resume(main, tmp_path, monkeypatch, capsys):
    def ctrl_c(n, generator, step_losses):
        os.kill(os.getpid(), signal.SIGINT)
        return step_losses
    patch_step(monkeypatch, ctrl_c)
    assert main("--epochs", "3", *QUICK) == 130
    out = capsys.readouterr().out
    assert "Stopped during epoch 1, before the first checkpoint: there is nothing to resume." in out
    assert "--resume" not in out
    assert sorted(os.listdir(tmp_path)) == []  # nothing was written, so nothing is left


def test_sigterm_after_the_last_epoch_line_still_writes_everything(tmp_path):
    process = start(tmp_path, "--epochs", "2", *TINY)
    wait_for_line(process, "Epoch 2/2:")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=HANG)
    assert process.returncode == 0, stderr
    assert "Done:" in stdout and "Stopped" not in stdout and "Traceback" not in stderr
    assert (tmp_path / "out" / "generator.keras").exists()
    assert checkpoint_epoch(tmp_path / "ck" / "checkpoint.npz") == 2
    assert not leftovers(tmp_path / "out", tmp_path / "ck")


# ----------------------------------------------------------------------------- diverged training
def test_a_huge_learning_rate_stops_at_once(main, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gan_mnist, "LEARNING_RATE", 0.9)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert "training diverged at epoch 1, step" in err and "LEARNING_RATE is 0.9" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


def test_nan_mid_run_keeps_the_last_good_checkpoint(main, tmp_path, monkeypatch, capsys):
    def nan_at_epoch_2_step_3(n, generator, step_losses):
        return (float("nan"), step_losses[1]) if n == 8 + 3 else step_losses
    patch_step(monkeypatch, nan_at_epoch_2_step_3)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert "training diverged at epoch 2, step 3 (d_loss nan" in err
    assert "the checkpoint keeps epoch 1, the last good one" in err
    assert checkpoint_epoch(tmp_path / "ck" / "checkpoint.npz") == 1 and len(losses(tmp_path / "out")) == 1


def test_a_non_finite_weight_is_caught_before_the_checkpoint(main, tmp_path, monkeypatch, capsys):
    def inf_weight_at_the_end_of_epoch_1(n, generator, step_losses):
        if n == 8:  # the losses of this step are still finite
            generator.weights[0].assign(np.full(generator.weights[0].shape, np.inf, np.float32))
        return step_losses
    patch_step(monkeypatch, inf_weight_at_the_end_of_epoch_1)
    assert main("--epochs", "2", *QUICK, "--ema-decay", "0") == 1
    assert "diverged at the end of epoch 1 (a weight is not finite)" in capsys.readouterr().err
    assert not (tmp_path / "ck" / "checkpoint.npz").exists()


# -------------------------------------------------------------------------------- failed writes
def test_disk_full_while_saving_the_checkpoint(main, tmp_path, monkeypatch, capsys):
    real, calls = gan_mnist.Checkpoint.save, []

    def full_at_epoch_2(checkpoint, arrays, meta):
        calls.append(1)
        if len(calls) == 2:  # half the file is written, then the disk is full
            def write(tmp):
                with open(tmp, "wb") as f:
                    f.write(b"x" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            gan_mnist.save_atomically(checkpoint.path, write)
        real(checkpoint, arrays, meta)
    monkeypatch.setattr(gan_mnist.Checkpoint, "save", full_at_epoch_2)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'ck' / 'checkpoint.npz'} (No space left on device); the checkpoint holds epoch 1" in err
    assert "resume with: python" in err and err.count("\n") == 1
    assert not leftovers(tmp_path / "out", tmp_path / "ck")
    assert checkpoint_epoch(tmp_path / "ck" / "checkpoint.npz") == 1
    monkeypatch.setattr(gan_mnist.Checkpoint, "save", real)
    assert main("--epochs", "3", *QUICK, "--resume") == 0  # the resume command it gave works


def test_disk_full_in_epoch_1_says_how_to_start_again(main, tmp_path, monkeypatch, capsys):
    """No free-space guess at start: a full disk stops the run at its first write, in one line."""
    def full(path, write):
        raise gan_mnist.WriteFailed(f"cannot write {path} (No space left on device)")
    monkeypatch.setattr(gan_mnist, "save_atomically", full)
    assert main("--epochs", "2", *QUICK) == 1
    err = capsys.readouterr().err
    assert "(No space left on device); no checkpoint was written yet: free some space" in err
    assert "then start again with: python" in err and err.count("\n") == 1


def test_disk_full_while_saving_the_generator_then_resume(main, tmp_path, monkeypatch, capsys):
    real = gan_mnist.save_atomically

    def full(path, write):
        if path.endswith("generator.keras"):
            def fail(tmp):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, fail)
        return real(path, write)
    monkeypatch.setattr(gan_mnist, "save_atomically", full)
    assert main("--epochs", "2", *QUICK) == 1
    assert "generator.keras (No space left on device); the checkpoint holds epoch 2" in capsys.readouterr().err
    monkeypatch.setattr(gan_mnist, "save_atomically", real)
    assert main("--epochs", "2", *QUICK, "--resume") == 0
    assert (tmp_path / "out" / "generator.keras").exists()


def test_wrong_constant_in_a_real_process_has_no_traceback(tmp_path):
    source = open(SCRIPT).read().replace("\nEPOCHS = 400 ", "\nEPOCHS = 2.5 ")
    script = tmp_path / "gan_mnist.py"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=HANG,
                            cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "EPOCHS at the top of gan_mnist.py must be a whole number" in result.stderr


# ------------------------------------------------------- a stop while a file is read is a stop (J1, J6)
def ctrl_c_inside(monkeypatch, owner, name):
    """Make owner.name send this process a SIGINT as it starts, as a Ctrl-C that lands there would."""
    real = getattr(owner, name)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, interrupted)


@pytest.mark.parametrize("where", ["checkpoint.npz", "mnist_5k.npz", "digit_classifier.npz"])
def test_ctrl_c_while_a_file_is_read_is_a_stop_not_damage(main, tmp_path, monkeypatch, capsys, where):
    """J1: the stop lands inside the `try: ... except Exception` that guards the file's read
    (the checkpoint, the data, the classifier); it must end as a stop (exit 130), never as a
    damaged file, and the file must be left as it was."""
    assert main("--epochs", "1", *TINY) == 0
    checkpoint = tmp_path / "ck" / "checkpoint.npz"
    before = checkpoint.read_bytes()
    capsys.readouterr()
    real = np.load

    def load(file, *args, **kwargs):
        if str(file).endswith(where):
            os.kill(os.getpid(), signal.SIGINT)
        return real(file, *args, **kwargs)
    monkeypatch.setattr(gan_mnist.np, "load", load)
    assert main("--epochs", "2", *TINY, "--resume") == 130
    captured = capsys.readouterr()
    assert "Stopped before training started; nothing was saved" in captured.out
    assert "damaged" not in captured.err + captured.out and captured.err == ""
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("flag", ["--generate", "--score"])
def test_ctrl_c_inside_keras_model_loader_is_not_swallowed(main, tmp_path, monkeypatch, capsys, flag):
    """J6: Keras' loader catches Exception around each layer's weights; a stop there must still
    stop, and --generate must not write its grid afterwards."""
    import keras
    assert main("--epochs", "1", *QUICK) == 0
    ctrl_c_inside(monkeypatch, keras.layers.Dense, "load_own_variables")
    out = tmp_path / "grid.png"
    assert main(flag, str(tmp_path / "out" / "generator.keras"), *(["--out", str(out)] if flag == "--generate" else [])) == 130
    captured = capsys.readouterr()
    assert "Stopped; nothing was written." in captured.out and "Wrote" not in captured.out
    assert not out.exists() and "\x1b" not in captured.out + captured.err


def test_ctrl_c_while_generate_writes_leaves_nothing(main, tmp_path, monkeypatch, capsys):
    """J1: a stop inside the grid's write: exit 130, no file, no temporary, no WriteFailed."""
    assert main("--epochs", "1", *QUICK) == 0
    ctrl_c_inside(monkeypatch, gan_mnist, "fsync")
    out = tmp_path / "new" / "grid.png"
    assert main("--generate", str(tmp_path / "out" / "generator.keras"), "--out", str(out)) == 130
    captured = capsys.readouterr()
    assert "Stopped; nothing was written." in captured.out and captured.err == ""
    assert not out.exists() and not leftovers(tmp_path / "new")
