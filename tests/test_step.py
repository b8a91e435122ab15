"""The models and the training step: the tutorial's layers, which weights each half-step changes,
label smoothing, batches drawn with replacement, Adam at the shared counter's step numbers, the
loss against Keras' own (the private Keras parts the step uses), the EMA rule, and one result
per step on 60,000 digits."""
import argparse

import keras
import numpy as np
import pytest

import gan_mnist
from conftest import build

TF = gan_mnist.BACKEND == "tensorflow"
needs_tf = pytest.mark.skipif(not TF, reason="TensorFlow's own parts; JAX's step is tested whole")
if TF:
    import tensorflow as tf


def values(weights):
    return [np.array(w) for w in weights]


def changed(before, weights):
    return [not np.array_equal(b, np.array(w)) for b, w in zip(before, weights)]


def settings(batch_size=16, ema_decay=0.0):
    return argparse.Namespace(batch_size=batch_size, random_dim=100, real_label=0.9,
                              ema_decay=ema_decay)


def tiny_step(ema_decay=0.0, seed=0):
    generator, discriminator, gan = build()
    ema = gan_mnist.get_ema_generator(generator, ema_decay)
    x_train = np.random.default_rng(0).uniform(-1, 1, (64, 784)).astype(np.float32)
    rng = keras.random.SeedGenerator(seed)
    step = gan_mnist.make_train_steps(generator, discriminator, gan, x_train,
                                      settings(16, ema_decay), rng, ema)
    return step, generator, discriminator, gan, ema


