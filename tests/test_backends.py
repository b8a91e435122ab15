"""Keras' JAX backend: the tests marked `backends` (a tiny run, same seed, exact resume, stops,
which weights each half-step changes, the EMA rule) run again under KERAS_BACKEND=jax; one step
is the same step on both; checkpoints are refused across backends, generators cross (--generate)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gan_mnist
from conftest import ROOT, SCRIPT, TINY, build, pixels, refused

pytest.importorskip("jax")
on_tensorflow = pytest.mark.skipif(gan_mnist.BACKEND != "tensorflow", reason="starts JAX itself")
JAX = {**os.environ, "KERAS_BACKEND": "jax"}


def nearly_the_same(grid, other):
    """The same weights on two backends differ in their last bits (XLA's and oneDNN's multiplies):
    measured, 18 of a grid's 1,000,000 pixels by at most 2 of 255 levels."""
    difference = np.abs(grid.astype(int) - other.astype(int))
    return difference.max() <= 2 and (difference > 0).mean() < 1e-3


def jax_script(tmp_path, *flags):
    return subprocess.run([sys.executable, SCRIPT, *flags], env=JAX, capture_output=True,
                          text=True, cwd=tmp_path)


@on_tensorflow
def test_the_backend_tests_pass_on_jax():
    """The tests marked `backends`, in a pytest of their own under KERAS_BACKEND=jax (Keras picks
    its backend once per process). A failure names the JAX tests that failed, then shows their
    output; a skip there is a failure too."""
    files = [f"tests/test_{name}.py" for name in ("script", "resume", "stops", "step", "extras")]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-m", "backends", "-p",
                             "no:cacheprovider", "-p", "no:xdist", *files], env=JAX,
                            capture_output=True, text=True, cwd=ROOT)
    failed = [line for line in result.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    assert result.returncode == 0, (f"on JAX: {', '.join(failed) or 'the pytest run failed'}\n"
                                    + result.stdout[-4000:] + result.stderr[-2000:])
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary


@on_tensorflow
def test_checkpoints_are_refused_across_backends_and_generators_cross(main, tmp_path, capsys):
    jax_run = jax_script(tmp_path, "--epochs", "1", *TINY, "--out-dir", "jax_out")
    assert jax_run.returncode == 0, jax_run.stderr
    refused(main("--epochs", "2", *TINY, "--resume", "--out-dir", str(tmp_path / "jax_out")),
            capsys.readouterr().err, "backend", "checkpoint.npz")
    # the JAX run's generator draws its last grid again on TensorFlow
    model = str(tmp_path / "jax_out" / "generator.keras")
    assert main("--generate", model, "--out", str(tmp_path / "tf.png")) == 0
    jax_grid = pixels(tmp_path / "jax_out" / "gan_generated_image_epoch_1.png")
    assert nearly_the_same(pixels(tmp_path / "tf.png"), jax_grid)
    # and a TensorFlow run's generator on JAX
    model = os.path.join(ROOT, "samples", "mnist", "generator.keras")
    back = jax_script(tmp_path, "--generate", model, "--seed", "10", "--out", "jax.png")
    assert back.returncode == 0, back.stderr
    tf_grid = pixels(os.path.join(ROOT, "samples", "mnist", "gan_generated_image_epoch_400.png"))
    assert nearly_the_same(pixels(tmp_path / "jax.png"), tf_grid)


@on_tensorflow
def test_one_step_is_the_same_step_on_both_backends(tmp_path):
    """The TensorFlow step and the JAX step are written apart: from the same weights, batch and
    noise (Dropout off, as the two random streams cannot be shared), one step of each must give
    the same weights, EMA copy and losses, within float rounding. Measured: at most 1.3e-7
    apart, while every weight moves by 2e-4 (the learning rate). Adam's first step is about
    lr * sign(gradient), so a weight whose gradient is within rounding of zero may step the other
    way on the other backend: a few such weights in 3 million may differ by up to 2 * lr."""
    import keras
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(1)
    generator, discriminator, _ = build()
    given = {f"g{i}": np.array(w) for i, w in enumerate(generator.weights)}
    given.update({f"d{i}": np.array(w) for i, w in enumerate(discriminator.weights)})
    given.update(x_train=rng.uniform(-1, 1, (64, 784)).astype(np.float32),
                 noise=rng.normal(size=(16, 100)).astype(np.float32),
                 index=rng.integers(0, 64, 16).astype(np.int32),
                 fresh_noise=rng.normal(size=(16, 100)).astype(np.float32))
    np.savez(tmp_path / "in.npz", **given)
    after = {}
    for backend in ("tensorflow", "jax"):
        path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
        result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "one_step.py"),
                                 "in.npz", f"{backend}.npz"], capture_output=True, text=True,
                                env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path},
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        after[backend] = dict(np.load(tmp_path / f"{backend}.npz"))
    tf_after, jax_after = after["tensorflow"], after["jax"]
    np.testing.assert_allclose(tf_after["losses"], jax_after["losses"], rtol=1e-6)
    flipped = weights = 0
    for name, value in tf_after.items():
        if name == "losses":
            continue
        start = given[("g" if name[0] == "e" else name[0]) + name[1:]]
        assert np.abs(value - start).max() > 1e-4, f"{name} did not move"
        apart = np.abs(value - jax_after[name])
        assert apart.max() <= 2 * 2e-4 + 1e-6, (name, apart.max())
        flipped, weights = flipped + int((apart > 1e-6).sum()), weights + apart.size
    assert flipped <= 1e-4 * weights, f"{flipped} of {weights} weights apart"
