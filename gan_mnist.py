"""gan_mnist: the classic "write your first GAN in Keras" MNIST tutorial (Stefan Hosein's "Demystifying
Generative Adversarial Networks", its code from Zackory/Keras-MNIST-GAN), on today's Keras 3. Read it
top to bottom: the constants, then the tutorial's parts in its order and with its names up to train();
lines there marked "# extra:" call the code below the banner.

    python gan_mnist.py                  # the tutorial's 400 epochs, into runs/{data}/ (--help: the flags)
    python gan_mnist.py --resume         # continue a stopped run
    python gan_mnist.py --generate samples/mnist/generator.keras --out digits.png
"""
# %% The control panel: the imports and the constants to edit
import builtins
import os
import signal
import sys

import matplotlib
import numpy as np
from tqdm.auto import tqdm  # a bar in a terminal, a widget in a notebook

# ---- data
DATA = "auto"  # "auto": Keras' MNIST, or the bundled subset offline; "mnist"; "subset"; an .npz or idx folder
LIMIT = None  # train on the first LIMIT digits only (quick tries); None = all of them
HERE = os.path.dirname(os.path.realpath(globals().get("__file__", "gan_mnist.py")))  # cells have no __file__
SUBSET_PATH = os.path.join(HERE, "data", "mnist_5k.npz")
# ---- model and optimiser
RANDOM_DIM = 100  # length of the generator's input noise vector (tutorial: 100)
LEARNING_RATE = 0.0002  # Adam learning rate (tutorial: lr=0.0002)
BETA_1 = 0.5  # Adam beta_1 (tutorial: 0.5)
# ---- training
EPOCHS = 400  # passes over the training digits (tutorial: 400)
BATCH_SIZE = 128  # real digits per step; each step also makes as many fakes (tutorial: 128)
REAL_LABEL = 0.9  # one-sided label smoothing: reals are labelled 0.9, fakes 0 (tutorial: 0.9)
STEPS_PER_CALL = 50  # batches a compiled call trains (tutorial: 1); same steps, less overhead; a stop waits for it
SEED = 10  # seeds numpy and Keras: same seed, same machine, same run (tutorial: 10)
EMA_DECAY = 0.999  # grids come from a moving average of the generator's weights; 0 = raw (tutorial)
PRECISION = "float32"  # "bfloat16": layers compute in bfloat16, weights stay float32 (tutorial: float32)
MINIBATCH_STDDEV = 0  # 4: the discriminator also sees how varied each 4 digits are; evens the mix (tutorial: 0)
# ---- output
SAMPLE_EVERY = 20  # save a grid at epoch 1, every SAMPLE_EVERY epochs and the last (tutorial: 20)
FIXED_NOISE = True  # every grid shows the same 100 noise vectors; False = fresh noise (tutorial)
SCORE_DIGITS = 2000  # digits drawn to score the generator at every grid (below); 0 = no scores
CLASSIFIER = os.path.join(HERE, "data", "digit_classifier.npz")
OUT_DIR = "runs/{data}"  # grids, losses, scores, GIF, generator.keras and the checkpoint; {data}: mnist, subset, ...
CHECKPOINT_DIR = None  # checkpoint.npz, rewritten after every epoch for --resume; None: in OUT_DIR

# %% Start-up: Keras on the backend it picks (KERAS_BACKEND, else keras.json's, else TensorFlow)
IN_IPYTHON = hasattr(builtins, "__IPYTHON__")  # %run in Jupyter, Colab or IPython, which handle Ctrl-C
if not IN_IPYTHON:  # a notebook keeps its own plotting backend; figures are closed before they show
    matplotlib.use("Agg")  # draw to files only: no window needed (ssh, CI)
if __name__ == "__main__" and not IN_IPYTHON:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the run as Ctrl-C does
    sys.stdout.reconfigure(line_buffering=True)  # each epoch's line reaches a pipe or a log at once
KERAS_BEFORE, QUIET = "keras" in sys.modules, "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # fewer TensorFlow notices (Python errors still show)
if "deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):  # JAX on a GPU sums in a fixed order: same seed,
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true"  # same run
try:
    import keras
    import matplotlib.pyplot as plt
    from keras import initializers, layers
    BACKEND, WANTED = keras.backend.backend(), os.environ.get("KERAS_BACKEND")
    TROUBLE = (f"Keras runs on {BACKEND}; this script runs on tensorflow or jax: set KERAS_BACKEND" if BACKEND not in
               ("tensorflow", "jax") else f"Keras is already loaded with {BACKEND} in this kernel: restart the kernel, "
               "then set KERAS_BACKEND before %run" if KERAS_BEFORE and WANTED and WANTED != BACKEND else None)
    if BACKEND == "tensorflow" and not TROUBLE:
        import tensorflow as tf
        if tf.config.list_physical_devices("GPU"):  # its device notices now, while they are quiet
            tf.config.experimental.enable_op_determinism()  # same seed, same run on a GPU too
except (ImportError, ValueError) as e:  # KERAS_BACKEND or keras.json names a backend not installed
    TROUBLE = f"Keras cannot load its backend ({e}): pip install -r requirements.txt, or set KERAS_BACKEND"
except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the libraries load
    TROUBLE = "Stopped while starting; nothing was written."
finally:
    if QUIET:  # the environment as it was (a kernel's next run, a !python)
        del os.environ["TF_CPP_MIN_LOG_LEVEL"]
if TROUBLE and __name__ != "__main__":
    raise ImportError(TROUBLE)
if TROUBLE:  # one line, no traceback; in a kernel a %run shows no exit code
    STOPPED = TROUBLE.startswith("Stopped")
    print(TROUBLE if STOPPED else f"gan_mnist.py: error: {TROUBLE}", file=sys.stdout if STOPPED else sys.stderr)
    sys.exit(0 if IN_IPYTHON else 130 if STOPPED else 2)


# =================================================================================================
# %% The tutorial, 1: load MNIST, scale it to [-1, 1], flatten it
def load_mnist_data(data, limit=None):
    """The tutorial's load_minst_data (typo fixed): the training digits as (N, 784) rows in [-1, 1], and
    their source: "mnist", "subset" or the path. Without network, "auto" takes the bundled subset."""
    if data in ("auto", "mnist"):
        try:
            (x_train, _), _ = keras.datasets.mnist.load_data()  # downloaded once, then cached
            source = "mnist"
        except Exception as e:
            x_train, source = fall_back_to_subset(data, e), "subset"  # extra: offline, the bundled subset
    else:
        x_train, source = read_digits(data)  # extra: the bundled subset, an .npz or MNIST's idx files
    x_train = x_train[:limit]
    # normalize our inputs to be in the range [-1, 1]
    x_train = (x_train.astype(np.float32) - 127.5) / 127.5
    # convert x_train with a shape of (60000, 28, 28) to (60000, 784) so we have 784 columns per row
    return x_train.reshape(len(x_train), 784), source


