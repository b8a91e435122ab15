"""The run's folders: checked before anything is created, nothing left by a refusal, one run per
folder (locks), atomic writes, and the temporaries that killed runs leave."""
import errno
import os
import shutil
import subprocess
import sys

import pytest

import gan_mnist
from conftest import HANG, QUICK, SCRIPT, TINY, leftovers, losses, start, wait_for_line


# ------------------------------------------------------------- checked before anything is created
def test_output_folder_that_cannot_be_created(main, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    assert main("--epochs", "1", *QUICK, "--out-dir", str(tmp_path / "a_file" / "out")) == 2
    err = capsys.readouterr().err
    assert f"cannot write to folder {tmp_path / 'a_file' / 'out'}" in err and "--out-dir" in err
    assert (tmp_path / "a_file").read_text() == "not a folder"
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # not even the checkpoint folder


@pytest.mark.parametrize("name", ["checkpoint.npz", "losses.csv", "generator.keras"])
def test_an_output_that_is_a_folder_is_refused_before_training(main, tmp_path, capsys, name):
    folder = tmp_path / ("ck" if name == "checkpoint.npz" else "out") / name
    folder.mkdir(parents=True)
    assert main("--epochs", "1", *QUICK) == 2
    err = capsys.readouterr().err
    assert f"{folder} is a folder, not a file" in err and err.count("\n") == 1
    assert folder.is_dir() and not leftovers(tmp_path / "out", tmp_path / "ck")


def test_a_link_to_nothing_is_named_as_such(main, tmp_path, capsys):
    """H15: a dangling symbolic link as --out-dir; nothing is created (H3)."""
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    assert main("--epochs", "1", *QUICK, "--out-dir", str(tmp_path / "dangling")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'dangling'} is a symbolic link to {tmp_path / 'gone'}, which does not exist" in err
    assert sorted(os.listdir(tmp_path)) == ["dangling"]


def test_a_path_too_long_for_the_runs_files_is_refused_at_start(main, tmp_path, capsys):
    """H2: the folder can be made, but its grids' temporary names would pass the path limit: refused
    at start (not at epoch 100), with every folder it made removed again (H3)."""
    deep = tmp_path / "long"
    while len(str(deep)) < 4000:
        deep = deep / ("d" * 200)
    deep = deep.parent / ("d" * (4060 - len(str(deep.parent)) - 1))  # 4,060 characters
    assert main("--epochs", "100", "--sample-every", "100", *QUICK, "--limit", "32", "--out-dir", str(deep)) == 2
    err = capsys.readouterr().err
    assert "(File name too long): its files would have names of" in err and "characters; pick another" in err
    assert err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == []


def test_a_full_disk_at_start_is_one_line(main, tmp_path, capsys, monkeypatch):
    """H14: the start-up write test meets a full disk: exit 2, one line, no folder or lock left."""
    def full(file, *args, **kwargs):
        if ".tmp-9999999999-" in str(file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return open(file, *args, **kwargs)
    monkeypatch.setattr(gan_mnist, "open", full, raising=False)
    assert main("--epochs", "1", *QUICK) == 2
    err = capsys.readouterr().err
    assert f"cannot write to folder {tmp_path / 'out'} (No space left on device): free some space, or pick" in err
    assert err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == []


def test_the_lock_file_cannot_be_written_pid_and_all(main, tmp_path, monkeypatch):
    """H14: a disk full after the write test: the PID is not written to .lock, the run goes on."""
    def disk_full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", disk_full)
    assert main("--epochs", "1", *QUICK) == 0
    monkeypatch.undo()
    assert len(losses(tmp_path / "out")) == 1


# ------------------------------------------------------------------------- one run per folder
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
        assert not (tmp_path / "out").exists()  # the refusal removed the folder it had made
    assert main("--epochs", "1", *QUICK) == 0  # the lock died with its holder


def test_two_processes_into_one_folder(tmp_path):
    first = start(tmp_path, "--epochs", "500", *QUICK, "--sample-every", "1000")
    wait_for_line(first, "Epoch 1/500:")
    second = subprocess.run([sys.executable, SCRIPT, "--epochs", "1", *QUICK, "--seed", "11",
                             "--out-dir", str(tmp_path / "other"), "--checkpoint-dir", str(tmp_path / "ck")],
                            capture_output=True, text=True, timeout=HANG)
    assert second.returncode == 2
    assert f"another gan_mnist.py run (process {first.pid}) is using" in second.stderr
    assert not (tmp_path / "other").exists()
    first.send_signal(2)
    first.communicate(timeout=HANG)
    assert first.returncode == 130


def test_one_folder_named_two_ways_is_one_lock(main, tmp_path):
    """H1: --out-dir through a symbolic link to --checkpoint-dir is the same folder, not a second run."""
    (tmp_path / "same").mkdir()
    os.symlink(tmp_path / "same", tmp_path / "link")
    assert main("--epochs", "1", *QUICK, "--out-dir", str(tmp_path / "link"),
                "--checkpoint-dir", str(tmp_path / "same")) == 0
    assert (tmp_path / "same" / "checkpoint.npz").exists() and (tmp_path / "same" / "losses.csv").exists()


def test_a_read_only_lock_file_still_locks(run, tmp_path):
    """H5: a .lock this user may not write (chmod 444, kept from another user's run) is locked
    read-only. Root ignores file modes, so root runs it without the capabilities that let it."""
    assert run("--epochs", "1", *QUICK).returncode == 0
    os.chmod(tmp_path / "ck" / ".lock", 0o444)
    result = subprocess.run([*unprivileged(), sys.executable, SCRIPT, "--epochs", "2", *QUICK, "--resume",
                             "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck")],
                            capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert len(losses(tmp_path / "out")) == 2


def unprivileged():
    """A command prefix that makes root obey file modes (setpriv drops the capabilities that
    bypass them), or nothing for another user."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("root without setpriv (util-linux) cannot be made to obey file modes")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
            "--inh-caps=-dac_override,-dac_read_search,-fowner", "--"]


# ----------------------------------------------------------------------------------- writes
def test_temporary_files_are_this_process_own_and_synced(tmp_path, monkeypatch):
    synced, seen = [], []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", spy)

    def write(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("x")
    target = tmp_path / "file.txt"
    gan_mnist.save_atomically(str(target), write)
    assert f".tmp-{os.getpid()}-file.txt" in seen[0]
    assert synced == [seen[0], str(tmp_path)]  # the file before the rename, the folder after
    assert target.read_text() == "x"


def test_temporaries_of_killed_runs_are_removed(main, tmp_path, capsys):
    """H4: a run killed while writing leaves .tmp-<its pid>-...; the next run in the folder removes
    them, but leaves a live process's temporary alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    for folder, name in (("ck", "checkpoint.npz"), ("out", "generator.keras")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f".tmp-{dead}-{name}").write_bytes(b"partial")
    (tmp_path / "out" / f".tmp-{os.getpid()}-digits.png").write_bytes(b"being written")
    assert main("--epochs", "1", *QUICK) == 0
    said = capsys.readouterr().out
    assert f"Removed 1 partial file(s) that a stopped run left in {tmp_path / 'ck'}: .tmp-{dead}-checkpoint.npz" in said
    assert sorted(leftovers(tmp_path / "ck", tmp_path / "out")) == [f".tmp-{os.getpid()}-digits.png"]


def test_the_script_run_through_a_symbolic_link_finds_its_data(tmp_path):
    """H7: `ln -s .../gan_mnist.py gan.py; python gan.py`: the bundled subset and classifier are
    beside the real script, not beside the link."""
    os.symlink(SCRIPT, tmp_path / "gan.py")
    result = subprocess.run([sys.executable, "gan.py", "--epochs", "1", *TINY, "--out-dir", "o",
                             "--checkpoint-dir", "c"], cwd=tmp_path, capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr
    assert "FD " in result.stdout
