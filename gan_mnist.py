"""gan_mnist: the classic "write your first GAN in Keras" MNIST tutorial, on today's Keras 3.

Stefan Hosein's "Demystifying Generative Adversarial Networks" (2017), its code from
Zackory/Keras-MNIST-GAN. Read it top to bottom: the imports and the constants, then the
tutorial's parts in its order (with its names, where it named them), up to the end of train(). A
line there that calls the code below the banner (not in the tutorial) is marked "# extra".

    python gan_mnist.py              # the tutorial's 400 epochs, into runs/{data}/
    python gan_mnist.py --help       # the flags: each one overrides its constant below
    python gan_mnist.py --resume     # continue a stopped run
    python gan_mnist.py --epochs 1 --limit 256 --batch-size 32 --out-dir /tmp/try   # a quick try
    python gan_mnist.py --generate samples/mnist/generator.keras --out digits.png

In a notebook: %run gan_mnist.py (the same flags), or import gan_mnist; gan_mnist.train(400, 128).
"""
# %% The imports and the constants to edit
import os
import sys


def import_libraries():
    """The tutorial's imports, into this file's globals. Importing the file runs them at once (its
    last lines); `python gan_mnist.py` reads its flags first, so --help answers before TensorFlow
    loads, and load_libraries() below keeps TensorFlow's start-up notices off the screen."""
    global np, plt, tqdm, keras, initializers, layers, ops, tf
    import matplotlib.pyplot as plt
    import numpy as np
    # a bar in a terminal, a widget in a notebook
    from tqdm.auto import tqdm

    # Keras 3, on the backend it picks: KERAS_BACKEND, else your keras.json's, else TensorFlow
    import keras
    from keras import initializers, layers, ops

    if keras.backend.backend() == "tensorflow":
        # the training step below is written in TensorFlow (on JAX, its own copy replaces it)
        import tensorflow as tf


# ---- data
DATA = "auto"  # "auto": Keras' MNIST, offline the bundled subset; "mnist", "subset", a file
LIMIT = None  # train on the first LIMIT digits only (quick tries); None: all of them
# ---- model and optimiser
RANDOM_DIM = 100  # length of the generator's input noise vector (tutorial: 100)
LEARNING_RATE = 0.0002  # Adam's learning rate (tutorial: lr=0.0002)
BETA_1 = 0.5  # Adam's beta_1 (tutorial: 0.5)
MINIBATCH_STDDEV = 0  # 4: the discriminator also sees how varied each 4 digits are (tutorial: 0)
PRECISION = "float32"  # "bfloat16": layers compute in bfloat16, weights stay float32
# ---- training
EPOCHS = 400  # passes over the training digits (tutorial: 400)
BATCH_SIZE = 128  # real digits a step; it also makes as many fakes (tutorial: 128)
REAL_LABEL = 0.9  # one-sided label smoothing: reals are labelled 0.9, fakes 0 (tutorial: 0.9)
SEED = 10  # same seed, same machine: same run (tutorial: np.random.seed(10))
STEPS_PER_CALL = 50  # batches one compiled call trains, at most (tutorial: 1): the same steps
# ---- output
SAMPLE_EVERY = 20  # a grid at epoch 1, every SAMPLE_EVERY epochs and the last (tutorial: 20)
EMA_DECAY = 0.999  # grids from a moving average of the generator; 0: the generator (tutorial)
FIXED_NOISE = True  # every grid from the same 100 noise vectors; False: fresh ones (tutorial)
SCORE_DIGITS = 2000  # digits scored at every grid (below); 0: no scores
CLASSIFIER = None  # the classifier that scores; None: the bundled data/digit_classifier.npz
OUT_DIR = "runs/{data}"  # grids, losses, scores, GIF, generator, checkpoint; {data}: mnist, subset
CHECKPOINT_SECONDS = 60  # a checkpoint after epoch 1, then at most this often, at stops, at the end


# =================================================================================================
# %% The tutorial, 1: load MNIST, scale it to [-1, 1], flatten it
def load_mnist_data(data=DATA, limit=LIMIT):
    """The article's load_minst_data (typo fixed): the training digits as (N, 784) rows in [-1, 1],
    and where they came from: "mnist", "subset" or the file. Only x_train: nothing used the rest.
    Offline, "auto" takes the bundled subset; `limit` keeps the first digits only."""
    if data in ("auto", "mnist"):
        try:
            # load the data (Keras downloads it once, then reads ~/.keras/datasets/mnist.npz)
            (x_train, _), _ = keras.datasets.mnist.load_data()
            source = "mnist"
        except Exception as error:
            # extra: offline, the bundled subset ("auto"), or one line saying what to do ("mnist")
            x_train = fall_back_to_subset(data, error)
            source = "subset"
    else:
        # extra: the bundled subset, an .npz like Keras' mnist.npz, or a folder of MNIST's idx files
        x_train, source = read_digits(data)
    x_train = x_train[:limit]
    # normalize our inputs to be in the range [-1, 1]
    x_train = (x_train.astype(np.float32) - 127.5) / 127.5
    # convert x_train with a shape of (60000, 28, 28) to (60000, 784) so we have 784 columns per row
    x_train = x_train.reshape(len(x_train), 784)
    return x_train, source


# %% The tutorial, 2: the optimizer
def get_optimizer(learning_rate, beta_1, turn):
    """The article's Adam(lr=0.0002, beta_1=0.5), now one for each model: Keras 3 refuses to share
    one. The article's one Adam counted the discriminator's updates as its steps 1, 3, 5, ... and
    the generator's as 2, 4, 6, ...; `turn` (1 or 2) keeps those step numbers (adam_step)."""
    # extra: keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1), its step number t
    # (in Adam's bias correction) that of the shared counter; on TensorFlow in one fused kernel
    return shared_counter_adam(learning_rate, beta_1, turn)


# %% The tutorial, 3: the generator
def get_generator(random_dim):
    """The article's generator. keras.Input replaces input_dim=, which Keras 3 dropped; it is not
    compiled, as it is never trained on its own (only through the combined model)."""
    generator = keras.Sequential(name="generator")
    generator.add(keras.Input(shape=(random_dim,)))
    generator.add(layers.Dense(256, kernel_initializer=initializers.RandomNormal(stddev=0.02)))
    generator.add(layers.LeakyReLU(0.2))
    generator.add(layers.Dense(512))
    generator.add(layers.LeakyReLU(0.2))
    generator.add(layers.Dense(1024))
    generator.add(layers.LeakyReLU(0.2))
    # float32 pixels even when --precision bfloat16 computes the layers above in bfloat16
    generator.add(layers.Dense(784, activation="tanh", dtype="float32"))
    return generator


# %% The tutorial, 4: the discriminator
def get_discriminator(optimizer, minibatch_stddev=0):
    """The article's discriminator, and one layer more when minibatch_stddev is set (an opt-in
    extra, not in the tutorial)."""
    discriminator = keras.Sequential(name="discriminator")
    discriminator.add(keras.Input(shape=(784,)))
    discriminator.add(layers.Dense(1024, kernel_initializer=initializers.RandomNormal(stddev=0.02)))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    discriminator.add(layers.Dense(512))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    if minibatch_stddev:
        # extra: --minibatch-stddev, off unless asked for
        discriminator.add(minibatch_stddev_layer(minibatch_stddev))
    discriminator.add(layers.Dense(256))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    # float32, as the generator's output layer
    discriminator.add(layers.Dense(1, activation="sigmoid", dtype="float32"))
    # The article's compile, for the optimizer: train_on_batch below computes the loss itself
    discriminator.compile(optimizer=optimizer)
    return discriminator


