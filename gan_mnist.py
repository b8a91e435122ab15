"""gan_mnist: the classic "write your first GAN in Keras" MNIST tutorial, on today's Keras 3.

A faithful port of Stefan Hosein's tutorial "Demystifying Generative Adversarial Networks"
(its code comes from Zackory/Keras-MNIST-GAN): a three-hidden-layer LeakyReLU generator, a
dropout discriminator and a combined model in which the discriminator is frozen, trained with
one-sided label smoothing; a 10x10 grid of generated digits is saved every SAMPLE_EVERY epochs.
Read it top to bottom: the constants, a little start-up code, then the tutorial's parts in its
order and with its names, up to the end of train(). Lines there marked "# extra:" call the code
below the banner, which is not in the tutorial.

    python gan_mnist.py                  # the tutorial's run: 400 epochs (--help lists the flags)
    python gan_mnist.py --resume         # continue a stopped run
    python gan_mnist.py --minibatch-stddev 4   # not in the tutorial: a more even mix of digits
    python gan_mnist.py --generate samples/mnist/generator.keras --out digits.png
    KERAS_BACKEND=jax python gan_mnist.py
"""
# %% The control panel: the imports and the constants to edit
import builtins
import contextlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys

# ---- data
DATA = "auto"  # "auto": Keras' MNIST, or the bundled subset offline; "mnist"; "subset"; an .npz or idx folder
LIMIT = None  # train on the first LIMIT digits only (quick tries); None = all of them
HERE = os.path.dirname(os.path.realpath(globals().get("__file__", "gan_mnist.py")))  # also through a link, or in cells
SUBSET_PATH = os.path.join(HERE, "data", "mnist_5k.npz")
# ---- model
RANDOM_DIM = 100  # length of the generator's input noise vector (tutorial: 100)
# ---- optimiser
LEARNING_RATE = 0.0002  # Adam learning rate (tutorial: lr=0.0002)
BETA_1 = 0.5  # Adam beta_1 (tutorial: 0.5)
ADAM_COUNTER = "shared"  # the tutorial's one Adam counted both models' steps; "own": each its own (tutorial: shared)
# ---- training
EPOCHS = 400  # passes over the training digits (tutorial: 400)
BATCH_SIZE = 128  # real digits per step; each step also makes as many fakes (tutorial: 128)
REAL_LABEL = 0.9  # one-sided label smoothing: reals are labelled 0.9, fakes 0 (tutorial: 0.9)
SEED = 10  # seeds numpy and Keras: same seed, same machine, same run (tutorial: 10)
EMA_DECAY = 0.999  # grids come from a moving average of the generator's weights; 0 = raw (tutorial)
PRECISION = "float32"  # "bfloat16": layers compute in bfloat16, weights stay float32 (tutorial: float32)
MINIBATCH_STDDEV = 0  # 4: the discriminator also sees how varied each 4 digits are; evens the mix (tutorial: 0)
# ---- output
SAMPLE_EVERY = 20  # save a grid at epoch 1, every SAMPLE_EVERY epochs and the last (tutorial: 20)
FIXED_NOISE = True  # every grid shows the same 100 noise vectors; False = fresh noise (tutorial)
SCORE_DIGITS = 2000  # digits drawn to score the generator at every grid (below); 0 = no scores
CLASSIFIER = os.path.join(HERE, "data", "digit_classifier.npz")
OUT_DIR = "samples/{data}"  # grids, losses, scores, GIF, generator.keras; {data}: mnist, subset, ...
CHECKPOINT_DIR = "checkpoints/{data}"  # checkpoint.npz, rewritten after every epoch, for --resume


# %% Start-up: the backend Keras will pick, checked before it loads; the libraries, loaded quietly
def stop_while_starting(*_):
    """Ctrl-C or SIGTERM while the libraries load: stop at once (os.write: a print may hold stdout's lock)."""
    os.write(1, b"Stopped while starting; nothing was written.\n")
    os._exit(130)


def keras_backend():
    """(backend, trouble): the backend as Keras picks it (KERAS_BACKEND, else keras.json's, else
    TensorFlow), and a sentence if Keras cannot start on it here (None if it can)."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~" if os.access(os.path.expanduser("~"), os.W_OK)
                                                        else "/tmp", ".keras")
    path, config, names = os.path.expanduser(os.path.join(home, "keras.json")), {}, {"tensorflow": "TensorFlow",
                                                                                      "jax": "JAX"}
    with contextlib.suppress(OSError, ValueError, TypeError):  # Keras ignores a keras.json it cannot parse
        with open(path) as f:
            config = dict(json.load(f))
    for key, allowed in (("floatx", ("float16", "float32", "float64")),
                         ("image_data_format", ("channels_last", "channels_first"))):
        if config.get(key, allowed[0]) not in allowed:
            return None, f"{path} sets {key} to {config[key]!r}, which Keras refuses: use {' or '.join(allowed)}"
    backend, where = ((os.environ["KERAS_BACKEND"], "KERAS_BACKEND") if os.environ.get("KERAS_BACKEND") else
                      (config.get("backend", "tensorflow"), path if "backend" in config else "the default"))
    def installed(name):
        with contextlib.suppress(ImportError, ValueError):  # a finder may say "not installed" so
            return importlib.util.find_spec(name) is not None
    backend, there = str(backend).lower(), [b for b in names if installed(b)]
    use = f"run KERAS_BACKEND={there[0]} python gan_mnist.py" if there and there[0] != backend else "pip install tensorflow"
    if backend not in names:
        return None, (f"Keras' backend here is {backend!r} ({where}), which this script does not support: "
                      f"it runs on tensorflow or jax; {use}")
    if backend not in there:
        return None, (f"Keras' backend here is {backend} ({where}), but {names[backend]} is not installed; {use}"
                      + (f" ({names[there[0]]} is installed)" if there else ""))
    return backend, None


BACKEND, BACKEND_TROUBLE = keras_backend()
if BACKEND_TROUBLE and __name__ != "__main__":
    raise ImportError(BACKEND_TROUBLE)
if BACKEND_TROUBLE:  # one line and exit code 2, before Keras can print a traceback
    print(f"gan_mnist.py: error: {BACKEND_TROUBLE}", file=sys.stderr)
    sys.exit(2)
os.environ["KERAS_BACKEND"] = BACKEND  # what Keras picks anyway; said, for the processes it starts
IN_IPYTHON = hasattr(builtins, "__IPYTHON__")  # %run in Jupyter, Colab or IPython, which handle Ctrl-C
IN_NOTEBOOK = IN_IPYTHON and "ipykernel" in sys.modules  # a kernel: a bar there, grids shown inline
if __name__ == "__main__" and not IN_IPYTHON:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop_while_starting)
    sys.stdout.reconfigure(line_buffering=True)  # each epoch's line reaches a pipe or log file at once
QUIET_START = "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # set it (to 0) to see every start-up line
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow start-up messages
# TensorFlow's notices on a machine without a GPU, which read like failures. A filter process holds
# back these lines only (never a fatal "F" line) and passes every other line at once, so what a
# crash while loading prints still reaches the user.
STARTUP_NOISE = ("All log messages before absl::InitializeLog", "oneDNN custom operations", "cuda drivers",
                 "cuInit", "cuda_platform", "cudart_stub", "Unable to register cu", "computation_placer", "TF-TRT")
NOTICE_FILTER = ("import sys\nfor line in sys.stdin.buffer:\n    if line[:1] == b'F' or not any(n.encode() in line "
                 "for n in sys.argv[1:]):\n        sys.stderr.buffer.write(line)\n        sys.stderr.buffer.flush()")


@contextlib.contextmanager
def quiet_start_up():
    """Send what is written to stderr while the libraries load through the notice filter."""
    if not QUIET_START:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    notices = subprocess.Popen([sys.executable, "-S", "-E", "-c", NOTICE_FILTER, *STARTUP_NOISE],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=saved)
    os.dup2(notices.stdin.fileno(), 2)
    notices.stdin.close()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the filter reads the end of its input, and exits
        os.close(saved)
        notices.wait()


with quiet_start_up():
    import matplotlib
    import numpy as np

    if not IN_IPYTHON:  # a notebook keeps its own backend; figures are closed before they show
        matplotlib.use("Agg")  # draw to files only: no window needed (ssh, CI)
    import keras
    import matplotlib.pyplot as plt
    from keras import initializers, layers
    from PIL import Image, PngImagePlugin  # installed with matplotlib
    if IN_NOTEBOOK and importlib.util.find_spec("ipywidgets"):
        from tqdm.notebook import tqdm  # the notebook's own bar, a widget
    else:
        from tqdm import tqdm

    if BACKEND == "tensorflow":
        import tensorflow as tf
        tf.config.list_physical_devices()  # its device notices now, not at the first step
    else:  # Keras would import TensorFlow just to seed it (and on a GPU it would take the memory)
        sys.modules.setdefault("tensorflow", None)


# =================================================================================================
# %% The tutorial, 1: load MNIST, scale it to [-1, 1], flatten it
def load_mnist_data(data, limit=None):
    """The tutorial's load_minst_data (typo fixed): the training digits as (N, 784) rows in [-1, 1],
    and the source used: "mnist" (also for a file or folder holding exactly MNIST's training
    digits), "subset" or the path. Without network, "auto" falls back to the bundled subset."""
    if data in ("auto", "mnist"):
        try:
            (x_train, _), _ = keras.datasets.mnist.load_data()  # downloaded once, then cached
            source = "mnist"
        except Exception as e:
            x_train, source = fall_back_to_subset(data, e), "subset"  # extra: offline, the bundled subset
    else:
        x_train, source = read_digits(data)  # extra: the bundled subset, an .npz or MNIST's idx files
    if limit and limit > len(x_train):
        print(f"--limit {limit} is more than the {len(x_train)} digits there: training on all of them.")
    x_train = x_train[:limit]
    # normalize our inputs to be in the range [-1, 1]
    x_train = (x_train.astype(np.float32) - 127.5) / 127.5
    # convert x_train with a shape of (60000, 28, 28) to (60000, 784) so we have 784 columns per row
    return x_train.reshape(len(x_train), 784), source


# %% The tutorial, 2: the optimizer, Adam(0.0002, 0.5)
def get_optimizer(learning_rate, beta_1, turn=None):
    """Adam as in the tutorial, one per model (Keras 3 wants that). The tutorial's one Adam counted
    both models' updates, the discriminator's as its steps 1, 3, 5, ... and the generator's as 2,
    4, 6, ...: `turn` 1 or 2 gives a model those step numbers (None: its own count, 1, 2, 3, ...).
    On TensorFlow the same update runs in TensorFlow's fused kernel."""
    adam = FusedAdam if BACKEND == "tensorflow" else keras.optimizers.Adam  # extra: FusedAdam
    optimizer = adam(learning_rate=learning_rate, beta_1=beta_1)
    optimizer.turn = turn  # extra: read where the update is made (adam_step, below the banner)
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
        discriminator.add(MinibatchStddev(minibatch_stddev))  # extra
    discriminator.add(layers.Dense(256))
    discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Dropout(0.3))
    discriminator.add(layers.Dense(1, activation="sigmoid", dtype="float32"))
    discriminator.compile(loss="binary_crossentropy", optimizer=optimizer)
    optimizer.build(discriminator.trainable_weights)
    return discriminator


