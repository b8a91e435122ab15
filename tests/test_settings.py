"""Settings: the constants are the flags' defaults, and a bad flag or constant is one line and
exit code 2, with no folder created."""
import json
import os

import numpy as np
import pytest

import gan_mnist
from conftest import TINY


def test_constants_are_the_defaults(monkeypatch):
    monkeypatch.setattr(gan_mnist, "EPOCHS", 7)  # as if edited at the top of the file
    args = gan_mnist.get_args([])
    assert (args.epochs, args.batch_size, args.sample_every, args.seed, args.data) == (7, 128, 20, 10, "auto")
    assert (args.out_dir, args.checkpoint_dir, args.ema_decay, args.limit) == ("samples/{data}", "checkpoints/{data}", 0.999, None)
    assert (args.precision, args.score_digits, args.adam_counter) == ("float32", 2000, "shared")
    assert gan_mnist.get_args(["--epochs", "3"]).epochs == 3


@pytest.mark.parametrize("flags, turns", [([], [1, 2]), (["--adam-counter", "own"], [None, None])])
def test_train_gives_each_adam_its_turn_of_the_shared_counter(main, monkeypatch, tmp_path, flags, turns):
    """train() builds the discriminator's Adam, then the generator's, with the shared counter's
    turns (1, 2) by default, and with none under --adam-counter own; the checkpoint says which."""
    made = []
    get_optimizer = gan_mnist.get_optimizer
    monkeypatch.setattr(gan_mnist, "get_optimizer", lambda *a: made.append(get_optimizer(*a)) or made[-1])
    assert main("--epochs", "1", *TINY, "--score-digits", "0", "--limit", "64", *flags) == 0
    assert [o.turn for o in made] == turns and [int(o.iterations) for o in made] == [2, 2]
    with np.load(tmp_path / "ck" / "checkpoint.npz") as f:
        assert json.loads(str(f["meta"]))["config"]["adam_counter"] == (flags[-1] if flags else "shared")


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a whole number of 1 or more, not 0"),
    (["--batch-size", "-4"], "--batch-size must be a whole number of 1 or more"),
    (["--sample-every", "0"], "--sample-every must be a whole number of 1 or more"),
    (["--limit", "0"], "--limit must be a whole number of 1 or more"),
    (["--epochs", "ten"], "--epochs: not a whole number: 'ten'"),
    (["--ema-decay", "1"], "--ema-decay must be 0 (the raw generator) or from 0.5 to below 1"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 2**32 - 1, not -1"),
    (["--seed", str(2**32)], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--seed", str(2**40)], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--generate", "any.keras", "--seed", "-1"], "--seed must be a whole number from 0"),
    (["--score-digits", "50"], "--score-digits must be 0 (no scores) or from 100 to 100000, not 50"),
    (["--score-digits", "1000000000"], "--score-digits must be 0 (no scores) or from 100 to 100000"),  # H12
    (["--data", "no/such/file.npz"], "data file no/such/file.npz not found"),
    (["--data", "subset", "--limit", "16", "--batch-size", "32"],
     "--batch-size 32 is larger than the 16 training digits: lower --batch-size or raise --limit"),
])
def test_bad_input_is_one_line_and_creates_no_folder(main, tmp_path, capsys, flags, message):
    assert main(*flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and err.count("\n") == 1 and "usage:" not in err
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("constant, value, message", [
    ("RANDOM_DIM", 0, "RANDOM_DIM at the top of gan_mnist.py must be a whole number of 1 or more, not 0"),
    ("LEARNING_RATE", -0.1, "LEARNING_RATE at the top of gan_mnist.py must be above 0"),
    ("LEARNING_RATE", "0.0002", "LEARNING_RATE at the top of gan_mnist.py must be above 0 and below 1, not '0.0002'"),
    ("REAL_LABEL", 1.5, "REAL_LABEL at the top of gan_mnist.py must be above 0 and at most 1"),
    ("BETA_1", 1.0, "BETA_1 at the top of gan_mnist.py must be at least 0 and below 1"),
    ("EPOCHS", 2.5, "EPOCHS at the top of gan_mnist.py must be a whole number of 1 or more, not 2.5"),
    ("BATCH_SIZE", 32.0, "BATCH_SIZE at the top of gan_mnist.py must be a whole number of 1 or more, not 32.0"),
    ("PRECISION", "float16", 'PRECISION at the top of gan_mnist.py must be "float32" or "bfloat16"'),
    ("FIXED_NOISE", "yes", "FIXED_NOISE at the top of gan_mnist.py must be True or False"),
    ("ADAM_COUNTER", "one", 'ADAM_COUNTER at the top of gan_mnist.py must be "shared" or "own", not \'one\''),
])
def test_bad_constant_exits_2(main, monkeypatch, capsys, tmp_path, constant, value, message):
    monkeypatch.setattr(gan_mnist, constant, value)
    flags = {"EPOCHS": ["--epochs", "1"], "BATCH_SIZE": ["--batch-size", "32"]}  # leave that one alone
    assert main("--data", "subset", "--limit", "256", "--score-digits", "0",
                *[f for name, pair in flags.items() if name != constant for f in pair]) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "\u0663"], "--epochs: not a whole number: '\u0663'"),  # J11: an Arabic-Indic 3
    (["--epochs", "1_000"], "--epochs: not a whole number: '1_000'"),
    (["--ema-decay", "5e-324"], "--ema-decay must be 0 (the raw generator) or from 0.5 to below 1"),
    (["--minibatch-stddev", "64", "--batch-size", "32", "--data", "subset"],
     "--batch-size 32 is smaller than one group of --minibatch-stddev 64: make it a multiple of 64"),
])
def test_numbers_are_plain_whole_numbers_and_sensible(main, tmp_path, capsys, flags, message):
    assert main(*flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("flag, value", [("--score-digits", "2000"), ("--classifier", "copy")])
def test_resume_refuses_other_score_settings(main, tmp_path, capsys, flag, value):
    """J7: scores of another sample size or classifier would mix incomparable rows in scores.csv."""
    assert main("--epochs", "1", *TINY) == 0
    if value == "copy":
        value = str(tmp_path / "other.npz")
        with np.load(gan_mnist.CLASSIFIER) as f:
            arrays = dict(f)
        arrays["w0"] = arrays["w0"] * 1.01
        np.savez(value, **arrays)
    assert main("--epochs", "2", *TINY, flag, value, "--resume") == 2
    err = capsys.readouterr().err
    assert "was made with" in err and ("score_digits=200, not 2000" in err or "another digit classifier" in err)
