"""Training data: the bundled subset, Keras' MNIST, .npz and idx files, the digits' type and
range, one folder per data set, and what a file that cannot be read says."""
import gzip
import os

import numpy as np
import pytest

import gan_mnist
from conftest import losses


def digits(n=64):
    with np.load(gan_mnist.SUBSET_PATH) as f:
        return f["x_train"][:n], f["y_train"][:n]


def write_idx(path, array, magic=2051, dims=None, cut=0):
    data = b"".join(d.to_bytes(4, "big") for d in [magic, *(dims or array.shape)]) + array.tobytes()
    data = data[: len(data) - cut]
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_idx_folder_raw_or_gz(main, tmp_path, name):
    x, _ = digits()
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    write_idx(folder / name, x)
    x_train, source = gan_mnist.load_mnist_data(str(folder))
    assert source == str(folder) and x_train.shape == (64, 784)
    np.testing.assert_array_equal(x_train, gan_mnist.load_mnist_data("subset", limit=64)[0])
    assert main("--data", str(folder), "--epochs", "1", "--batch-size", "32", "--score-digits", "0") == 0
    assert len(losses(tmp_path / "out")) == 1


@pytest.mark.parametrize("damage, message", [
    (dict(magic=2049), "is not an MNIST idx file of this kind (magic number 2049, expected 2051)"),
    (dict(cut=100), "is truncated or too long"),
    (dict(dims=(16, 32, 32)), "holds items of shape (32, 32), expected (28, 28)"),
    (None, "no train-images-idx3-ubyte (or train-images-idx3-ubyte.gz) in folder"),
])
def test_bad_idx_files_exit_2(main, tmp_path, capsys, damage, message):
    folder = tmp_path / "raw"
    folder.mkdir()
    x, _ = digits()
    if damage is not None:
        write_idx(folder / "train-images-idx3-ubyte", x, **damage)
    (tmp_path / "gz").mkdir()
    write_idx(tmp_path / "gz" / "train-images-idx3-ubyte.gz", x, magic=2051, cut=5000)
    for bad in (folder, tmp_path / "gz"):
        assert main("--data", str(bad), "--epochs", "1") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert (message if bad == folder else "is truncated or too long") in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ck").exists()


def test_full_mnist_is_recognised_whatever_the_file(monkeypatch, tmp_path):
    """MNIST's 60,000 training digits in an .npz or an idx folder count as "mnist" (the same
    run, checkpoint and folder as Keras' download). Checked by the published hash of
    train-images-idx3-ubyte; here with a stand-in set of 60,000 digits and its hash."""
    x = np.tile(digits(5000)[0], (12, 1, 1))
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    import hashlib
    monkeypatch.setattr(gan_mnist, "MNIST_SHA256",
                        hashlib.sha256((tmp_path / "train-images-idx3-ubyte").read_bytes()).hexdigest())
    assert gan_mnist.load_mnist_data(str(tmp_path))[1] == "mnist"
    np.savez(tmp_path / "m.npz", x_train=x)
    assert gan_mnist.load_mnist_data(str(tmp_path / "m.npz"))[1] == "mnist"
    np.savez(tmp_path / "n.npz", x_train=x[::-1])
    assert gan_mnist.load_mnist_data(str(tmp_path / "n.npz"))[1] == str(tmp_path / "n.npz")