# %% The tutorial, 5: the combined model, its discriminator frozen
def get_gan_network(discriminator, random_dim, generator, optimizer):
    """noise -> generator -> discriminator. The discriminator is frozen in this model: its steps
    (train_generator) update the generator's weights only. The tutorial froze it with
    `discriminator.trainable = False`; in Keras 3 that flag is shared with the discriminator's own
    model and read when a step is first traced, so set once it would stop the discriminator from
    ever learning. Naming the weights each step updates says the same thing and cannot go stale."""
    gan_input = keras.Input(shape=(random_dim,))  # gan input (noise): random_dim-long vectors
    x = generator(gan_input)  # the output of the generator (an image)
    gan_output = discriminator(x)  # the discriminator's probability that the image is real
    gan = keras.Model(inputs=gan_input, outputs=gan_output, name="gan")
    gan.compile(loss="binary_crossentropy", optimizer=optimizer)
    optimizer.build(generator.trainable_weights)
    return gan


# %% The tutorial, 6: one batch: the discriminator's step, then the generator's
def train_discriminator(discriminator, image_batch, generated_images, real_label):
    """Train the discriminator on reals labelled `real_label` (one-sided label smoothing) and
    fakes labelled 0. Only the discriminator's weights change."""
    X = tf.concat([image_batch, generated_images], axis=0)
    y_dis = tf.concat([tf.fill([tf.shape(image_batch)[0], 1], real_label),
                       tf.zeros([tf.shape(generated_images)[0], 1])], axis=0)
    weights = discriminator.trainable_weights
    with tf.GradientTape() as tape:
        d_loss = binary_crossentropy(y_dis, discriminator(X, training=True))  # extra: Keras' loss, exact
    discriminator.optimizer.apply(tape.gradient(d_loss, weights), weights)
    return d_loss


def train_generator(gan, generator, noise):
    """Train the combined model to call fakes real (label 1). The discriminator inside it is
    frozen: only the generator's weights change."""
    y_gen = tf.ones([tf.shape(noise)[0], 1])
    weights = generator.trainable_weights
    with tf.GradientTape() as tape:
        g_loss = binary_crossentropy(y_gen, gan(noise, training=True))  # extra: Keras' loss, exact
    gan.optimizer.apply(tape.gradient(g_loss, weights), weights)
    return g_loss


def make_train_step(generator, discriminator, gan, x_train, batch_size, random_dim, real_label,
                    rng, ema_generator=None, ema_decay=0.0):
    """The tutorial's loop body, compiled into one TensorFlow graph (no `predict` per step).
    `rng` (a keras.random.SeedGenerator) draws the noise and the real batch, so its state, like
    every other random state here, lives in a variable that the checkpoint saves."""
    if BACKEND == "jax":  # extra: the same step for Keras' JAX backend
        return make_jax_train_step(generator, discriminator, gan, x_train, batch_size, random_dim,
                                   real_label, rng, ema_generator, ema_decay)  # extra
    images = tf.convert_to_tensor(x_train)

    @tf.function
    def train_step():
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
        return d_loss, g_loss

    return train_step


# %% The tutorial, 7: the 10x10 grid of generated digits
def plot_generated_images(generator, noise, path, dim=(10, 10), figsize=(10, 10)):
    """The tutorial's 10x10 grid (1000x1000 pixels), written atomically to `path`."""
    generated_images = keras.ops.convert_to_numpy(generator(noise, training=False))
    generated_images = generated_images.reshape(len(noise), 28, 28)
    fig = plt.figure(figsize=figsize)
    for i in range(generated_images.shape[0]):
        plt.subplot(dim[0], dim[1], i + 1)
        plt.imshow(generated_images[i], interpolation="nearest", cmap="gray_r")
        plt.axis("off")
    plt.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    # the grid has no colour: an 8-bit grey PNG is smaller than matplotlib's RGBA one
    return save_atomically(path, lambda tmp: Image.open(png).convert("L").save(tmp, format="PNG"))  # extra


# %% The tutorial, 8: the training loop
def train(x_train, run, args):
    """Build the three models and train them as the tutorial does. `run` keeps what the tutorial
    printed or saved (losses, grids, scores, the checkpoint); it raises when the run must stop."""
    batch_count = len(x_train) // args.batch_size  # steps per epoch
    turns = (1, 2) if args.adam_counter == "shared" else (None, None)  # the one Adam's two steps a batch
    with precision_policy(args.precision):  # extra: the layers built here compute in this precision
        generator = get_generator(args.random_dim)
        discriminator = get_discriminator(get_optimizer(args.learning_rate, args.beta_1, turns[0]),
                                          args.minibatch_stddev)
        gan = get_gan_network(discriminator, args.random_dim, generator,
                              get_optimizer(args.learning_rate, args.beta_1, turns[1]))
    ema_generator = get_ema_generator(generator) if args.ema_decay > 0 else None  # extra
    sampler = ema_generator or generator  # what draws the grids (the tutorial: the generator)
    rng = keras.random.SeedGenerator(args.seed)
    train_step = make_train_step(generator, discriminator, gan, x_train, args.batch_size,
                                 args.random_dim, args.real_label, rng, ema_generator,
                                 args.ema_decay)
    start = run.begin(generator, discriminator, gan, ema_generator, rng)  # extra: 1, or after the checkpoint

    for e in range(start, args.epochs + 1):
        with tqdm(range(batch_count), desc=f"Epoch {e}/{args.epochs}", leave=False,
                  disable=not (IN_NOTEBOOK or sys.stderr.isatty())) as bar:  # logs get the epoch lines
            for _ in bar:
                d_loss, g_loss = (float(loss) for loss in train_step())
                run.after_step(e, d_loss, g_loss)  # extra: a diverged loss or Ctrl-C ends the run here
                bar.set_postfix(d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}", refresh=False)
        run.end_epoch(e)  # extra: stops on a weight that is not finite; records the epoch's losses
        if run.is_grid_epoch(e):  # extra: the tutorial's `e == 1 or e % 20 == 0`, and the last epoch
            plot_generated_images(sampler, run.grid_noise(), run.grid_path(e))  # extra: noise, file name
        run.save_epoch(e)  # extra: the scores, the epoch's line, the checkpoint
    run.finish()  # extra: generator.keras


# %% Not in the tutorial: the harness (run this cell before calling train or main)
# =================================================================================================
# NOT IN THE TUTORIAL. Everything below serves the code above and changes nothing it trains but
# the step numbers of the tutorial's shared Adam (adam_step) and the opt-in extra --minibatch-stddev.
# Each section uses only what stands above it.
# =================================================================================================
import argparse  # the harness's own imports
import csv
import errno
import gzip
import hashlib
import re
import shlex
import tempfile
import time
import zlib

# -------------------------------------------------------------------------------------- errors

class UsageError(Exception):
    """Bad input: main() prints the message as one line and exits with code 2."""


class RunFailed(Exception):
    """The run could not go on (a write failed, training diverged): one line, exit code 1."""


class Stopped(BaseException):
    """Ctrl-C or SIGTERM: main() prints the message and exits with code 130. Like KeyboardInterrupt
    it is no Exception, so no `except Exception` that guards a file read (here or in Keras) can
    take a stop for a damaged file, or swallow it."""


class WriteFailed(Exception):
    """A file could not be written; its temporary was removed and the old file left as it was."""


# ------------------------------------------------------------------- reading and writing files

def readable_file(path, what, advice):
    """Refuse `path` with its real trouble when it cannot be read as a file: missing, a link to
    nothing, a folder, not a regular file, or no permission to read it. `advice` says what to pass
    instead. Whether its contents are sound is for its reader to judge."""
    if not os.path.lexists(path):
        raise UsageError(f"{what} {path} not found: {advice}")
    if not os.path.exists(path):
        raise UsageError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not "
                         f"exist: {advice}")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path} is a folder, not a file: {advice}")
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path} is not a regular file (a device or a pipe?): {advice}")
    try:
        open(path, "rb").close()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path} ({e.strerror}): the file itself may be fine; give "
                         "this user permission to read it (for example chmod u+r), then run again") from None


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path, pid=None):
    """Where save_atomically writes `path` first: .tmp-PID-name beside it."""
    return os.path.join(os.path.dirname(path) or ".", f".tmp-{pid or os.getpid()}-{os.path.basename(path)}")


