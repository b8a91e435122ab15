"""Stops and failures: real signals to a real process at each stage, a kill -9, diverged training,
a write the OS refuses, memory that runs out, a run in a thread."""
import gc
import os
import random
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

import gan_mnist
from conftest import (HANG, QUICK, SCRIPT, checkpoint, leftovers, losses, patch_step, refused,
                      same_arrays, start, straight_run, wait_for_line)

# 500 epochs, none of them scored or drawn but the first: stopped long before the end
LONG = ["--epochs", "500", "--sample-every", "1000", *QUICK]


def stopped_line(out):
    """The one line a stop prints (stdout), and the command it gives, as a list."""
    [line] = [line for line in out.splitlines() if line.startswith("Stopped")]
    return line, shlex.split(line.split("with: ", 1)[1]) if "with: " in line else None


def resumed_equals_straight(tmp_path, command, env):
    """Run a printed resume command to the checkpoint's epoch + 2; it must equal a straight run."""
    held = checkpoint(tmp_path / "out" / "checkpoint.npz")[0]["epoch"]
    flags = ["--epochs", str(held + 2), "--sample-every", "1000", "--score-digits", "0"]
    resumed = subprocess.run([sys.executable, *command[1:], *flags], capture_output=True,
                             text=True, cwd=tmp_path, timeout=HANG, env=env)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert not leftovers(tmp_path / "out")
    straight = straight_run(tmp_path / "straight", *flags)
    assert losses(tmp_path / "out") == losses(straight)
    assert same_arrays(checkpoint(tmp_path / "out" / "checkpoint.npz")[1],
                       checkpoint(straight / "checkpoint.npz")[1])


# -------------------------------------------------------------------------------------- stops
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_starting_is_one_line_and_exit_130(tmp_path, signum):
    """From the first moments on (Python's own start-up aside): a Ctrl-C reaches the whole
    process group in a terminal, as here; a stand-in keras that announces itself and waits holds
    the libraries' start-up at a known point."""
    (tmp_path / "stub" / "keras").mkdir(parents=True)
    (tmp_path / "stub" / "keras" / "__init__.py").write_text("print('loading keras', flush=True)\n"
                                                             "import time; time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stub")}
    for moment in (0.4, "loading keras"):
        process = start(tmp_path, "--epochs", "1", *QUICK, env=env)
        if moment == "loading keras":
            wait_for_line(process, moment)
        else:
            time.sleep(moment)
        os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=HANG)
        assert process.returncode == 130 and stderr == "", stderr
        assert stdout.endswith("Stopped while starting; nothing was written.\n"), stdout
    assert sorted(os.listdir(tmp_path)) == ["stub"]


@pytest.mark.backends
def test_stops_and_a_kill_9_then_resume_equal_a_straight_run(tmp_path):
    """SIGTERM mid-epoch (as Ctrl-C: tests below and in test_notebook.py): exit code 130 and one
    line naming the steps the checkpoint holds and a command (with the backend that chose it) that
    continues; then a kill -9 at a random moment, which loses the time since the last checkpoint
    and leaves at most a temporary that the next run removes. Resumed, the run equals one never
    stopped, bit for bit."""
    command = ["python", SCRIPT, *LONG, "--out-dir", "out"]
    for signum in (signal.SIGTERM, signal.SIGKILL):
        env = {**os.environ}
        if command[0].startswith("KERAS_BACKEND="):
            env["KERAS_BACKEND"] = command.pop(0).split("=")[1]
        process = subprocess.Popen([sys.executable, *command[1:]], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                                   start_new_session=True)
        wait_for_line(process, "Epoch ")
        time.sleep(random.uniform(0, 0.5))
        os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=HANG)
        if signum != signal.SIGKILL:
            assert process.returncode == 130 and stderr == "", stderr
            line, command = stopped_line(stdout)
            meta = checkpoint(tmp_path / "out" / "checkpoint.npz")[0]
            assert f"holds {meta['step']} steps into epoch {meta['epoch'] + 1}" in line, line
            assert meta["step"] and command[-1] == "--resume"
            assert (gan_mnist.BACKEND == "tensorflow") == (command[0] == "python")
    resumed_equals_straight(tmp_path, command, env)


def ctrl_c_at_step(n):
    def after(step, generator, step_losses):
        if step == n:
            os.kill(os.getpid(), signal.SIGINT)
        return step_losses
    return after


def test_a_stop_after_restarting_over_a_checkpoint_keeps_it_and_its_command(main, tmp_path,
                                                                             monkeypatch, capsys):
    """A run started again with other settings (--seed 11) and stopped before its first epoch
    ends: the old checkpoint is intact and the printed command is the old run's, which resumes."""
    assert main("--epochs", "2", *QUICK) == 0
    before = (tmp_path / "out" / "checkpoint.npz").read_bytes()
    patch_step(monkeypatch, ctrl_c_at_step(3))
    capsys.readouterr()
    assert main("--epochs", "3", *QUICK, "--seed", "11") == 130
    line, _ = stopped_line(capsys.readouterr().out)
    assert "checkpoint.npz holds epoch 2; resume with: gan_mnist.main([" in line
    assert "'--seed'" not in line and line.endswith("'--resume'])")
    assert (tmp_path / "out" / "checkpoint.npz").read_bytes() == before
    monkeypatch.undo()
    assert main("--epochs", "3", *QUICK, "--resume") == 0