# %% The tutorial, 5: the combined model, noise -> generator -> discriminator
def get_gan_network(discriminator, random_dim, generator, optimizer):
    """The article set `discriminator.trainable = False` here, then toggled it around each
    train_on_batch. That toggle still trains correctly in Keras 3 (measured on TensorFlow and JAX:
    each model's train function captures the flag when it is first traced). This port writes
    the step by hand instead, for speed (many batches in one compiled call) and exactness (a
    fixed order of sums, the shared Adam's step numbers): it names the weights each update
    changes, and the combined model's updates only the generator's (train_one_batch)."""
    # gan input (noise) will be 100-dimensional vectors
    gan_input = keras.Input(shape=(random_dim,))
    # the output of the generator (an image)
    x = generator(gan_input)
    # get the output of the discriminator (probability if the image is real or not)
    gan_output = discriminator(x)
    gan = keras.Model(inputs=gan_input, outputs=gan_output, name="gan")
    gan.compile(optimizer=optimizer)
    return gan


# %% The tutorial, 6: one batch: the discriminator's step, then the generator's
def train_on_batch(model, x, y, weights):
    """The article's model.train_on_batch(x, y): one Adam step on the binary cross-entropy of the
    model's output, changing only `weights`."""
    if BACKEND == "jax":
        # extra: on JAX the same step in JAX's terms, as JAX computes gradients
        return train_on_batch_jax(model, x, y, weights)
    with tf.GradientTape() as tape:
        # extra: Keras' binary cross-entropy, its gradient summed in a fixed order
        loss = binary_crossentropy_exactly(y, model(x, training=True))
    gradients = tape.gradient(loss, weights)
    model.optimizer.apply(gradients, weights)
    return loss


def train_one_batch(generator, discriminator, gan, x_train, batch_size, random_dim, real_label,
                    rng):
    """The body of the article's loop over batches, in its order and with its comments. Tensors
    instead of numpy arrays; `rng` (a keras.random.SeedGenerator) draws the noise and the batch."""
    # Get a random set of input noise and images
    noise = keras.random.normal((batch_size, random_dim), seed=rng)
    index = keras.random.randint((batch_size,), 0, x_train.shape[0], seed=rng)
    image_batch = ops.take(x_train, index, axis=0)
    # Generate fake MNIST images
    generated_images = generator(noise, training=False)
    X = ops.concatenate([image_batch, generated_images])
    # Labels for generated and real data, with one-sided label smoothing: 0.9 for the reals
    y_dis = ops.concatenate([ops.full((batch_size, 1), real_label),
                             ops.zeros((batch_size, 1))])
    # Train discriminator: its own weights
    d_loss = train_on_batch(discriminator, X, y_dis, discriminator.trainable_weights)
    # Train generator: fresh noise, labelled real, through the discriminator, which stays frozen
    # because only the generator's weights are named
    noise = keras.random.normal((batch_size, random_dim), seed=rng)
    y_gen = ops.ones((batch_size, 1))
    g_loss = train_on_batch(gan, noise, y_gen, generator.trainable_weights)
    return d_loss, g_loss


# %% The tutorial, 7: the 10x10 grid of generated digits
def plot_generated_images(generator, noise, path, dim=(10, 10), figsize=(10, 10)):
    """The article's plot_generated_images(epoch, generator). The caller gives the noise (the same
    for every grid: FIXED_NOISE) and the file's path; the figure is closed once saved."""
    generated_images = ops.convert_to_numpy(generator(noise, training=False))
    generated_images = generated_images.reshape(len(noise), 28, 28)
    fig = plt.figure(figsize=figsize)
    for i in range(generated_images.shape[0]):
        plt.subplot(dim[0], dim[1], i + 1)
        plt.imshow(generated_images[i], interpolation="nearest", cmap="gray_r")
        plt.axis("off")
    plt.tight_layout()
    # extra: an 8-bit grey PNG, written whole
    return save_figure(fig, path, grey=True)


# %% The tutorial, 8: the training loop
def train(epochs=EPOCHS, batch_size=BATCH_SIZE, args=None):
    """The article's train(epochs, batch_size): train(400, 128) trains with the constants above
    for the other settings; main() passes its flags as `args`."""
    # extra: the settings, checked as the flags are
    args = args or get_args(["--epochs", str(epochs), "--batch-size", str(batch_size)])
    # Get the training data
    x_train, source = load_mnist_data(args.data, args.limit)
    # Split the training data into batches of size 128
    batch_count = x_train.shape[0] // batch_size
    # extra: the run's folders, locked; its losses, grids, scores and checkpoint
    with Run(args, x_train, source) as run:
        # To make sure that we can reproduce the experiment and get the same results
        # extra: Keras' set_random_seed, after a fresh Keras session (the layers' names)
        set_random_seed(args.seed)
        # Build our GAN network (the layers inside compute in PRECISION: extra)
        with precision_policy(args.precision):  # extra
            d_adam = get_optimizer(args.learning_rate, args.beta_1, turn=1)
            g_adam = get_optimizer(args.learning_rate, args.beta_1, turn=2)
            generator = get_generator(args.random_dim)
            discriminator = get_discriminator(d_adam, args.minibatch_stddev)
            gan = get_gan_network(discriminator, args.random_dim, generator, g_adam)
        # extra: a moving average of the generator draws the grids (EMA_DECAY; 0: None, and the
        # generator draws them, as in the article)
        ema_generator = get_ema_generator(generator, args.ema_decay)
        # the random stream of the noise and the batches
        rng = keras.random.SeedGenerator(args.seed)
        # extra: train_steps(n) runs train_one_batch n times in one compiled call, its overhead
        # paid once: the same steps, several times faster than one a call (on JAX, too)
        train_steps = make_train_steps(generator, discriminator, gan, x_train, args, rng,
                                       ema_generator)
        # extra: epoch 1, or where the checkpoint left off (--resume)
        start = run.begin(generator, discriminator, gan, ema_generator, rng)

        for e in range(start, epochs + 1):
            # extra: initial=run.step, where a resumed epoch left off; disable=None: a bar on a
            # terminal or in a notebook, none in a log file
            with tqdm(total=batch_count, initial=run.step, desc=f"Epoch {e}/{epochs}",
                      leave=False, disable=None) as bar:
                # extra: the article's loop over the epoch's batches, a few batches a call (the
                # bar moves after each)
                for steps in run.calls(batch_count):
                    # extra: train them; after_steps checks and sums their losses
                    d_loss, g_loss = run.after_steps(train_steps(steps))
                    bar.set_postfix(d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}", refresh=False)
                    bar.update(steps)
            grid = None
            if e == 1 or e % args.sample_every == 0 or e == epochs:
                path = os.path.join(args.out_dir, f"gan_generated_image_epoch_{e}.png")
                # extra: run.sampler is the moving average (or the generator), the noise the same
                # every time (FIXED_NOISE; or fresh, as in the article)
                grid = plot_generated_images(run.sampler, run.grid_noise(), path)
            # extra: the epoch's line, at a grid its scores; the checkpoint and plots when due
            run.end_epoch(e, grid)
        run.finish()  # extra: generator.keras


