"""Speed of one training step: the tutorial's loop vs gan_mnist.py's on TensorFlow and on JAX,
and the compute floor of each.

    python tests/benchmark.py                     # about six minutes on 2 CPU cores
    KERAS_BACKEND=jax python tests/benchmark.py   # JAX's lines alone (no TensorFlow: a GPU)

In one process, on the same data (the bundled subset), after a warm-up, it measures the median
milliseconds per training step at batch 128 of
  (a) the tutorial's loop as written, changed only where Keras 3 / Python 3 force it: one
      optimizer per model, `generator.predict`, float64 numpy noise, `trainable` toggled
      around `train_on_batch`;
  (b) gan_mnist.py's own step (make_train_steps) as train() calls it: STEPS_PER_CALL steps a call,
      the losses read back, the call's time divided by its steps; with and without the EMA
      generator, with --minibatch-stddev 4, and with one step a call (--steps-per-call 1);
  (c) the same step under --precision bfloat16;
  (d) the same step on Keras' JAX backend (KERAS_BACKEND=jax), float32 and bfloat16, in a second
      process that takes its turn in every round (a backend is chosen once per process);
and the floors: the matrix multiplies one step needs, each timed at its exact shape and summed,
by TensorFlow and by JAX, in float32 in every round beside the steps (the ratios step / floor
compare like with like on a machine whose speed drifts), and in bfloat16 at the end. Without JAX
installed, (d) is left out.
Not collected by pytest (the file name does not start with test_).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gan_mnist  # noqa: E402  (sets KERAS_BACKEND before Keras is imported)
import keras  # noqa: E402
import numpy as np  # noqa: E402

if gan_mnist.BACKEND == "tensorflow":
    import tensorflow as tf

    tf.get_logger().setLevel(
        "ERROR"
    )  # the floors build a tf.function per shape: its retracing notice misleads

BATCH, DIM, WARMUP, STEPS, ROUNDS = (
    128,
    gan_mnist.RANDOM_DIM,
    15,
    20,
    10,
)  # STEPS: or one call's steps
FLOOR_ROUNDS = (
    2  # a float32 floor's timings in each of the ROUNDS (the bfloat16 floors: 15, at the end)
)
LOOPS = {}  # the floors' compiled loops, built once, timed in every round
G_SIZES = [DIM, 256, 512, 1024, 784]  # generator Dense layers: in -> out
D_SIZES = [784, 1024, 512, 256, 1]  # discriminator Dense layers


def tutorial_loop(x_train):
    """The tutorial's models and loop body, ported as literally as Keras 3 allows."""

    def adam():  # Keras' own Adam, one per compiled model
        return keras.optimizers.Adam(learning_rate=0.0002, beta_1=0.5)

    generator = gan_mnist.get_generator(DIM)
    generator.compile(loss="binary_crossentropy", optimizer=adam())
    discriminator = gan_mnist.get_discriminator(adam())
    # the article's compile (gan_mnist.py's computes the loss in its own step)
    discriminator.compile(loss="binary_crossentropy", optimizer=discriminator.optimizer)
    discriminator.trainable = False
    gan_input = keras.Input(shape=(DIM,))
    gan = keras.Model(gan_input, discriminator(generator(gan_input)))
    gan.compile(loss="binary_crossentropy", optimizer=adam())

    def step():
        noise = np.random.normal(0, 1, size=[BATCH, DIM])
        image_batch = x_train[np.random.randint(0, x_train.shape[0], size=BATCH)]
        generated_images = generator.predict(noise, verbose=0)
        X = np.concatenate([image_batch, generated_images])
        y_dis = np.zeros(2 * BATCH)
        y_dis[:BATCH] = 0.9
        discriminator.trainable = True
        discriminator.train_on_batch(X, y_dis)
        noise = np.random.normal(0, 1, size=[BATCH, DIM])
        y_gen = np.ones(BATCH)
        discriminator.trainable = False
        gan.train_on_batch(noise, y_gen)
        return 1  # steps done

    return step