def save_atomically(path, write):
    """Call write(tmp), flush tmp to disk, rename it over `path`, flush the folder (as databases
    do): after a crash or power cut `path` is the old file or the new one, never a part. The
    temporary's name is this process's own. A failure removes it and raises WriteFailed."""
    path = os.path.realpath(path) if os.path.islink(path) else path  # a linked file stays linked
    tmp = temporary_name(path)
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:  # a stop, too, leaves no temporary behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if not isinstance(e, Exception):
            raise
        raise WriteFailed(f"cannot write {path} ({getattr(e, 'strerror', None) or e})") from None
    with contextlib.suppress(OSError):  # some systems cannot sync a folder; the rename is done
        fsync(os.path.dirname(path) or ".")
    return path


def write_csv(path, columns, rows):
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([columns] + list(rows))
    save_atomically(path, write)


def save_figure(fig, path):
    try:
        save_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# -------------------------------------------------------------- the step's speed and exactness
def adam_step(iterations, turn):
    """The step number t in Adam's bias correction, lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), for
    an optimizer that has applied `iterations` updates: iterations + 1 if it counts its own
    (turn None), or, as the tutorial's one Adam shared by both models counted,
    2 * iterations + turn (the discriminator's turn is 1, the generator's 2)."""
    return iterations + 1 if turn is None else 2 * iterations + turn


class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam, same update, done by TensorFlow's fused Adam kernel: one pass over
    each weight instead of nine (samples/README.md, Speed, says what it saves). It reads three
    private parts of Keras' Adam, `_get_variable_index`, `_momentums` and `_velocities`;
    tests/test_step.py::test_fused_adam_matches_keras_adam fails if a Keras release changes them."""

    def update_step(self, gradient, variable, learning_rate):
        i, dtype = self._get_variable_index(variable), variable.dtype
        step = tf.cast(adam_step(self.iterations, getattr(self, "turn", None)), dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[i].handle, v=self._velocities[i].handle,
            beta1_power=beta_1 ** step, beta2_power=beta_2 ** step,
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


if BACKEND == "tensorflow":
    @tf.custom_gradient
    def sigmoid_cross_entropy(labels, logits):
        """tf.nn.sigmoid_cross_entropy_with_logits, with its gradient written as one expression,
        sigmoid(logits) - labels. TensorFlow's own gradient adds four terms with AddN, whose CPU
        kernel sums them in an order that depends on which input buffer it can reuse at that
        moment: the last bits of the gradient then changed with thread timing, and same-seed runs
        drifted apart."""
        def gradient(upstream):
            return None, upstream * (tf.sigmoid(logits) - labels)
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), gradient


def binary_crossentropy(y_true, y_pred):
    """Keras' binary cross-entropy of the sigmoid outputs `y_pred`, averaged over the batch. Like
    Keras, it is computed from the sigmoid's input, which Keras keeps on the output in the private
    attribute `_keras_logits` (pinned by tests/test_step.py::test_loss_is_keras_binary_crossentropy)."""
    return tf.reduce_mean(sigmoid_cross_entropy(y_true, y_pred._keras_logits))


@contextlib.contextmanager
def precision_policy(precision):
    """Layers built inside compute in `precision`: "float32", or "bfloat16" via Keras' mixed
    precision (weights and optimizer state stay float32, layers cast them to bfloat16 to compute)."""
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def precision_note(precision):
    """A start-up line where --precision bfloat16 was measured slower than float32 on hardware like
    this (the figures: samples/README.md, Speed; tests/benchmark.py measures one's own), else None."""
    if precision != "bfloat16":
        return None
    if BACKEND == "jax":
        import jax
        return None if jax.default_backend() != "cpu" else (
            "Note: bfloat16 on JAX's CPU backend measured slower per step than float32 (XLA does not use "
            "AMX or AVX512-BF16 there); float32 is the faster choice on a CPU (samples/README.md, Speed).")
    if tf.config.list_physical_devices("GPU"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
        flags = set(next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "Note: bfloat16 is faster than float32 only on some CPUs: python tests/benchmark.py says for this one."
    if "amx_bf16" in flags or ("avx512_bf16" in flags and "GenuineIntel" not in cpuinfo):
        return None  # measured faster with AMX and on AMD's AVX512-BF16
    return ("Note: this CPU has no AMX" + ("" if "avx512_bf16" in flags else " and no AVX512-BF16") +
            ": bfloat16 steps measured slower than float32 on such Intel CPUs (samples/README.md, Speed); "
            "float32 is likely faster: python tests/benchmark.py measures it.")


def get_ema_generator(generator):
    """A copy of the generator whose weights follow an exponential moving average (EMA) of the
    generator's. It is never trained; it only draws the grids, which it makes less noisy."""
    ema_generator = keras.models.clone_model(generator)
    ema_generator.set_weights(generator.get_weights())
    return ema_generator


def update_ema(ema_generator, generator, decay, step):
    """ema = d * ema + (1 - d) * weight after training step `step` (1, 2, ...), with
    d = min(decay, (1 + step) / (10 + step)) as in TensorFlow's ExponentialMovingAverage: early
    on the average forgets the random initial weights quickly."""
    decay = tf.minimum(decay, (1.0 + step) / (10.0 + step))
    for ema_weight, weight in zip(ema_generator.weights, generator.weights):
        ema_weight.assign_sub((1.0 - decay) * (ema_weight - weight))  # = the rule above


# ------------------------------------------- the minibatch-stddev feature (--minibatch-stddev)
class MinibatchStddev(layers.Layer):
    """ProGAN's minibatch standard deviation (Karras et al. 2018), for an MLP: the batch is cut
    into groups of `group` consecutive digits; each digit's features get one more, the mean over
    the features of their standard deviation within its group. A generator that draws too many
    of one digit makes its groups alike, and the discriminator can now see it: the tutorial's
    GAN, which draws twice MNIST's share of 1s, draws a far more even mix with it (README). The
    discriminator's batch is the reals, then the fakes, each a multiple of `group`, so no group
    mixes the two. The statistic is computed in float32 whatever the layer's precision."""

    def __init__(self, group, **kwargs):
        super().__init__(**kwargs)
        self.group = group

    def call(self, x):
        groups = keras.ops.reshape(keras.ops.cast(x, "float32"), (-1, self.group, x.shape[-1]))
        stddev = keras.ops.sqrt(keras.ops.var(groups, axis=1) + 1e-8)  # (groups, features)
        feature = keras.ops.repeat(keras.ops.mean(stddev, axis=-1, keepdims=True), self.group, axis=0)
        return keras.ops.concatenate([x, keras.ops.cast(feature, x.dtype)], axis=-1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], shape[-1] + 1)

    def get_config(self):
        return {**super().get_config(), "group": self.group}


# -------------------------------------------------------------------------- Keras' JAX backend
def discriminator_logits(discriminator, trainable, non_trainable, x):
    """The discriminator's output before its sigmoid, through the stateless API. On JAX, Keras
    cannot keep the logits on the output as it does on TensorFlow (`_keras_logits`), and its loss
    would then clip the probabilities (as Keras 2 did); so the last layer's activation is left out
    while the step is traced."""
    last = discriminator.layers[-1]
    sigmoid, last.activation = last.activation, keras.activations.linear
    try:
        return discriminator.stateless_call(trainable, non_trainable, x, training=True)
    finally:
        last.activation = sigmoid


def sigmoid_cross_entropy_jax(labels, logits):
    """The batch mean of tf.nn.sigmoid_cross_entropy_with_logits' formula, in jax.numpy."""
    import jax.numpy as jnp
    return jnp.mean(jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def make_jax_train_step(generator, discriminator, gan, x_train, batch_size, random_dim, real_label,
                        rng, ema_generator=None, ema_decay=0.0):
    """make_train_step for KERAS_BACKEND=jax: the same step (noise, a real batch drawn with
    replacement, a discriminator step on reals labelled `real_label` and fakes labelled 0, a
    generator step through the frozen discriminator on fresh noise, the EMA update), written with
    Keras' stateless API and compiled whole by jax.jit. Each call reads every variable's value,
    runs the step and writes them back, so the checkpoint, the grids and --resume see the same
    variables as on TensorFlow: the noise sampler's and Dropout's random states included."""
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(x_train)
    d_optimizer, g_optimizer = discriminator.optimizer, gan.optimizer
    groups = [generator.trainable_variables, generator.non_trainable_variables,
              discriminator.trainable_variables, discriminator.non_trainable_variables,
              d_optimizer.variables, g_optimizer.variables,
              ema_generator.variables if ema_generator is not None else [], [rng.state]]
    d_steps, g_steps = (next(i for i, v in enumerate(o.variables) if v is o.iterations)
                        for o in (d_optimizer, g_optimizer))

    def apply(optimizer, steps, slots, grads, train):
        """optimizer.stateless_apply at step adam_step(n, turn): Keras' Adam takes t = iterations + 1,
        so it is handed t - 1 for this update and its own count n + 1 is written back after it."""
        n = slots[steps]
        slots = slots[:steps] + [adam_step(n, optimizer.turn) - 1] + slots[steps + 1:]
        train, slots = optimizer.stateless_apply(slots, grads, train)
        return train, slots[:steps] + [n + 1] + slots[steps + 1:]

    def d_loss(d_train, d_fixed, x, y):
        logits, d_fixed = discriminator_logits(discriminator, d_train, d_fixed, x)
        return sigmoid_cross_entropy_jax(y, logits), d_fixed

    def g_loss(g_train, g_fixed, d_train, d_fixed, noise):  # only g_train is differentiated
        fakes, g_fixed = generator.stateless_call(g_train, g_fixed, noise, training=True)
        logits, d_fixed = discriminator_logits(discriminator, d_train, d_fixed, fakes)
        return sigmoid_cross_entropy_jax(jnp.ones_like(logits), logits), (g_fixed, d_fixed)

    @jax.jit
    def step(state):
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
        return dl, gl, [g_train, g_fixed, d_train, d_fixed, d_slots, g_slots, ema, [seed]]

    def train_step():
        d, g, state = step([[v.value for v in group] for group in groups])
        for group, values in zip(groups, state):
            for variable, value in zip(group, values):
                variable.assign(value)
        return d, g

    return train_step


# ---------------------------------------------------------------------------------- data files
MNIST_SHA256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"  # train-images-idx3-ubyte

MAX_IDX_BYTES = 1 << 31  # 2.1 GB, 2.7 million digits: a larger header is not an MNIST file


def check_digits(x_train, where):
    """MNIST's layout: N 28x28 images of integers 0..255. Returns them as uint8."""
    if x_train.ndim != 3 or x_train.shape[1:] != (28, 28) or len(x_train) == 0:
        raise UsageError(f"{where} has shape {x_train.shape}, expected (N, 28, 28)")
    if x_train.dtype != np.uint8:
        if x_train.dtype.kind not in "iu" or x_train.min() < 0 or x_train.max() > 255:
            raise UsageError(f"{where} holds {x_train.dtype} values, expected integers 0..255 as in "
                             "MNIST: save the digits as uint8 (times 255 if they are in 0..1)")
        x_train = x_train.astype(np.uint8)
    return x_train


def read_npz_digits(path, bundled=False):
    """x_train from an .npz laid out like Keras' mnist.npz: uint8 digits of shape (N, 28, 28)."""
    fix = ("it is the bundled subset: restore it with `git checkout -- data/mnist_5k.npz`" if bundled else
           "pass --data auto, mnist, subset, the path of an .npz like Keras' mnist.npz or a folder of "
           "MNIST's idx files")
    readable_file(path, "data file", fix)
    try:
        with np.load(path) as f:
            x_train = f["x_train"]
    except Exception as e:
        raise UsageError(f"cannot read digits from {path} ({type(e).__name__}): it must be an intact "
                         f".npz like Keras' mnist.npz with an x_train array; {fix}") from None
    return check_digits(x_train, f"x_train in {path}" + (" (the bundled subset)" if bundled else ""))


def read_idx(path, magic, shape):
    """The array in an idx file (MNIST's original format; raw or .gz): big-endian header of
    `magic`, then one uint32 per dimension, then the uint8 values. `shape` is the expected shape
    with None for the count. The header is checked before the data is read."""
    readable_file(path, "idx file", "pass a folder that holds MNIST's original idx files")
    header_size = 4 + 4 * len(shape)
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            header = f.read(header_size)
            if len(header) < header_size or int.from_bytes(header[:4], "big") != magic:
                raise UsageError(f"{path} is not an MNIST idx file of this kind (magic number "
                                 f"{int.from_bytes(header[:4], 'big') if len(header) >= 4 else 'missing'}, "
                                 f"expected {magic})")
            dims = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(len(shape)))
            if any(want is not None and want != got for want, got in zip(shape, dims)):
                raise UsageError(f"{path} holds items of shape {dims[1:]}, expected {tuple(shape[1:])}")
            size = int(np.prod(dims, dtype=np.int64))
            if size > MAX_IDX_BYTES:
                raise UsageError(f"{path}'s header says {dims[0]:,} items ({size / 1e9:.0f} GB), more than "
                                 f"an MNIST file can hold ({MAX_IDX_BYTES / 1e9:.1f} GB at most): it is "
                                 "damaged or not an MNIST file")
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise UsageError(f"cannot read {path} ({getattr(e, 'strerror', None) or e}): it must be an intact "
                         "MNIST idx file, raw or .gz") from None
    if len(raw) != size:
        raise UsageError(f"{path} is truncated or too long: its header says {size} bytes of data for "
                         f"shape {dims}: download it again")
    return np.frombuffer(raw, np.uint8).reshape(dims)


def find_idx(folder, name):
    """`folder/name` or `folder/name.gz`, whichever exists (LeCun's files, torchvision's MNIST/raw)."""
    for path in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.lexists(path):
            return path
    raise UsageError(f"no {name} (or {name}.gz) in folder {folder}: pass a folder that holds "
                     "MNIST's original idx files")


def is_full_mnist(x_train):
    """True when the digits are MNIST's 60,000 training digits in their order, whatever the file."""
    header = b"".join(n.to_bytes(4, "big") for n in (2051, 60000, 28, 28))
    return (x_train.shape == (60000, 28, 28)
            and hashlib.sha256(header + x_train.tobytes()).hexdigest() == MNIST_SHA256)


def fingerprint(array):
    """A short digest of an array's bytes (the training digits): a resume on other data is refused."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()[:16]


def read_digits(data):
    """The uint8 digits of --data subset, a folder of MNIST's idx files or an .npz, and its name."""
    if data == "subset":
        return read_npz_digits(SUBSET_PATH, bundled=True), "subset"
    if os.path.isdir(data):
        x_train = read_idx(find_idx(data, "train-images-idx3-ubyte"), 2051, (None, 28, 28))
    else:
        x_train = read_npz_digits(data)
    return x_train, "mnist" if is_full_mnist(x_train) else os.path.abspath(data)


def fall_back_to_subset(data, error):
    """Keras could not load full MNIST: the bundled subset for "auto", a UsageError for "mnist"."""
    reason = str(error).splitlines()[0][-100:] if str(error) else type(error).__name__
    if data == "mnist":
        raise UsageError(f"cannot load full MNIST ({reason}): go online once, or put Keras' "
                         "mnist.npz in ~/.keras/datasets/, or use --data subset")
    print(f"Full MNIST is unavailable ({reason}); using the bundled 5,000-digit subset.")
    return read_npz_digits(SUBSET_PATH, bundled=True)


# ---------------------------------------------------------------------------- the digit scores
# A GAN's losses say little about its digits. A small CNN trained on MNIST (data/digit_classifier.npz,
# made by data/make_digit_classifier.py) reads a fixed set of generated digits at every grid and
# gives three numbers: the Frechet distance between its features of those digits and of real
# held-out digits (as FID does with Inception's; lower is better), a classifier score (exp of the
# mean KL divergence between each digit's class probabilities and their average, like the
# Inception score: 1 to 10), and the share of each digit class, summed up as the mix KL: the KL
# divergence of those shares from MNIST's training-label shares (0 for MNIST's own mix). What real
# digits, noise and blank images score: samples/README.md, The score's scale.
MNIST_CLASS_SHARES = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]) / 60000