# %% Not in the tutorial: the harness (run this cell before calling train or main)
# =================================================================================================
# NOT IN THE TUTORIAL. Everything below serves the code above. It changes nothing it trains but
# the step numbers of the tutorial's shared Adam (adam_step) and what is opt-in
# (--minibatch-stddev, --precision bfloat16).
# =================================================================================================
import argparse  # noqa: E402  (the harness's own imports)
import builtins  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import gc  # noqa: E402
import glob  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from PIL import Image  # noqa: E402  (installed with matplotlib)

if os.name != "nt":
    # the folder lock; on Windows two runs into one folder are not stopped
    import fcntl

# %run in Jupyter, Colab or IPython: the kernel handles Ctrl-C and keeps its plotting backend
IN_IPYTHON = hasattr(builtins, "__IPYTHON__")
# the backend Keras runs on, once load_libraries() has loaded it
BACKEND = None


class UsageError(Exception):
    """Bad input: main() prints the message as one line and exits with code 2."""


# -------------------------------------------------------------------------- loading the libraries
def stop_script(signum, frame):
    """Ctrl-C or SIGTERM in `python gan_mnist.py`: a KeyboardInterrupt, which main() reports; while
    the libraries load, one line and exit code 130 at once (nothing is written yet, and an
    exception there could be lost in their C code)."""
    if BACKEND is None:
        os.write(1, b"Stopped while starting; nothing was written.\n")
        os._exit(130)
    raise KeyboardInterrupt


def load_libraries():
    """import_libraries(), with standard error pointed at the null device meanwhile: TensorFlow's
    C++ side prints notices as it loads and starts its devices, which no log level silences. JAX
    on a GPU is told to sum in a fixed order (XLA_FLAGS: read as JAX starts, then put back)."""
    global BACKEND
    xla_flags = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = f"{xla_flags or ''} --xla_gpu_deterministic_ops=true"
    stderr = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        import_libraries()
        if not IN_IPYTHON:
            # files only: no window is needed (ssh, CI)
            plt.switch_backend("Agg")
        BACKEND = keras.backend.backend()
        # the backend's devices start now, while standard error is quiet
        ops.zeros(1)
        if BACKEND == "tensorflow" and tf.config.list_physical_devices("GPU"):
            # same seed, same run on a GPU too
            tf.config.experimental.enable_op_determinism()
    except Exception as error:
        # KERAS_BACKEND or keras.json names a backend that is not installed, or too little memory
        # to load it (ulimit -v)
        raise UsageError(f"Keras cannot load its backend ({error}): pip install -r "
                         "requirements.txt, or set KERAS_BACKEND (or allow more memory)") from None
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.environ.pop("XLA_FLAGS")
        if xla_flags is not None:
            os.environ["XLA_FLAGS"] = xla_flags
    if BACKEND not in ("tensorflow", "jax"):
        raise UsageError(f"Keras runs on {BACKEND}; this script runs on tensorflow or jax: set "
                         "KERAS_BACKEND")


# ------------------------------------------------------------------ the step's speed and exactness
def adam_step(iterations, turn):
    """Adam's step number t (its bias correction: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)) after
    `iterations` updates of one model, as the tutorial's one Adam, shared by both, counted."""
    return 2 * iterations + turn


def shared_counter_adam(learning_rate, beta_1, turn):
    """keras.optimizers.Adam at adam_step's step numbers. On TensorFlow TensorFlow's fused kernel
    makes its update (one pass over a weight, not nine), reading private parts of Keras' Adam,
    which tests/test_step.py checks; on JAX, make_jax_train_steps hands Keras' Adam the numbers."""

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            i = self._get_variable_index(variable)
            step = tf.cast(adam_step(self.iterations, self.turn), variable.dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[i].handle, v=self._velocities[i].handle,
                beta1_power=self.beta_1**step, beta2_power=self.beta_2**step, lr=learning_rate,
                beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon, grad=gradient)

    adam = FusedAdam if BACKEND == "tensorflow" else keras.optimizers.Adam
    # its own name: its variables' names key the checkpoint (Keras 3.13 names both "adam")
    optimizer = adam(learning_rate=learning_rate, beta_1=beta_1, name=f"adam_{turn}")
    optimizer.turn = turn
    return optimizer


def binary_crossentropy_exactly(y_true, y_pred):
    """Keras' binary cross-entropy (the batch's mean), from the logits Keras keeps on a sigmoid's
    output (its private `_keras_logits`), with the gradient as one expression: TensorFlow's own
    sums four terms in an order that depends on thread timing, and same-seed runs drifted apart."""

    @tf.custom_gradient
    def sigmoid_cross_entropy(logits):
        loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=logits)
        return loss, lambda upstream: upstream * (tf.sigmoid(logits) - y_true)

    return tf.reduce_mean(sigmoid_cross_entropy(y_pred._keras_logits))


@contextlib.contextmanager
def precision_policy(precision):
    """Layers built inside compute in "float32" or "bfloat16" (Keras' mixed precision)."""
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def set_random_seed(seed):
    """A fresh Keras session (its layer names are the checkpoint's keys), then Keras' own
    set_random_seed; on JAX without loading TensorFlow just to seed it too."""
    keras.backend.clear_session()
    # None where TensorFlow is not loaded: Keras takes it as missing
    hidden = BACKEND == "jax" and sys.modules.setdefault("tensorflow", None) is None
    try:
        keras.utils.set_random_seed(seed)
    finally:
        if hidden:
            del sys.modules["tensorflow"]


def get_ema_generator(generator, decay):
    """A copy of the generator that follows its weights' moving average (EMA) and draws cleaner
    grids; never trained itself. None when `decay` is 0: the generator draws them."""
    if not decay:
        return
    with keras.name_scope("ema"):
        ema_generator = keras.models.clone_model(generator)
    ema_generator.set_weights(generator.get_weights())
    return ema_generator


def update_ema(ema_generator, generator, decay, iterations):
    """ema = d * ema + (1 - d) * weight after the generator's `iterations` steps, with d =
    min(decay, (1 + step) / (10 + step)), as TensorFlow's ExponentialMovingAverage: early on it
    forgets the random start quickly."""
    step = ops.cast(iterations, "float32")
    decay = ops.minimum(decay, (1.0 + step) / (10.0 + step))
    for ema_weight, weight in zip(ema_generator.weights, generator.weights):
        # the rule above
        ema_weight.assign_sub((1.0 - decay) * (ema_weight - weight))


def minibatch_stddev_layer(group):
    """--minibatch-stddev: ProGAN's minibatch standard deviation (Karras et al. 2018). Each digit
    gets one more feature: the mean standard deviation of the features in its group of `group`
    digits (reals and fakes apart). A generator that draws too many of one digit makes groups
    alike, and now the discriminator sees it."""

    def add_feature(x):
        groups = ops.reshape(ops.cast(x, "float32"), (-1, group, x.shape[-1]))
        # each group's mean standard deviation of the features, once for each of its digits
        stddev = ops.mean(ops.sqrt(ops.var(groups, axis=1) + 1e-8), axis=-1, keepdims=True)
        feature = ops.cast(ops.repeat(stddev, group, axis=0), x.dtype)
        return ops.concatenate([x, feature], axis=-1)

    return layers.Lambda(add_feature, output_shape=lambda shape: (shape[0], shape[1] + 1),
                         name="minibatch_stddev")