# %% The tutorial, 2: the optimizer, Adam(0.0002, 0.5)
def get_optimizer(learning_rate, beta_1, turn):
    """Adam as in the tutorial, one per model (Keras 3 wants that). The tutorial's one Adam counted the
    discriminator's updates as its steps 1, 3, 5, ..., the generator's as 2, 4, 6, ...: `turn` 1 or 2."""
    adam = FusedAdam if BACKEND == "tensorflow" else keras.optimizers.Adam  # extra: TensorFlow's fused kernel
    optimizer = adam(learning_rate=learning_rate, beta_1=beta_1)
    optimizer.turn = turn  # extra: read where the update is made
    return optimizer


# %% The tutorial, 3: the generator
def get_generator(random_dim):
    generator = keras.Sequential(name="generator")
    generator.add(keras.Input(shape=(random_dim,)))
    generator.add(layers.Dense(256, kernel_initializer=initializers.RandomNormal(stddev=0.02)))
    generator.add(layers.LeakyReLU(0.2))
    generator.add(layers.Dense(512))
    generator.add(layers.LeakyReLU(0.2))
    generator.add(layers.Dense(1024))
    generator.add(layers.LeakyReLU(0.2))
    generator.add(layers.Dense(784, activation="tanh", dtype="float32"))  # float32 even if mixed
    return generator  # never trained on its own, so (unlike the tutorial) not compiled


# %% The tutorial, 4: the discriminator
def get_discriminator(optimizer, minibatch_stddev=0):
    discriminator = keras.Sequential(name="discriminator")
    discriminator.add(keras.Input(shape=(784,)))
    discriminator.add(layers.Dense(1024, kernel_initializer=initializers.RandomNormal(stddev=0.02)))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    discriminator.add(layers.Dense(512))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    if minibatch_stddev:  # extra: --minibatch-stddev, off unless asked for
        discriminator.add(minibatch_stddev_layer(minibatch_stddev))  # extra
    discriminator.add(layers.Dense(256))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    discriminator.add(layers.Dense(1, activation="sigmoid", dtype="float32"))
    # the tutorial's compile: its loss is not used (the step below computes it), its optimizer is
    discriminator.compile(loss="binary_crossentropy", optimizer=optimizer)
    optimizer.build(discriminator.trainable_weights)  # Adam's slots now, so a checkpoint can fill them
    return discriminator


# %% The tutorial, 5: the combined model, its discriminator frozen
def get_gan_network(discriminator, random_dim, generator, optimizer):
    """noise -> generator -> discriminator. The tutorial froze the discriminator with `trainable = False`, which
    Keras 3 reads when a step is traced: the discriminator would never learn. Each step names the weights it updates."""
    gan_input = keras.Input(shape=(random_dim,))  # gan input (noise): random_dim-long vectors
    x = generator(gan_input)  # the output of the generator (an image)
    gan_output = discriminator(x)  # the discriminator's probability that the image is real
    gan = keras.Model(inputs=gan_input, outputs=gan_output, name="gan")
    gan.compile(loss="binary_crossentropy", optimizer=optimizer)  # as above: for its optimizer
    optimizer.build(generator.trainable_weights)
    return gan


# %% The tutorial, 6: one batch: the discriminator's step, then the generator's
def train_discriminator(discriminator, image_batch, generated_images, real_label):
    """Reals labelled `real_label` (one-sided label smoothing), fakes 0; only its weights change."""
    X = tf.concat([image_batch, generated_images], axis=0)
    y_dis = tf.concat([tf.fill([tf.shape(image_batch)[0], 1], real_label),
                       tf.zeros([tf.shape(generated_images)[0], 1])], axis=0)
    weights = discriminator.trainable_weights
    with tf.GradientTape() as tape:
        d_loss = binary_crossentropy(y_dis, discriminator(X, training=True))  # extra: Keras' loss, exact
    discriminator.optimizer.apply(tape.gradient(d_loss, weights), weights)
    return d_loss


def train_generator(gan, generator, noise):
    """Fakes labelled 1, through the frozen discriminator: only the generator's weights change."""
    y_gen = tf.ones([tf.shape(noise)[0], 1])
    weights = generator.trainable_weights
    with tf.GradientTape() as tape:
        g_loss = binary_crossentropy(y_gen, gan(noise, training=True))  # extra: Keras' loss, exact
    gan.optimizer.apply(tape.gradient(g_loss, weights), weights)
    return g_loss


def make_train_step(generator, discriminator, gan, x_train, batch_size, random_dim, real_label,
                    rng, ema_generator=None, ema_decay=0.0):
    """The tutorial's loop body, `steps` times in one compiled call (its overhead paid once); `rng` draws the noise."""
    if BACKEND == "jax":  # extra: the same step for Keras' JAX backend
        return make_jax_train_step(generator, discriminator, gan, x_train, batch_size, random_dim,
                                   real_label, rng, ema_generator, ema_decay)  # extra
    images = tf.convert_to_tensor(x_train)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])  # one graph for any number of steps
    def train_step(steps):
        losses = tf.TensorArray(tf.float32, size=steps)  # each step's (d_loss, g_loss)
        for i in tf.range(steps):
            # Get a random set of input noise and images (with replacement, as in the tutorial)
            noise = keras.random.normal((batch_size, random_dim), seed=rng)
            index = keras.random.randint((batch_size,), 0, len(x_train), seed=rng)
            image_batch = tf.gather(images, index)
            # Generate fake MNIST images
            generated_images = generator(noise, training=False)
            d_loss = train_discriminator(discriminator, image_batch, generated_images, real_label)
            # Train generator on fresh noise
            noise = keras.random.normal((batch_size, random_dim), seed=rng)
            g_loss = train_generator(gan, generator, noise)
            if ema_generator is not None:  # extra: the moving average that draws the grids
                update_ema(ema_generator, generator, ema_decay, tf.cast(gan.optimizer.iterations, "float32"))  # extra
            losses = losses.write(i, tf.stack([d_loss, g_loss]))
        return losses.stack()

    return train_step


