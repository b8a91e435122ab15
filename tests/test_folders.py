"""One run per folder (an OS lock), and where the script finds its own files."""
import fcntl
import os
import subprocess
import sys

from conftest import HANG, QUICK, ROOT, SCRIPT, losses, ours, refused, start, wait_for_line


def test_a_second_run_into_a_locked_folder_is_refused(main, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".lock", "a") as lock:  # as a training run holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused(main("--epochs", "1", *QUICK), capsys.readouterr().err, tmp_path / "out")
        refused(main("--epochs", "1", *QUICK, "--out-dir", str(tmp_path / "o2"), "--checkpoint-dir",
                     str(tmp_path / "out")), capsys.readouterr().err, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == [".lock"]
    assert main("--epochs", "1", *QUICK) == 0  # free again


def test_two_processes_into_one_folder(tmp_path):
    first = start(tmp_path, "--epochs", "500", *QUICK)
    wait_for_line(first, "Epoch 1/500")
    second = subprocess.run([sys.executable, SCRIPT, "--epochs", "1", *QUICK, "--out-dir", "out"],
                            capture_output=True, text=True, timeout=HANG, cwd=tmp_path)
    first.kill()
    first.communicate(timeout=HANG)
    refused(second.returncode, second.stderr, "another run", "out")


def test_one_folder_named_two_ways_is_one_lock(main, tmp_path):
    assert main("--epochs", "1", *QUICK, "--checkpoint-dir", str(tmp_path / "x" / ".." / "out")) == 0
    assert (tmp_path / "out" / "checkpoint.npz").exists()


def test_the_script_run_through_a_symbolic_link_finds_its_data(tmp_path):
    os.symlink(SCRIPT, tmp_path / "gan.py")
    result = subprocess.run([sys.executable, str(tmp_path / "gan.py"), "--epochs", "1", *QUICK, "--out-dir", "o"],
                            capture_output=True, text=True, timeout=HANG, cwd=tmp_path)
    assert result.returncode == 0, ours(result.stderr)
    assert len(losses(tmp_path / "o")) == 1 and os.path.exists(os.path.join(ROOT, "data", "mnist_5k.npz"))
