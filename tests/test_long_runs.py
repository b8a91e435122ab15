"""Checkpoints, exact resume, Ctrl-C, losses, GIF, --generate and the EMA generator."""
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import gan_mnist
from conftest import SCRIPT, TINY, build, losses, pixels


def checkpoint(path):
    with np.load(path) as f:
        return [f[f"v{i}"] for i in range(len(f.files) - 1)]


def generator_weights(path):
    return keras.models.load_model(path, compile=False).get_weights()


def same_arrays(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_stopped_then_resumed_equals_uninterrupted(main, run, tmp_path, capsys):
    settings = ["--sample-every", "1000", *TINY]  # grids at epochs 1 and 3 only
    assert main("--epochs", "3", *settings, "--out-dir", str(tmp_path / "full"),
                "--checkpoint-dir", str(tmp_path / "full_ck")) == 0
    assert main("--epochs", "1", *settings) == 0
    resumed = run("--epochs", "3", *settings, "--resume")  # a new process, as after a crash
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout and "after epoch 1" in resumed.stdout
    assert losses(tmp_path / "out") == losses(tmp_path / "full") and len(losses(tmp_path / "out")) == 3
    for name in ("quality.csv", "losses.csv"):  # scores of epochs 1 and 3; the history came back
        rows = (tmp_path / "out" / name).read_text().splitlines()
        assert [r.split(",")[0] for r in rows] == ["epoch", "1", "3"] if name == "quality.csv" else len(rows) == 4
    assert (tmp_path / "out" / "quality.csv").read_text() == (tmp_path / "full" / "quality.csv").read_text()
    # every variable: both networks, the EMA copy, optimizer slots, random states
    assert same_arrays(checkpoint(tmp_path / "ck" / "checkpoint.npz"),
                       checkpoint(tmp_path / "full_ck" / "checkpoint.npz"))
    assert same_arrays(generator_weights(tmp_path / "out" / "generator.keras"),
                       generator_weights(tmp_path / "full" / "generator.keras"))
    assert np.array_equal(pixels(tmp_path / "out" / "gan_generated_image_epoch_3.png"),
                          pixels(tmp_path / "full" / "gan_generated_image_epoch_3.png"))
    assert Image.open(tmp_path / "out" / "progress.gif").n_frames == 2  # epochs 1 and 3


def test_ctrl_c_stops_cleanly_and_resume_matches(main, tmp_path):
    out, ck = tmp_path / "out", tmp_path / "ck"
    cmd = [sys.executable, SCRIPT, "--epochs", "500", "--sample-every", "1000", *TINY,
           "--out-dir", str(out), "--checkpoint-dir", str(ck)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ck / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    done = len(losses(out))
    assert 1 <= done < 500
    assert f"the checkpoint holds epoch {done}. Resume with: python {SCRIPT}" in stdout
    assert "--resume" in stdout.splitlines()[-1]
    assert main("--epochs", str(done + 1), "--sample-every", "1000", *TINY, "--resume") == 0
    assert main("--epochs", str(done + 1), "--sample-every", "1000", *TINY,
                "--out-dir", str(tmp_path / "straight"), "--checkpoint-dir", str(tmp_path / "s_ck")) == 0
    assert losses(out) == losses(tmp_path / "straight")
    assert same_arrays(checkpoint(ck / "checkpoint.npz"), checkpoint(tmp_path / "s_ck" / "checkpoint.npz"))


def test_broken_or_mismatched_checkpoint_is_refused(main, tmp_path, capsys):
    assert main("--epochs", "1", *TINY) == 0
    path = tmp_path / "ck" / "checkpoint.npz"
    outputs = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}
    assert main("--epochs", "2", "--data", "subset", "--limit", "256", "--batch-size", "16",
                "--resume") == 2
    assert "was made with batch_size=32, not 16" in capsys.readouterr().err
    assert main("--epochs", "2", "--data", "subset", "--limit", "128", "--batch-size", "32",
                "--resume") == 2
    assert "digits=256, not 128" in capsys.readouterr().err
    assert main("--epochs", "2", *TINY, "--resume", "--checkpoint-dir", str(tmp_path / "none")) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as if the machine died mid-write without rename
    assert main("--epochs", "2", *TINY, "--resume") == 2
    assert f"checkpoint {path} is unreadable" in capsys.readouterr().err
    assert path.read_bytes() == data[: len(data) // 2]  # nothing overwritten
    assert {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")} == outputs


def test_generate_from_a_saved_generator(main, run, tmp_path, capsys):
    assert main("--epochs", "2", *TINY) == 0
    model = tmp_path / "out" / "generator.keras"
    result = run("--generate", str(model), "--out", str(tmp_path / "new" / "digits.png"))
    assert result.returncode == 0, result.stderr
    grid = pixels(tmp_path / "new" / "digits.png")
    assert grid.shape == (1000, 1000) and grid.std() > 10
    # the same seed draws the same noise as the training run's fixed grids
    assert np.array_equal(grid, pixels(tmp_path / "out" / "gan_generated_image_epoch_2.png"))
    assert main("--generate", str(model), "--out", str(tmp_path / "b.png"), "--seed", "3") == 0
    assert not np.array_equal(grid, pixels(tmp_path / "b.png"))
    assert main("--generate", str(tmp_path / "nope.keras")) == 2
    assert "generator file" in capsys.readouterr().err
    (tmp_path / "junk.keras").write_text("not a model")
    assert main("--generate", str(tmp_path / "junk.keras")) == 2
    assert "cannot load a generator from" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ EMA
def test_ema_follows_the_decay_rule_and_is_never_trained():
    generator, discriminator, gan = build()
    ema = gan_mnist.get_ema_generator(generator)
    assert same_arrays(ema.get_weights(), generator.get_weights())  # step 0: a copy
    ema_ids = {id(v) for v in ema.weights}
    for optimizer in (gan.optimizer, discriminator.optimizer):
        assert not ema_ids & {id(v) for v in optimizer.variables}
    x_train = np.random.default_rng(0).uniform(-1, 1, (64, 784)).astype(np.float32)
    step = gan_mnist.make_train_step(generator, discriminator, gan, x_train, 16, 100, 0.9,
                                     keras.random.SeedGenerator(0), ema, 0.999)
    for t in (1, 2, 3):
        before = ema.get_weights()
        step()
        d = min(0.999, (1 + t) / (10 + t))
        for e0, e1, w1 in zip(before, ema.get_weights(), generator.get_weights()):
            np.testing.assert_allclose(e1, d * e0 + (1 - d) * w1, rtol=1e-5, atol=1e-7)
    assert not same_arrays(ema.get_weights(), generator.get_weights())
    update = tf.function(gan_mnist.update_ema)  # late in training the decay itself applies
    before, weights = ema.get_weights(), generator.get_weights()
    update(ema, generator, 0.999, tf.constant(50_000.0))
    for e0, e1, w in zip(before, ema.get_weights(), weights):
        np.testing.assert_allclose(e1, 0.999 * e0 + 0.001 * w, rtol=1e-5, atol=1e-7)


def test_ema_leaves_training_alone_and_decay_0_samples_the_raw_generator(main, tmp_path):
    runs = {}
    for decay in ("0", "0.999"):
        out, ck = tmp_path / f"out{decay}", tmp_path / f"ck{decay}"
        assert main("--epochs", "2", *TINY, "--ema-decay", decay, "--out-dir", str(out),
                    "--checkpoint-dir", str(ck)) == 0
        runs[decay] = (losses(out), checkpoint(ck / "checkpoint.npz"),
                       generator_weights(out / "generator.keras"), pixels(out / "gan_generated_image_epoch_2.png"))
    (raw_losses, raw_ck, raw_model, raw_grid), (ema_losses, ema_ck, ema_model, ema_grid) = runs["0"], runs["0.999"]
    assert raw_losses == ema_losses  # training is untouched by the EMA
    assert same_arrays(raw_ck[:8], ema_ck[:8])  # the raw generator's weights come first
    assert same_arrays(raw_model, raw_ck[:8])  # --ema-decay 0: grids and file from the raw generator
    assert not same_arrays(ema_model, ema_ck[:8])
    assert any(same_arrays(ema_model, ema_ck[i:i + 8]) for i in range(8, len(ema_ck) - 7))
    assert not np.array_equal(raw_grid, ema_grid)
    # --ema-decay 0's grid is exactly the raw generator's: redraw it from the EMA run's raw weights
    generator = gan_mnist.get_generator(100)
    generator.set_weights(ema_ck[:8])
    noise = gan_mnist.grid_noise(np.random.default_rng(gan_mnist.SEED), 100)
    gan_mnist.plot_generated_images(generator, noise, str(tmp_path / "raw.png"))
    assert np.array_equal(pixels(tmp_path / "raw.png"), raw_grid)