# ------------------------------------------------------------------------------------ the models
def test_models_are_the_tutorials():
    generator, discriminator, gan = build()
    dense = [layer for layer in generator.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [256, 512, 1024, 784]
    assert dense[-1].activation is keras.activations.tanh
    assert [layer.negative_slope for layer in generator.layers
            if isinstance(layer, keras.layers.LeakyReLU)] == [0.2, 0.2, 0.2]
    first = [dense[0]]
    dense = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [1024, 512, 256, 1]
    assert dense[-1].activation is keras.activations.sigmoid
    assert [layer.rate for layer in discriminator.layers
            if isinstance(layer, keras.layers.Dropout)] == [0.3] * 3
    assert generator.count_params() == 1_486_352 and discriminator.count_params() == 1_460_225
    for layer in first + dense[:1]:  # the tutorial's RandomNormal(stddev=0.02)
        assert layer.kernel_initializer.stddev == 0.02 and abs(np.std(layer.kernel) - 0.02) < 0.001
    assert discriminator.optimizer is not gan.optimizer  # one optimizer per compiled model
    assert float(gan.optimizer.learning_rate) == np.float32(2e-4) and gan.optimizer.beta_1 == 0.5


# ----------------------------------------------------------- which weights each half-step changes
@pytest.mark.backends
def test_the_whole_step_freezes_the_discriminator_in_the_generator_half():
    """With the discriminator's learning rate at 0, a whole step must leave its weights exactly
    alone: the generator's half-step (through the combined model) must not update them. And with
    the generator's at 0, the discriminator's half-step must leave the generator alone."""
    for frozen in ("discriminator", "generator"):
        step, generator, discriminator, gan, _ = tiny_step()
        (discriminator if frozen == "discriminator" else gan).optimizer.learning_rate.assign(0.0)
        g0, d0 = values(generator.trainable_weights), values(discriminator.trainable_weights)
        step(3)
        g_moved = changed(g0, generator.trainable_weights)
        d_moved = changed(d0, discriminator.trainable_weights)
        moved, kept = (g_moved, d_moved) if frozen == "discriminator" else (d_moved, g_moved)
        assert all(moved) and not any(kept)
        assert int(gan.optimizer.iterations) == int(discriminator.optimizer.iterations) == 3


def test_one_sided_label_smoothing_and_batches_drawn_with_replacement(monkeypatch):
    """The discriminator trains on 16 reals drawn (with replacement) from 2 digits, labelled 0.9,
    and 16 fakes labelled 0; the generator on 16 fresh noise vectors labelled 1."""
    seen = []
    monkeypatch.setattr(gan_mnist, "train_on_batch", lambda *batch: seen.append(batch) or 0.0)
    generator, discriminator, gan = build()
    x_train = np.stack([np.full(784, -1.0), np.full(784, 1.0)]).astype(np.float32)
    gan_mnist.train_one_batch(generator, discriminator, gan, keras.ops.convert_to_tensor(x_train),
                              16, 100, 0.9, keras.random.SeedGenerator(3))
    (model, x, y, weights), (model_2, noise, y_gen, weights_2) = seen
    x, y = np.array(x), np.array(y)
    assert model is discriminator and weights == discriminator.trainable_weights
    assert set(x[:16, 0]) == {-1.0, 1.0} and y[:16].tolist() == [[np.float32(0.9)]] * 16
    assert y[16:].tolist() == [[0.0]] * 16 and -1 < x[16:].mean() < 1
    assert model_2 is gan and weights_2 == generator.trainable_weights
    assert np.array(y_gen).tolist() == [[1.0]] * 16 and np.array(noise).shape == (16, 100)


# ------------------------------------------------ Adam's step counter: the tutorial's shared Adam
def keras2_adam(weight, m, v, gradient, t, lr=2e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-7):
    """One update of Keras 2's Adam at step t (Adam.get_updates, t = iterations + 1 of its one
    optimizer object), in float64."""
    m = beta_1 * m + (1 - beta_1) * gradient
    v = beta_2 * v + (1 - beta_2) * gradient ** 2
    lr_t = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    return weight - lr_t * m / (np.sqrt(v) + epsilon), m, v


@needs_tf
@pytest.mark.parametrize("turn", [1, 2])
def test_adam_takes_the_shared_counters_steps(turn):
    """Three applies of one model's Adam with changing gradients: its weights follow Keras 2's
    Adam at the shared counter's steps (the discriminator's 1, 3, 5, the generator's 2, 4, 6),
    made by TensorFlow's fused kernel (private parts of Keras' Adam)."""
    steps = {1: [1, 3, 5], 2: [2, 4, 6]}[turn]
    assert [gan_mnist.adam_step(n, turn) for n in range(3)] == steps
    start = np.linspace(-1, 1, 12).reshape(3, 4)
    weight = keras.Variable(start.astype(np.float32))
    optimizer = gan_mnist.get_optimizer(2e-4, 0.5, turn)
    optimizer.build([weight])
    expected, m, v = start, 0.0, 0.0
    for t, gradient in zip(steps, (0.5, -0.03, 2.0)):
        optimizer.apply([tf.fill((3, 4), gradient)], [weight])
        expected, m, v = keras2_adam(expected, m, v, gradient, t)
    np.testing.assert_allclose(weight.numpy(), expected, rtol=0, atol=1e-7)
    assert int(optimizer.iterations) == 3 and type(optimizer).__name__ == "FusedAdam"


@pytest.mark.backends
def test_one_batch_takes_keras_2s_adam_steps_for_both_models():
    """One whole step (either backend): every weight of both models moves as Keras 2's Adam moves
    it, at step 1 for the discriminator and 2 for the generator, as the tutorial's one shared
    Adam counted them. The gradient is read back from the first moment, m = g / 2."""
    step, generator, discriminator, gan, _ = tiny_step()
    models = [(discriminator, discriminator.optimizer, 1), (generator, gan.optimizer, 2)]
    before = [values(model.trainable_weights) for model, _, _ in models]
    [(d_loss, g_loss)] = np.array(step(1))
    assert 0.3 < d_loss < 1.5 and 0.3 < g_loss < 1.5 and int(gan.optimizer.iterations) == 1
    for (model, optimizer, t), start in zip(models, before):
        for weight, w0 in zip(model.trainable_weights, start):
            i = optimizer._get_variable_index(weight)
            gradient = np.array(optimizer._momentums[i], np.float64) / (1 - 0.5)
            expected = keras2_adam(w0.astype(np.float64), 0.0, 0.0, gradient, t)[0]
            # float32 rounding (JAX: 1.6e-9)
            np.testing.assert_allclose(np.array(weight), expected, rtol=1e-7, atol=4e-9)
            assert not np.array_equal(np.array(weight), w0)


@needs_tf
def test_the_loss_is_keras_binary_crossentropy_its_gradient_one_expression():
    """binary_crossentropy_exactly reads Keras' private _keras_logits off the sigmoid's output."""
    _, discriminator, _ = build()
    x = tf.random.stateless_uniform((64, 784), (1, 2), -1, 1)
    y = tf.concat([tf.fill([32, 1], 0.9), tf.zeros([32, 1])], axis=0)
    p = discriminator(x)
    expected = tf.reduce_mean(keras.losses.binary_crossentropy(y, p))
    loss = gan_mnist.binary_crossentropy_exactly(y, p)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    logits = tf.Variable(tf.random.stateless_normal((64, 1), (3, 4)))
    with tf.GradientTape() as tape:
        loss = gan_mnist.binary_crossentropy_exactly(y, keras.activations.sigmoid(logits))
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(),
                               (tf.sigmoid(logits) - y).numpy() / 64, rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------------------------------ EMA
@pytest.mark.backends
def test_ema_follows_the_decay_rule_and_is_never_trained():
    step, generator, discriminator, gan, ema = tiny_step(ema_decay=0.999)
    assert all(np.array_equal(a, b) for a, b in zip(ema.get_weights(), generator.get_weights()))
    ema_ids = {id(v) for v in ema.weights}
    for optimizer in (gan.optimizer, discriminator.optimizer):
        assert not ema_ids & {id(v) for v in optimizer.variables}
    for t in (1, 2, 3):
        before = ema.get_weights()
        step(1)
        d = min(0.999, (1 + t) / (10 + t))
        for e0, e1, w1 in zip(before, ema.get_weights(), generator.get_weights()):
            np.testing.assert_allclose(e1, d * e0 + (1 - d) * w1, rtol=1e-5, atol=1e-7)
    gan.optimizer.iterations.assign(50_000)  # late in training the decay itself applies
    before = ema.get_weights()
    step(1)
    for e0, e1, w in zip(before, ema.get_weights(), generator.get_weights()):
        np.testing.assert_allclose(e1, 0.999 * e0 + 0.001 * w, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- one result per step, 60k digits
def step_on_60k(seed=10):
    """The training step as train() builds it (EMA on), on 60,000 digits."""
    x_train = np.tile(gan_mnist.load_mnist_data("subset")[0], (12, 1))
    keras.utils.set_random_seed(seed)
    generator, discriminator, gan = build()
    ema = gan_mnist.get_ema_generator(generator, 0.999)
    rng = keras.random.SeedGenerator(seed)
    step = gan_mnist.make_train_steps(generator, discriminator, gan, x_train, settings(128, 0.999),
                                      rng, ema)
    return step, gan_mnist.all_variables(generator, discriminator, gan, ema, rng)


def test_the_step_repeats_exactly_from_the_same_state():
    """The same step from the same state 20 times: every variable comes out the same. TensorFlow's
    own gradient of the loss summed four terms in an order chosen at run time, and this gave
    several different results out of 20 on 60,000 digits."""
    step, variables = step_on_60k()
    step(3)
    start = [np.array(v) for v in variables]
    results = set()
    for _ in range(20):
        for variable, value in zip(variables, start):
            variable.assign(value)
        step(1)
        results.add(b"".join(np.array(v).tobytes() for v in variables))
    assert len(results) == 1