REAL_MIX_KL = 0.0028  # of the held-out digits that set real_* in the classifier file (measured once)


def mix_kl(shares):
    """KL(shares || MNIST's class shares), in nats: 0 for MNIST's own mix."""
    p = np.asarray(shares, np.float64)
    return float(np.sum(p[p > 0] * np.log(p[p > 0] / MNIST_CLASS_SHARES[p > 0])))


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


def frechet_distance(mean1, cov1, mean2, cov2_sqrt):
    """|m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2), with C2^1/2 given."""
    eigenvalues = np.linalg.eigvalsh(cov2_sqrt @ cov1 @ cov2_sqrt)
    return float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2_sqrt @ cov2_sqrt)
                 - 2 * np.sum(np.sqrt(np.clip(eigenvalues, 0, None))))


class DigitScorer:
    """The bundled classifier and the statistics of the real held-out digits it compares with.
    scorer(images) scores digits, scorer.rate(generator, noise) a generator's."""

    def __init__(self, path):
        fix = ("restore it with `git checkout -- data/digit_classifier.npz`, rebuild it with "
               "data/make_digit_classifier.py, or pass --score-digits 0 to train without scores")
        readable_file(path, "digit classifier", fix)
        with open(path, "rb") as f:
            self.fingerprint = hashlib.sha256(f.read()).hexdigest()[:16]
        self.model = get_digit_classifier()
        try:
            with np.load(path) as f:
                arrays = {name: f[name] for name in f.files}
        except Exception as e:
            raise UsageError(f"digit classifier {path} is damaged ({type(e).__name__}): {fix}") from None
        expected = {f"w{i}": tuple(w.shape) for i, w in enumerate(self.model.weights)}
        expected.update(reference_mean=(64,), reference_cov=(64, 64), real_frechet_distance=(),
                        real_classifier_score=(), real_top_share=())
        for name, shape in expected.items():
            a = arrays.get(name)
            trouble = ("has no " + name if a is None else
                       f"has {name} of shape {a.shape}, not {shape} (another input size or layout?)"
                       if a.shape != shape else
                       f"holds {name} as {a.dtype}, not floats" if a.dtype.kind != "f" else
                       f"holds values in {name} that are not finite" if not np.isfinite(a).all() else None)
            if trouble:
                raise UsageError(f"digit classifier {path} does not fit this scoring network: it {trouble}: {fix}")
        self.model.set_weights([arrays[f"w{i}"] for i in range(len(self.model.weights))])
        self.mean, cov = arrays["reference_mean"].astype(np.float64), arrays["reference_cov"].astype(np.float64)
        self.real = {k: float(arrays["real_" + k]) for k in ("frechet_distance", "classifier_score", "top_share")}
        self.real["mix_kl"] = REAL_MIX_KL
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        self.cov_sqrt = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
        self.predict = tf.function(self.model) if BACKEND == "tensorflow" else self.model.predict_on_batch

    def __call__(self, images):
        """Scores of `images` (N, 784) in [-1, 1]: dict of frechet_distance, classifier_score,
        shares (fraction of each class 0-9), top_class and top_share."""
        features, p = (keras.ops.convert_to_numpy(t).astype(np.float64) for t in self.predict(images))
        p = np.clip(p, 1e-12, 1.0)
        kl = np.sum(p * (np.log(p) - np.log(p.mean(axis=0))), axis=1)
        shares = np.bincount(p.argmax(axis=1), minlength=10) / len(p)
        return {"frechet_distance": frechet_distance(features.mean(axis=0), np.cov(features, rowvar=False),
                                                     self.mean, self.cov_sqrt),
                "classifier_score": float(np.exp(kl.mean())), "shares": shares,
                "top_class": int(shares.argmax()), "top_share": float(shares.max()), "mix_kl": mix_kl(shares)}

    def rate(self, generator, noise):
        return self(generator(noise, training=False))