def all_variables(generator, discriminator, gan, ema_generator, rng):
    """Every variable that training changes: both models, both Adams, the EMA copy, the noise's
    random state (what the checkpoint holds)."""
    parts = [generator, discriminator, discriminator.optimizer, gan.optimizer, ema_generator]
    return [v for part in parts if part for v in part.variables] + [rng.state]


def make_train_steps(generator, discriminator, gan, x_train, args, rng, ema_generator):
    """train_one_batch `steps` times in one compiled call, the EMA following after each, so that a
    call's overhead is paid once, not per batch; it returns the (steps, 2) losses. The same steps
    as one a call (tests/test_resume.py). On JAX, make_jax_train_steps compiles it."""
    # Adam's slots now, so that a checkpoint can fill them
    discriminator.optimizer.build(discriminator.trainable_weights)
    gan.optimizer.build(generator.trainable_weights)
    images = ops.convert_to_tensor(x_train)

    def one_step():
        losses = train_one_batch(generator, discriminator, gan, images, args.batch_size,
                                 args.random_dim, args.real_label, rng)
        if ema_generator:
            update_ema(ema_generator, generator, args.ema_decay, gan.optimizer.iterations)
        return ops.stack(losses)

    if BACKEND == "jax":
        return make_jax_train_steps(one_step, all_variables(generator, discriminator, gan,
                                                            ema_generator, rng))

    # one graph for any number of steps
    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def train_steps(steps):
        losses = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            losses = losses.write(i, one_step())
        return losses.stack()

    return train_steps


# -------------------------------------------------------------------------- Keras' JAX backend
def make_jax_train_steps(one_step, variables):
    """make_train_steps on KERAS_BACKEND=jax: jax.lax.scan runs one_step `steps` times in one
    jax.jit call (compiled once for each number of steps), inside a keras.StatelessScope that
    hands Keras the variables' values and collects what the steps assign to them."""
    import jax

    def step(values, _):
        # one step, as lax.scan calls it: (the variables' values, unused) -> (new values, losses)
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            losses = one_step()
            values = [scope.get_current_value(variable) for variable in variables]
        return values, losses

    steps_in_one_call = jax.jit(lambda values, steps: jax.lax.scan(step, values, length=steps),
                                static_argnums=1)

    def train_steps(steps):
        values, losses = steps_in_one_call([variable.value for variable in variables], steps)
        for variable, value in zip(variables, values):
            variable.assign(value)
        return losses

    return train_steps


