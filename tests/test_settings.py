"""Settings: the constants are the flags' defaults, and a bad flag or an edited constant is one
line and exit code 2 that names it, with no folder created."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import HANG, QUICK, SCRIPT, TINY, refused


def test_constants_are_the_defaults(monkeypatch):
    monkeypatch.setattr(gan_mnist, "EPOCHS", 7)  # as if edited at the top of the file
    args = gan_mnist.get_args([])
    assert (args.epochs, args.batch_size, args.sample_every, args.seed, args.data) == (7, 128, 20, 10, "auto")
    assert (args.out_dir, args.checkpoint_dir, args.ema_decay, args.limit) == ("runs/{data}", None, 0.999, None)
    assert (args.precision, args.score_digits, args.minibatch_stddev, args.fixed_noise) == ("float32", 2000, 0, True)
    assert (args.random_dim, args.learning_rate, args.beta_1, args.real_label) == (100, 0.0002, 0.5, 0.9)
    assert gan_mnist.get_args(["--epochs", "3"]).epochs == 3


def test_train_gives_each_adam_its_turn_of_the_shared_counter(main, monkeypatch):
    """train() builds the discriminator's Adam, then the generator's, with the shared counter's
    turns 1 and 2 (a train() that dropped them would train with other step numbers)."""
    made = []
    get_optimizer = gan_mnist.get_optimizer
    monkeypatch.setattr(gan_mnist, "get_optimizer", lambda *a: made.append(get_optimizer(*a)) or made[-1])
    assert main("--epochs", "1", *QUICK, "--limit", "64") == 0
    assert [o.turn for o in made] == [1, 2] and [int(o.iterations) for o in made] == [2, 2]


@pytest.mark.parametrize("flags, names", [
    (["--epochs", "0"], ["--epochs", "0"]),
    (["--batch-size", "-4"], ["--batch-size"]),
    (["--sample-every", "0"], ["--sample-every"]),
    (["--limit", "0"], ["--limit"]),
    (["--epochs", "ten"], ["--epochs", "ten"]),
    (["--ema-decay", "1"], ["--ema-decay"]), (["--ema-decay", "nan"], ["--ema-decay"]),
    (["--seed", "-1"], ["--seed"]), (["--seed", str(2**32)], ["--seed"]),
    (["--generate", "any.keras", "--seed", "-1"], ["--seed"]),
    (["--score-digits", "50"], ["--score-digits"]), (["--score-digits", "1000000000"], ["--score-digits"]),
    (["--learning-rate", "2"], ["--learning-rate"]),
    (["--real-label", "0"], ["--real-label"]),
    (["--precision", "float16"], ["--precision", "float16"]),
    (["--minibatch-stddev", "1"], ["--minibatch-stddev"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--data", "no/such/file.npz"], ["no/such/file.npz"]),
    (["--data", "subset", "--limit", "16", "--batch-size", "32"], ["--batch-size", "--limit"]),
    (["--data", "subset", "--minibatch-stddev", "4", "--batch-size", "30"], ["--batch-size", "--minibatch-stddev"]),
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
def test_a_bad_constant_is_refused_as_its_flag(main, monkeypatch, capsys, tmp_path, constant, value, flag):
    monkeypatch.setattr(gan_mnist, constant, value)
    refused(main(*QUICK), capsys.readouterr().err, flag, value)
    assert sorted(os.listdir(tmp_path)) == []


def test_a_bad_constant_in_a_real_process_has_no_traceback(tmp_path):
    source = open(SCRIPT).read().replace("\nEPOCHS = 400 ", "\nEPOCHS = 2.5 ")
    (tmp_path / "gan_mnist.py").write_text(source)
    result = subprocess.run([sys.executable, str(tmp_path / "gan_mnist.py")], capture_output=True, text=True,
                            timeout=HANG, cwd=tmp_path)
    refused(result.returncode, result.stderr, "--epochs", "2.5")


@pytest.mark.parametrize("flag, value", [("--score-digits", "2000"), ("--classifier", "copy")])
def test_resume_refuses_other_score_settings(main, tmp_path, capsys, flag, value):
    """Scores of another sample size or classifier would mix incomparable rows in scores.csv."""
    assert main("--epochs", "1", *TINY) == 0
    if value == "copy":
        value = str(tmp_path / "other.npz")
        with np.load(gan_mnist.CLASSIFIER) as f:
            arrays = dict(f)
        arrays["w0"] = arrays["w0"] * 1.01
        np.savez(value, **arrays)
    refused(main("--epochs", "2", *TINY, flag, value, "--resume"), capsys.readouterr().err,
            "score_digits" if flag == "--score-digits" else "classifier_sha256", "checkpoint.npz")