def score_noise(seed, random_dim, count):
    """The noise the scores are drawn from: fixed for a seed, apart from the grids' stream."""
    return np.random.default_rng((seed, 1)).normal(0, 1, size=(count, random_dim)).astype(np.float32)


def describe_scores(scores):
    return (f"FD {scores['frechet_distance']:.2f}  score {scores['classifier_score']:.2f}  "
            f"most common: {scores['top_class']}s {scores['top_share']:.0%}  mix KL {scores['mix_kl']:.3f}")


SCORE_COLUMNS = (["epoch", "frechet_distance", "classifier_score", "top_class", "top_share"]
                 + [f"share_{digit}" for digit in range(10)] + ["mix_kl"])


def score_row(epoch, scores):
    return ([epoch, round(scores["frechet_distance"], 4), round(scores["classifier_score"], 4),
             scores["top_class"], round(scores["top_share"], 4)]
            + [round(float(x), 4) for x in scores["shares"]] + [round(scores["mix_kl"], 4)])


def with_mix_kl(row):
    """A score row of a checkpoint written before the mix KL existed, completed from its shares."""
    return row if len(row) == len(SCORE_COLUMNS) else row + [round(mix_kl(row[5:15]), 4)]


def plot_scores(scores, real, path):
    """Frechet distance, classifier score, the largest class share and the mix KL against the
    epoch; the dashed lines are what real held-out digits score."""
    rows = np.array(scores, dtype=np.float64)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, column, title in zip(axes, (1, 2, 4, 15), ("Frechet distance (lower is better)",
                                                       "classifier score (1 to 10, higher is better)",
                                                       "share of the most common digit",
                                                       "mix KL from MNIST's classes (lower is better)")):
        ax.plot(rows[:, 0], rows[:, column], marker="o", markersize=3)
        if real:
            ax.axhline(real[SCORE_COLUMNS[column]], linestyle="--", color="grey", label="real digits")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------- the output folder: grids, losses, scores, plots, GIF
LOSS_COLUMNS = ("epoch", "d_loss", "g_loss", "seconds")  # losses.csv; the history's rows


def grid_noise(rng, random_dim):
    return rng.normal(0, 1, size=(100, random_dim)).astype(np.float32)


def grid_path(out_dir, epoch):
    return os.path.join(out_dir, f"gan_generated_image_epoch_{epoch}.png")


def show_in_notebook(*paths):
    """In a Jupyter or Colab kernel, show the pictures below the cell as they are written."""
    if IN_NOTEBOOK:
        from IPython.display import Image as Picture, display
        for path in paths:
            if os.path.exists(path):
                display(Picture(filename=path, width=min(Image.open(path).size[0], 500)))


def plot_loss(history, path):
    """Both losses (means over each epoch's steps) against the epoch."""
    epochs, d_loss, g_loss = (np.array([row[i] for row in history]) for i in range(3))
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(epochs, d_loss, label="discriminator loss")
    ax.plot(epochs, g_loss, label="generator loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy (epoch mean)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def save_gif(grid_paths, path, size=300):
    """The grids in epoch order as an animated GIF, downscaled to `size` pixels a side."""
    frames = [Image.open(p).convert("L").resize((size, size), Image.LANCZOS) for p in grid_paths]
    durations = [400] * (len(frames) - 1) + [2000]  # linger on the last grid
    save_atomically(path, lambda tmp: frames[0].save(
        tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0))


class OutputFiles:
    """OUT_DIR: the grids, losses.csv, gan_loss.png, scores.csv, scores.png, progress.gif and
    generator.keras, and which epochs have a grid."""
    FILES = ("losses.csv", "gan_loss.png", "scores.csv", "scores.png", "progress.gif", "generator.keras")

    def __init__(self, folder, epochs, sample_every):
        self.folder, self.epochs, self.sample_every = folder, epochs, sample_every

    def path(self, name):
        return os.path.join(self.folder, name)

    def names(self):
        """Every file name the run may write here, the longest grid's included."""
        return self.FILES + (os.path.basename(grid_path("", self.epochs)),)

    def is_sample_epoch(self, epoch):
        return epoch == 1 or epoch % self.sample_every == 0 or epoch == self.epochs

    def sample_epochs(self, last):
        return [k for k in range(1, last + 1) if self.is_sample_epoch(k)]

    def grids(self, last):
        return [p for p in (grid_path(self.folder, k) for k in self.sample_epochs(last)) if os.path.exists(p)]

    def write_losses(self, history):
        write_csv(self.path("losses.csv"), LOSS_COLUMNS, history)

    def write_plots(self, history, scores, real, last):
        """The loss and score curves, scores.csv and the GIF of every grid up to epoch `last`."""
        plot_loss(history, self.path("gan_loss.png"))
        if scores:
            write_csv(self.path("scores.csv"), SCORE_COLUMNS, scores)
            plot_scores(scores, real, self.path("scores.png"))
        grids = self.grids(last)
        if grids:
            save_gif(grids, self.path("progress.gif"))

    def present(self):
        return [n for n in self.FILES if os.path.exists(self.path(n))]


# ------------------------------------------------------------------------------ the checkpoint
class Checkpoint:
    """CHECKPOINT_DIR/checkpoint.npz: every variable's value (weights, optimizer slots, random
    states) and the run's history as JSON, rewritten after every epoch; what --resume continues."""
    KEYS = ("epoch", "config", "history", "scores", "grid_rng")
    OLDER = {"backend": "tensorflow", "minibatch_stddev": 0, "adam_counter": "own"}  # a checkpoint made before them
    UNRECORDED = ("digits_sha256", "score_digits", "classifier_sha256")  # not checked if a checkpoint lacks them
    DIFFERENT = {"digits_sha256": "other training digits than these (the data changed)",
                 "classifier_sha256": "another digit classifier (--classifier)"}

    def __init__(self, folder, config):
        self.path, self.config = os.path.join(folder, "checkpoint.npz"), config

    def read(self):
        """(meta, arrays) of the checkpoint to resume, refused if missing, unreadable, damaged or
        made with other settings. Read before any folder is created or model built."""
        advice = "start without --resume, or pass the --checkpoint-dir of the run to continue"
        if not os.path.lexists(self.path):
            raise UsageError(f"no checkpoint at {self.path} to resume: {advice}")
        readable_file(self.path, "checkpoint", advice)
        try:
            with np.load(self.path) as f:
                meta = json.loads(str(f["meta"]))
                arrays = [f[f"v{i}"] for i in range(len(f.files) - 1)]
            if "quality" in meta:  # written before the scores had that name
                meta["scores"] = meta.pop("quality")
            for key in self.KEYS:
                meta[key]  # noqa: B018  (a KeyError: a checkpoint of another version, or damaged)
        except Exception as e:
            raise UsageError(f"checkpoint {self.path} is damaged ({type(e).__name__}): it cannot be "
                             "resumed; start again without --resume (that replaces it)") from None
        for key, value in self.config.items():
            if key in self.UNRECORDED and key not in meta["config"]:
                continue
            made = meta["config"].get(key, self.OLDER.get(key))  # older ones: TF, no stddev
            if made != value:
                what = self.DIFFERENT.get(key, f"{key}={made!r}, not {value!r}")
                same = f"--adam-counter {made}" if key == "adam_counter" else "the same settings (KERAS_BACKEND too)"
                raise UsageError(f"checkpoint {self.path} was made with {what}: resume with {same} or start "
                                 "without --resume")
        return meta, arrays

    def restore(self, variables, arrays):
        if [(a.shape, a.dtype) for a in arrays] != [(tuple(v.shape), np.dtype(v.dtype)) for v in variables]:
            raise UsageError(f"checkpoint {self.path} does not fit these models: start without --resume")
        for variable, array in zip(variables, arrays):
            variable.assign(array)

    def save(self, arrays, meta):
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, meta=json.dumps(meta), **{f"v{i}": a for i, a in enumerate(arrays)})
        save_atomically(self.path, write)


# ------------------------------------------------------- the folders: checks, locks, leftovers
def check_folder(folder):
    """Refuse a folder the run could not create or use, before anything is made: a file where a
    folder should be, or a symbolic link to nothing along the path."""
    path = os.path.abspath(folder)
    while True:
        if os.path.lexists(path) and not os.path.exists(path):
            raise UsageError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: "
                             f"create that folder, or pick another than {folder} with --out-dir or "
                             "--checkpoint-dir")
        if os.path.exists(path):
            if not os.path.isdir(path):
                raise UsageError(f"cannot write to folder {folder}: {path} is a file, not a folder; "
                                 "pick another with --out-dir or --checkpoint-dir")
            return
        path = os.path.dirname(path)


def process_alive(pid):
    if pid <= 0 or pid > 2**22:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's
        return True
    return True


def remove_leftovers(folder):
    """Remove the temporaries (.tmp-PID-name) that runs killed while writing left in `folder`.
    This run holds the folder's lock, so no other run writes there now; a file whose process is
    still alive (a --generate, say) is left alone."""
    removed = []
    for name in sorted(os.listdir(folder)):
        match = re.fullmatch(r"\.tmp-(\d+)-.+", name)
        if match and not process_alive(int(match[1])):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    if removed:
        print(f"Removed {len(removed)} partial file(s) that a stopped run left in {folder}: {', '.join(removed)}")