def train_on_batch_jax(model, x, y, weights):
    """train_on_batch on JAX, inside make_jax_train_steps' scope: the gradient of the model's
    stateless call with respect to `weights`, and Keras' Adam at adam_step's step number. The
    loss is Keras' binary cross-entropy of the probabilities, clipped to [1e-7, 1 - 1e-7] as the
    tutorial's Keras 2 did: JAX keeps no logits on a sigmoid's output as TensorFlow does."""
    import jax

    def loss_of(values):
        given = dict(zip(map(id, weights), values))
        trainable = [given.get(id(v), v.value) for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return ops.mean(ops.binary_crossentropy(y, y_pred)), non_trainable

    values = [weight.value for weight in weights]
    (loss, non_trainable), gradients = jax.value_and_grad(loss_of, has_aux=True)(values)
    for variable, value in zip(model.non_trainable_variables, non_trainable):
        variable.assign(value)
    # Keras' Adam takes t = iterations + 1: hand it adam_step(n, turn) - 1, then count n + 1
    optimizer = model.optimizer
    n = optimizer.iterations.value
    optimizer.iterations.assign(adam_step(n, optimizer.turn) - 1)
    optimizer.apply(gradients, weights)
    optimizer.iterations.assign(n + 1)
    return loss


# ---------------------------------------------------------------------------------- data files
MNIST_SHA256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"


def bundled(name):
    """A file of the clone's data/ folder: beside this file, or for cells in the working folder."""
    here = os.path.dirname(os.path.realpath(__file__)) if "__file__" in globals() else os.getcwd()
    return os.path.join(here, "data", name)


def read_digits(data):
    """The uint8 digits (N, 28, 28) of the subset, an .npz (its x_train) or a folder of MNIST's
    idx files, and the source's name: "mnist" for MNIST's 60,000 training digits, else the path."""
    path = bundled("mnist_5k.npz") if data == "subset" else data
    try:
        if os.path.isdir(path):
            # MNIST's idx format: a 16-byte header (2051, count, rows, columns), a byte a pixel
            raw = np.fromfile(os.path.join(path, "train-images-idx3-ubyte"), "u1")
            x_train = raw[16:].reshape(raw[4:16].view(">u4"))
        else:
            with np.load(path) as f:
                x_train = f["x_train"]
    except Exception as error:
        # missing, unreadable, not an .npz, no x_train, damaged
        why = getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
        fix = ("pass --data auto, mnist, subset, an .npz like Keras' mnist.npz or a folder of "
               "MNIST's idx files")
        if data == "subset":
            fix = "run in the clone (data/ is there), or git checkout -- data/mnist_5k.npz"
        raise UsageError(f"cannot read digits from {path} ({why}): {fix}") from None
    # (the shape's test fails for any other number of dimensions too)
    if (x_train.shape[1:] != (28, 28) or not len(x_train) or x_train.dtype.kind not in "iu"
            or x_train.min() < 0 or x_train.max() > 255):
        raise UsageError(f"x_train in {path} holds {x_train.dtype} of shape {x_train.shape}: "
                         "MNIST's digits are integers 0..255 (times 255 if yours are in 0..1) of "
                         "shape (N, 28, 28)")
    x_train = x_train.astype(np.uint8)
    # the idx header of 60,000 digits of 28x28
    header = b"\0\0\x08\x03\0\0\xea\x60\0\0\0\x1c\0\0\0\x1c"
    if hashlib.sha256(header + x_train.tobytes()).hexdigest() == MNIST_SHA256:
        return x_train, "mnist"
    return x_train, "subset" if data == "subset" else os.path.abspath(data)


def fall_back_to_subset(data, error):
    """Keras could not load full MNIST: the bundled subset for "auto", a UsageError for "mnist"."""
    reason = (str(error) or type(error).__name__).splitlines()[0]
    if data == "mnist":
        raise UsageError(f"cannot load full MNIST ({reason}): go online once, or put Keras' "
                         "mnist.npz in ~/.keras/datasets/, or use --data subset")
    print(f"Full MNIST is unavailable ({reason}); using the bundled 5,000-digit subset.")
    return read_digits("subset")[0]


def folder_name(source, limit, digits):
    """{data} in --out-dir: a folder for each training set (a file's name and its path's digest)."""
    name = source
    if os.path.isabs(source):
        name = f"{pathlib.Path(source).stem}-{hashlib.sha256(source.encode()).hexdigest()[:6]}"
    return f"{name}-first{limit}" if limit == digits else name


# ---------------------------------------------------------------------------- the digit scores
# A small MNIST CNN (data/digit_classifier.npz) scores fixed generated digits at every grid: FD
# (FID's Frechet distance on its features), the inception score's formula (1 to 10), each class's
# share and their KL from MNIST's.
MNIST_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
SCORE_COLUMNS = ["epoch", "frechet_distance", "classifier_score", "top_class", "top_share",
                 *[f"share_{digit}" for digit in range(10)], "mix_kl"]


def get_digit_classifier():
    """The scoring CNN: 784 pixels in [-1, 1] -> (64 features, 10 class probabilities)."""
    # channels last, whatever keras.json says
    conv = {"activation": "relu", "data_format": "channels_last"}
    images = keras.Input(shape=(784,))
    x = layers.Reshape((28, 28, 1))(images)
    x = layers.Conv2D(32, 3, **conv)(x)
    x = layers.Conv2D(32, 3, **conv)(x)
    x = layers.MaxPooling2D(data_format="channels_last")(x)
    x = layers.Conv2D(64, 3, **conv)(x)
    x = layers.MaxPooling2D(data_format="channels_last")(x)
    features = layers.Dense(64, activation="relu")(layers.Flatten()(x))
    probabilities = layers.Dense(10, activation="softmax")(layers.Dropout(0.3)(features))
    return keras.Model(images, [features, probabilities], name="digit_classifier")


class DigitScorer:
    """The classifier, and the statistics of the real held-out digits it compares with."""

    def __init__(self, path=None):
        path = path or bundled("digit_classifier.npz")
        self.model = get_digit_classifier()
        try:
            raw = pathlib.Path(path).read_bytes()
            with np.load(io.BytesIO(raw)) as f:
                arrays = dict(f)
            self.model.set_weights([arrays[f"w{i}"] for i in range(len(self.model.weights))])
            # (float64, as data/make_digit_classifier.py writes them)
            self.mean = arrays["reference_mean"]
            cov = arrays["reference_cov"]
            self.real = {key: float(arrays["real_" + key])
                         for key in ("frechet_distance", "classifier_score", "top_share")}
        except Exception as error:
            # missing, unreadable, not an .npz, other arrays or shapes
            why = getattr(error, "strerror", None) or type(error).__name__
            raise UsageError(f"cannot use {path} as the digit classifier ({why}): run in the clone "
                             "(data/ is there), or pass a file that data/make_digit_classifier.py "
                             "wrote, or --score-digits 0") from None
        self.fingerprint = hashlib.sha256(raw).hexdigest()[:16]
        # of the held-out digits that set real_* above (measured once)
        self.real["mix_kl"] = 0.0028
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        self.cov_sqrt = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T

    def __call__(self, images, epoch=0):
        """The scores of `images` (N, 784) in [-1, 1]: a row of scores.csv (SCORE_COLUMNS)."""
        # one compiled call (on JAX ten times faster than calling the model)
        features, p = (np.array(t, np.float64) for t in self.model.predict_on_batch(images))
        p = np.clip(p, 1e-12, 1.0)
        # each digit's KL from the mean's
        kl = np.sum(p * (np.log(p) - np.log(p.mean(axis=0))), axis=1)
        shares = np.bincount(p.argmax(axis=1), minlength=10) / len(p)
        # Frechet distance: |m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)
        cov = np.cov(features, rowvar=False)
        eigenvalues = np.linalg.eigvalsh(self.cov_sqrt @ cov @ self.cov_sqrt)
        frechet = (np.sum((features.mean(axis=0) - self.mean) ** 2) + np.trace(cov)
                   + np.trace(self.cov_sqrt @ self.cov_sqrt)
                   - 2 * np.sum(np.sqrt(np.clip(eigenvalues, 0, None))))
        seen = shares > 0
        mnist = np.array(MNIST_CLASS_COUNTS) / 60000
        mix_kl = np.sum(shares[seen] * np.log(shares[seen] / mnist[seen]))
        return [epoch, float(frechet), float(np.exp(kl.mean())), int(shares.argmax()),
                *map(float, [shares.max(), *shares, mix_kl])]


def describe_scores(row):
    return (f"FD {row[1]:.2f}  score {row[2]:.2f}  most common: {row[3]}s {row[4]:.0%}  "
            f"mix KL {row[15]:.3f}")


def plot_loss(history, path):
    """Both losses (means over each epoch's steps) against the epoch."""
    # epoch, d_loss, g_loss, seconds
    rows = np.array(history)
    fig, ax = plt.subplots(figsize=(8, 5), layout="tight")
    ax.plot(rows[:, 0], rows[:, 1:3], label=["discriminator loss", "generator loss"])
    ax.set(xlabel="epoch", ylabel="binary cross-entropy (epoch mean)")
    ax.legend()
    save_figure(fig, path)


def plot_scores(scores, real, path):
    """FD, classifier score, the largest class's share and the mix KL against the epoch, 2x2;
    dashed: real digits."""
    rows = np.array(scores)
    fig, axes = plt.subplots(2, 2, figsize=(8, 6.4), layout="tight")
    titles = ("Frechet distance (lower is better)", "classifier score (1 to 10, higher is better)",
              "share of the most common digit", "mix KL from MNIST's mix (lower is better)")
    for ax, column, title in zip(axes.flat, (1, 2, 4, 15), titles):
        ax.plot(rows[:, 0], rows[:, column], marker="o", markersize=3)
        ax.axhline(real[SCORE_COLUMNS[column]], linestyle="--", color="grey", label="real digits")
        ax.set(title=title, xlabel="epoch")
    ax.legend()
    axes[0, 0].set_yscale("log")
    save_figure(fig, path)


# ----------------------------------------------------------------------- writing files whole
def save_atomically(path, write):
    """write(tmp), flushed to disk, then renamed over `path`: after a crash `path` is the old file
    or the new one. tmp lies in a new private folder beside `path` (.tmp-*), so no two writers
    share one and no link planted there is followed; a run removes those a killed run left."""
    # a linked file stays linked: the file it names is replaced
    path = os.path.realpath(path)
    folder = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(path))
    tmp = os.path.join(folder, os.path.basename(path))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        # the file the user knows, not its temporary
        error.filename = path
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def save_figure(fig, path, grey=False):
    """The figure as a PNG written whole, then closed; `grey`: 8-bit grey (a grid has no colour).
    The pixels savefig() would write, without its PNG encoded and read back (0.1 s a grid)."""
    fig.canvas.draw()
    image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba())
    image = image.convert("L" if grey else "RGBA")
    plt.close(fig)
    return save_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def write_csv(path, columns, rows):
    text = io.StringIO()
    csv.writer(text).writerows([columns, *rows])
    save_atomically(path, lambda tmp: pathlib.Path(tmp).write_bytes(text.getvalue().encode()))


def save_gif(grid_paths, path, size=300):
    """The grids in epoch order as an animated GIF, `size` pixels a side, 0.4 s a grid."""
    frames = [Image.open(p).resize((size, size), Image.LANCZOS)
              for p in filter(os.path.exists, grid_paths)]
    save_atomically(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, loop=0,
                                                     append_images=frames[1:], duration=400))


def show_in_notebook(*paths):
    """In a Jupyter or Colab kernel, the pictures below the cell, at most 600 pixels wide."""
    if "ipykernel" in sys.modules:
        from IPython.display import Image as Picture, display
        for path in filter(os.path.exists, filter(None, paths)):
            display(Picture(filename=path, width=min(Image.open(path).size[0], 600)))


def make_folder(folder, flag):
    """`folder`, made if missing; refused unless this user can write there."""
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise UsageError(f"cannot write to folder {folder} ({error.strerror}): pick another "
                         f"{flag}") from None