# %% The tutorial, 7: the 10x10 grid of generated digits
def plot_generated_images(generator, noise, path, dim=(10, 10), figsize=(10, 10)):
    generated_images = keras.ops.convert_to_numpy(generator(noise, training=False))
    generated_images = generated_images.reshape(len(noise), 28, 28)
    fig = plt.figure(figsize=figsize)
    for i in range(generated_images.shape[0]):
        plt.subplot(dim[0], dim[1], i + 1)
        plt.imshow(generated_images[i], interpolation="nearest", cmap="gray_r")
        plt.axis("off")
    plt.tight_layout()
    return save_figure(fig, path, grey=True)  # extra: an 8-bit grey PNG, written whole


# %% The tutorial, 8: the training loop
def train(x_train, args, run):
    """The tutorial's train(epochs, batch_size), settings in `args`; `run` keeps losses, grids, scores, checkpoint."""
    batch_count = len(x_train) // args.batch_size
    with precision_policy(args.precision):  # extra: the layers built here compute in this precision
        generator = get_generator(args.random_dim)
        discriminator = get_discriminator(get_optimizer(args.learning_rate, args.beta_1, 1), args.minibatch_stddev)
        gan = get_gan_network(discriminator, args.random_dim, generator,
                              get_optimizer(args.learning_rate, args.beta_1, 2))
    ema_generator = get_ema_generator(generator) if args.ema_decay > 0 else None  # extra
    rng = keras.random.SeedGenerator(args.seed)
    train_step = make_train_step(generator, discriminator, gan, x_train, args.batch_size,
                                 args.random_dim, args.real_label, rng, ema_generator, args.ema_decay)
    start = run.begin(generator, discriminator, gan, ema_generator, rng)  # extra: 1, or after the checkpoint

    for e in range(start, args.epochs + 1):
        with tqdm(total=batch_count, desc=f"Epoch {e}/{args.epochs}", leave=False, disable=None) as bar:
            for done in range(0, batch_count, args.steps_per_call):  # extra: several batches a call
                steps = min(args.steps_per_call, batch_count - done)  # (the epoch's last call: the rest)
                d_loss, g_loss = run.after_steps(train_step(steps))  # extra: a diverged loss ends the run here
                bar.set_postfix(d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}", refresh=False)
                bar.update(steps)  # (disable=None: no bar in a log file, which gets the epoch lines)
        run.end_epoch(e)  # extra: checks the weights, writes losses.csv
        if e == 1 or e % args.sample_every == 0 or e == args.epochs:
            path = os.path.join(args.out_dir, f"gan_generated_image_epoch_{e}.png")  # the tutorial's name
            plot_generated_images(ema_generator or generator, run.grid_noise(), path)  # extra: the fixed noise
        run.save_epoch(e)  # extra: the scores, the epoch's line, the checkpoint
    run.finish()  # extra: generator.keras


# %% Not in the tutorial: the harness (run this cell before calling train or main)
# =================================================================================================
# NOT IN THE TUTORIAL. Everything below serves the code above and changes nothing it trains but
# the step numbers of the tutorial's shared Adam (adam_step) and the opt-in --minibatch-stddev.
# =================================================================================================
import argparse  # the harness's own imports
import contextlib
import csv
import hashlib
import io
import json
import pathlib
import shlex
import time

from PIL import Image  # installed with matplotlib

if os.name != "nt":  # the folder lock (Windows has none: two runs into one folder are not stopped there)
    import fcntl

class UsageError(Exception):
    """Bad input: main() prints the message as one line and exits with code 2."""

class RunFailed(Exception):
    """Training diverged: one line, exit code 1."""

# ----------------------------------------------------------------------- writing files whole
def save_atomically(path, write):
    """write(tmp), flush it to disk, rename it over `path`: after a crash `path` is the old file or the
    new one. The temporary's name is fixed (.tmp-NAME): a killed run's is replaced by the next write."""
    path = os.path.realpath(path)  # a linked file stays linked
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))  # keeps the extension
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a stop, too, leaves no temporary behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            e.filename = path  # the file the user knows, not its temporary
        raise
    return path

def save_figure(fig, path, grey=False):
    """The figure as a PNG written whole, then closed; `grey`: 8-bit grey (a grid has no colour)."""
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    return save_atomically(path, lambda tmp: Image.open(png).convert("L").save(tmp, format="PNG") if grey
                           else pathlib.Path(tmp).write_bytes(png.getvalue()))

def write_csv(path, columns, rows):
    text = io.StringIO()
    csv.writer(text).writerows([columns, *rows])
    save_atomically(path, lambda tmp: pathlib.Path(tmp).write_bytes(text.getvalue().encode()))

# -------------------------------------------------------------- the step's speed and exactness
def adam_step(iterations, turn):
    """Adam's step number t (its bias correction: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)) after
    `iterations` updates of one model, as the tutorial's one Adam shared by both models counted."""
    return 2 * iterations + turn

class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam at adam_step's step numbers, by TensorFlow's fused kernel (one pass over a
    weight, not nine). It reads private parts of Keras' Adam, which tests/test_step.py checks."""

    def update_step(self, gradient, variable, learning_rate):
        i, dtype = self._get_variable_index(variable), variable.dtype
        step = tf.cast(adam_step(self.iterations, self.turn), dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[i].handle, v=self._velocities[i].handle,
            beta1_power=beta_1 ** step, beta2_power=beta_2 ** step, lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))

if BACKEND == "tensorflow":
    @tf.custom_gradient
    def sigmoid_cross_entropy(labels, logits):
        """TensorFlow's, its gradient one expression: TensorFlow's own sums four terms in an order
        that depends on thread timing, and same-seed runs drifted apart."""
        return (tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits),
                lambda upstream: (None, upstream * (tf.sigmoid(logits) - labels)))

def binary_crossentropy(y_true, y_pred):
    """Keras' binary cross-entropy, from the sigmoid's input kept in the output's private `_keras_logits`."""
    return tf.reduce_mean(sigmoid_cross_entropy(y_true, y_pred._keras_logits))

@contextlib.contextmanager
def precision_policy(precision):
    """Layers built inside compute in "float32" or "bfloat16" (Keras' mixed precision, float32 weights)."""
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")

def get_ema_generator(generator):
    """A copy of the generator, never trained, that follows its weights' moving average (EMA): cleaner grids."""
    ema_generator = keras.models.clone_model(generator)
    ema_generator.set_weights(generator.get_weights())
    return ema_generator

def update_ema(ema_generator, generator, decay, step):
    """ema = d * ema + (1 - d) * weight after step `step`, d = min(decay, (1 + step) / (10 + step)) as in
    TensorFlow's ExponentialMovingAverage: early on it forgets the random initial weights quickly."""
    decay = tf.minimum(decay, (1.0 + step) / (10.0 + step))
    for ema_weight, weight in zip(ema_generator.weights, generator.weights):
        ema_weight.assign_sub((1.0 - decay) * (ema_weight - weight))  # = the rule above

