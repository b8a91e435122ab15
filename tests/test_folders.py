"""One run per folder (an OS lock), files written whole by writers that share no temporary, an
output that never replaces an input, and where the script finds its own files."""
import fcntl
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np

import gan_mnist
from conftest import QUICK, SCRIPT, refused


def test_a_second_run_into_a_locked_folder_is_refused_before_it_prints(main, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".lock", "a") as lock:  # as a training run holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused(main("--epochs", "1", *QUICK), capsys.readouterr().err, "another run", "out")
        assert capsys.readouterr().out == ""
    assert os.listdir(tmp_path / "out") == [".lock"]
    assert main("--epochs", "1", *QUICK) == 0  # free again


def test_the_script_run_through_a_symbolic_link_finds_its_data(tmp_path):
    """Its 5,000 digits read (and a batch size bigger than that refused, before training)."""
    os.symlink(SCRIPT, tmp_path / "gan.py")
    result = subprocess.run([sys.executable, "gan.py", "--data", "subset", "--batch-size", "6000"],
                            cwd=tmp_path, capture_output=True, text=True)
    refused(result.returncode, result.stderr, "the 5000 training digits")


def test_a_planted_link_at_a_temporary_name_is_not_followed(main, tmp_path):
    """Another user of a shared folder plants links where a temporary could be written: their
    targets stay as they were, and the temporaries a killed run left are removed."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim").write_text("mine")
    for name in (".tmp-losses.csv", ".tmp-checkpoint.npz", "losses.csv.tmp"):
        os.symlink(tmp_path / "victim", out / name)
    (out / ".tmp-killed").mkdir()  # a killed writer's temporary folder
    (out / ".tmp-killed" / "checkpoint.npz").write_bytes(b"half")
    assert main("--epochs", "1", *QUICK) == 0
    assert (tmp_path / "victim").read_text() == "mine" and not (out / ".tmp-killed").exists()


def test_writers_of_one_file_share_no_temporary(tmp_path):
    """Two writers of one file, one held inside its write while the other writes: each writes a
    whole file of its own, and the file renamed last is there, whole, with no temporary left."""
    held, go = threading.Event(), threading.Event()

    def slow(tmp):
        held.set()
        go.wait(60)
        pathlib.Path(tmp).write_bytes(b"slow")

    thread = threading.Thread(target=gan_mnist.save_atomically, args=(tmp_path / "f", slow))
    thread.start()
    held.wait(60)
    gan_mnist.save_atomically(tmp_path / "f", lambda tmp: pathlib.Path(tmp).write_bytes(b"fast"))
    assert (tmp_path / "f").read_bytes() == b"fast"
    go.set()
    thread.join(60)
    assert (tmp_path / "f").read_bytes() == b"slow" and os.listdir(tmp_path) == ["f"]


def test_an_output_never_replaces_an_input(main, tmp_path, capsys):
    """A digits file named as an output in the run's folder, or an output linked to one: refused
    before anything is written."""
    (tmp_path / "out").mkdir()
    with np.load(gan_mnist.bundled("mnist_5k.npz")) as f:
        np.savez(tmp_path / "out" / "checkpoint.npz", x_train=f["x_train"][:64])
    data = (tmp_path / "out" / "checkpoint.npz").read_bytes()
    flags = ["--epochs", "1", "--batch-size", "32", "--score-digits", "0"]
    refused(main("--data", str(tmp_path / "out" / "checkpoint.npz"), *flags),
            capsys.readouterr().err, "checkpoint.npz", "--out-dir")
    os.replace(tmp_path / "out" / "checkpoint.npz", tmp_path / "digits.npz")
    os.symlink(tmp_path / "digits.npz", tmp_path / "out" / "losses.csv")
    refused(main("--data", str(tmp_path / "digits.npz"), *flags), capsys.readouterr().err,
            "losses.csv")
    assert (tmp_path / "digits.npz").read_bytes() == data
    assert sorted(os.listdir(tmp_path / "out")) == ["losses.csv"]
