"""Tests of gan_mnist.py: data, models, the training step, the real script end to end, bad input."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import gan_mnist
from conftest import TINY, build, losses, pixels


# ---------------------------------------------------------------- the script, as a user runs it
def test_smoke_one_tiny_epoch(run, tmp_path):
    result = run("--epochs", "1", *TINY)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    grid = out / "gan_generated_image_epoch_1.png"
    assert Image.open(grid).size == (1000, 1000)
    grey = pixels(grid)
    assert grey.std() > 10, "the grid is blank"
    assert (grey > 250).mean() > 0.05, "no white background between the 100 digits"
    [(epoch, d_loss, g_loss)] = losses(out)
    assert epoch == "1" and 0 < float(d_loss) < 5 and 0 < float(g_loss) < 10
    for name in ("gan_loss.png", "progress.gif", "generator.keras"):
        assert (out / name).stat().st_size > 1000, name
    assert (tmp_path / "ck" / "checkpoint.npz").exists()
    assert "Epoch 1/1: d_loss" in result.stdout
    # not a terminal (a log file, a pipe): no progress bar, so every line of the log is readable
    assert "\r" not in result.stderr + result.stdout and "it/s" not in result.stderr
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")], "temporary files left behind"
    assert sorted(os.listdir(tmp_path)) == ["ck", "out"]  # nothing written to the working folder


def test_grids_at_epoch_1_every_sample_every_and_last(main, tmp_path):
    assert main("--epochs", "4", "--sample-every", "3", *TINY) == 0
    grids = sorted(p for p in os.listdir(tmp_path / "out") if p.startswith("gan_generated"))
    assert grids == [f"gan_generated_image_epoch_{e}.png" for e in (1, 3, 4)]
    assert [row[0] for row in losses(tmp_path / "out")] == ["1", "2", "3", "4"]
    gif = Image.open(tmp_path / "out" / "progress.gif")
    assert gif.n_frames == 3 and max(gif.size) <= 400
    assert not np.array_equal(pixels(tmp_path / "out" / grids[0]), pixels(tmp_path / "out" / grids[-1]))


def test_same_seed_same_run(main, run, tmp_path):
    runs = []
    for name, train in (("a", main), ("b", run)):  # in this process, and in a fresh one
        result = train("--epochs", "2", *TINY, "--out-dir", str(tmp_path / name))
        assert getattr(result, "returncode", result) == 0
        runs.append((losses(tmp_path / name),
                     pixels(tmp_path / name / "gan_generated_image_epoch_2.png")))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert main("--epochs", "2", *TINY, "--seed", "11", "--out-dir", str(tmp_path / "c")) == 0
    assert losses(tmp_path / "c") != runs[0][0]


# ----------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a whole number of 1 or more, not 0"),
    (["--batch-size", "-4"], "--batch-size must be a whole number of 1 or more"),
    (["--sample-every", "0"], "--sample-every must be a whole number of 1 or more"),
    (["--limit", "0"], "--limit must be a whole number of 1 or more"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
    (["--ema-decay", "1"], "--ema-decay must be at least 0 and below 1"),
    (["--data", "subset", "--limit", "16", "--batch-size", "32"],
     "--batch-size 32 is larger than the 16 training digits: lower --batch-size or raise --limit"),
    (["--data", "no/such/file.npz"], "data file no/such/file.npz not found"),
])
def test_bad_input_exits_2_with_one_clear_line(main, flags, message, tmp_path, capsys):
    """In this process for speed; the subprocess tests below show these print no traceback."""
    assert main(*flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not os.path.exists(tmp_path / "out" / "losses.csv")


@pytest.mark.parametrize("constant, value, message", [
    ("RANDOM_DIM", 0, "RANDOM_DIM at the top of gan_mnist.py must be a whole number of 1 or more, not 0"),
    ("LEARNING_RATE", -0.1, "LEARNING_RATE at the top of gan_mnist.py must be above 0"),
    ("REAL_LABEL", 1.5, "REAL_LABEL at the top of gan_mnist.py must be above 0 and at most 1"),
    ("BETA_1", 1.0, "BETA_1 at the top of gan_mnist.py must be at least 0 and below 1"),
])
def test_bad_constant_exits_2(main, monkeypatch, capsys, constant, value, message):
    monkeypatch.setattr(gan_mnist, constant, value)
    assert main("--epochs", "1", *TINY) == 2
    assert message in capsys.readouterr().err


def test_constants_are_the_defaults(monkeypatch):
    monkeypatch.setattr(gan_mnist, "EPOCHS", 7)  # as if edited at the top of the file
    args = gan_mnist.get_args([])
    assert (args.epochs, args.batch_size, args.sample_every, args.seed, args.data) == (7, 128, 20, 10, "auto")
    assert (args.out_dir, args.checkpoint_dir, args.ema_decay, args.limit) == ("samples/{data}", "checkpoints/{data}", 0.999, None)
    assert (args.precision, args.score_digits) == ("float32", 2000)
    assert gan_mnist.get_args(["--epochs", "3"]).epochs == 3


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


def test_output_folder_that_cannot_be_created(main, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    assert main("--epochs", "1", *TINY, "--out-dir", str(tmp_path / "a_file" / "out")) == 2
    err = capsys.readouterr().err
    assert f"cannot write to folder {tmp_path / 'a_file' / 'out'}" in err and "--out-dir" in err
    assert (tmp_path / "a_file").read_text() == "not a folder"


# ---------------------------------------------------------------------------------------- data
def test_subset_is_scaled_to_minus_one_one():
    x_train, source = gan_mnist.load_mnist_data("subset")
    assert source == "subset"
    assert x_train.shape == (5000, 784) and x_train.dtype == np.float32
    assert x_train.min() == -1.0 and x_train.max() == 1.0
    assert gan_mnist.load_mnist_data("subset", limit=300)[0].shape == (300, 784)
    with np.load(gan_mnist.SUBSET_PATH) as f:  # shuffled: the first digits hold every class
        assert set(f["y_train"][:100]) == set(range(10))


def test_npz_path_like_keras_mnist(tmp_path):
    digits = np.zeros((7, 28, 28), np.uint8)
    digits[:, 3, 4] = 255
    np.savez(tmp_path / "mnist.npz", x_train=digits, y_train=np.arange(7))
    x_train, source = gan_mnist.load_mnist_data(str(tmp_path / "mnist.npz"))
    assert x_train.shape == (7, 784) and source == str(tmp_path / "mnist.npz")
    assert x_train[0, 3 * 28 + 4] == 1.0 and x_train[0, 0] == -1.0


def test_offline_auto_falls_back_to_the_subset(monkeypatch, capsys):
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
    digits = np.full((60, 28, 28), 255, np.uint8)
    monkeypatch.setattr(keras.datasets.mnist, "load_data",
                        lambda: ((digits, np.zeros(60)), (digits[:1], np.zeros(1))))
    x_train, source = gan_mnist.load_mnist_data("auto")
    assert source == "mnist" and x_train.shape == (60, 784) and x_train.min() == 1.0


# -------------------------------------------------------------------------------------- models
def test_models_are_the_tutorials():
    generator, discriminator, gan = build()
    dense = [l for l in generator.layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [256, 512, 1024, 784]
    assert dense[-1].activation is keras.activations.tanh
    assert [l.negative_slope for l in generator.layers
            if isinstance(l, keras.layers.LeakyReLU)] == [0.2, 0.2, 0.2]
    dense = [l for l in discriminator.layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [1024, 512, 256, 1]
    assert dense[-1].activation is keras.activations.sigmoid
    assert [l.rate for l in discriminator.layers if isinstance(l, keras.layers.Dropout)] == [0.3] * 3
    assert generator.count_params() == 1_486_352 and discriminator.count_params() == 1_460_225
    assert discriminator.optimizer is not gan.optimizer  # one optimizer per compiled model
    assert gan.optimizer.learning_rate.numpy() == np.float32(2e-4) and gan.optimizer.beta_1 == 0.5


def test_model_shapes_and_ranges():
    generator, discriminator, gan = build()
    noise = np.random.default_rng(0).normal(size=(5, 100)).astype(np.float32)
    images = generator.predict_on_batch(noise)
    assert images.shape == (5, 784) and np.all(np.abs(images) <= 1)
    p = discriminator.predict_on_batch(images)
    assert p.shape == (5, 1) and np.all((p > 0) & (p < 1))
    assert gan.predict_on_batch(noise).shape == (5, 1)


def values(weights):
    return [w.numpy() for w in weights]


def changed(before, weights):
    return [not np.array_equal(b, w.numpy()) for b, w in zip(before, weights)]


def test_generator_step_leaves_the_frozen_discriminator_alone():
    generator, discriminator, gan = build()
    step = tf.function(gan_mnist.train_generator)
    g0, d0 = values(generator.trainable_weights), values(discriminator.trainable_weights)
    for _ in range(5):
        step(gan, generator, tf.random.normal((16, 100)))
    assert all(changed(g0, generator.trainable_weights))
    assert not any(changed(d0, discriminator.trainable_weights))
    assert int(discriminator.optimizer.iterations.numpy()) == 0


def test_discriminator_step_leaves_the_generator_alone():
    generator, discriminator, gan = build()
    step = tf.function(gan_mnist.train_discriminator)
    g0, d0 = values(generator.trainable_weights), values(discriminator.trainable_weights)
    for _ in range(5):
        fakes = generator(tf.random.normal((16, 100)))
        step(discriminator, tf.random.uniform((16, 784), -1, 1), fakes, 0.9)
    assert all(changed(d0, discriminator.trainable_weights))
    assert not any(changed(g0, generator.trainable_weights))
    assert int(gan.optimizer.iterations.numpy()) == 0


def test_one_sided_label_smoothing():
    """The discriminator's loss uses 0.9 for reals and 0 for fakes: check it by hand."""
    generator, discriminator, gan = build()
    discriminator.optimizer.learning_rate.assign(0.0)  # keep the weights, read the loss
    reals, fakes = tf.random.uniform((8, 784), -1, 1), tf.random.uniform((8, 784), -1, 1)
    seeds = [v.numpy() for v in discriminator.non_trainable_variables]  # dropout's seed states
    loss = float(gan_mnist.train_discriminator(discriminator, reals, fakes, 0.9))
    for v, seed in zip(discriminator.non_trainable_variables, seeds):
        v.assign(seed)  # replay the same dropout masks
    p = np.clip(discriminator(tf.concat([reals, fakes], 0), training=True).numpy()[:, 0], 1e-7, 1 - 1e-7)
    y = np.array([0.9] * 8 + [0.0] * 8)
    assert loss == pytest.approx(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))), rel=1e-4)


