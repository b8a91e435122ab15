"""The opt-in extras that change what is trained: --precision bfloat16 (Keras mixed precision, with
float32 weights, optimizer state and outputs) and --minibatch-stddev N (ProGAN's minibatch standard
deviation: the discriminator also sees how varied each group of N digits is)."""
import keras
import numpy as np
import pytest

import gan_mnist
from conftest import TINY, checkpoint, losses, pixels, refused, same_arrays

BOTH = ["--precision", "bfloat16", "--minibatch-stddev", "4", "--sample-every", "1000", *TINY]


def test_bfloat16_and_stddev_run_resume_refusal_and_generate(main, tmp_path, capsys):
    """Two epochs straight, against one epoch then --resume (refused without the flags); the
    generator.keras computes in bfloat16 with float32 weights and draws the last grid again; the
    losses differ from the tutorial's, by a little."""
    assert main("--epochs", "2", *BOTH, "--out-dir", str(tmp_path / "a")) == 0
    assert main("--epochs", "1", *BOTH) == 0
    for flags, name in ((BOTH[2:], "precision"), (BOTH[:2] + BOTH[4:], "minibatch_stddev")):
        refused(main("--epochs", "2", *flags, "--resume"), capsys.readouterr().err, name)
    assert main("--epochs", "2", *BOTH, "--resume") == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")
    assert same_arrays(checkpoint(tmp_path / "out" / "checkpoint.npz")[1],
                       checkpoint(tmp_path / "a" / "checkpoint.npz")[1])
    model = tmp_path / "a" / "generator.keras"
    assert main("--generate", str(model), "--out", str(tmp_path / "g.png")) == 0
    assert np.array_equal(pixels(tmp_path / "g.png"),
                          pixels(tmp_path / "a" / "gan_generated_image_epoch_2.png"))
    model = keras.models.load_model(model, compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["bfloat16"] * 3 + ["float32"]
    assert all(w.dtype == "float32" for w in model.weights)
    assert keras.config.dtype_policy().name == "float32"  # the global policy as it was
    assert main("--epochs", "1", *TINY, "--out-dir", str(tmp_path / "tutorial")) == 0
    (_, d_both, g_both), (_, d, g) = losses(tmp_path / "a")[0], losses(tmp_path / "tutorial")[0]
    assert (d_both, g_both) != (d, g)
    assert abs(float(d_both) - float(d)) < 0.05 and abs(float(g_both) - float(g)) < 0.05


def feature(discriminator, digits):
    """The discriminator's features after the minibatch-stddev layer, at inference."""
    index = [layer.name for layer in discriminator.layers].index("minibatch_stddev")
    x = keras.ops.convert_to_tensor(digits)
    for layer in discriminator.layers[: index + 1]:
        x = layer(x, training=False)
    return keras.ops.convert_to_numpy(x)


@pytest.mark.backends
def test_the_stddev_feature_is_each_groups_mean_stddev():
    discriminator = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5, 1), 4)
    dense = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.Dense)]
    # the tutorial's layers; the third Dense sees the 512 features and the new one
    shapes = [tuple(layer.kernel.shape) for layer in dense]
    assert shapes == [(784, 1024), (1024, 512), (513, 256), (256, 1)]
    digits = np.random.default_rng(0).uniform(-1, 1, (8, 784)).astype(np.float32)
    digits[4:] = digits[4]  # the second group: four copies of one digit
    x = feature(discriminator, digits)
    expected = np.sqrt(x[:4, :512].var(axis=0) + 1e-8).mean()
    assert x.shape == (8, 513) and np.allclose(x[:4, 512], expected, rtol=1e-5)
    assert np.allclose(x[4:, 512], 1e-4) and expected > 0.01  # identical digits: no spread at all
    other = digits.copy()
    other[0] = -other[0]  # a digit changed in one group changes that group's feature only
    y = feature(discriminator, other)
    assert not np.allclose(y[1:4, 512], x[1:4, 512]) and np.array_equal(y[4:], x[4:])
    default = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5, 1))
    assert "minibatch_stddev" not in [layer.name for layer in default.layers]
    assert default.count_params() == 1_460_225 and gan_mnist.MINIBATCH_STDDEV == 0