def lock_folder(folder, flag):
    """One writer per folder: an OS lock (flock) on folder/.lock, which the kernel drops when the
    process ends, opened to read, so that the users of a shared folder can all lock it. Then the
    temporaries a killed writer left there go."""
    make_folder(folder, flag)
    lock = os.open(os.path.join(folder, ".lock"), os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        if os.name != "nt":
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise UsageError(f"another run is using {folder}: wait, or pick another {flag}") from None
    for tmp in glob.glob(os.path.join(glob.escape(folder), ".tmp-*")):
        # a killed writer's temporary (save_atomically)
        shutil.rmtree(tmp, ignore_errors=True)
    return lock


def refuse_to_overwrite(inputs, outputs, flag):
    """An output that is, or leads to, an input of the same command is refused."""
    read = {os.path.realpath(path) for path in inputs if path}
    for path in outputs:
        if os.path.realpath(path) in read:
            raise UsageError(f"{path} would replace an input of this run: pick another {flag}")


# ----------------------------------------------------------------- the run: what train() calls
class Run:
    """What train() hands its bookkeeping to: the folders and their lock, the losses, grids and
    scores, the grids' noise, the checkpoint, and Ctrl-C or SIGTERM as a flag read between calls."""

    # a resume must keep them
    SETTINGS = ("batch_size", "random_dim", "seed", "learning_rate", "beta_1", "real_label",
                "ema_decay", "fixed_noise", "precision", "minibatch_stddev", "score_digits")
    OUTPUTS = ("checkpoint.npz", "losses.csv", "scores.csv", "scores.png", "gan_loss.png",
               "progress.gif", "generator.keras")
    # set on a stop (set_stop); the steps trained of the epoch; the signals' handlers before
    stop = False
    step = 0
    handlers = {}

    def __init__(self, args, x_train, source):
        """All that is checked before a folder is made or a model built."""
        self.args = args
        digits = len(x_train)
        if args.batch_size > digits or args.batch_size % (args.minibatch_stddev or 1):
            raise UsageError(f"--batch-size {args.batch_size} must be at most the {digits} "
                             "training digits (--limit), and a multiple of --minibatch-stddev")
        args.out_dir = args.out_dir.replace("{data}", folder_name(source, args.limit, digits))
        self.checkpoint = self.path("checkpoint.npz")
        refuse_to_overwrite([args.data, args.classifier], map(self.path, self.OUTPUTS), "--out-dir")
        self.scorer = DigitScorer(args.classifier) if args.score_digits else None
        self.config = {key: getattr(args, key) for key in self.SETTINGS}
        self.config.update(data=source, digits=digits, backend=BACKEND,
                           digits_sha256=hashlib.sha256(x_train).hexdigest()[:16],
                           classifier_sha256=self.scorer and self.scorer.fingerprint)
        self.saved = args.resume and self.read_checkpoint()
        # the grids' own stream (--no-fixed-noise): plotting never shifts training
        self.grid_rng = np.random.default_rng((args.seed, 2))
        self.score_noise = draw_noise((args.seed, 1), args.random_dim, args.score_digits)

    def __enter__(self):
        """The folder locked; Ctrl-C and SIGTERM set a flag."""
        self.lock = lock_folder(self.args.out_dir, "--out-dir")
        # (Python takes signal handlers in the main thread only)
        with contextlib.suppress(ValueError):
            self.handlers = {signum: signal.signal(signum, self.set_stop)
                             for signum in (signal.SIGINT, signal.SIGTERM)}
        # the settings but those left unset (None)
        print("Config:", *(f"{k}={v}" for k, v in vars(self.args).items()
                           if k[0] != "_" and v is not None))
        print(f"Training on {self.config['digits']} digits ({self.config['data']}), "
              f"{self.config['digits'] // self.args.batch_size} steps per epoch, on {BACKEND}.")
        return self

    def __exit__(self, kind, error, traceback):
        """A stop saves where training is, unless the checkpoint on disk is another run's."""
        try:
            # (a step is trained only after begin() has set self.owner)
            if kind is KeyboardInterrupt and self.stop and self.step and self.owner:
                self.save_checkpoint()
        finally:
            for signum, handler in self.handlers.items():
                signal.signal(signum, handler)
            os.close(self.lock)
            gc.unfreeze()

    def set_stop(self, signum, frame):
        # Ctrl-C or SIGTERM: the run stops after the call it lands in (TensorFlow's C code cannot
        # take a KeyboardInterrupt)
        self.stop = True

    def path(self, name):
        return os.path.join(self.args.out_dir, name)

    def read_checkpoint(self):
        """(meta, arrays) to resume from; refused if missing or damaged, or made with other
        settings or digits."""
        try:
            meta, arrays = load_checkpoint(self.checkpoint)
            config = meta["config"]
        except Exception as error:
            # missing, unreadable, damaged, edited
            why = getattr(error, "strerror", None) or f"damaged: {type(error).__name__}"
            raise UsageError(f"cannot resume from {self.checkpoint} ({why}): start without "
                             "--resume") from None
        for key, value in self.config.items():
            if config.get(key) != value:
                raise UsageError(f"checkpoint {self.checkpoint} was made with "
                                 f"{key}={config.get(key)!r}, not {value!r}: resume with the same "
                                 "settings (KERAS_BACKEND too) or start without --resume")
        return meta, arrays

    def begin(self, generator, discriminator, gan, ema_generator, rng):
        """The checkpoint restored with --resume; the first epoch to train."""
        # what draws the grids and generator.keras
        self.sampler = ema_generator or generator
        self.variables = {v.path: v for v in all_variables(generator, discriminator, gan,
                                                            ema_generator, rng)}
        self.history = []
        self.scores = []
        self.grids = []
        self.sums = [0.0, 0.0]
        # another run's checkpoint is replaced after this run's first epoch, not at a stop before
        self.owner = not os.path.exists(self.checkpoint)
        if self.saved:
            self.restore(*self.saved)
        # this run has written no checkpoint: it writes one after its first epoch
        self.last_save = -math.inf
        # Python's garbage collector skips the objects made so far (the libraries', the models')
        # until the run ends: scanning them took a third of a grid's time
        gc.freeze()
        self.started = time.perf_counter()
        self.seconds = 0.0
        return len(self.history) + 1

    def restore(self, meta, arrays):
        """Every array into the variable of its name, and where training was."""
        if set(arrays) != set(self.variables):
            raise UsageError(f"checkpoint {self.checkpoint} does not hold this run's variables "
                             "(another version of gan_mnist.py?): start without --resume")
        for name, array in arrays.items():
            self.variables[name].assign(array)
        for key in ("history", "scores", "grids", "step", "sums"):
            setattr(self, key, meta[key])
        self.grid_rng.bit_generator.state = meta["grid_rng"]
        self.owner = True
        print(f"Resuming from {self.checkpoint} after {held(meta)} (of --epochs "
              f"{self.args.epochs}).")

    def calls(self, batch_count):
        """The steps each compiled call of the epoch trains, from the step the epoch is at:
        STEPS_PER_CALL at most, and at least ten calls an epoch, so that the bar moves."""
        size = max(1, min(self.args.steps_per_call, batch_count // 10))
        while self.step < batch_count:
            yield min(size, batch_count - self.step)

    def after_steps(self, losses):
        """A call's (d_loss, g_loss) of each step: checked, summed for the epoch's means; the
        last's. Here, between calls, a Ctrl-C or SIGTERM stops the run."""
        for d_loss, g_loss in np.array(losses).tolist():
            self.step += 1
            # NaN, inf, or a saturated sigmoid
            if not (0 <= d_loss < 100 and 0 <= g_loss < 100):
                self.diverged(f"step {self.step}", d_loss, g_loss)
            self.sums[0] += d_loss
            self.sums[1] += g_loss
        # the epoch's training time, up to its last call
        self.seconds = time.perf_counter() - self.started
        if self.stop:
            raise KeyboardInterrupt
        return d_loss, g_loss

    def grid_noise(self):
        """The same 100 noise vectors for every grid (those of --generate), or fresh ones."""
        return draw_noise(self.args.seed if self.args.fixed_noise else self.grid_rng,
                          self.args.random_dim)

    def end_epoch(self, epoch, grid):
        """The epoch's line, at a grid its scores; the checkpoint (and the files it writes) when
        due: after the run's first epoch, CHECKPOINT_SECONDS after the last one, and at the end."""
        d_loss, g_loss = (total / self.step for total in self.sums)
        self.history.append([epoch, d_loss, g_loss, round(self.seconds, 3)])
        self.step = 0
        self.sums = [0.0, 0.0]
        line = (f"Epoch {epoch}/{self.args.epochs}: d_loss {d_loss:.4f}  g_loss {g_loss:.4f}  "
                f"{self.seconds:.1f}s")
        if grid:
            self.grids.append(epoch)
            if self.scorer:
                row = self.scorer(self.sampler(self.score_noise, training=False), epoch)
                self.scores.append([round(x, 4) for x in row])
                line += f"  | {describe_scores(row)}"
        print(line)
        show_in_notebook(grid)
        due = time.perf_counter() - self.last_save >= self.args.checkpoint_seconds
        if due or epoch == self.args.epochs:
            self.save_checkpoint()
        self.started = time.perf_counter()

    def save_checkpoint(self):
        """The losses, scores, their plots and the GIF, then every variable, the history and where
        training is, each written whole; not if a weight is not finite (the run has diverged)."""
        arrays = {name: ops.convert_to_numpy(v) for name, v in self.variables.items()}
        if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
            self.diverged("its end (a weight is not finite)", *self.sums)
        write_csv(self.path("losses.csv"), ("epoch", "d_loss", "g_loss", "seconds"), self.history)
        if self.scores:
            write_csv(self.path("scores.csv"), SCORE_COLUMNS, self.scores)
            plot_scores(self.scores, self.scorer.real, self.path("scores.png"))
        if self.grids:
            plot_loss(self.history, self.path("gan_loss.png"))
            grids = [self.path(f"gan_generated_image_epoch_{e}.png") for e in self.grids]
            save_gif(grids, self.path("progress.gif"))
        meta = {"epoch": len(self.history), "step": self.step, "sums": self.sums,
                "history": self.history, "scores": self.scores, "grids": self.grids,
                "config": self.config, "grid_rng": self.grid_rng.bit_generator.state,
                "argv": self.args._argv}
        meta["sha256"] = digest(meta, arrays)
        # in memory first: numpy 2.0's savez leaves the zip of a failed write open (a traceback
        # as Python exits)
        data = io.BytesIO()
        np.savez(data, meta=json.dumps(meta), **arrays)
        save_atomically(self.checkpoint,
                        lambda tmp: pathlib.Path(tmp).write_bytes(data.getbuffer()))
        self.owner = True
        self.last_save = time.perf_counter()

    def finish(self):
        """generator.keras; the run's pictures below a notebook cell."""
        # the temporary keeps the name, so its .keras
        save_atomically(self.path("generator.keras"), self.sampler.save)
        print(f"Done: {len(self.grids)} grids and the run's other files in {self.args.out_dir}/")
        show_in_notebook(*map(self.path, ("gan_loss.png", "scores.png", "progress.gif")))

    def diverged(self, where, d_loss, g_loss):
        # (main() prints it as one line, exit code 1)
        raise FloatingPointError(f"training diverged in epoch {len(self.history) + 1} at {where} "
                                 f"(d_loss {d_loss:.4g}, g_loss {g_loss:.4g}): lower "
                                 f"--learning-rate ({self.args.learning_rate}) or check the data")


def digest(meta, arrays):
    """The SHA-256 of a checkpoint's meta and arrays: one edited, cut or mixed is refused."""
    sha256 = hashlib.sha256(json.dumps(meta).encode())
    for name, array in arrays.items():
        sha256.update(f"{name} {array.shape} {array.dtype}".encode() + array.tobytes())
    return sha256.hexdigest()


def load_checkpoint(path):
    """(meta, arrays) of a checkpoint.npz: its JSON and its arrays by name; a ValueError if its
    digest does not match (a checkpoint edited by hand, cut short, or pieced together)."""
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays.pop("meta")))
    if meta.pop("sha256") != digest(meta, arrays):
        raise ValueError("its digest: edited or cut")
    return meta, arrays


def held(meta):
    """Where a checkpoint's training is: "epoch 12", or "40 steps into epoch 13"."""
    if meta["step"]:
        return f"{meta['step']} steps into epoch {meta['epoch'] + 1}"
    return f"epoch {meta['epoch']}"


def draw_noise(seed, random_dim, count=100):
    """`count` noise vectors from numpy's generator of `seed` (or from a numpy Generator, which
    default_rng() returns as it is): a grid's, or (seed, 1)'s for the scores, fixed for a seed
    and apart from the grids' stream."""
    return np.random.default_rng(seed).normal(0, 1, size=(count, random_dim)).astype(np.float32)


def what_next(args):
    """What the checkpoint on disk holds, and the command that continues from it."""
    checkpoint = os.path.join(args.out_dir, "checkpoint.npz")
    try:
        meta, _ = load_checkpoint(checkpoint)
        # the run that wrote it, unless this one resumed it (with the same settings)
        argv = [arg for arg in (args._argv if args.resume else meta["argv"]) if arg != "--resume"]
        resume = command([*argv, "--resume"], args._called, meta["config"]["backend"])
    except Exception:
        return f"no checkpoint was written; start again with: {command(args._argv, args._called)}"
    return f"{checkpoint} holds {held(meta)}; resume with: {resume}"


# ------------------------------------------------------------------------- --generate, --score
def load_generator(path):
    """A generator.keras: one noise vector in, 784 pixels out."""
    try:
        generator = keras.models.load_model(path, compile=False)
        shapes = [tuple(t.shape) for t in generator.inputs + generator.outputs]
    except Exception as error:
        why = getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
        raise UsageError(f"cannot load a generator from {path} ({why.splitlines()[0]})") from None
    if len(shapes) != 2 or len(shapes[0]) != 2 or shapes[1] != (None, 784):
        raise UsageError(f"{path} is not a generator of this script (its inputs and outputs: "
                         f"{shapes}, not one noise vector and 784 pixels): pass the "
                         "generator.keras that a training run wrote")
    return generator


def generate(args):
    """--generate: a 10x10 grid from a saved generator; the run's own grid for the same seed."""
    out = args.out or os.path.join(os.path.dirname(args.generate), "generated.png")
    if not out.lower().endswith(".png"):
        raise UsageError(f"--out {out} is not the path of a .png file: pass the PNG to write")
    refuse_to_overwrite([args.generate], [out], "--out")
    folder = os.path.dirname(os.path.realpath(out))
    make_folder(folder, "--out")
    # a training's folder: not while it runs
    lock = lock_folder(folder, "--out") if os.path.exists(os.path.join(folder, ".lock")) else None
    try:
        generator = load_generator(args.generate)
        plot_generated_images(generator, draw_noise(args.seed, generator.inputs[0].shape[-1]), out)
    finally:
        if lock is not None:
            os.close(lock)
    print(f"Wrote {out}")
    show_in_notebook(out)


def score_file(args):
    """--score: the scores of a saved generator, beside real digits'."""
    if not args.score_digits:
        raise UsageError("--score-digits 0 scores no digits: pass 100 or more with --score")
    scorer = DigitScorer(args.classifier)
    generator = load_generator(args.score)
    row = scorer(generator(draw_noise((args.seed, 1), generator.inputs[0].shape[-1],
                                      args.score_digits)))
    print(f"{args.score} ({args.score_digits} digits, seed {args.seed}): {describe_scores(row)}")


# ---------------------------------------------------------------------------- the command line
def command(argv, called, backend=None):
    """The line that runs gan_mnist.py with `argv` where the user is: in a shell (with the backend
    that chose it), with %run, or with main()."""
    if called == "main":
        return f"gan_mnist.main({argv!r})"
    line = shlex.join([sys.argv[0], *argv])
    if IN_IPYTHON:
        return f"%run {line}"
    backend = backend or BACKEND or "tensorflow"
    return f"KERAS_BACKEND={backend} python {line}" if backend != "tensorflow" else f"python {line}"


def checked(kind, rule, test=lambda value: value >= 1):
    """An argparse type: kind(text), refused unless test(value)."""

    def parse(text):
        value = kind(text)
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text} (the flag, or its "
                                             "constant)")
        return value

    # argparse: "invalid int value: 'x'"
    parse.__name__ = kind.__name__
    return parse


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # one line and exit code 2 through main(), as all bad input
        raise UsageError(f"{message} ({command(['--help'], self.called)} lists the flags)")