def test_fused_adam_matches_keras_adam():
    weights = [keras.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)) for _ in range(2)]
    fused, plain = gan_mnist.get_optimizer(0.01, 0.5), keras.optimizers.Adam(0.01, beta_1=0.5)
    for optimizer, weight in zip((fused, plain), weights):
        optimizer.build([weight])
        for k in range(3):
            optimizer.apply([tf.fill((3, 4), 0.5 - k)], [weight])
    np.testing.assert_allclose(weights[0].numpy(), weights[1].numpy(), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(weights[0].numpy(), np.linspace(-1, 1, 12).reshape(3, 4))


def test_train_step_trains_both_models():
    generator, discriminator, gan = build()
    x_train = np.random.default_rng(0).uniform(-1, 1, (64, 784)).astype(np.float32)
    step = gan_mnist.make_train_step(generator, discriminator, gan, x_train, 16, 100, 0.9,
                                     keras.random.SeedGenerator(0))
    g0, d0 = values(generator.trainable_weights), values(discriminator.trainable_weights)
    d_loss, g_loss = step()
    assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
    assert all(changed(g0, generator.trainable_weights))
    assert all(changed(d0, discriminator.trainable_weights))
    assert int(gan.optimizer.iterations.numpy()) == int(discriminator.optimizer.iterations.numpy()) == 1


def test_importing_does_nothing(tmp_path):
    import subprocess
    import sys
    code = "import gan_mnist, os; print(sorted(os.listdir('.')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(gan_mnist.__file__)})
    assert result.returncode == 0 and result.stdout.strip() == "[]"
