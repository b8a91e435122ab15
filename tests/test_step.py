"""The models and the training step: the tutorial's layers, which weights each half-step
changes, label smoothing, FusedAdam and the loss against Keras' own (the private Keras parts the
step uses), the EMA rule, and one result per step on 60,000 digits."""
import keras
import numpy as np
import pytest

import gan_mnist
from conftest import build

TF = gan_mnist.BACKEND == "tensorflow"
needs_tf = pytest.mark.skipif(not TF, reason="TensorFlow's half-step functions; the JAX step is tested whole")
if TF:
    import tensorflow as tf


def values(weights):
    return [np.array(w) for w in weights]


def changed(before, weights):
    return [not np.array_equal(b, np.array(w)) for b, w in zip(before, weights)]


def tiny_step(ema_decay=0.0, seed=0):
    generator, discriminator, gan = build()
    ema = gan_mnist.get_ema_generator(generator) if ema_decay else None
    x_train = np.random.default_rng(0).uniform(-1, 1, (64, 784)).astype(np.float32)
    step = gan_mnist.make_train_step(generator, discriminator, gan, x_train, 16, 100, 0.9,
                                     keras.random.SeedGenerator(seed), ema, ema_decay)
    return step, generator, discriminator, gan, ema


# ------------------------------------------------------------------------------------- the models
def test_models_are_the_tutorials():
    generator, discriminator, gan = build()
    dense = [layer for layer in generator.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [256, 512, 1024, 784]
    assert dense[-1].activation is keras.activations.tanh
    assert [layer.negative_slope for layer in generator.layers
            if isinstance(layer, keras.layers.LeakyReLU)] == [0.2, 0.2, 0.2]
    dense = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [1024, 512, 256, 1]
    assert dense[-1].activation is keras.activations.sigmoid
    assert [layer.rate for layer in discriminator.layers if isinstance(layer, keras.layers.Dropout)] == [0.3] * 3
    assert generator.count_params() == 1_486_352 and discriminator.count_params() == 1_460_225
    assert discriminator.optimizer is not gan.optimizer  # one optimizer per compiled model
    assert (discriminator.optimizer.turn, gan.optimizer.turn) == (1, 2)  # the shared counter's steps
    assert float(gan.optimizer.learning_rate) == np.float32(2e-4) and gan.optimizer.beta_1 == 0.5


# ------------------------------------------------------------- which weights each half-step changes
@pytest.mark.backends
def test_the_whole_step_freezes_the_discriminator_in_the_generator_half():
    """With the discriminator's learning rate at 0, a whole step must leave its weights exactly
    alone: the generator's half-step (through the combined model) must not update them. And with
    the generator's at 0, the discriminator's half-step must leave the generator alone."""
    for frozen in ("discriminator", "generator"):
        step, generator, discriminator, gan, _ = tiny_step()
        (discriminator if frozen == "discriminator" else gan).optimizer.learning_rate.assign(0.0)
        g0, d0 = values(generator.trainable_weights), values(discriminator.trainable_weights)
        step(3)  # three steps in one call
        g_changed, d_changed = changed(g0, generator.trainable_weights), changed(d0, discriminator.trainable_weights)
        moved, kept = (g_changed, d_changed) if frozen == "discriminator" else (d_changed, g_changed)
        assert all(moved) and not any(kept)
        assert int(gan.optimizer.iterations) == int(discriminator.optimizer.iterations) == 3


@needs_tf
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


# ------------------------------------------------ Adam's step counter: the tutorial's shared Adam
def keras2_adam(weight, m, v, gradient, t, lr=2e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-7):
    """One update of Keras 2's Adam at step t (keras/optimizers.py, Adam.get_updates, where
    t = iterations + 1 of the one optimizer object), in float64."""
    m = beta_1 * m + (1 - beta_1) * gradient
    v = beta_2 * v + (1 - beta_2) * gradient ** 2
    lr_t = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    return weight - lr_t * m / (np.sqrt(v) + epsilon), m, v


@pytest.mark.parametrize("turn", [1, 2])
def test_adam_step_numbers_are_the_shared_counters(turn):
    """Three applies of one model's Adam with changing gradients: its weights follow Keras 2's
    Adam at the shared counter's steps (the discriminator's 1, 3, 5, the generator's 2, 4, 6)."""
    steps = {1: [1, 3, 5], 2: [2, 4, 6]}[turn]
    assert [gan_mnist.adam_step(n, turn) for n in range(3)] == steps
    if not TF:
        return  # JAX's step hands Keras' Adam these numbers: test_one_step_is_the_same_step_on_both_backends
    start = np.linspace(-1, 1, 12).reshape(3, 4)
    weight, optimizer = keras.Variable(start.astype(np.float32)), gan_mnist.get_optimizer(2e-4, 0.5, turn)
    optimizer.build([weight])
    expected, m, v = start, 0.0, 0.0
    for t, gradient in zip(steps, (0.5, -0.03, 2.0)):
        optimizer.apply([tf.fill((3, 4), gradient)], [weight])
        expected, m, v = keras2_adam(expected, m, v, gradient, t)
    np.testing.assert_allclose(weight.numpy(), expected, rtol=0, atol=1e-7)
    assert int(optimizer.iterations) == 3  # its own count: what the checkpoint saves


@pytest.mark.backends
def test_one_batch_takes_keras_2s_adam_steps_for_both_models():
    """One whole training step (either backend): every weight of both models moves as Keras 2's
    Adam moves it, at step 1 for the discriminator and 2 for the generator, as the tutorial's one
    shared Adam counted them. The gradient is read back from the first moment, m = g / 2."""
    step, generator, discriminator, gan, _ = tiny_step()
    models = [(discriminator, discriminator.optimizer, 1), (generator, gan.optimizer, 2)]
    before = [values(model.trainable_weights) for model, _, _ in models]
    [(d_loss, g_loss)] = np.array(step(1))  # one row of losses a step, near log 2 at the start
    assert 0.3 < d_loss < 1.5 and 0.3 < g_loss < 1.5 and int(gan.optimizer.iterations) == 1
    for (model, optimizer, t), start in zip(models, before):
        for weight, w0 in zip(model.trainable_weights, start):
            i = optimizer._get_variable_index(weight)
            gradient = np.array(optimizer._momentums[i], np.float64) / (1 - 0.5)
            expected = keras2_adam(w0.astype(np.float64), 0.0, 0.0, gradient, t)[0]
            np.testing.assert_allclose(np.array(weight), expected, rtol=1e-7, atol=4e-9)  # float32 rounding (JAX: 1.6e-9)
            assert not np.array_equal(np.array(weight), w0)


# ---------------------------------------------------- the private Keras parts the step depends on
@pytest.mark.backends
@pytest.mark.skipif(TF, reason="JAX's random bits")
def test_the_jax_step_draws_jaxs_random_bits_unrolled():
    """make_train_step has JAX draw random bits on a CPU unrolled, by its private parts: the same bits, no loop;
    on a GPU, XLA's deterministic sums (set before JAX started: without them same-seed runs differed on an H200)."""
    assert "--xla_gpu_deterministic_ops=true" in gan_mnist.os.environ["XLA_FLAGS"].split()
    import jax
    from jax._src.random import threefry2x32 as t
    jax.interpreters.mlir.register_lowering(t.threefry2x32_p, t._threefry2x32_cpu_lowering_rule, platform="cpu")
    key, draw = jax.random.key(1), lambda k: jax.random.bits(k, (3, 1000))
    rolled = jax.jit(draw).lower(key)  # JAX's own way on a CPU: a loop
    tiny_step()  # make_train_step has the bits drawn unrolled from here on
    unrolled = jax.jit(lambda k: draw(k)).lower(key)  # a new function: lowered anew
    assert "while" in rolled.as_text() and "while" not in unrolled.as_text()
    assert np.array_equal(rolled.compile()(key), unrolled.compile()(key))


@needs_tf
def test_fused_adam_matches_keras_adam():
    """FusedAdam reads Keras' private _get_variable_index, _momentums and _velocities."""
    weights = [keras.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)) for _ in range(2)]
    fused, plain = gan_mnist.get_optimizer(0.01, 0.5, 1), keras.optimizers.Adam(0.01, beta_1=0.5)
    assert isinstance(fused, gan_mnist.FusedAdam)
    for optimizer, weight in zip((fused, plain), weights):
        optimizer.build([weight])
        for k in range(3):  # plain Keras Adam at the shared counter's steps 1, 3, 5
            if optimizer is plain:
                optimizer.iterations.assign(2 * k)
            optimizer.apply([tf.fill((3, 4), 0.5 - k)], [weight])
    np.testing.assert_allclose(weights[0].numpy(), weights[1].numpy(), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(weights[0].numpy(), np.linspace(-1, 1, 12).reshape(3, 4))


@needs_tf
def test_loss_is_keras_binary_crossentropy():
    """binary_crossentropy reads Keras' private _keras_logits off the sigmoid's output."""
    _, discriminator, _ = build()
    x = tf.random.stateless_uniform((64, 784), (1, 2), -1, 1)
    y = tf.concat([tf.fill([32, 1], 0.9), tf.zeros([32, 1])], axis=0)
    p = discriminator(x)
    assert hasattr(p, "_keras_logits")
    expected = tf.reduce_mean(keras.losses.binary_crossentropy(y, p))
    assert float(gan_mnist.binary_crossentropy(y, p)) == pytest.approx(float(expected), rel=1e-6)
    logits = tf.Variable(tf.random.stateless_normal((64, 1), (3, 4)))
    with tf.GradientTape() as tape:
        loss = gan_mnist.binary_crossentropy(y, keras.activations.sigmoid(logits))
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
    if TF:  # late in training the decay itself applies
        update = tf.function(gan_mnist.update_ema)
        before, weights = ema.get_weights(), generator.get_weights()
        update(ema, generator, 0.999, tf.constant(50_000.0))
        for e0, e1, w in zip(before, ema.get_weights(), weights):
            np.testing.assert_allclose(e1, 0.999 * e0 + 0.001 * w, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- one result per step, 60k digits
def step_on_60k(seed=10):
    """The training step as train() builds it (EMA on), on 60,000 digits."""
    x_train = np.tile(gan_mnist.load_mnist_data("subset")[0], (12, 1))
    keras.utils.set_random_seed(seed)
    generator, discriminator, gan = build()
    ema = gan_mnist.get_ema_generator(generator)
    rng = keras.random.SeedGenerator(seed)
    step = gan_mnist.make_train_step(generator, discriminator, gan, x_train, 128, 100, 0.9, rng, ema, 0.999)
    variables = (generator.variables + discriminator.variables + discriminator.optimizer.variables
                 + gan.optimizer.variables + ema.variables + [rng.state])
    return step, variables


@pytest.mark.backends
def test_the_step_repeats_exactly_from_the_same_state():
    """Run the same step from the same state 20 times: every variable must come out the same.
    TensorFlow's own gradient of the loss summed four terms in an order chosen at run time, and
    this gave several different results out of 20 on 60,000 digits."""
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


@needs_tf
def test_no_sum_in_the_step_depends_on_run_time_order():
    """AddN with three or more inputs adds them in an order TensorFlow picks at run time (the
    input whose buffer it may reuse goes first): the compiled step must have none."""
    step, _ = step_on_60k()
    graph = step.get_concrete_function().graph.as_graph_def()
    sums = [(n.name, len(n.input)) for n in graph.node if n.op == "AddN"]
    assert not [s for s in sums if s[1] > 2], sums
