"""Same seed, same run, on a training set as large as full MNIST (60,000 digits)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gan_mnist
from conftest import build, losses
from test_long_runs import checkpoint, same_arrays


@pytest.fixture(scope="module")
def digits_60k(tmp_path_factory):
    """The bundled digits tiled to 60,000, saved like Keras' mnist.npz (about 47 MB)."""
    with np.load(gan_mnist.SUBSET_PATH) as f:
        x_train = np.tile(f["x_train"], (12, 1, 1))
    path = tmp_path_factory.mktemp("data") / "mnist_60k.npz"
    np.savez(path, x_train=x_train)
    return path


def step_on_60k(seed=10):
    """The training step as train() builds it (EMA on), on 60,000 digits."""
    x_train = np.tile(gan_mnist.load_mnist_data("subset")[0], (12, 1))
    keras.utils.set_random_seed(seed)
    generator, discriminator, gan = build()
    ema = gan_mnist.get_ema_generator(generator)
    rng = keras.random.SeedGenerator(seed)
    step = gan_mnist.make_train_step(generator, discriminator, gan, x_train, 128, 100, 0.9, rng,
                                     ema, 0.999)
    variables = (generator.variables + discriminator.variables + discriminator.optimizer.variables
                 + gan.optimizer.variables + ema.variables + [rng.state])
    return step, variables


def test_the_step_repeats_exactly_from_the_same_state():
    """Run the same step from the same state 20 times: every variable must come out the same.
    TensorFlow's own gradient of the loss summed four terms in an order chosen at run time, and
    this gave several different results out of 20 on 60,000 digits."""
    step, variables = step_on_60k()
    for _ in range(3):
        step()
    start = [v.numpy() for v in variables]
    results = set()
    for _ in range(20):
        for variable, value in zip(variables, start):
            variable.assign(value)
        step()
        results.add(b"".join(v.numpy().tobytes() for v in variables))
    assert len(results) == 1


def test_no_sum_in_the_step_depends_on_run_time_order():
    """AddN with three or more inputs adds them in an order TensorFlow picks at run time (the
    input whose buffer it may reuse goes first): the compiled step must have none."""
    step, _ = step_on_60k()
    graph = step.get_concrete_function().graph.as_graph_def()
    sums = [(n.name, len(n.input)) for n in graph.node if n.op == "AddN"]
    assert not [s for s in sums if s[1] > 2], sums


def test_loss_is_keras_binary_crossentropy():
    _, discriminator, _ = build()
    x = tf.random.stateless_uniform((64, 784), (1, 2), -1, 1)
    y = tf.concat([tf.fill([32, 1], 0.9), tf.zeros([32, 1])], axis=0)
    p = discriminator(x)
    expected = tf.reduce_mean(keras.losses.binary_crossentropy(y, p))
    assert float(gan_mnist.binary_crossentropy(y, p)) == pytest.approx(float(expected), rel=1e-6)
    logits = tf.Variable(tf.random.stateless_normal((64, 1), (3, 4)))
    with tf.GradientTape() as tape:
        loss = gan_mnist.binary_crossentropy(y, keras.activations.sigmoid(logits))
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(),
                               (tf.sigmoid(logits) - y).numpy() / 64, rtol=1e-5, atol=1e-9)


def test_same_seed_and_resume_on_60000_digits(main, tmp_path, digits_60k):
    """Two epochs of 468 steps straight, against one epoch then --resume in a new run."""
    flags = ["--data", str(digits_60k), "--sample-every", "1000", "--score-digits", "0"]
    assert main("--epochs", "2", *flags, "--out-dir", str(tmp_path / "a"),
                "--checkpoint-dir", str(tmp_path / "a_ck")) == 0
    assert main("--epochs", "1", *flags) == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")[:1]
    assert main("--epochs", "2", *flags, "--resume") == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")
    assert same_arrays(checkpoint(tmp_path / "ck" / "checkpoint.npz"),
                       checkpoint(tmp_path / "a_ck" / "checkpoint.npz"))
