"""Training data: the bundled subset, Keras' MNIST, .npz and idx files, the digits' type and
range, one folder per data set, and what a file that cannot be read says."""
import hashlib
import os
import re

import numpy as np
import pytest

import gan_mnist
from conftest import losses, refused

QUIET = ["--score-digits", "0"]


def digits(n=64):
    with np.load(gan_mnist.bundled("mnist_5k.npz")) as f:
        return f["x_train"][:n]


def write_idx(path, array, cut=0):
    data = b"".join(d.to_bytes(4, "big") for d in [2051, *array.shape]) + array.tobytes()
    path.write_bytes(data[: len(data) - cut])


def test_subset_is_scaled_to_minus_one_one():
    x_train, source = gan_mnist.load_mnist_data("subset")
    assert source == "subset" and x_train.shape == (5000, 784) and x_train.dtype == np.float32
    assert x_train.min() == -1.0 and x_train.max() == 1.0
    assert gan_mnist.load_mnist_data("subset", limit=300)[0].shape == (300, 784)
    with np.load(gan_mnist.bundled("mnist_5k.npz")) as f:  # shuffled: the first 100 hold all
        assert set(f["y_train"][:100]) == set(range(10))


def test_idx_folder(main, tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte", digits())
    x_train, source = gan_mnist.load_mnist_data(str(folder))
    assert source == str(folder) and x_train.shape == (64, 784)
    np.testing.assert_array_equal(x_train, gan_mnist.load_mnist_data("subset", limit=64)[0])
    assert main("--data", str(folder), "--epochs", "1", "--batch-size", "32", *QUIET) == 0
    assert len(losses(tmp_path / "out")) == 1


@pytest.mark.parametrize("damage", ["cut", "cut by 784", "49 of 32x32", "missing"])
def test_bad_idx_files_exit_2(main, tmp_path, capsys, damage):
    """Read by their header: 49 digits of 32x32 hold as many bytes as 64 of 28x28."""
    folder = tmp_path / "raw"
    folder.mkdir()
    x = np.zeros((49, 32, 32), np.uint8) if damage == "49 of 32x32" else digits()
    if damage != "missing":
        cut = {"cut": 100, "cut by 784": 784}.get(damage, 0)
        write_idx(folder / "train-images-idx3-ubyte", x, cut)
    refused(main("--data", str(folder), "--epochs", "1"), capsys.readouterr().err, folder)
    assert not (tmp_path / "out").exists()


def test_full_mnist_is_recognised_whatever_the_file(monkeypatch, tmp_path):
    """MNIST's 60,000 training digits in an .npz or an idx folder count as "mnist" (the same run,
    checkpoint and folder as Keras' download), by the published hash of train-images-idx3-ubyte;
    here with a stand-in set of 60,000 digits and its hash."""
    x = np.tile(digits(5000), (12, 1, 1))
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    digest = hashlib.sha256((tmp_path / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    monkeypatch.setattr(gan_mnist, "MNIST_SHA256", digest)
    assert gan_mnist.load_mnist_data(str(tmp_path))[1] == "mnist"
    np.savez(tmp_path / "m.npz", x_train=x)
    assert gan_mnist.load_mnist_data(str(tmp_path / "m.npz"))[1] == "mnist"
    np.savez(tmp_path / "n.npz", x_train=x[::-1])
    assert gan_mnist.load_mnist_data(str(tmp_path / "n.npz"))[1] == str(tmp_path / "n.npz")


@pytest.mark.parametrize("x_train", [
    digits().astype(np.float32) / 255,
    digits().astype(np.uint16) * 256,
    np.full((64, 28, 28), "7"),
    np.full((64, 28, 28), -1, np.int8),
    np.zeros((10, 5)),
    np.zeros((0, 28, 28), np.uint8),
])
def test_digits_must_be_integers_0_to_255_in_28x28(main, tmp_path, capsys, x_train):
    np.savez(tmp_path / "bad.npz", x_train=x_train)
    refused(main("--data", str(tmp_path / "bad.npz"), "--epochs", "1"), capsys.readouterr().err,
            tmp_path / "bad.npz")
    assert not (tmp_path / "out").exists()


def permission_denied(path):
    raise PermissionError(13, "Permission denied", str(path))


@pytest.mark.parametrize("kind", ["not a zip", "no x_train", "a folder", "/dev/null", "missing",
                                  "unreadable"])
def test_a_data_file_that_cannot_be_read_is_named(main, tmp_path, capsys, monkeypatch, kind):
    path = tmp_path / "data.npz"
    if kind == "unreadable":  # root reads any file: the OS's refusal is played
        monkeypatch.setattr(gan_mnist.np, "load", permission_denied)
    if kind == "not a zip":
        path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    elif kind == "no x_train":
        np.savez(path, images=digits())
    elif kind == "a folder":
        path.mkdir()
    elif kind == "/dev/null":
        path = "/dev/null"
    reason = {"unreadable": "Permission denied", "missing": "No such file"}.get(kind, "")
    refused(main("--data", str(path), "--epochs", "1"), capsys.readouterr().err, path, reason)


def test_a_damaged_bundled_subset_says_how_to_restore_it(main, tmp_path, capsys, monkeypatch):
    (tmp_path / "mnist_5k.npz").write_bytes(b"PK\x03\x04 damaged")
    monkeypatch.setattr(gan_mnist, "bundled", lambda name: str(tmp_path / name))
    refused(main("--data", "subset", "--epochs", "1"), capsys.readouterr().err,
            "git checkout -- data/mnist_5k.npz")
    assert not (tmp_path / "out").exists()


def test_offline_auto_falls_back_to_the_subset(monkeypatch, capsys, main):
    import keras

    def no_network():
        raise Exception("URL fetch failure on https://storage.example/mnist.npz: no network")
    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_network)
    x_train, source = gan_mnist.load_mnist_data("auto")
    assert source == "subset" and x_train.shape == (5000, 784)
    out = capsys.readouterr().out
    assert "https://storage.example/mnist.npz" in out and "bundled 5,000-digit subset" in out
    refused(main("--data", "mnist"), capsys.readouterr().err, "--data subset")


def test_auto_uses_full_mnist_when_keras_has_it(monkeypatch):
    import keras
    x = np.full((60, 28, 28), 255, np.uint8)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: ((x, None), None))
    x_train, source = gan_mnist.load_mnist_data("auto")
    assert source == "mnist" and x_train.shape == (60, 784) and x_train.min() == 1.0


def test_one_folder_per_data_set(main, tmp_path):
    """{data} in --out-dir: the bundled subset, a limit, and two files of one name (torchvision
    keeps every data set in NAME/raw) each get a folder of their own."""
    for name, flip in (("FashionMNIST", 1), ("KMNIST", -1)):
        (tmp_path / name / "raw").mkdir(parents=True)
        write_idx(tmp_path / name / "raw" / "train-images-idx3-ubyte", digits()[:, ::flip])
    flags = ["--epochs", "1", "--batch-size", "32", "--score-digits", "0", "--out-dir",
             str(tmp_path / "runs" / "{data}")]
    for data in ("subset", tmp_path / "FashionMNIST" / "raw", tmp_path / "KMNIST" / "raw"):
        assert main("--data", str(data), "--limit", "64", *flags) == 0
    folders = sorted(os.listdir(tmp_path / "runs"))
    assert len(folders) == 3 and folders[2] == "subset-first64", folders
    assert all(re.fullmatch(r"raw-\w{6}-first64", name) for name in folders[:2]), folders
