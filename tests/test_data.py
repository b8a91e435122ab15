"""Training data: MNIST's idx files as --data, the digits' type and range, one folder per data set."""
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
    assert sorted(os.listdir(tmp_path / "samples")) == ["mine", "subset-first64"]
    assert sorted(os.listdir(tmp_path / "ck")) == ["mine", "subset-first64"]
    assert len(losses(tmp_path / "samples" / "mine")) == 1
