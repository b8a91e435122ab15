"""--minibatch-stddev N (ProGAN's minibatch standard deviation, not in the tutorial): the
discriminator also sees how varied each group of N digits is. Off by default; with it a run
resumes exactly, works in bfloat16 and on JAX, is scored, --generate draws from its generator,
and a checkpoint of one setting is refused under the other."""
import os

import keras
import numpy as np
import pytest

import gan_mnist
from conftest import QUICK, TINY, checkpoint_arrays, edit_checkpoint_meta, losses, pixels, same_arrays

STDDEV = ["--minibatch-stddev", "4", "--sample-every", "1000", *TINY]


def feature(discriminator, digits):
    """The discriminator's features after the minibatch-stddev layer, at inference."""
    index = [type(layer).__name__ for layer in discriminator.layers].index("MinibatchStddev")
    x = keras.ops.convert_to_tensor(digits)
    for layer in discriminator.layers[: index + 1]:
        x = layer(x, training=False)
    return keras.ops.convert_to_numpy(x)


@pytest.mark.backends
def test_the_feature_is_each_groups_mean_stddev():
    discriminator = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5), minibatch_stddev=4)
    dense = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.Dense)]
    # the tutorial's layers; the third Dense sees the 512 features and the new one
    assert [tuple(layer.kernel.shape) for layer in dense] == [(784, 1024), (1024, 512), (513, 256), (256, 1)]
    assert dense[-1].activation is keras.activations.sigmoid
    rng = np.random.default_rng(0)
    digits = rng.uniform(-1, 1, (8, 784)).astype(np.float32)
    digits[4:] = digits[4]  # the second group: four copies of one digit
    x = feature(discriminator, digits)
    hidden = x[:, :512]
    expected = np.sqrt(hidden[:4].var(axis=0) + 1e-8).mean()
    assert x.shape == (8, 513) and np.allclose(x[:4, 512], expected, rtol=1e-5)
    assert np.allclose(x[4:, 512], 1e-4) and expected > 0.01  # identical digits: no spread at all
    p = keras.ops.convert_to_numpy(discriminator(digits, training=False))
    assert p.shape == (8, 1) and np.all((p > 0) & (p < 1))
    # a digit changed in one group changes that group's feature only
    other = digits.copy()
    other[0] = -other[0]
    y = feature(discriminator, other)
    assert not np.allclose(y[1:4, 512], x[1:4, 512]) and np.array_equal(y[4:], x[4:])


def test_off_is_the_tutorials_discriminator():
    default = gan_mnist.get_discriminator(gan_mnist.get_optimizer(2e-4, 0.5))
    assert "MinibatchStddev" not in [type(layer).__name__ for layer in default.layers]
    assert default.count_params() == 1_460_225
    assert gan_mnist.get_args([]).minibatch_stddev == 0 == gan_mnist.MINIBATCH_STDDEV


@pytest.mark.backends
def test_stddev_run_resume_refusal_scores_and_generate(main, tmp_path, capsys):
    # straight: 3 epochs; stopped: 1 epoch, then resumed to 3 in the same folders
    assert main("--epochs", "3", *STDDEV, "--out-dir", str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "a_ck")) == 0
    assert main("--epochs", "1", *STDDEV) == 0
    assert main("--epochs", "3", *TINY, "--sample-every", "1000", "--resume") == 2
    assert "was made with minibatch_stddev=4, not 0" in capsys.readouterr().err
    assert main("--epochs", "3", *STDDEV, "--resume") == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")
    assert same_arrays(checkpoint_arrays(tmp_path / "ck" / "checkpoint.npz"),
                       checkpoint_arrays(tmp_path / "a_ck" / "checkpoint.npz"))
    # it trains something else than the tutorial's discriminator does
    assert main("--epochs", "1", *TINY, "--sample-every", "1000", "--out-dir", str(tmp_path / "d"),
                "--checkpoint-dir", str(tmp_path / "d_ck")) == 0
    assert losses(tmp_path / "d")[0] != losses(tmp_path / "a")[0]
    with open(tmp_path / "a" / "scores.csv") as f:
        rows = f.read().splitlines()
    assert rows[0].endswith("mix_kl") and [r.split(",")[0] for r in rows[1:]] == ["1", "3"]
    # the generator is the tutorial's, whatever judged it: --generate draws the last grid again
    assert main("--generate", str(tmp_path / "a" / "generator.keras"), "--out", str(tmp_path / "g.png")) == 0
    assert np.array_equal(pixels(tmp_path / "g.png"), pixels(tmp_path / "a" / "gan_generated_image_epoch_3.png"))


def test_stddev_in_bfloat16_and_an_older_checkpoint_resumes_without(main, tmp_path, capsys):
    assert main("--epochs", "1", *STDDEV, "--precision", "bfloat16", "--out-dir", str(tmp_path / "bf"),
                "--checkpoint-dir", str(tmp_path / "bf_ck")) == 0
    (_, d, g), = losses(tmp_path / "bf")
    assert 0 < float(d) < 5 and 0 < float(g) < 10
    assert main("--epochs", "2", *STDDEV, "--resume", "--checkpoint-dir", str(tmp_path / "bf_ck")) == 2
    assert "was made with precision='bfloat16', not 'float32'" in capsys.readouterr().err
    # a checkpoint written before --minibatch-stddev existed has no such key: it was off
    assert main("--epochs", "1", *QUICK) == 0
    edit_checkpoint_meta(tmp_path / "ck" / "checkpoint.npz", lambda meta: meta["config"].pop("minibatch_stddev"))
    assert main("--epochs", "2", *QUICK, "--minibatch-stddev", "4", "--resume") == 2
    assert "was made with minibatch_stddev=0, not 4" in capsys.readouterr().err
    assert main("--epochs", "2", *QUICK, "--resume") == 0


@pytest.mark.parametrize("flags, message", [
    (["--minibatch-stddev", "1"], "--minibatch-stddev must be 0 (off) or a whole number from 2 to 64, not 1"),
    (["--minibatch-stddev", "-4"], "--minibatch-stddev must be 0 (off) or a whole number from 2 to 64, not -4"),
    (["--minibatch-stddev", "4", "--batch-size", "30"],
     "--batch-size 30 does not split into groups of --minibatch-stddev 4: make it a multiple of 4"),
])
def test_bad_stddev_is_one_line_and_creates_no_folder(main, tmp_path, capsys, flags, message):
    assert main(*QUICK, *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == []
