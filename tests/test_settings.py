"""Settings: the constants are the flags' defaults, and a bad flag or an edited constant is one
line and exit code 2 that names it, with no folder created; a slip never starts a run."""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import HANG, QUICK, SCRIPT, TINY, refused


def test_constants_are_the_defaults(monkeypatch):
    monkeypatch.setattr(gan_mnist, "EPOCHS", 7)  # as if edited at the top of the file
    args = vars(gan_mnist.get_args([]))
    constants = {name.lower(): value for name, value in vars(gan_mnist).items() if name.isupper()}
    settings = {name: args[name] for name in args.keys() & constants.keys()}
    assert settings == {name: constants[name] for name in settings} and len(settings) == 19
    assert (args["epochs"], args["steps_per_call"], args["checkpoint_seconds"]) == (7, 50, 60)
    assert gan_mnist.get_args(["--epochs", "3"]).epochs == 3


def test_train_gives_each_adam_its_turn_of_the_shared_counter(main, monkeypatch):
    """train() builds the discriminator's Adam, then the generator's, with the shared counter's
    turns 1 and 2 (a train() that dropped them would train with other step numbers)."""
    made = []
    get_optimizer = gan_mnist.get_optimizer
    monkeypatch.setattr(gan_mnist, "get_optimizer",
                        lambda *a, **k: made.append(get_optimizer(*a, **k)) or made[-1])
    assert main("--epochs", "1", *QUICK, "--limit", "64") == 0
    assert [o.turn for o in made] == [1, 2] and [int(o.iterations) for o in made] == [2, 2]


def test_the_bar_moves_ten_times_an_epoch_or_more():
    """The calls an epoch is cut into: STEPS_PER_CALL steps at most, ten calls or more."""
    for batches in (8, 39, 468):
        run = argparse.Namespace(args=gan_mnist.get_args([]), step=0)
        sizes = []
        for size in gan_mnist.Run.calls(run, batches):
            sizes.append(size)
            run.step += size
        assert sum(sizes) == batches and len(sizes) >= min(10, batches) and max(sizes) <= 50


@pytest.mark.parametrize("flags, names", [
    (["--epochs", "0"], ["--epochs", "0"]),
    (["--batch-size", "-4"], ["--batch-size"]),
    (["--sample-every", "0"], ["--sample-every"]),
    (["--limit", "0"], ["--limit"]),
    (["--epochs", "ten"], ["--epochs", "ten"]),
    (["--ema-decay", "1"], ["--ema-decay"]), (["--ema-decay", "nan"], ["--ema-decay"]),
    (["--seed", "-1"], ["--seed"]), (["--seed", str(2**32)], ["--seed"]),
    (["--generate", "any.keras", "--seed", "-1"], ["--seed"]), (["--epochs", "1e3"], ["1e3"]),
    (["--score-digits", "50"], ["--score-digits"]), (["--score-digits", "10**9"], ["10**9"]),
    (["--learning-rate", "2"], ["--learning-rate"]),
    (["--real-label", "0"], ["--real-label"]),
    (["--precision", "float16"], ["--precision", "float16"]),
    (["--minibatch-stddev", "1"], ["--minibatch-stddev"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--data", "no/such/file.npz"], ["no/such/file.npz"]),
    (["--data", "subset", "--limit", "16", "--batch-size", "32"], ["--batch-size", "--limit"]),
    (["--data", "subset", "--minibatch-stddev", "4", "--batch-size", "30"], ["--minibatch-stddev"]),
    (["--generate", ""], ["--generate"]), (["--score", ""], ["--score"]),
    (["--out", "digits.png"], ["--out", "--generate"]), (["--out-dir", ""], ["--out-dir"]),
])
def test_bad_input_is_one_line_and_creates_no_folder(main, tmp_path, capsys, flags, names):
    refused(main(*flags, "--score-digits", "0"), capsys.readouterr().err, *names)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("constant, value, flag", [
    ("RANDOM_DIM", 0, "--random-dim"),
    ("LEARNING_RATE", -0.1, "--learning-rate"),
    ("REAL_LABEL", 1.5, "--real-label"),
    ("BETA_1", 1.0, "--beta-1"),
    ("EPOCHS", 2.5, "--epochs"),
    ("PRECISION", "float16", "--precision"),
    ("MINIBATCH_STDDEV", 3.0, "--minibatch-stddev"),
])
def test_a_bad_constant_is_refused_as_its_flag(main, monkeypatch, capsys, tmp_path, constant,
                                               value, flag):
    monkeypatch.setattr(gan_mnist, constant, value)
    refused(main(*QUICK), capsys.readouterr().err, flag, value)
    assert sorted(os.listdir(tmp_path)) == []


def test_a_bad_constant_in_a_real_process_has_no_traceback(tmp_path):
    source = open(SCRIPT).read().replace("\nEPOCHS = 400 ", "\nEPOCHS = 2.5 ")
    (tmp_path / "gan_mnist.py").write_text(source)
    result = subprocess.run([sys.executable, str(tmp_path / "gan_mnist.py")], capture_output=True,
                            text=True, timeout=HANG, cwd=tmp_path)
    refused(result.returncode, result.stderr, "--epochs", "2.5")


def test_resume_refuses_another_classifier(main, tmp_path, capsys):
    """Scores of another classifier would mix incomparable rows in scores.csv."""
    assert main("--epochs", "1", *TINY) == 0
    with np.load(gan_mnist.bundled("digit_classifier.npz")) as f:
        arrays = dict(f)
    np.savez(tmp_path / "other.npz", **{**arrays, "w0": arrays["w0"] * 1.01})
    flags = ["--classifier", str(tmp_path / "other.npz"), "--resume"]
    refused(main("--epochs", "2", *TINY, *flags), capsys.readouterr().err, "classifier_sha256")