def get_args(argv, called="main"):
    """The flags, their defaults the constants as text: argparse checks an edited constant as it
    checks a flag. `called`: "script" or "main", how a printed command is written."""
    p = ArgumentParser(prog="gan_mnist.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train the Keras MNIST GAN tutorial's model.")
    p.called = called
    whole = checked(int, "1 or more")
    text = checked(str, "a path", bool)
    for flag, constant, kind, help in (
            ("--epochs", EPOCHS, whole, "passes over the training digits"),
            ("--batch-size", BATCH_SIZE, whole, "real digits a step"),
            ("--sample-every", SAMPLE_EVERY, whole, "a grid at epoch 1, every N epochs, the last"),
            ("--steps-per-call", STEPS_PER_CALL, whole, "batches a compiled call trains, at most"),
            ("--seed", SEED, checked(int, "0 to 2**32 - 1", lambda v: 0 <= v < 2**32), "the seed"),
            ("--limit", LIMIT, whole, "train on the first N digits only"),
            ("--random-dim", RANDOM_DIM, whole, "length of the generator's noise vector"),
            ("--learning-rate", LEARNING_RATE, checked(float, "above 0, below 1",
                                                       lambda v: 0 < v < 1), "Adam's"),
            ("--beta-1", BETA_1, checked(float, "from 0 to below 1", lambda v: 0 <= v < 1),
             "Adam's beta_1"),
            ("--real-label", REAL_LABEL, checked(float, "above 0, at most 1", lambda v: 0 < v <= 1),
             "the reals' label; 1: no smoothing"),
            ("--ema-decay", EMA_DECAY, checked(float, "0 or 0.5 to below 1",
                                               lambda v: v == 0 or 0.5 <= v < 1),
             "the grids' moving average of the generator; 0: the generator"),
            ("--minibatch-stddev", MINIBATCH_STDDEV, checked(int, "0 or 2 to 64",
                                                             lambda v: v == 0 or 2 <= v <= 64),
             "the discriminator sees how varied each N digits are (4: an even mix); 0: off"),
            ("--precision", PRECISION, checked(str, "float32 or bfloat16",
                                               lambda v: v in ("float32", "bfloat16")),
             "bfloat16: Keras' mixed precision"),
            ("--score-digits", SCORE_DIGITS, checked(int, "0 or 100 to 100000",
                                                     lambda v: v == 0 or 100 <= v <= 1e5),
             "digits scored at every grid; 0: none"),
            ("--checkpoint-seconds", CHECKPOINT_SECONDS, checked(float, "0 or more",
                                                                 lambda v: v >= 0),
             "a checkpoint after epoch 1, then at most this often, at a stop and at the end"),
            ("--data", DATA, text, "auto (MNIST; offline the bundled subset), mnist, subset, an "
                                   ".npz or an idx folder"),
            ("--out-dir", OUT_DIR, text, "the run's folder: grids, losses, scores, checkpoint"),
            ("--classifier", CLASSIFIER, text, "the digit classifier [data/digit_classifier.npz]"),
            ("--generate", None, text, "only draw a grid from a saved generator.keras"),
            ("--out", None, text, "with --generate: the PNG [generated.png beside the model]"),
            ("--score", None, text, "only print the scores of a saved generator.keras")):
        p.add_argument(flag, type=kind, default=None if constant is None else str(constant),
                       help=help)
    p.add_argument("--fixed-noise", action=argparse.BooleanOptionalAction, default=FIXED_NOISE,
                   help="every grid from the same noise")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = p.parse_args(argv)
    if args.out and not args.generate:
        raise UsageError("--out names the PNG that --generate writes: pass --generate too")
    # before any data are loaded: {data} may stand for any data's folder
    checkpoint = os.path.join(args.out_dir, "checkpoint.npz")
    if args.resume and not glob.glob(glob.escape(checkpoint).replace("{data}", "*")):
        raise UsageError(f"cannot resume: there is no {checkpoint}: start without --resume")
    args._argv = argv
    args._called = called
    return args