def lock_holder(folder):
    """None when no gan_mnist.py run holds FOLDER's lock now; else " (process PID)" or ""."""
    try:
        import fcntl
        fd = os.open(os.path.join(folder, ".lock"), os.O_RDONLY)
    except (ImportError, OSError):  # no lock file (or no flock, on Windows): no run holds it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a run holds it exclusively
        return None
    except OSError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return f" (process {pid})" if pid.isdigit() else ""
    finally:
        os.close(fd)


class LockedFolders:
    """The run's output and checkpoint folders (one or two), entered as a context: each is checked
    before anything is created, then created and tested with the longest temporary name the run
    will write there, locked against a second run, and rid of the temporaries that killed runs
    left. A run that wrote nothing leaves nothing: on exit it removes the folders and locks it made."""

    def __init__(self, names):
        """names: {folder: the file names the run writes there}."""
        self.names, self.created, self.locks, self.wrote = {}, [], [], False
        for folder, files in names.items():
            check_folder(folder)
            self.names.setdefault(folder, []).extend(files)

    def __enter__(self):
        try:
            for folder, files in self.names.items():
                self.make(folder, max(files, key=len))
            seen = set()
            for folder in self.names:
                stat = os.stat(folder)
                key = (stat.st_dev, stat.st_ino)  # one folder, two spellings
                if key not in seen:
                    seen.add(key)
                    self.lock(folder)
                    remove_leftovers(folder)
        except BaseException:
            self.__exit__()
            raise
        return self

    def make(self, folder, longest):
        made = []
        parent = os.path.abspath(folder)
        while not os.path.exists(parent):
            made.append(parent)
            parent = os.path.dirname(parent)
        test = temporary_name(os.path.join(folder, longest), pid="9" * 10)  # the longest PID's
        try:
            os.makedirs(folder, exist_ok=True)
            self.created += reversed(made)
            with open(test, "wb") as f:
                f.write(b"0" * 4096)  # a full disk says so here
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.created += [p for p in reversed(made) if p not in self.created and os.path.isdir(p)]
            why = {errno.ENAMETOOLONG: f": its files would have names of {len(test)} characters;",
                   errno.ENOSPC: ": free some space, or"}.get(e.errno, ":")
            raise UsageError(f"cannot write to folder {folder} ({e.strerror}){why} pick another with "
                             "--out-dir or --checkpoint-dir") from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(test)

    def lock(self, folder):
        """An OS lock (flock) on FOLDER/.lock, held until the run ends: the kernel drops it when the
        process dies, so a killed run leaves no stale lock. A read-only .lock locks as well."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs into one folder are not detected there
            return
        path = os.path.join(folder, ".lock")
        existed = os.path.lexists(path)
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise UsageError(f"cannot open {path} ({e.strerror}): give this user permission to read it, "
                             "or remove it if no gan_mnist.py run is using the folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise UsageError(f"another gan_mnist.py run{f' (process {pid})' if pid else ''} is using "
                             f"{folder}: wait for it to end, or pick another --out-dir and "
                             "--checkpoint-dir") from None
        self.locks.append((fd, path, existed))
        with contextlib.suppress(OSError):  # only for the message above; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def __exit__(self, *exc):
        for fd, path, existed in reversed(self.locks):
            if not self.wrote and not existed:
                with contextlib.suppress(OSError):
                    os.remove(path)
            os.close(fd)
        self.locks = []
        if not self.wrote:
            for folder in reversed(self.created):  # the deepest first; only if empty
                with contextlib.suppress(OSError):
                    os.rmdir(folder)


# -------------------------------------------------------------------------- Ctrl-C and SIGTERM
class StopSignal:
    """Ctrl-C and SIGTERM. Until defer() (start-up: nothing written yet) they stop at once; after
    it they only set `requested`, which Run.after_step reads after each step, and the final
    writes complete. The handlers before it come back on exit, except the start-up one: once
    main() is done, a signal is too late to stop anything."""

    def __init__(self, message):
        self.message = message

    def __enter__(self):
        self.requested, self.deferred = False, False
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        self.requested = True
        if not self.deferred:
            raise Stopped(self.message)

    def defer(self):
        self.deferred = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():  # the start-up one would say nothing was written
            signal.signal(s, signal.SIG_IGN if handler is stop_while_starting else handler)


# ----------------------------------------------------------------- the run: what train() calls
class Run:
    """What train() hands its bookkeeping to: the loss and score history, the grid and score noise,
    the checkpoint, the run's folders and what it tells the user. Everything is checked when it is
    made, before a folder is created or a model built; `with run:` holds the folders, and turns a
    failed write into one line that says what the checkpoint still holds."""

    def __init__(self, args, source, x_train, scorer, stop):
        self.args, self.scorer, self.stop = args, scorer, stop
        self.config = {"batch_size": args.batch_size, "data": source, "digits": len(x_train),
                       "random_dim": args.random_dim, "seed": args.seed,
                       "learning_rate": args.learning_rate, "beta_1": args.beta_1,
                       "real_label": args.real_label, "ema_decay": args.ema_decay,
                       "fixed_noise": args.fixed_noise, "precision": args.precision, "backend": BACKEND,
                       "minibatch_stddev": args.minibatch_stddev, "adam_counter": args.adam_counter,
                       "digits_sha256": fingerprint(x_train),
                       "score_digits": args.score_digits, "classifier_sha256": scorer and scorer.fingerprint}
        self.outputs = OutputFiles(args.out_dir, args.epochs, args.sample_every)
        self.checkpoint = Checkpoint(args.checkpoint_dir, self.config)
        for path in [self.checkpoint.path] + [self.outputs.path(n) for n in OutputFiles.FILES]:
            if os.path.isdir(path):
                raise UsageError(f"{path} is a folder, not a file: move it away or pick another folder")
        self.folders = LockedFolders({args.out_dir: self.outputs.names(), args.checkpoint_dir: ["checkpoint.npz"]})
        self.saved = self.checkpoint.read() if args.resume else None
        self.grid_rng = np.random.default_rng(args.seed)  # its own stream: plotting never shifts training
        self.fixed_noise = grid_noise(self.grid_rng, args.random_dim)
        self.score_noise = score_noise(args.seed, args.random_dim, args.score_digits)
        self.history, self.scores = [], []  # rows of LOSS_COLUMNS and of SCORE_COLUMNS
        self.saved_epoch = 0  # the epoch the checkpoint on disk holds (0: none from this run)
        self.trained = False  # whether this process trained an epoch

    def __enter__(self):
        self.folders.__enter__()
        return self

    def __exit__(self, kind, error, traceback):
        self.folders.__exit__(kind, error, traceback)
        if isinstance(error, WriteFailed):
            raise RunFailed(f"{error}; {self.what_is_kept()}") from None

    def begin(self, generator, discriminator, gan, ema_generator, rng):
        """Restore the checkpoint with --resume; the first epoch to train. Signals wait from here."""
        self.sampler = ema_generator or generator  # what draws the grids and generator.keras
        self.variables = (generator.variables + discriminator.variables
                          + discriminator.optimizer.variables + gan.optimizer.variables
                          + (ema_generator.variables if ema_generator else []) + [rng.state])
        if self.saved:
            meta, arrays = self.saved
            self.checkpoint.restore(self.variables, arrays)
            self.history = [tuple(row) for row in meta["history"]]
            self.scores = [with_mix_kl(row) for row in meta["scores"]]
            self.grid_rng.bit_generator.state = meta["grid_rng"]
            self.saved_epoch = meta["epoch"]
            self.outputs.epochs = max(self.outputs.epochs, self.saved_epoch)  # its last epoch had a grid
            print(f"Resuming from {self.checkpoint.path} after epoch {meta['epoch']}.")
            self.redraw_missing_grids()
        elif os.path.exists(self.checkpoint.path):
            print(f"Starting a new run: {self.checkpoint.path} will be replaced (use --resume to continue it).")
        self.stop.defer()  # from here Ctrl-C / SIGTERM ends the run after the current step
        self.new_epoch()
        return self.saved_epoch + 1

    def new_epoch(self):
        self.started, self.d_sum, self.g_sum, self.steps = time.perf_counter(), 0.0, 0.0, 0

    def after_step(self, epoch, d_loss, g_loss):
        if not (0 <= d_loss < 100 and 0 <= g_loss < 100):  # NaN, inf, or a saturated sigmoid
            self.diverged(epoch, self.steps + 1, d_loss, g_loss)
        self.d_sum, self.g_sum, self.steps = self.d_sum + d_loss, self.g_sum + g_loss, self.steps + 1
        if self.stop.requested:
            raise Stopped(self.stopped_message(epoch))

    def end_epoch(self, epoch):
        """Check the weights before anything of the epoch is written, then record its losses."""
        self.seconds = time.perf_counter() - self.started
        d_loss, g_loss = self.d_sum / self.steps, self.g_sum / self.steps
        self.arrays = [v.numpy() for v in self.variables]
        if not all(np.isfinite(a).all() for a in self.arrays if a.dtype.kind == "f"):
            self.diverged(epoch, None, d_loss, g_loss)
        self.history.append((epoch, d_loss, g_loss, round(self.seconds, 3)))
        self.folders.wrote = True
        self.outputs.write_losses(self.history)

    def is_grid_epoch(self, epoch):
        return self.outputs.is_sample_epoch(epoch)

    def grid_noise(self):
        return self.fixed_noise if self.args.fixed_noise else grid_noise(self.grid_rng, self.args.random_dim)

    def grid_path(self, epoch):
        return grid_path(self.args.out_dir, epoch)

    def save_epoch(self, epoch):
        """The epoch's line; at grid epochs the scores, plots and GIF; then the checkpoint."""
        _, d_loss, g_loss, _ = self.history[-1]
        line = f"Epoch {epoch}/{self.args.epochs}: d_loss {d_loss:.4f}  g_loss {g_loss:.4f}  {self.seconds:.1f}s"
        if self.is_grid_epoch(epoch):
            if self.scorer:
                scores = self.scorer.rate(self.sampler, self.score_noise)
                self.scores.append(score_row(epoch, scores))
                line += f"  | {describe_scores(scores)}"
            self.outputs.write_plots(self.history, self.scores, self.real(), epoch)
        print(line)
        if self.is_grid_epoch(epoch):
            show_in_notebook(self.grid_path(epoch))
        self.checkpoint.save(self.arrays, {
            "epoch": epoch, "config": self.config, "history": self.history,
            "scores": self.scores, "grid_rng": self.grid_rng.bit_generator.state})
        self.saved_epoch, self.trained = epoch, True
        self.new_epoch()

    def real(self):
        return self.scorer.real if self.scorer else None

    def redraw_missing_grids(self):
        """Resuming into a folder without the earlier grids (another --out-dir): the checkpoint's
        own epoch can be redrawn exactly (same weights, same fixed noise); earlier ones cannot."""
        epoch, path = self.saved_epoch, self.grid_path(self.saved_epoch)
        if self.is_grid_epoch(epoch) and self.args.fixed_noise and not os.path.exists(path):
            self.folders.wrote = True
            plot_generated_images(self.sampler, self.fixed_noise, path)
        have = set(self.outputs.grids(epoch))
        missing = [k for k in self.outputs.sample_epochs(epoch) if self.grid_path(k) not in have]
        if missing:
            print(f"Note: {self.args.out_dir} lacks the grids of epochs {', '.join(map(str, missing))}, which "
                  "the checkpoint cannot redraw (it keeps only the latest weights): progress.gif will "
                  "start later. losses.csv and scores.csv will be complete.")

    def finish(self):
        """generator.keras. With --resume of a finished run (say, killed in its final save) also
        the other final files again, from the checkpoint's history, in case any is missing."""
        done = self.saved_epoch
        self.folders.wrote = True
        if not self.trained:
            self.outputs.write_losses(self.history)
            self.outputs.write_plots(self.history, self.scores, self.real(), done)
        save_atomically(self.outputs.path("generator.keras"), self.sampler.save)  # tmp name keeps .keras
        if not self.trained:
            print(f"The checkpoint already holds epoch {done} (--epochs {self.args.epochs}): wrote the "
                  "run's final files from it. Raise --epochs to train further.")
        print(f"Done: {len(self.outputs.grids(done))} grids, {', '.join(self.outputs.present())} in "
              f"{self.args.out_dir}/")
        show_in_notebook(*(self.outputs.path(name) for name in ("gan_loss.png", "scores.png", "progress.gif")))

    def command(self, resume=True):
        argv = [a for a in self.args.argv if a != "--resume"] + (["--resume"] if resume else [])
        return f"{self.args.command} {shlex.join([self.args.script] + argv)}"

    def stopped_message(self, epoch):
        if self.saved_epoch == 0:
            return (f"Stopped during epoch {epoch}, before the first checkpoint: there is nothing to "
                    f"resume. Start again with: {self.command(resume=False)}")
        return (f"Stopped during epoch {epoch}; the checkpoint holds epoch {self.saved_epoch}. "
                f"Resume with: {self.command()}")

    def diverged(self, epoch, step, d_loss, g_loss):
        where = f"epoch {epoch}, step {step}" if step else f"the end of epoch {epoch} (a weight is not finite)"
        kept = (f"the checkpoint keeps epoch {self.saved_epoch}, the last good one" if self.saved_epoch else
                "no checkpoint was written")
        raise RunFailed(f"training diverged at {where} (d_loss {d_loss:.4g}, g_loss {g_loss:.4g}); {kept}: "
                        f"lower the learning rate (LEARNING_RATE is {self.args.learning_rate}) or check the "
                        "data, then start again")

    def what_is_kept(self):
        """After a failed write: what the checkpoint holds and the command that carries on."""
        if self.saved_epoch:
            return (f"the checkpoint holds epoch {self.saved_epoch}: free some space or fix the folder, "
                    f"then resume with: {self.command()}")
        return ("no checkpoint was written yet: free some space or fix the folder, then start again "
                f"with: {self.command(resume=False)}")