def minibatch_stddev_layer(group):
    """--minibatch-stddev: ProGAN's minibatch standard deviation (Karras et al. 2018). Each digit gets one
    more feature: the mean standard deviation of the features in its group of `group` digits (reals
    and fakes apart). A generator that draws too many of one digit makes groups alike: now seen."""
    def add_feature(x):
        groups = keras.ops.reshape(keras.ops.cast(x, "float32"), (-1, group, x.shape[-1]))
        stddev = keras.ops.sqrt(keras.ops.var(groups, axis=1) + 1e-8)  # (groups, features)
        feature = keras.ops.repeat(keras.ops.mean(stddev, axis=-1, keepdims=True), group, axis=0)
        return keras.ops.concatenate([x, keras.ops.cast(feature, x.dtype)], axis=-1)
    return layers.Lambda(add_feature, output_shape=lambda shape: (*shape[:-1], shape[-1] + 1), name="minibatch_stddev")

# -------------------------------------------------------------------------- Keras' JAX backend
def make_jax_train_step(generator, discriminator, gan, x_train, batch_size, random_dim, real_label,
                        rng, ema_generator=None, ema_decay=0.0):
    """make_train_step for KERAS_BACKEND=jax: the same steps with Keras' stateless API, by lax.scan in one jax.jit
    call (compiled once per number of steps); it reads every variable and writes them back (checkpoint, grids)."""
    import jax
    import jax.numpy as jnp
    with contextlib.suppress(ImportError, AttributeError):  # JAX draws random bits on a CPU in a loop: unrolled,
        from jax._src.random import threefry2x32 as t  # as on a GPU, the same bits cost the step 4 ms less (13%)
        jax.interpreters.mlir.register_lowering(t.threefry2x32_p, t._threefry2x32_lowering_rule, platform="cpu")

    images = jnp.asarray(x_train)
    d_optimizer, g_optimizer = discriminator.optimizer, gan.optimizer
    groups = [generator.trainable_variables, generator.non_trainable_variables, discriminator.trainable_variables,
              discriminator.non_trainable_variables, d_optimizer.variables, g_optimizer.variables,
              ema_generator.variables if ema_generator is not None else [], [rng.state]]
    d_steps, g_steps = (next(i for i, v in enumerate(o.variables) if v is o.iterations)
                        for o in (d_optimizer, g_optimizer))

    def apply(optimizer, steps, slots, grads, train):
        # Keras' Adam takes t = iterations + 1: it is handed adam_step(n, turn) - 1, then its count n + 1
        n = slots[steps]
        slots = slots[:steps] + [adam_step(n, optimizer.turn) - 1] + slots[steps + 1:]
        train, slots = optimizer.stateless_apply(slots, grads, train)
        return train, slots[:steps] + [n + 1] + slots[steps + 1:]

    def discriminator_logits(trainable, non_trainable, x):
        # the output before the sigmoid: on JAX Keras cannot keep the logits on the output as on
        # TensorFlow (`_keras_logits`), and its loss would clip the probabilities (as Keras 2 did)
        last = discriminator.layers[-1]
        sigmoid, last.activation = last.activation, keras.activations.linear  # while it is traced
        try:
            return discriminator.stateless_call(trainable, non_trainable, x, training=True)
        finally:
            last.activation = sigmoid

    def sigmoid_cross_entropy(labels, logits):  # tf.nn.sigmoid_cross_entropy_with_logits' formula
        return jnp.mean(jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits))))

    def d_loss(d_train, d_fixed, x, y):
        logits, d_fixed = discriminator_logits(d_train, d_fixed, x)
        return sigmoid_cross_entropy(y, logits), d_fixed

    def g_loss(g_train, g_fixed, d_train, d_fixed, noise):  # only g_train is differentiated
        fakes, g_fixed = generator.stateless_call(g_train, g_fixed, noise, training=True)
        logits, d_fixed = discriminator_logits(d_train, d_fixed, fakes)
        return sigmoid_cross_entropy(jnp.ones_like(logits), logits), (g_fixed, d_fixed)

    def step(state, _):  # one step, as lax.scan calls it: (state, unused) -> (state, its losses)
        g_train, g_fixed, d_train, d_fixed, d_slots, g_slots, ema, (seed,) = state
        with keras.StatelessScope(state_mapping=[(rng.state, seed)]) as scope:
            noise = keras.random.normal((batch_size, random_dim), seed=rng)
            index = keras.random.randint((batch_size,), 0, len(x_train), seed=rng)
            fresh_noise = keras.random.normal((batch_size, random_dim), seed=rng)
            seed = scope.get_current_value(rng.state)
        fakes, _ = generator.stateless_call(g_train, g_fixed, noise, training=False)
        x = jnp.concatenate([images[index], fakes])
        y = jnp.concatenate([jnp.full((batch_size, 1), real_label), jnp.zeros((batch_size, 1))])
        (dl, d_fixed), grads = jax.value_and_grad(d_loss, has_aux=True)(d_train, d_fixed, x, y)
        d_train, d_slots = apply(d_optimizer, d_steps, d_slots, grads, d_train)
        (gl, (g_fixed, d_fixed)), grads = jax.value_and_grad(g_loss, has_aux=True)(
            g_train, g_fixed, d_train, d_fixed, fresh_noise)
        g_train, g_slots = apply(g_optimizer, g_steps, g_slots, grads, g_train)
        if ema:
            t = g_slots[g_steps].astype("float32")  # update_ema's rule
            rate = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
            ema = [e - (1.0 - rate) * (e - w) for e, w in zip(ema, g_train + g_fixed)]
        return [g_train, g_fixed, d_train, d_fixed, d_slots, g_slots, ema, [seed]], jnp.stack([dl, gl])

    steps_in_one_call = jax.jit(lambda state, steps: jax.lax.scan(step, state, length=steps), static_argnums=1)

    def train_step(steps):
        state, losses = steps_in_one_call([[v.value for v in group] for group in groups], steps)
        for variable, value in zip(sum(groups, []), sum(state, [])):
            variable.assign(value)
        return losses

    return train_step

# ---------------------------------------------------------------------------------- data files
MNIST_SHA256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"  # train-images-idx3-ubyte