def project_step(
    x_train, ema_decay, precision="float32", minibatch_stddev=0, steps=gan_mnist.STEPS_PER_CALL
):
    """gan_mnist.py's step, built and called the way its train() does: `steps` batches a call."""
    with gan_mnist.precision_policy(precision):
        generator = gan_mnist.get_generator(DIM)
        d_adam = gan_mnist.get_optimizer(2e-4, 0.5, turn=1)
        discriminator = gan_mnist.get_discriminator(d_adam, minibatch_stddev)
        g_adam = gan_mnist.get_optimizer(2e-4, 0.5, turn=2)
        gan = gan_mnist.get_gan_network(discriminator, DIM, generator, g_adam)
    ema = gan_mnist.get_ema_generator(generator, ema_decay)
    settings = argparse.Namespace(
        batch_size=BATCH, random_dim=DIM, real_label=0.9, ema_decay=ema_decay
    )
    step = gan_mnist.make_train_steps(
        generator, discriminator, gan, x_train, settings, keras.random.SeedGenerator(1), ema
    )

    def call():
        # every step's two losses, read as Run.after_steps does
        np.array(step(steps)).tolist()
        return steps

    return call


def matmul_shapes():
    """(m, k, n, transpose_a, transpose_b) for every matrix multiply of one training step."""
    shapes = []

    def forward(sizes, m):
        shapes.extend((m, a, b, False, False) for a, b in zip(sizes, sizes[1:]))

    def backward(sizes, m, weight_grads, input_grad_into_first):
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            if weight_grads:
                shapes.append((a, m, b, True, False))  # dW = x^T @ dy
            if i > 0 or input_grad_into_first:
                shapes.append((m, b, a, False, True))  # dx = dy @ W^T

    forward(G_SIZES, BATCH)  # fakes for the discriminator step
    forward(D_SIZES, 2 * BATCH)  # discriminator step on reals + fakes
    backward(D_SIZES, 2 * BATCH, True, False)
    forward(G_SIZES, BATCH)  # generator step through the frozen discriminator
    forward(D_SIZES, BATCH)
    backward(D_SIZES, BATCH, False, True)  # input gradients only: the D is frozen
    backward(G_SIZES, BATCH, True, False)
    return shapes


def seconds_per_multiply(loop, a, b, repeats, rounds):
    """The median over `rounds` runs of a compiled loop of `repeats` multiplies (after one to
    compile), per multiply."""
    np.asarray(loop(a, b))  # np.asarray waits for the result on either backend
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        np.asarray(loop(a, b))
        times.append((time.perf_counter() - t) / repeats)
    return statistics.median(times)


def floor_ms(dtype="float32", repeats=50, rounds=15):
    """Sum over matmul_shapes() of the median time of one multiply at that shape, in `dtype`.
    Each is timed as `repeats` back-to-back multiplies inside one graph, less the same loop with
    no multiply, so the figure holds no Python or dispatch overhead."""

    def per_multiply(a, b, ta, tb, multiply=True):
        def loop(a, b):
            def body(i, acc):
                c = tf.matmul(a, b, transpose_a=ta, transpose_b=tb) if multiply else a
                return i + 1, acc + tf.cast(c[0, 0], "float32")

            return tf.while_loop(lambda i, acc: i < repeats, body, (0, 0.0), parallel_iterations=1)[
                1
            ]

        key = ("tf", dtype, tuple(a.shape), tuple(b.shape), ta, tb, multiply)
        return seconds_per_multiply(LOOPS.setdefault(key, tf.function(loop)), a, b, repeats, rounds)

    total, flop = 0.0, 0
    for m, k, n, ta, tb in matmul_shapes():
        a = tf.cast(tf.random.normal((k, m) if ta else (m, k)), dtype)
        b = tf.cast(tf.random.normal((n, k) if tb else (k, n)), dtype)
        total += per_multiply(a, b, ta, tb) - per_multiply(a, b, ta, tb, multiply=False)
        flop += 2 * m * k * n
    return total * 1000, flop


def jax_floor_ms(dtype="float32", repeats=50, rounds=15):
    """floor_ms, timed by JAX as floor_ms times it by TensorFlow: `repeats` multiplies in one jitted
    loop, less the same loop with no multiply. Optimization barriers keep XLA from hoisting the
    loop-invariant multiply out of the loop or computing only the element read."""
    import jax

    def per_multiply(a, b, ta, tb, multiply=True):
        def body(_, carry):
            a, b, acc = jax.lax.optimization_barrier(carry)
            c = (
                jax.lax.optimization_barrier((a.T if ta else a) @ (b.T if tb else b))
                if multiply
                else a
            )
            return a, b, acc + c[0, 0].astype("float32")

        key = ("jax", dtype, a.shape, b.shape, ta, tb, multiply)
        loop = LOOPS.setdefault(
            key, jax.jit(lambda a, b: jax.lax.fori_loop(0, repeats, body, (a, b, 0.0))[2])
        )
        return seconds_per_multiply(loop, a, b, repeats, rounds)

    total, key = 0.0, jax.random.PRNGKey(0)
    for m, k, n, ta, tb in matmul_shapes():
        a = jax.random.normal(key, (k, m) if ta else (m, k)).astype(dtype)
        b = jax.random.normal(key, (n, k) if tb else (k, n)).astype(dtype)
        total += per_multiply(a, b, ta, tb) - per_multiply(a, b, ta, tb, multiply=False)
    return total * 1000