# ---------------------------------------------------------------------------- saved generators
def load_generator(path):
    """A generator.keras: one noise vector in, 784 pixels out."""
    advice = "pass the generator.keras that a training run wrote to its --out-dir"
    readable_file(path, "generator file", advice)
    try:
        generator = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise UsageError(f"cannot load a generator from {path} ({type(e).__name__}): it is damaged or "
                         f"not a Keras model; {advice}") from None
    inputs = getattr(generator, "inputs", None) or []
    if (len(inputs) != 1 or len(inputs[0].shape) != 2 or not str(inputs[0].dtype).startswith("float")
            or tuple(generator.outputs[0].shape[1:]) != (784,) or len(generator.outputs) != 1):
        raise UsageError(f"{path} is not a generator of this script: it must take one vector of noise "
                         f"and give 784 pixels (it takes {[tuple(i.shape) for i in inputs]} and gives "
                         f"{[tuple(o.shape) for o in generator.outputs]}); {advice}")
    return generator


GENERATED_MARK = "gan_mnist.py --generate"  # the PNG text that marks a grid --generate wrote


def check_out(out, generator_path):
    """--out never replaces an input or another run's file: refused are anything that is not a
    regular file (a folder, a link, a device), the generator read, a file in a folder that a
    training run holds, and any file but a PNG that --generate itself wrote (marked in its text)."""
    if os.path.isdir(out) and not os.path.islink(out):
        raise UsageError(f"--out {out} is a folder: pass the path of the PNG to write")
    if not out.lower().endswith(".png"):
        raise UsageError(f"--out {out} does not end in .png: pass the path of the PNG to write")
    if os.path.islink(out) or (os.path.lexists(out) and not os.path.isfile(out)):
        kind = "a symbolic link" if os.path.islink(out) else "not a regular file (a device or a pipe?)"
        raise UsageError(f"--out {out} is {kind}: --generate writes only a new PNG or one it wrote before; "
                         "pick another --out")
    folder = os.path.dirname(out) or "."
    holder = lock_holder(folder)
    if holder is not None:
        raise UsageError(f"--out {out} is in {folder}, which a gan_mnist.py run{holder} is using: pick another --out")
    if not os.path.exists(out):
        return
    if os.path.exists(generator_path) and os.path.samefile(out, generator_path):
        raise UsageError(f"--out {out} is the generator it reads: pick another --out")
    try:
        with Image.open(out) as image:
            made_here = image.format == "PNG" and image.info.get("Software") == GENERATED_MARK
    except Exception:
        made_here = False
    if not made_here:
        raise UsageError(f"--out {out} exists and is not a grid that --generate wrote: move it away or "
                         "pick another --out (--generate replaces only its own PNGs)")


def generate(args):
    """--generate: a 10x10 grid from a saved generator; no training data needed."""
    out = args.out or os.path.join(os.path.dirname(args.generate), "generated.png")
    check_out(out, args.generate)
    generator = load_generator(args.generate)
    noise = grid_noise(np.random.default_rng(args.seed), generator.inputs[0].shape[-1])  # = the run's grids
    folder = os.path.dirname(out) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write to folder {folder} ({e.strerror}): pick another --out") from None
    mark = PngImagePlugin.PngInfo()
    mark.add_text("Software", GENERATED_MARK)
    with tempfile.TemporaryDirectory() as drawn:
        grid = plot_generated_images(generator, noise, os.path.join(drawn, "grid.png"))
        try:
            save_atomically(out, lambda tmp: Image.open(grid).save(tmp, format="PNG", pnginfo=mark))
        except WriteFailed as e:
            raise WriteFailed(f"{e}: free some space or pick another --out") from None
    print(f"Wrote {out}")


def score_file(args):
    """--score: the scores of a saved generator, beside real digits'."""
    if args.score.lower().endswith(".png"):
        raise UsageError(f"--score takes a generator.keras; to score the digits of a grid picture, run "
                         f"python data/score_grid.py {shlex.quote(args.score)}")
    if not args.score_digits:
        raise UsageError("--score-digits 0 scores no digits: pass 100 or more with --score")
    scorer = DigitScorer(args.classifier)
    generator = load_generator(args.score)
    count = args.score_digits
    real = scorer.real
    print(f"Real held-out MNIST digits (the top of the scale): FD {real['frechet_distance']:.2f}  "
          f"score {real['classifier_score']:.2f}  most common digit {real['top_share']:.0%}  mix KL {real['mix_kl']:.3f}")
    scores = scorer.rate(generator, score_noise(args.seed, generator.inputs[0].shape[-1], count))
    print(f"{args.score} ({count} digits, seed {args.seed}): {describe_scores(scores)}")
    print("class shares: " + "  ".join(f"{d}: {x:.1%}" for d, x in enumerate(scores["shares"])))