def read_digits(data):
    """The uint8 digits (N, 28, 28) of the subset, an .npz (x_train) or an idx folder, and the source's name."""
    path = SUBSET_PATH if data == "subset" else data
    fix = ("it is the bundled subset: restore it with `git checkout -- data/mnist_5k.npz`" if data == "subset"
           else "pass --data auto, mnist, subset, an .npz like Keras' mnist.npz or a folder of MNIST's idx files")
    try:
        if os.path.isdir(path):  # MNIST's idx files: a 16-byte header, then a byte a pixel
            x_train = np.fromfile(os.path.join(path, "train-images-idx3-ubyte"), "u1", offset=16).reshape(-1, 28, 28)
        else:
            with np.load(path) as f:
                x_train = f["x_train"]
    except Exception as e:  # missing, unreadable, not an .npz, no x_train, damaged
        why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        raise UsageError(f"cannot read digits from {path} ({why}): {fix}") from None
    if (x_train.ndim != 3 or x_train.shape[1:] != (28, 28) or not len(x_train) or x_train.dtype.kind not in "iu"
            or x_train.min() < 0 or x_train.max() > 255):
        raise UsageError(f"x_train in {path} holds {x_train.dtype} of shape {x_train.shape}: MNIST's digits are "
                         "integers 0..255 (times 255 if yours are in 0..1) of shape (N, 28, 28)")
    x_train = x_train.astype(np.uint8)
    header = b"".join(n.to_bytes(4, "big") for n in (2051, 60000, 28, 28))
    full = x_train.shape == (60000, 28, 28) and hashlib.sha256(header + x_train.tobytes()).hexdigest() == MNIST_SHA256
    return x_train, "mnist" if full else "subset" if data == "subset" else os.path.abspath(data)

def fall_back_to_subset(data, error):
    """Keras could not load full MNIST: the bundled subset for "auto", a UsageError for "mnist"."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if data == "mnist":
        raise UsageError(f"cannot load full MNIST ({reason}): go online once, or put Keras' "
                         "mnist.npz in ~/.keras/datasets/, or use --data subset")
    print(f"Full MNIST is unavailable ({reason}); using the bundled 5,000-digit subset.")
    return read_digits("subset")[0]

# ---------------------------------------------------------------------------- the digit scores
# A small MNIST CNN (data/digit_classifier.npz) scores fixed generated digits at every grid: FD (FID's Frechet
# distance on its features), the Inception score's formula (1 to 10), each class's share, their KL from MNIST's.
MNIST_CLASS_SHARES = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]) / 60000
SCORE_COLUMNS = (["epoch", "frechet_distance", "classifier_score", "top_class", "top_share"]
                 + [f"share_{digit}" for digit in range(10)] + ["mix_kl"])

def get_digit_classifier():
    """The scoring CNN: 784 pixels in [-1, 1] -> (64 features, 10 class probabilities)."""
    images = keras.Input(shape=(784,))
    x = layers.Reshape((28, 28, 1))(images)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    features = layers.Dense(64, activation="relu")(layers.Flatten()(x))
    probabilities = layers.Dense(10, activation="softmax")(layers.Dropout(0.3)(features))
    return keras.Model(images, [features, probabilities], name="digit_classifier")

class DigitScorer:
    """The classifier and the statistics of the real held-out digits it compares with."""

    def __init__(self, path):
        fix = ("run in the clone (data/ is there) or git checkout -- data/digit_classifier.npz" if path == CLASSIFIER
               else "pass a file that data/make_digit_classifier.py wrote") + ", or --score-digits 0 for no scores"
        self.model = get_digit_classifier()
        try:
            raw = pathlib.Path(path).read_bytes()
            with np.load(io.BytesIO(raw)) as f:
                arrays = {name: f[name] for name in f.files}
            self.model.set_weights([arrays[f"w{i}"] for i in range(len(self.model.weights))])
            self.mean, cov = (arrays[n].astype(np.float64) for n in ("reference_mean", "reference_cov"))
            self.real = {k: float(arrays["real_" + k]) for k in ("frechet_distance", "classifier_score", "top_share")}
        except Exception as e:  # missing, unreadable, not an .npz, other arrays or shapes
            why = getattr(e, "strerror", None) or type(e).__name__
            raise UsageError(f"cannot use {path} as the digit classifier ({why}): {fix}") from None
        self.fingerprint = hashlib.sha256(raw).hexdigest()[:16]
        self.real["mix_kl"] = 0.0028  # of the held-out digits that set real_* above (measured once)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        self.cov_sqrt = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
        self.predict = tf.function(self.model) if BACKEND == "tensorflow" else self.model.predict_on_batch

    def __call__(self, images, epoch=0):
        """The scores of `images` (N, 784) in [-1, 1]: a row of scores.csv (SCORE_COLUMNS), unrounded."""
        features, p = (keras.ops.convert_to_numpy(t).astype(np.float64) for t in self.predict(images))
        p = np.clip(p, 1e-12, 1.0)
        kl = np.sum(p * (np.log(p) - np.log(p.mean(axis=0))), axis=1)  # of each digit's from the mean's
        shares = np.bincount(p.argmax(axis=1), minlength=10) / len(p)
        # Frechet distance: |m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)
        cov = np.cov(features, rowvar=False)
        eigenvalues = np.linalg.eigvalsh(self.cov_sqrt @ cov @ self.cov_sqrt)
        frechet = (np.sum((features.mean(axis=0) - self.mean) ** 2) + np.trace(cov)
                   + np.trace(self.cov_sqrt @ self.cov_sqrt) - 2 * np.sum(np.sqrt(np.clip(eigenvalues, 0, None))))
        mix_kl = np.sum(shares[shares > 0] * np.log(shares[shares > 0] / MNIST_CLASS_SHARES[shares > 0]))
        return ([epoch, float(frechet), float(np.exp(kl.mean())), int(shares.argmax()), float(shares.max())]
                + [float(x) for x in shares] + [float(mix_kl)])

def score_noise(seed, random_dim, count):
    """The noise the scores are drawn from: fixed for a seed, apart from the grids' stream."""
    return np.random.default_rng((seed, 1)).normal(0, 1, size=(count, random_dim)).astype(np.float32)

def describe_scores(row):
    return f"FD {row[1]:.2f}  score {row[2]:.2f}  most common: {row[3]}s {row[4]:.0%}  mix KL {row[15]:.3f}"

def plot_loss(history, path):
    """Both losses (means over each epoch's steps) against the epoch."""
    rows = np.array(history, dtype=np.float64)  # epoch, d_loss, g_loss, seconds
    fig, ax = plt.subplots(figsize=(8, 5), layout="tight")
    ax.plot(rows[:, 0], rows[:, 1:3], label=["discriminator loss", "generator loss"])
    ax.set(xlabel="epoch", ylabel="binary cross-entropy (epoch mean)")
    ax.legend()
    save_figure(fig, path)