def warm(steps):
    for fn in steps.values():
        done = fn() + fn()  # the first call compiles
        while done < WARMUP:
            done += fn()


def timed(fn):
    """Calls of fn (each returns the steps it did) until STEPS steps are done: each call's
    seconds per step."""
    times, done = [], 0
    while done < STEPS:
        t = time.perf_counter()
        n = fn()
        times.append((time.perf_counter() - t) / n)
        done += n
    return times


def jax_steps():
    """The JAX steps (under KERAS_BACKEND=jax): STEPS_PER_CALL a call, one a call, bfloat16."""
    keras.utils.set_random_seed(0)
    x_train, _ = gan_mnist.load_mnist_data("subset")
    return {
        "jax": project_step(x_train, gan_mnist.EMA_DECAY),
        "jax_1": project_step(x_train, gan_mnist.EMA_DECAY, steps=1),
        "jax_bf16": project_step(x_train, gan_mnist.EMA_DECAY, "bfloat16"),
    }


def jax_worker():
    """`benchmark.py --jax-worker` under KERAS_BACKEND=jax: builds the JAX steps, then runs STEPS
    steps of the one named on each stdin line and answers with their times (JSON lines)."""
    steps = jax_steps()
    warm(steps)
    print(json.dumps({"ready": list(steps)}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name == "floor":  # one round's float32 floor, in seconds, as timed() answers
            print(json.dumps([jax_floor_ms(rounds=FLOOR_ROUNDS) / 1000]), flush=True)
        elif name == "floors":
            print(json.dumps({"bf16_floor": jax_floor_ms("bfloat16")}), flush=True)
        else:
            print(json.dumps(timed(steps[name])), flush=True)


def start_jax_worker():
    try:
        import jax  # noqa: F401
    except ImportError:
        return None
    worker = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--jax-worker"],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    names = json.loads(worker.stdout.readline())["ready"]
    return worker, names


def ask(worker, what):
    worker.stdin.write(what + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def median_ms(steps, floors, jax=None):
    """Median ms per step for each named step function (and the JAX worker's), and of each named
    float32 floor. They take turns, STEPS steps (or one call) each and a floor, for ROUNDS rounds,
    so a slow spell of a shared machine hits steps and floors alike."""
    names = list(steps) + (jax[1] if jax else [])
    times = {name: [] for name in names + list(floors)}
    warm(steps)
    for _ in range(ROUNDS):
        for name in names:
            times[name] += timed(steps[name]) if name in steps else ask(jax[0], name)
        for name, floor in floors.items():
            times[name] += floor()
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def print_jax(ms, floors):
    """The JAX lines: ms from median_ms, floors {"floor", "bf16_floor"} in ms."""
    j, jb = ms["jax"], ms["jax_bf16"]
    print(f"{'(d) the same step on JAX (jax.jit)':<44}{j:9.2f}")
    print(f"{'    on JAX, one a call':<44}{ms['jax_1']:9.2f}")
    print(f"{'    on JAX, --precision bfloat16':<44}{jb:9.2f}")
    print(
        f"{'floor on JAX: float32, bfloat16':<44}{floors['floor']:9.2f}{floors['bf16_floor']:9.2f}"
    )
    print(
        f"jax_step_ms={j:.2f} jax_floor_ms={floors['floor']:.2f} "
        f"jax_of_floor={j / floors['floor']:.2f}x "
        f"jax_one_a_call_of_floor={ms['jax_1'] / floors['floor']:.2f}x "
        f"jax_bf16_step_ms={jb:.2f} jax_bf16_vs_fp32={jb / j:.2f}x "
        f"jax_bf16_floor_ms={floors['bf16_floor']:.2f} jax_epoch_60k_s={468 * j / 1000:.1f}"
    )


def jax_main():
    """KERAS_BACKEND=jax python tests/benchmark.py: the JAX lines alone, where TensorFlow is not
    installed (a GPU machine with JAX)."""
    import jax

    ms = median_ms(jax_steps(), {"jax_floor": lambda: [jax_floor_ms(rounds=FLOOR_ROUNDS) / 1000]})
    print(
        f"device: {jax.devices()}, {os.cpu_count()} cores, JAX {jax.__version__}, "
        f"Keras {keras.__version__}"
    )
    print_jax(ms, {"floor": ms["jax_floor"], "bf16_floor": jax_floor_ms("bfloat16")})


def main():
    keras.utils.set_random_seed(0)
    x_train, _ = gan_mnist.load_mnist_data("subset")
    jax = start_jax_worker()
    ms = median_ms(
        {
            "tutorial": tutorial_loop(x_train),
            "project": project_step(x_train, gan_mnist.EMA_DECAY),
            "project_1": project_step(x_train, gan_mnist.EMA_DECAY, steps=1),
            # as a default run on the bundled subset calls it: 39 steps an epoch, 3 a call
            "project_3": project_step(x_train, gan_mnist.EMA_DECAY, steps=3),
            "project_no_ema": project_step(x_train, 0.0),
            "stddev": project_step(x_train, gan_mnist.EMA_DECAY, minibatch_stddev=4),
            "bf16": project_step(x_train, gan_mnist.EMA_DECAY, "bfloat16"),
        },
        {
            "floor": lambda: [floor_ms(rounds=FLOOR_ROUNDS)[0] / 1000],
            "jax_floor": lambda: ask(jax[0], "floor") if jax else [float("nan")],
        },
        jax,
    )
    floor, flop = ms["floor"], sum(2 * m * k * n for m, k, n, _, _ in matmul_shapes())
    bf16_floor, _ = floor_ms("bfloat16")
    print(
        f"device: {tf.config.list_physical_devices('GPU') or 'CPU'}, "
        f"{os.cpu_count()} cores, TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    print(f"{'what':<44}{'ms/step':>9}")
    print(f"{'(a) tutorial loop (predict, train_on_batch)':<44}{ms['tutorial']:9.2f}")
    print(
        f"{'(b) gan_mnist.py step (with EMA), {} a call'.format(gan_mnist.STEPS_PER_CALL):<44}"
        f"{ms['project']:9.2f}"
    )
    print(f"{'    gan_mnist.py step, one a call':<44}{ms['project_1']:9.2f}")
    print(f"{'    gan_mnist.py step, 3 a call (the subset)':<44}{ms['project_3']:9.2f}")
    print(f"{'    gan_mnist.py step without EMA':<44}{ms['project_no_ema']:9.2f}")
    print(f"{'    gan_mnist.py step, --minibatch-stddev 4':<44}{ms['stddev']:9.2f}")
    print(f"{'floor: matmuls of one step ({:.2f} GFLOP)'.format(flop / 1e9):<44}{floor:9.2f}")
    print(f"{'(c) gan_mnist.py step, --precision bfloat16':<44}{ms['bf16']:9.2f}")
    print(f"{'floor: the same matmuls in bfloat16':<44}{bf16_floor:9.2f}")
    step, bf16 = ms["project"], ms["bf16"]
    print(
        f"ema_ms={ms['project'] - ms['project_no_ema']:.2f} "
        f"stddev_vs_default={ms['stddev'] / ms['project']:.3f}x "
        f"epoch_60k_s={468 * step / 1000:.1f} "
        f"bf16_epoch_60k_s={468 * bf16 / 1000:.1f}"
    )
    print(
        f"step_ms={step:.2f} tutorial_ms={ms['tutorial']:.2f} floor_ms={floor:.2f} "
        f"speedup={ms['tutorial'] / step:.2f}x of_floor={step / floor:.2f}x "
        f"one_a_call_of_floor={ms['project_1'] / floor:.2f}x "
        f"bf16_step_ms={bf16:.2f} bf16_floor_ms={bf16_floor:.2f} bf16_vs_fp32={bf16 / step:.2f}x "
        f"bf16_of_floor={bf16 / bf16_floor:.2f}x"
    )
    if jax:
        floors = {**ask(jax[0], "floors"), "floor": ms["jax_floor"]}
        jax[0].stdin.close()
        print_jax(ms, floors)
        print(f"jax_vs_tf={ms['jax'] / step:.2f}x")


if __name__ == "__main__":
    if "--jax-worker" in sys.argv:
        jax_worker()
    elif gan_mnist.BACKEND == "jax":
        jax_main()
    else:
        main()