def test_a_stop_in_the_first_epoch_saves_it(main, tmp_path, monkeypatch, capsys):
    patch_step(monkeypatch, ctrl_c_at_step(3))
    assert main("--epochs", "3", *QUICK) == 130
    line, _ = stopped_line(capsys.readouterr().out)
    assert "holds 3 steps into epoch 1; resume" in line and line.endswith("'--resume'])")


def test_ctrl_c_while_the_checkpoint_is_read_is_a_stop_not_damage(main, tmp_path, monkeypatch,
                                                                   capsys):
    """The stop lands inside the read that `except Exception` guards: it must end as a stop."""
    assert main("--epochs", "1", *QUICK) == 0
    real, once = gan_mnist.np.load, [1]

    def load(file, *args, **kwargs):
        if str(file).endswith("checkpoint.npz") and once and once.pop():
            os.kill(os.getpid(), signal.SIGINT)
        return real(file, *args, **kwargs)
    monkeypatch.setattr(gan_mnist.np, "load", load)
    capsys.readouterr()
    assert main("--epochs", "2", *QUICK, "--resume") == 130
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- diverged training
def test_a_huge_learning_rate_stops_at_once(main, tmp_path, capsys):
    assert main("--epochs", "3", *QUICK, "--learning-rate", "0.9") == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "--learning-rate" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


def test_nan_mid_run_keeps_the_last_good_checkpoint(main, tmp_path, monkeypatch, capsys):
    patch_step(monkeypatch, lambda n, g, step: (float("nan"), step[1]) if n == 8 + 3 else step)
    assert main("--epochs", "3", *QUICK) == 1
    err = capsys.readouterr().err
    assert "epoch 2 at step 3 (d_loss nan" in err and "holds epoch 1" in err
    assert err.count("\n") == 1
    assert checkpoint(tmp_path / "out" / "checkpoint.npz")[0]["epoch"] == 1


def test_a_non_finite_weight_is_caught_before_the_checkpoint(main, tmp_path, monkeypatch, capsys):
    def inf_weight_at_the_end_of_epoch_1(n, generator, step_losses):
        if n == 8:  # the losses of this step are still finite
            generator.weights[0].assign(gan_mnist.np.full(generator.weights[0].shape, float("inf")))
        return step_losses
    patch_step(monkeypatch, inf_weight_at_the_end_of_epoch_1)
    assert main("--epochs", "2", *QUICK, "--ema-decay", "0") == 1
    assert "a weight is not finite" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoint.npz").exists()


# ------------------------------------------------------------------ failed writes, memory, threads
def limited(size):
    """A child process whose files may not grow past `size` bytes, as on a full disk."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_a_failed_write_is_one_line_and_its_resume_command_works(main, tmp_path):
    assert main("--epochs", "1", *QUICK) == 0
    before = (tmp_path / "out" / "checkpoint.npz").read_bytes()
    result = subprocess.run([sys.executable, SCRIPT, "--epochs", "3", *QUICK, "--out-dir",
                             str(tmp_path / "out"), "--resume"], capture_output=True, text=True,
                            timeout=HANG, preexec_fn=limited(len(before) // 2))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "(File too large)" in result.stderr
    assert "holds epoch 1; resume with: python" in result.stderr
    assert (tmp_path / "out" / "checkpoint.npz").read_bytes() == before
    assert not leftovers(tmp_path / "out")
    command = shlex.split(result.stderr.split("resume with: ")[1])
    assert command[:2] == ["python", SCRIPT] and main(*command[2:]) == 0
    assert checkpoint(tmp_path / "out" / "checkpoint.npz")[0]["epoch"] == 3


def out_of_memory_errors():
    """Python's, TensorFlow's (its message as a Keras layer passes it on) and XLA's (JAX)."""
    yield MemoryError()
    if gan_mnist.BACKEND == "tensorflow":
        yield gan_mnist.tf.errors.ResourceExhaustedError(None, None, "Exception encountered when "
                                                         "calling Conv2D.call().\n\nOOM when ...")
    yield RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4.00GiB.")


def test_memory_running_out_is_one_line_naming_the_checkpoint(main, tmp_path, monkeypatch,
                                                              capsys):
    """Any other error is a traceback (a bug); the objects frozen for the run thawed."""
    error = None

    def out_of_memory(n, generator, step_losses):
        if n == 8 + 2:
            raise error
        return step_losses
    patch_step(monkeypatch, out_of_memory)
    for error in out_of_memory_errors():
        assert main("--epochs", "3", *QUICK) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "out of memory" in err and "holds epoch 1; resume" in err
    error = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        main("--epochs", "3", *QUICK)
    assert gc.get_freeze_count() == 0


def test_a_backend_that_cannot_load_for_memory_is_one_line(main, tmp_path, monkeypatch, capsys):
    """As under `ulimit -v 1500000`: JAX's import, via Keras, failing half-way."""
    def half_imported():
        raise AttributeError("partially initialized module 'jax' has no attribute 'version'")
    monkeypatch.setattr(gan_mnist, "import_libraries", half_imported)
    refused(main("--epochs", "1", *QUICK), capsys.readouterr().err, "'jax'", "more memory")
    assert not os.path.exists(tmp_path / "out")


def test_a_run_in_a_thread_trains(main, tmp_path):
    """A notebook training in the background: signals stay the main thread's."""
    codes = []
    thread = threading.Thread(target=lambda: codes.append(main("--epochs", "1", *QUICK)))
    thread.start()
    thread.join(HANG)
    assert codes == [0] and len(losses(tmp_path / "out")) == 1