def plot_scores(scores, real, path):
    """FD, classifier score, the largest class share and the mix KL against the epoch; dashed: real digits."""
    rows = np.array(scores, dtype=np.float64)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4), layout="tight")
    titles = ("Frechet distance (lower is better)", "classifier score (1 to 10, higher is better)",
              "share of the most common digit", "mix KL from MNIST's classes (lower is better)")
    for ax, column, title in zip(axes, (1, 2, 4, 15), titles):
        ax.plot(rows[:, 0], rows[:, column], marker="o", markersize=3)
        ax.axhline(real[SCORE_COLUMNS[column]], linestyle="--", color="grey", label="real digits")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[0].legend()
    save_figure(fig, path)

def save_gif(grid_paths, path, size=300):
    """The grids in epoch order as an animated GIF, downscaled to `size` pixels a side."""
    frames = [Image.open(p).convert("L").resize((size, size), Image.LANCZOS) for p in grid_paths]
    save_atomically(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                     loop=0, duration=[400] * (len(frames) - 1) + [2000]))  # last: 2 s

def show_in_notebook(*paths):
    """In a Jupyter or Colab kernel, show the pictures below the cell as they are written."""
    if "ipykernel" in sys.modules and IN_IPYTHON:
        from IPython.display import Image as Picture, display
        for path in filter(os.path.exists, paths):
            display(Picture(filename=path, width=min(Image.open(path).size[0], 500)))

# ----------------------------------------------------------------- the run: what train() calls
def grid_noise(rng, random_dim):
    return rng.normal(0, 1, size=(100, random_dim)).astype(np.float32)

def command(args, resume):
    """The line that runs this again where the user is: a shell, %run or main()."""
    argv = [a for a in args._argv if a != "--resume"] + (["--resume"] if resume else [])
    if args._called == "main":
        return f"gan_mnist.main({argv!r})"
    return f"{'%run' if IN_IPYTHON else 'python'} {shlex.join([sys.argv[0]] + argv)}"