def main(argv=None):
    """Every way the script ends, in one place: 0 done, 1 failed (diverged, a write, memory), 2 bad
    input, 130 stopped."""
    called = "script" if argv is None else "main"
    try:
        args = get_args(sys.argv[1:] if argv is None else argv, called)
        load_libraries()
        if args.generate:
            generate(args)
        elif args.score:
            score_file(args)
        else:
            train(args.epochs, args.batch_size, args)
        return 0
    except SystemExit as end:
        # --help
        return end.code
    except UsageError as error:
        print(f"gan_mnist.py: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # training diverged, a write failed (a full disk, ...), or memory ran out: Python's
        # MemoryError, or the backend's (TensorFlow's ResourceExhaustedError, XLA's)
        why = str(error) or "out of memory"
        if "ResourceExhausted" in repr(error) or "RESOURCE_EXHAUSTED" in why:
            why = f"{BACKEND} ran out of memory"
        elif isinstance(error, OSError):
            why = f"cannot write {error.filename} ({error.strerror})"
        elif not isinstance(error, (FloatingPointError, MemoryError)):
            raise
        print(f"gan_mnist.py: stopped: {why}; {what_next(args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"Stopped; {what_next(args)}")
        return 130


# %% Run it: python gan_mnist.py in a terminal, %run gan_mnist.py in a notebook, or main([...])
if __name__ == "__main__" and "__file__" in globals():
    if not IN_IPYTHON:
        # each epoch's line reaches a pipe or a log at once
        sys.stdout.reconfigure(line_buffering=True)
        signal.signal(signal.SIGINT, stop_script)
        signal.signal(signal.SIGTERM, stop_script)
    exit_code = main()
    if not IN_IPYTHON:
        # %run: the kernel lives on, and the last line said how the run ended
        sys.exit(exit_code)
else:
    # imported, or run as cells: the libraries now
    load_libraries()