@pytest.mark.parametrize("x_train, message", [
    (digits()[0].astype(np.float32) / 255, "holds float32 values, expected integers 0..255"),
    (digits()[0].astype(np.uint16) * 256, "holds uint16 values, expected integers 0..255"),
    (np.full((64, 28, 28), "7"), "values, expected integers 0..255"),
    (np.where(digits()[0] > 0, np.nan, 0.0), "holds float64 values"),
    (np.full((64, 28, 28), -1, np.int8), "holds int8 values"),
])
def test_digits_must_be_integers_0_to_255(main, tmp_path, capsys, x_train, message):
    np.savez(tmp_path / "bad.npz", x_train=x_train)
    assert main("--data", str(tmp_path / "bad.npz"), "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_integer_digits_in_range_are_accepted(tmp_path):
    x, _ = digits()
    np.savez(tmp_path / "int64.npz", x_train=x.astype(np.int64))
    np.testing.assert_array_equal(gan_mnist.load_mnist_data(str(tmp_path / "int64.npz"))[0],
                                  gan_mnist.load_mnist_data("subset", limit=64)[0])


def test_one_folder_per_data_set(main, tmp_path, capsys):
    flags = ["--epochs", "1", "--batch-size", "32", "--score-digits", "0",
             "--out-dir", str(tmp_path / "samples" / "{data}"), "--checkpoint-dir", str(tmp_path / "ck" / "{data}")]
    assert main("--data", "subset", "--limit", "64", *flags) == 0
    np.savez(tmp_path / "mine.npz", x_train=digits()[0])
    assert main("--data", str(tmp_path / "mine.npz"), *flags) == 0
    assert main("--data", str(tmp_path / "mine.npz"), "--limit", "1000", *flags) == 0
    assert "--limit 1000 is more than the 64 digits there: training on all of them." in capsys.readouterr().out
    mine = gan_mnist.data_name(str(tmp_path / "mine.npz"), None)
    assert mine.startswith("mine-") and len(mine) == len("mine-") + 6  # its name and a digest of its path
    assert sorted(os.listdir(tmp_path / "samples")) == sorted(os.listdir(tmp_path / "ck")) == [mine, "subset-first64"]
    assert len(losses(tmp_path / "samples" / mine)) == 1


def test_an_idx_header_too_large_is_refused_before_reading(main, tmp_path, capsys, monkeypatch):
    """H13: a .gz whose header claims 10**9 images is refused from its 16-byte header; no read
    of the data is even attempted."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8), dims=(10**9, 28, 28))
    reads = []
    real_open = gzip.open

    def spy(*args, **kwargs):
        f = real_open(*args, **kwargs)
        read = f.read

        def counted_read(n=-1):
            reads.append(n)
            return read(n)
        f.read = counted_read
        return f
    monkeypatch.setattr(gzip, "open", spy)
    assert main("--data", str(folder), "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "header says 1,000,000,000 items (784 GB), more than an MNIST file can hold" in err
    assert reads == [16] and err.count("\n") == 1


@pytest.mark.parametrize("path, message", [
    ("/dev/null", "data file /dev/null is not a regular file (a device or a pipe?)"),
    ("FOLDER.npz", "is a folder, not a file"),
])
def test_data_that_is_not_a_file_says_what_it_is(main, tmp_path, capsys, path, message):
    """H15: not "not found" for something that exists."""
    if path == "FOLDER.npz":
        (tmp_path / "FOLDER.npz").mkdir()
        (tmp_path / "FOLDER.npz" / "x").write_text("")  # a folder that is not an idx folder either
        path = str(tmp_path / "FOLDER.npz")
        message = "no train-images-idx3-ubyte (or train-images-idx3-ubyte.gz) in folder"
    assert main("--data", path, "--epochs", "1") == 2
    assert message in capsys.readouterr().err


def test_a_damaged_bundled_subset_says_how_to_restore_it(main, tmp_path, capsys, monkeypatch):
    """H15: the bundled file is named as such, with its git checkout fix."""
    (tmp_path / "mnist_5k.npz").write_bytes(b"PK\x03\x04 damaged")
    monkeypatch.setattr(gan_mnist, "SUBSET_PATH", str(tmp_path / "mnist_5k.npz"))
    assert main("--data", "subset", "--epochs", "1", "--out-dir", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "it is the bundled subset: restore it with `git checkout -- data/mnist_5k.npz`" in err
    assert not (tmp_path / "o").exists()


def test_corrupt_data_file(main, run, tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    result = run("--data", str(bad))
    assert result.returncode == 2
    assert f"cannot read digits from {bad}" in result.stderr
    assert "Traceback" not in result.stderr
    np.savez(tmp_path / "wrong.npz", x_train=np.zeros((10, 5)))
    assert main("--data", str(tmp_path / "wrong.npz")) == 2
    assert "expected (N, 28, 28)" in capsys.readouterr().err


def test_subset_is_scaled_to_minus_one_one():
    x_train, source = gan_mnist.load_mnist_data("subset")
    assert source == "subset"
    assert x_train.shape == (5000, 784) and x_train.dtype == np.float32
    assert x_train.min() == -1.0 and x_train.max() == 1.0
    assert gan_mnist.load_mnist_data("subset", limit=300)[0].shape == (300, 784)
    with np.load(gan_mnist.SUBSET_PATH) as f:  # shuffled: the first digits hold every class
        assert set(f["y_train"][:100]) == set(range(10))


def test_npz_path_like_keras_mnist(tmp_path):
    digits_ = np.zeros((7, 28, 28), np.uint8)
    digits_[:, 3, 4] = 255
    np.savez(tmp_path / "mnist.npz", x_train=digits_, y_train=np.arange(7))
    x_train, source = gan_mnist.load_mnist_data(str(tmp_path / "mnist.npz"))
    assert x_train.shape == (7, 784) and source == str(tmp_path / "mnist.npz")
    assert x_train[0, 3 * 28 + 4] == 1.0 and x_train[0, 0] == -1.0


def test_offline_auto_falls_back_to_the_subset(monkeypatch, capsys):
    import keras

    def no_network():
        raise Exception("URL fetch failure on https://example/mnist.npz: None -- no network")
    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_network)
    x_train, source = gan_mnist.load_mnist_data("auto")
    assert source == "subset" and x_train.shape == (5000, 784)
    out = capsys.readouterr().out
    assert "Full MNIST is unavailable" in out and "bundled 5,000-digit subset" in out
    with pytest.raises(gan_mnist.UsageError, match="cannot load full MNIST"):
        gan_mnist.load_mnist_data("mnist")


def test_auto_uses_full_mnist_when_keras_has_it(monkeypatch):
    import keras
    digits_ = np.full((60, 28, 28), 255, np.uint8)
    monkeypatch.setattr(keras.datasets.mnist, "load_data",
                        lambda: ((digits_, np.zeros(60)), (digits_[:1], np.zeros(1))))
    x_train, source = gan_mnist.load_mnist_data("auto")
    assert source == "mnist" and x_train.shape == (60, 784) and x_train.min() == 1.0


def test_two_data_sets_of_one_name_get_their_own_folders(main, tmp_path, capsys):
    """J3: torchvision's layout puts every data set in NAME/raw; the default folders must still be
    one per data set, and a user's own subset.npz is not the bundled subset."""
    x, _ = digits(64)
    for name, flip in (("FashionMNIST", False), ("KMNIST", True)):
        (tmp_path / name / "raw").mkdir(parents=True)
        write_idx(tmp_path / name / "raw" / "train-images-idx3-ubyte", 255 - x if flip else x)
    np.savez(tmp_path / "subset.npz", x_train=x)
    folders = set()
    for data in (tmp_path / "FashionMNIST" / "raw", tmp_path / "KMNIST" / "raw", tmp_path / "subset.npz", "subset"):
        args = gan_mnist.get_args(["--data", str(data)])
        x_train, source = gan_mnist.load_mnist_data(args.data)
        folders.add(gan_mnist.data_name(source, None))
    assert len(folders) == 4 and "subset" in folders, folders
    assert all(name.startswith(("raw-", "subset")) for name in folders), folders


def test_resume_refuses_other_digits_under_the_same_name(main, tmp_path, capsys):
    """J9: the same data file rewritten with other digits (same count) is not resumed."""
    x, _ = digits(256)
    np.savez(tmp_path / "mine.npz", x_train=x)
    flags = ["--data", str(tmp_path / "mine.npz"), "--batch-size", "32", "--score-digits", "0"]
    assert main("--epochs", "1", *flags) == 0
    np.savez(tmp_path / "mine.npz", x_train=x[::-1])
    assert main("--epochs", "2", *flags, "--resume") == 2
    err = capsys.readouterr().err
    assert "was made with other training digits" in err and err.count("\n") == 1