class Run:
    """What train() hands its bookkeeping to: the data, the loss and score history, the grid and score
    noise, the checkpoint and the run's folders (`with run:` locks them)."""
    SETTINGS = ("batch_size", "random_dim", "seed", "learning_rate", "beta_1", "real_label", "ema_decay",
                "fixed_noise", "precision", "minibatch_stddev", "score_digits")  # a resume must keep them

    def __init__(self, args):
        """All that is checked before a model is built or a folder made (classifier, data, checkpoint); the seed."""
        self.args, self.saved_epoch, self.history, self.scores = args, 0, [], []  # rows of losses.csv, scores.csv
        self.scorer = DigitScorer(args.classifier) if args.score_digits else None
        self.x_train, source = load_mnist_data(args.data, args.limit)
        digits = len(self.x_train)
        if args.batch_size > digits or args.batch_size % (args.minibatch_stddev or 1):
            raise UsageError(f"--batch-size {args.batch_size} must be at most the {digits} training digits (--limit)"
                             f"{' and a multiple of --minibatch-stddev' if args.minibatch_stddev else ''}")
        name = source if source in ("mnist", "subset") else (  # one folder per training set
            f"{pathlib.Path(source).stem}-{hashlib.sha256(source.encode()).hexdigest()[:6]}")
        name += f"-first{args.limit}" if args.limit == digits else ""
        args.out_dir = args.out_dir.replace("{data}", name)
        args.checkpoint_dir = (args.checkpoint_dir or args.out_dir).replace("{data}", name)
        self.config = {**{key: getattr(args, key) for key in self.SETTINGS}, "data": source, "digits": digits,
                       "digits_sha256": hashlib.sha256(self.x_train).hexdigest()[:16], "backend": BACKEND,
                       "classifier_sha256": self.scorer and self.scorer.fingerprint}
        self.checkpoint = os.path.join(args.checkpoint_dir, "checkpoint.npz")
        self.saved = self.read_checkpoint() if args.resume else None
        self.grid_rng = np.random.default_rng(args.seed)  # its own stream: plotting never shifts training
        self.fixed_noise = grid_noise(self.grid_rng, args.random_dim)
        self.score_noise = score_noise(args.seed, args.random_dim, args.score_digits)
        print("Config: " + ", ".join(f"{k}={v}" for k, v in vars(args).items() if v is not None and k[0] != "_"))
        if BACKEND == "jax" and "tensorflow" not in sys.modules:  # Keras would load TensorFlow just to seed it
            sys.modules["tensorflow"] = None
            keras.utils.set_random_seed(args.seed)
            del sys.modules["tensorflow"]
        else:
            keras.utils.set_random_seed(args.seed)  # python, numpy and the backend's
        print(f"Training on {digits} digits ({source}), {digits // args.batch_size} steps per epoch, on {BACKEND}.")

    def __enter__(self):
        """One run per folder: an OS lock (flock) on its .lock, which the kernel drops when the process ends."""
        self.locks = []
        for folder in dict.fromkeys(os.path.realpath(d) for d in (self.args.out_dir, self.args.checkpoint_dir)):
            try:
                os.makedirs(folder, exist_ok=True)
                self.locks.append(open(os.path.join(folder, ".lock"), "a"))
                if os.name != "nt":
                    fcntl.flock(self.locks[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another run is using {folder}: wait, or pick another --out-dir") from None
            except OSError as e:
                raise UsageError(f"cannot write to folder {folder} ({e.strerror}): pick another --out-dir") from None
        self.stop, stop = False, lambda *_: setattr(self, "stop", True)  # Ctrl-C, SIGTERM: a flag (after_steps)
        self.handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.handlers.items():
            signal.signal(s, handler)
        for lock in self.locks:
            lock.close()

    def read_checkpoint(self):
        """(meta, arrays) to resume; refused if missing, damaged, or made with other settings or digits."""
        try:
            with np.load(self.checkpoint) as f:
                meta, arrays = json.loads(str(f["meta"])), [f[f"v{i}"] for i in range(len(f.files) - 1)]
            meta["epoch"], meta["history"], meta["scores"], meta["grid_rng"]  # noqa: B018
        except Exception as e:  # missing, unreadable, damaged
            why = getattr(e, "strerror", None) or f"damaged: {type(e).__name__}"
            raise UsageError(f"cannot resume from {self.checkpoint} ({why}): start without --resume") from None
        for key, value in self.config.items():
            if meta["config"].get(key) != value:
                raise UsageError(f"checkpoint {self.checkpoint} was made with {key}={meta['config'].get(key)!r}, "
                                 f"not {value!r}: resume with the same settings (KERAS_BACKEND too) or start "
                                 "without --resume")
        return meta, arrays

    def on_disk(self):  # the epoch of the checkpoint on disk (0: none): what a stop or a failure can promise
        try:
            with np.load(self.checkpoint) as f:
                return json.loads(str(f["meta"]))["epoch"]
        except Exception:
            return 0

    def begin(self, generator, discriminator, gan, ema_generator, rng):
        """Restore the checkpoint with --resume; the first epoch to train."""
        self.sampler = ema_generator or generator  # what draws the grids and generator.keras
        self.variables = (generator.variables + discriminator.variables + discriminator.optimizer.variables
                          + gan.optimizer.variables + (ema_generator.variables if ema_generator else []) + [rng.state])
        if self.saved:
            meta, arrays = self.saved
            for variable, array in zip(self.variables, arrays):
                variable.assign(array)
            self.history, self.scores = [tuple(row) for row in meta["history"]], meta["scores"]
            self.grid_rng.bit_generator.state, self.saved_epoch = meta["grid_rng"], meta["epoch"]
            print(f"Resuming from {self.checkpoint} after epoch {self.saved_epoch} (of --epochs {self.args.epochs}).")
        elif os.path.exists(self.checkpoint):
            print(f"Starting a new run: {self.checkpoint} will be replaced after epoch 1 (--resume continues it).")
        self.started, self.d_sum, self.g_sum, self.steps = time.perf_counter(), 0.0, 0.0, 0
        return self.saved_epoch + 1

    def after_steps(self, losses):
        """A call's (d_loss, g_loss) of each step, summed for the epoch's means; the last step's."""
        for d_loss, g_loss in keras.ops.convert_to_numpy(losses).tolist():
            if not (0 <= d_loss < 100 and 0 <= g_loss < 100):  # NaN, inf, or a saturated sigmoid
                self.diverged(f"step {self.steps + 1}", d_loss, g_loss)
            self.d_sum, self.g_sum, self.steps = self.d_sum + d_loss, self.g_sum + g_loss, self.steps + 1
        if self.stop:  # Ctrl-C, SIGTERM: raised here, as TensorFlow's C code cannot take a KeyboardInterrupt
            raise KeyboardInterrupt
        return d_loss, g_loss

    def end_epoch(self, epoch):
        """Check the weights before anything of the epoch is written, then record its losses."""
        self.seconds = time.perf_counter() - self.started
        d_loss, g_loss = self.d_sum / self.steps, self.g_sum / self.steps
        self.arrays = [keras.ops.convert_to_numpy(v) for v in self.variables]
        if not all(np.isfinite(a).all() for a in self.arrays if a.dtype.kind == "f"):
            self.diverged("its end (a weight is not finite)", d_loss, g_loss)
        self.history.append((epoch, d_loss, g_loss, round(self.seconds, 3)))
        write_csv(self.path("losses.csv"), ("epoch", "d_loss", "g_loss", "seconds"), self.history)

    def path(self, name):
        return os.path.join(self.args.out_dir, name)

    def grid_noise(self):
        return self.fixed_noise if self.args.fixed_noise else grid_noise(self.grid_rng, self.args.random_dim)

    def grids(self, last):
        """The grids of epochs 1..last on disk, in epoch order."""
        paths = (self.path(f"gan_generated_image_epoch_{k}.png") for k in range(1, last + 1)
                 if k == 1 or k % self.args.sample_every == 0 or k == max(self.args.epochs, self.saved_epoch))
        return [p for p in paths if os.path.exists(p)]

    def save_epoch(self, epoch):
        """The epoch's line; at grid epochs the scores, plots and GIF; then the checkpoint."""
        _, d_loss, g_loss, _ = self.history[-1]
        line = f"Epoch {epoch}/{self.args.epochs}: d_loss {d_loss:.4f}  g_loss {g_loss:.4f}  {self.seconds:.1f}s"
        grids, drawn = self.grids(epoch), self.path(f"gan_generated_image_epoch_{epoch}.png")
        if drawn in grids:
            if self.scorer:
                row = self.scorer(self.sampler(self.score_noise, training=False), epoch)
                self.scores.append([round(x, 4) for x in row])
                line += f"  | {describe_scores(row)}"
                write_csv(self.path("scores.csv"), SCORE_COLUMNS, self.scores)
                plot_scores(self.scores, self.scorer.real, self.path("scores.png"))
            plot_loss(self.history, self.path("gan_loss.png"))
            save_gif(grids, self.path("progress.gif"))
        print(line)
        show_in_notebook(*[drawn] if drawn in grids else [])
        meta = json.dumps({"epoch": epoch, "config": self.config, "history": self.history,
                           "scores": self.scores, "grid_rng": self.grid_rng.bit_generator.state})
        arrays = {f"v{i}": a for i, a in enumerate(self.arrays)}
        save_atomically(self.checkpoint, lambda tmp: np.savez(tmp, meta=meta, **arrays))
        self.saved_epoch, self.started, self.d_sum, self.g_sum, self.steps = epoch, time.perf_counter(), 0.0, 0.0, 0

    def finish(self):
        """generator.keras, and the run's pictures below a notebook cell."""
        save_atomically(self.path("generator.keras"), self.sampler.save)  # the temporary keeps .keras
        print(f"Done: {len(self.grids(self.saved_epoch))} grids and the run's other files in {self.args.out_dir}/")
        show_in_notebook(*(self.path(name) for name in ("gan_loss.png", "scores.png", "progress.gif")))

    def diverged(self, where, d_loss, g_loss):
        kept = f"{self.checkpoint} keeps epoch {self.on_disk()}, the last good one" if self.on_disk() else "none saved"
        raise RunFailed(f"training diverged in epoch {self.saved_epoch + 1} at {where} (d_loss {d_loss:.4g}, g_loss "
                        f"{g_loss:.4g}); {kept}: lower --learning-rate ({self.args.learning_rate}) or check the data")

    def what_next(self):
        """What the checkpoint on disk holds and the command that carries on from it."""
        if self.on_disk():
            return f"{self.checkpoint} holds epoch {self.on_disk()}; resume with: {command(self.args, resume=True)}"
        return f"no checkpoint was written; start again with: {command(self.args, resume=False)}"

def load_generator(path):
    """A generator.keras: one noise vector in, 784 pixels out."""
    advice = "pass the generator.keras that a training run wrote"
    try:
        open(path, "rb").close()  # the OS's reason first: missing, a folder, no permission
        generator = keras.models.load_model(path, compile=False)
    except Exception as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        raise UsageError(f"cannot load a generator from {path} ({why}): {advice}") from None
    shapes = [[tuple(t.shape) for t in ts] for ts in (getattr(generator, "inputs", None) or [], generator.outputs)]
    if len(shapes[0]) != 1 or len(shapes[0][0]) != 2 or shapes[1] != [(None, 784)]:
        raise UsageError(f"{path} is not a generator of this script: it takes {shapes[0]} and gives {shapes[1]}, "
                         f"not one noise vector and 784 pixels; {advice}")
    return generator

def generate(args):
    """--generate: a 10x10 grid from a saved generator, the run's grid for the same seed."""
    out = args.out or os.path.join(os.path.dirname(args.generate), "generated.png")
    if not out.lower().endswith(".png") or os.path.isdir(out):  # never a generator, checkpoint or data
        raise UsageError(f"--out {out} is not the path of a .png file: pass the PNG to write")
    try:  # found out before the work
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        if not os.access(os.path.dirname(out) or ".", os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise UsageError(f"cannot write --out {out} ({e.filename}: {e.strerror}): pick another --out") from None
    generator = load_generator(args.generate)
    plot_generated_images(generator, grid_noise(np.random.default_rng(args.seed), generator.inputs[0].shape[-1]), out)
    print(f"Wrote {out}")

def score_file(args):
    """--score: the scores of a saved generator, beside real digits'."""
    if not args.score_digits:
        raise UsageError("--score-digits 0 scores no digits: pass 100 or more with --score")
    scorer, generator = DigitScorer(args.classifier), load_generator(args.score)
    print("Real digits: FD {frechet_distance:.2f}  score {classifier_score:.2f}  mix KL {mix_kl:.3f}"
          .format(**scorer.real))
    row = scorer(generator(score_noise(args.seed, generator.inputs[0].shape[-1], args.score_digits), training=False))
    print(f"{args.score} ({args.score_digits} digits, seed {args.seed}): {describe_scores(row)}")
    print("class shares: " + "  ".join(f"{d}: {x:.1%}" for d, x in enumerate(row[5:15])))

# ---------------------------------------------------------------------------- the command line
def checked(kind, rule, test=lambda value: value >= 1):
    """An argparse type: kind(text), refused unless test(value)."""
    def parse(text):
        if not test(value := kind(text)):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text} (the flag, or its constant)")
        return value
    parse.__name__ = kind.__name__  # argparse: "invalid int value: 'x'"
    return parse

class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2 through main(), as all bad input
        raise UsageError(f"{message} (--help lists the flags)")

def get_args(argv=None):
    """The flags, their defaults the constants as text: argparse checks an edited constant as a flag."""
    p = ArgumentParser(description="Train the Keras MNIST GAN tutorial's model.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    whole = checked(int, "1 or more")
    for flag, constant, kind, help in (
            ("--epochs", EPOCHS, whole, "passes over the training digits"),
            ("--batch-size", BATCH_SIZE, whole, "real digits per step"),
            ("--sample-every", SAMPLE_EVERY, whole, "a grid at epoch 1, every N epochs and the last"),
            ("--steps-per-call", STEPS_PER_CALL, whole, "batches trained by one compiled call"),
            ("--seed", SEED, checked(int, "0 to 2**32 - 1", lambda v: 0 <= v < 2**32), "the random seed"),
            ("--limit", LIMIT, whole, "train on the first N digits only"),
            ("--random-dim", RANDOM_DIM, whole, "length of the generator's noise vector"),
            ("--learning-rate", LEARNING_RATE, checked(float, "above 0, below 1", lambda v: 0 < v < 1), "Adam's"),
            ("--beta-1", BETA_1, checked(float, "from 0 to below 1", lambda v: 0 <= v < 1), "Adam's beta_1"),
            ("--real-label", REAL_LABEL, checked(float, "above 0, at most 1", lambda v: 0 < v <= 1), "1: no smoothing"),
            ("--ema-decay", EMA_DECAY, checked(float, "0 or 0.5 to below 1", lambda v: v == 0 or 0.5 <= v < 1),
             "the grids' moving average of the generator; 0: the raw generator"),
            ("--minibatch-stddev", MINIBATCH_STDDEV, checked(int, "0 or 2 to 64", lambda v: v == 0 or 2 <= v <= 64),
             "the discriminator sees how varied each N digits are (4: an even mix); 0: off"),
            ("--precision", PRECISION, checked(str, "float32 or bfloat16", lambda v: v in ("float32", "bfloat16")),
             "bfloat16: Keras' mixed precision"),
            ("--score-digits", SCORE_DIGITS, checked(int, "0 or 100 to 100000", lambda v: v == 0 or 100 <= v <= 1e5),
             "digits scored at every grid; 0: none"),
            ("--data", DATA, str, "auto (MNIST; offline the bundled subset), mnist, subset, an .npz or an idx folder"),
            ("--out-dir", OUT_DIR, str, "folder for the grids, losses, scores, generator.keras and checkpoint"),
            ("--checkpoint-dir", CHECKPOINT_DIR, str, "folder for checkpoint.npz [the --out-dir]"),
            ("--classifier", CLASSIFIER, str, "the digit classifier that scores")):
        p.add_argument(flag, type=kind, default=None if constant is None else str(constant), help=help)
    p.add_argument("--fixed-noise", action=argparse.BooleanOptionalAction, default=FIXED_NOISE, help="grids' noise")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--generate", metavar="PATH.keras", help="only draw a grid from a saved generator")
    p.add_argument("--out", help="with --generate: the PNG to write [generated.png beside the model]")
    p.add_argument("--score", metavar="PATH.keras", help="only print the scores of a saved generator")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    args._argv, args._called = list(sys.argv[1:] if argv is None else argv), "script" if argv is None else "main"
    return args

def main(argv=None):
    """Every way the script ends, in one place: 0 done, 1 failed (diverged, a write), 2 bad input, 130 stopped."""
    run = None
    try:
        args = get_args(argv)
        if args.generate:
            generate(args)
        elif args.score:
            score_file(args)
        else:
            with (run := Run(args)):
                train(run.x_train, args, run)
        return 0
    except UsageError as e:
        print(f"gan_mnist.py: error: {e}", file=sys.stderr)
        return 2
    except (RunFailed, OSError) as e:  # training diverged, or a write failed (a full disk, ...)
        failed = f"cannot write {e.filename} ({e.strerror}); {run.what_next()}" if run and isinstance(e, OSError) else e
        print(f"gan_mnist.py: stopped: {failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopped" + (f"; {run.what_next()}" if run else "; nothing was written."))
        return 130

# %% Run it: python gan_mnist.py in a terminal, %run gan_mnist.py in a notebook, or main([...])
if __name__ == "__main__" and "__file__" in globals():  # not in cells, which have no __file__
    exit_code = main()
    if not IN_IPYTHON:  # %run: the kernel lives on; the last line said how the run ended
        sys.exit(exit_code)
