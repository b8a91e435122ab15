"""Stops and failures: real signals to a real process (group) at each stage, a kill -9, diverged
training, and a write the OS refuses (a file-size limit)."""
import os
import resource
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import (HANG, QUICK, SCRIPT, checkpoint_arrays, checkpoint_meta, leftovers, losses, ours, patch_step,
                      refused, start, straight_run, wait_for_line)


def stopped_line(out):
    """The one line a stop prints (stdout), and the command it gives, run here as a list."""
    [line] = [line for line in out.splitlines() if line.startswith("Stopped")]
    command = shlex.split(line.split("with: ", 1)[1]) if "with: " in line else None
    return line, command


# --------------------------------------------------------------------------------------- stops
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_libraries_load_is_one_line(tmp_path, signum):
    """Ctrl-C reaches the whole process group in a terminal; a stand-in keras that announces
    itself and waits holds the start-up at a known point."""
    (tmp_path / "stub" / "keras").mkdir(parents=True)
    (tmp_path / "stub" / "keras" / "__init__.py").write_text("import time\nprint('loading keras', flush=True)\n"
                                                             "time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, SCRIPT, "--epochs", "1", *QUICK], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(tmp_path / "stub")})
    wait_for_line(process, "loading keras")
    os.killpg(process.pid, signum)
    stdout, stderr = process.communicate(timeout=HANG)
    assert process.returncode == 130 and ours(stderr) == "" and stdout.endswith("Stopped while starting; nothing was written.\n")
    assert sorted(os.listdir(tmp_path)) == ["stub"]


def test_ctrl_c_in_training_says_what_is_on_disk_and_its_command_resumes_exactly(tmp_path):
    process = subprocess.Popen([sys.executable, SCRIPT, "--epochs", "500", "--sample-every", "1000", *QUICK,
                                "--out-dir", "out"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, start_new_session=True)
    wait_for_line(process, "Epoch 2/500")  # a checkpoint is on disk
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=HANG)
    assert process.returncode == 130 and ours(stderr) == "", stderr
    line, command = stopped_line(stdout)
    held = checkpoint_meta(tmp_path / "out" / "checkpoint.npz")["epoch"]
    assert f"out/checkpoint.npz holds epoch {held}" in line and command[:2] == ["python", SCRIPT]
    assert command[-1] == "--resume" and len(losses(tmp_path / "out")) in (held, held + 1)
    command = [sys.executable, *command[1:], "--epochs", str(held + 1)]  # the later flag wins
    assert subprocess.run(command, capture_output=True, cwd=tmp_path, timeout=HANG).returncode == 0
    straight = straight_run(tmp_path / "straight", "--epochs", str(held + 1), "--sample-every", "1000",
                            "--score-digits", "0")
    assert losses(tmp_path / "out") == losses(straight)
    assert np.all([np.array_equal(a, b) for a, b in zip(checkpoint_arrays(tmp_path / "out" / "checkpoint.npz"),
                                                        checkpoint_arrays(straight / "checkpoint.npz"))])


def test_kill_9_then_resume_equals_a_straight_run(tmp_path):
    """A kill leaves at most a temporary beside the files; the checkpoint is whole and resumes."""
    process = start(tmp_path, "--epochs", "500", "--sample-every", "1000", *QUICK)
    wait_for_line(process, "Epoch 2/500")
    process.kill()
    process.communicate(timeout=HANG)
    held = checkpoint_meta(tmp_path / "out" / "checkpoint.npz")["epoch"]
    flags = ["--epochs", str(held + 2), "--sample-every", "1000", "--score-digits", "0"]
    resumed = subprocess.run([sys.executable, SCRIPT, *QUICK, *flags, "--out-dir", "out", "--resume"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=HANG)
    assert resumed.returncode == 0, resumed.stderr
    straight = straight_run(tmp_path / "straight", *flags)
    assert losses(tmp_path / "out") == losses(straight)
    assert all(np.array_equal(a, b) for a, b in zip(checkpoint_arrays(tmp_path / "out" / "checkpoint.npz"),
                                                    checkpoint_arrays(straight / "checkpoint.npz")))


def ctrl_c_at_step(n):
    def after(step, generator, step_losses):
        if step == n:
            os.kill(os.getpid(), signal.SIGINT)
        return step_losses
    return after


def test_a_stop_after_restarting_over_a_checkpoint_names_that_checkpoint(main, tmp_path, monkeypatch, capsys):
    """A training line run again without --resume (a cell run twice) and stopped at once: the old
    checkpoint is intact, and the stop says so and how to continue it, in main()'s form here."""
    assert main("--epochs", "2", *QUICK) == 0
    before = (tmp_path / "out" / "checkpoint.npz").read_bytes()
    patch_step(monkeypatch, ctrl_c_at_step(1))
    capsys.readouterr()
    assert main("--epochs", "3", *QUICK) == 130
    line, _ = stopped_line(capsys.readouterr().out)
    assert "checkpoint.npz holds epoch 2; resume with: gan_mnist.main([" in line and line.endswith("'--resume'])")
    assert (tmp_path / "out" / "checkpoint.npz").read_bytes() == before


def test_a_stop_in_epoch_1_says_there_is_nothing_to_resume(main, tmp_path, monkeypatch, capsys):
    patch_step(monkeypatch, ctrl_c_at_step(3))
    assert main("--epochs", "3", *QUICK) == 130
    line, _ = stopped_line(capsys.readouterr().out)
    assert "no checkpoint" in line and "--resume" not in line
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


def test_ctrl_c_while_the_checkpoint_is_read_is_a_stop_not_damage(main, tmp_path, monkeypatch, capsys):
    """The stop lands inside the read that `except Exception` guards: it must end as a stop."""
    assert main("--epochs", "1", *QUICK) == 0
    real = np.load

    def load(file, *args, **kwargs):
        if str(file).endswith("checkpoint.npz"):
            os.kill(os.getpid(), signal.SIGINT)
        return real(file, *args, **kwargs)
    monkeypatch.setattr(gan_mnist.np, "load", load)
    capsys.readouterr()
    assert main("--epochs", "2", *QUICK, "--resume") == 130
    captured = capsys.readouterr()
    assert "damaged" not in captured.out + captured.err and captured.err == ""


# ----------------------------------------------------------------------------- diverged training
def test_a_huge_learning_rate_stops_at_once(main, tmp_path, capsys):
    assert main("--epochs", "3", *QUICK, "--learning-rate", "0.9") == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "--learning-rate" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


def test_nan_mid_run_keeps_the_last_good_checkpoint(main, tmp_path, monkeypatch, capsys):
    patch_step(monkeypatch, lambda n, generator, step_losses: (float("nan"), step_losses[1]) if n == 8 + 3 else step_losses)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert "epoch 2 at step 3 (d_loss nan" in err and "keeps epoch 1" in err and err.count("\n") == 1
    assert checkpoint_meta(tmp_path / "out" / "checkpoint.npz")["epoch"] == 1 and len(losses(tmp_path / "out")) == 1


def test_a_non_finite_weight_is_caught_before_the_checkpoint(main, tmp_path, monkeypatch, capsys):
    def inf_weight_at_the_end_of_epoch_1(n, generator, step_losses):
        if n == 8:  # the losses of this step are still finite
            generator.weights[0].assign(np.full(generator.weights[0].shape, np.inf, np.float32))
        return step_losses
    patch_step(monkeypatch, inf_weight_at_the_end_of_epoch_1)
    assert main("--epochs", "2", *QUICK, "--ema-decay", "0") == 1
    assert "a weight is not finite" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


# -------------------------------------------------------------------------------- failed writes
def limited(size):
    """A child process whose files may not grow past `size` bytes, as on a full disk."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_a_failed_write_is_one_line_and_its_resume_command_works(main, tmp_path):
    assert main("--epochs", "1", *QUICK) == 0
    before = (tmp_path / "out" / "checkpoint.npz").read_bytes()
    result = subprocess.run([sys.executable, SCRIPT, "--epochs", "3", *QUICK, "--out-dir", "out", "--resume"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=HANG,
                            preexec_fn=limited(len(before) // 2))
    err = ours(result.stderr)
    assert result.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "(File too large)" in err and "checkpoint.npz holds epoch 1; resume with: python" in err
    assert (tmp_path / "out" / "checkpoint.npz").read_bytes() == before and not leftovers(tmp_path / "out")
    command = shlex.split(err.split("resume with: ")[1])
    assert subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, timeout=HANG).returncode == 0
    assert checkpoint_meta(tmp_path / "out" / "checkpoint.npz")["epoch"] == 3


def test_a_folder_that_cannot_be_made_is_refused(main, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    refused(main("--epochs", "1", *QUICK, "--out-dir", str(tmp_path / "a_file" / "out")),
            capsys.readouterr().err, tmp_path / "a_file" / "out")