# ---------------------------------------------------------------------------- the command line
RULES = [("epochs", "EPOCHS", int, lambda v: v >= 1, "a whole number of 1 or more"),
         ("batch_size", "BATCH_SIZE", int, lambda v: v >= 1, "a whole number of 1 or more"),
         ("sample_every", "SAMPLE_EVERY", int, lambda v: v >= 1, "a whole number of 1 or more"),
         ("limit", "LIMIT", int, lambda v: v >= 1, "a whole number of 1 or more (None: all the digits)"),
         ("seed", "SEED", int, lambda v: 0 <= v < 2**32, "a whole number from 0 to 2**32 - 1"),
         ("score_digits", "SCORE_DIGITS", int, lambda v: v == 0 or 100 <= v <= 100_000,
          "0 (no scores) or from 100 to 100000"),
         ("ema_decay", "EMA_DECAY", float, lambda v: v == 0 or 0.5 <= v < 1,
          "0 (the raw generator) or from 0.5 to below 1"),
         ("minibatch_stddev", "MINIBATCH_STDDEV", int, lambda v: v == 0 or 2 <= v <= 64,
          "0 (off) or a whole number from 2 to 64"),
         ("random_dim", "RANDOM_DIM", int, lambda v: v >= 1, "a whole number of 1 or more"),
         ("learning_rate", "LEARNING_RATE", float, lambda v: 0 < v < 1, "above 0 and below 1"),
         ("beta_1", "BETA_1", float, lambda v: 0 <= v < 1, "at least 0 and below 1"),
         ("adam_counter", "ADAM_COUNTER", str, lambda v: v in ("shared", "own"), '"shared" or "own"'),
         ("real_label", "REAL_LABEL", float, lambda v: 0 < v <= 1, "above 0 and at most 1"),
         ("fixed_noise", "FIXED_NOISE", bool, lambda v: True, "True or False"),
         ("precision", "PRECISION", str, lambda v: v in ("float32", "bfloat16"), '"float32" or "bfloat16"'),
         ("data", "DATA", str, lambda v: bool(v), "a data source name or path"),
         ("out_dir", "OUT_DIR", str, lambda v: bool(v), "a folder name"),
         ("checkpoint_dir", "CHECKPOINT_DIR", str, lambda v: bool(v), "a folder name"),
         ("classifier", "CLASSIFIER", str, lambda v: bool(v), "a file path")]


def check_setting(argv, name, constant, kind, test, rule, value):
    flag = "--" + name.replace("_", "-")
    if value is None and name == "limit":
        return
    of_type = type(value) is kind or (kind is float and type(value) is int)
    if not of_type:  # flags are parsed to their type: a wrong type comes from an edited constant
        raise UsageError(f"{constant} at the top of gan_mnist.py must be {rule}, not {value!r}")
    if not test(value):
        where = (flag if any(a.split("=")[0] == flag for a in argv) else
                 f"{constant} at the top of gan_mnist.py")
        raise UsageError(f"{where} must be {rule}, not {value!r}")


def whole_number(text):
    """argparse's type for the whole-number flags: digits only (int() also takes '1_000' and '٣')."""
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose refusals (an unknown flag, a word for a number) are UsageErrors:
    one line and exit code 2 through main(), as every other bad input."""

    def error(self, message):
        raise UsageError(f"{message} (python gan_mnist.py --help lists the flags)")


def get_args(argv=None):
    p = ArgumentParser(description="Train the Keras MNIST GAN tutorial's model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=whole_number, default=EPOCHS, help="passes over the training digits")
    p.add_argument("--batch-size", type=whole_number, default=BATCH_SIZE, help="real digits per step")
    p.add_argument("--sample-every", type=whole_number, default=SAMPLE_EVERY,
                   help="save a grid at epoch 1, every this many epochs and the last")
    p.add_argument("--seed", type=whole_number, default=SEED, help="random seed (training, grid and score noise)")
    p.add_argument("--data", default=DATA, help="auto (MNIST, or the bundled subset offline), mnist, "
                   "subset, an .npz like Keras' mnist.npz, or a folder of MNIST's idx files")
    p.add_argument("--limit", type=whole_number, default=LIMIT, help="train on the first N digits only")
    p.add_argument("--out-dir", default=OUT_DIR, help="folder for grids, losses, scores and generator.keras")
    p.add_argument("--checkpoint-dir", default=CHECKPOINT_DIR, help="folder for checkpoint.npz")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--ema-decay", type=float, default=EMA_DECAY,
                   help="decay of the generator's moving average used for grids; 0 = raw generator")
    p.add_argument("--minibatch-stddev", type=whole_number, default=MINIBATCH_STDDEV, metavar="N",
                   help="the discriminator also sees how varied each N digits are (4 evens the digit "
                   "mix, see the README); 0 = the tutorial's discriminator")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default=PRECISION,
                   help="bfloat16: Keras mixed precision (see the README: faster on some CPUs only)")
    p.add_argument("--adam-counter", choices=("shared", "own"), default=ADAM_COUNTER,
                   help="shared: Adam's bias correction counts both models' steps, as the tutorial's one "
                   "Adam did; own: each model's Adam counts its own (this port before December 2026)")
    p.add_argument("--score-digits", type=whole_number, default=SCORE_DIGITS,
                   help="digits drawn to score the generator at every grid; 0 = no scores")
    p.add_argument("--classifier", default=CLASSIFIER, help="the digit classifier that scores")
    p.add_argument("--generate", metavar="PATH.keras",
                   help="only draw a grid from a saved generator (no training)")
    p.add_argument("--out", help="with --generate: the PNG to write [generated.png beside the model]")
    p.add_argument("--score", metavar="PATH.keras",
                   help="only print the scores of a saved generator (no training)")
    script, argv = ((sys.argv[0], sys.argv[1:]) if argv is None else
                    (os.path.relpath(os.path.join(HERE, "gan_mnist.py")), list(argv)))
    args = p.parse_args(argv)
    args.random_dim, args.learning_rate, args.beta_1 = RANDOM_DIM, LEARNING_RATE, BETA_1
    args.real_label, args.fixed_noise = REAL_LABEL, FIXED_NOISE
    for rule in RULES:
        check_setting(argv, *rule, getattr(args, rule[0]))
    args.argv, args.script = argv, script
    args.command = "%run" if IN_IPYTHON and script == sys.argv[0] else "python"  # how it was started
    return args


def data_name(source, limit):
    """What {data} in OUT_DIR and CHECKPOINT_DIR stands for: mnist, subset, or a file or folder's
    name and a digest of its path (torchvision keeps every data set in NAME/raw), with -first<N>
    for --limit N: one folder per training set, never two sets' files in one."""
    name = source if source in ("mnist", "subset") else "{}-{}".format(
        os.path.splitext(os.path.basename(os.path.normpath(source)))[0],
        hashlib.sha256(source.encode()).hexdigest()[:6])
    return f"{name}-first{limit}" if limit else name


def set_up_run(args, stop):
    """Everything a training run checks before it builds a model or makes a folder: the
    classifier, the data, the batch size, the folders and, with --resume, the checkpoint."""
    scorer = DigitScorer(args.classifier) if args.score_digits else None
    x_train, source = load_mnist_data(args.data, args.limit)
    if args.batch_size > len(x_train):
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {len(x_train)} "
                         "training digits: lower --batch-size or raise --limit")
    if args.minibatch_stddev and args.batch_size < args.minibatch_stddev:
        raise UsageError(f"--batch-size {args.batch_size} is smaller than one group of --minibatch-stddev "
                         f"{args.minibatch_stddev}: make it a multiple of {args.minibatch_stddev}")
    if args.minibatch_stddev and args.batch_size % args.minibatch_stddev:
        raise UsageError(f"--batch-size {args.batch_size} does not split into groups of --minibatch-stddev "
                         f"{args.minibatch_stddev}: make it a multiple of {args.minibatch_stddev}")
    name = data_name(source, args.limit if len(x_train) == args.limit else None)
    args.out_dir, args.checkpoint_dir = (d.replace("{data}", name) for d in (args.out_dir, args.checkpoint_dir))
    run = Run(args, source, x_train, scorer, stop)
    print("Config: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()
                                 if v is not None and k not in ("argv", "script", "command")))
    if BACKEND == "tensorflow" and tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()  # same seed, same run on a GPU too
    keras.utils.set_random_seed(args.seed)  # python, numpy and the backend's
    print(f"Training on {len(x_train)} digits ({source}), {len(x_train) // args.batch_size} steps "
          f"per epoch{'' if BACKEND == 'tensorflow' else f', Keras backend {BACKEND}'}.")
    note = precision_note(args.precision)
    if note:
        print(note)
    if scorer:
        print(f"Scoring {args.score_digits} digits at every grid; real held-out digits score "
              f"FD {scorer.real['frechet_distance']:.2f}, score {scorer.real['classifier_score']:.2f}.")
    return x_train, run


@contextlib.contextmanager
def keras_settings():
    """float32 and channels_last, whatever keras.json says (it would silently change the run, or
    break the scorer): said in one line when they differ, and given back afterwards."""
    kept = keras.config.floatx(), keras.config.image_data_format()
    if kept != ("float32", "channels_last"):
        print(f"Note: keras.json sets floatx {kept[0]} and {kept[1]}; this script computes in float32, "
              "channels_last (--precision bfloat16 for mixed precision).")
    keras.config.set_floatx("float32")
    keras.config.set_image_data_format("channels_last")
    try:
        yield
    finally:
        keras.config.set_floatx(kept[0])
        keras.config.set_image_data_format(kept[1])


def main(argv=None):
    """Every way the script ends, in one place: 0 done, 1 the run failed (a write, divergence),
    2 bad input (a flag, a constant, a file), 130 stopped."""
    with StopSignal("Stopped; nothing was written.") as stop, keras_settings():
        try:
            args = get_args(argv)
            if args.generate:
                generate(args)
            elif args.score:
                score_file(args)
            else:
                stop.message = "Stopped before training started; nothing was saved. Run the command again to start."
                x_train, run = set_up_run(args, stop)
                with run:
                    train(x_train, run, args)
            return 0
        except UsageError as e:
            print(f"gan_mnist.py: error: {e}", file=sys.stderr)
            return 2
        except (RunFailed, WriteFailed) as e:
            print(f"gan_mnist.py: stopped: {e}", file=sys.stderr)
            return 1
        except Stopped as e:
            print(e)
            return 130


# %% Run it: python gan_mnist.py in a terminal, %run gan_mnist.py in a notebook, or main([...])
if __name__ == "__main__" and "__file__" in globals():  # python gan_mnist.py, or %run gan_mnist.py
    exit_code = main()
    if not IN_IPYTHON:  # %run: the kernel lives on; the last line said how the run ended
        sys.exit(exit_code)
