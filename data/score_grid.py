"""Score the 100 digits of a 10x10 grid picture: ours, or the one the 2017 code published.

    python data/score_grid.py samples/origin/gan_generated_image_epoch_200.png
    python data/score_grid.py samples/mnist/gan_generated_image_epoch_200.png

A measuring tool beside gan_mnist.py, as data/make_digit_classifier.py is: it cuts each digit out
of its cell (grid_digits, below), scores the 100 with gan_mnist.py's DigitScorer, and scores 100
real digits drawn as a grid and cut out the same way beside them. 100 digits give a coarser,
higher FD than the 2,000 a training run scores, so compare its rows with each other only
(samples/README.md, Grids scored from their pictures). Exit code 2 and one line for a file that
is not such a grid.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gan_mnist  # noqa: E402  (sets the Keras backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def grid_digits(path):
    """The 100 digits of a 10x10 grid PNG drawn like plot_generated_images (ours, or the origin
    repository's) as (100, 784) in [-1, 1]: each is cut from its cell as a box of 28 x (pixels
    per digit pixel, the commonest run of equal pixels along inked rows) centred on the ink's
    centre of mass, as MNIST centres its digits, and shrunk to 28x28; white -1, black +1."""
    try:
        ink = 255 - np.asarray(Image.open(path).convert("L"), np.float32)
    except Exception as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        raise gan_mnist.UsageError(f"cannot read an image from {path} ({why})") from None
    height, width = ink.shape
    if min(height, width) < 280 or not 0.8 <= width / height <= 1.25:
        raise gan_mnist.UsageError(f"{path} is {width}x{height} pixels, not a 10x10 grid of digits (about square, "
                         "at least 280 pixels a side): pass a grid that gan_mnist.py or the 2017 code drew")
    cell = height // 10
    runs = [np.diff(np.flatnonzero(np.diff(row))) for row in ink if (row > 55).sum() >= 5]
    runs = [r for r in runs if len(r)]
    side = 28 * int(np.bincount(np.concatenate(runs or [[1]]).astype(int)).argmax())
    padded = np.pad(ink, side)
    digits = []
    for r in range(10):
        for c in range(10):
            box = ink[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
            y, x = (np.indices(box.shape) * box).reshape(2, -1).sum(1) / max(box.sum(), 1)
            top, left = int(round(r * cell + y - side / 2)) + side, int(round(c * cell + x - side / 2)) + side
            crop = Image.fromarray(padded[top:top + side, left:left + side].astype(np.uint8))
            digits.append(np.asarray(crop.resize((28, 28), Image.BILINEAR), np.float32) / 127.5 - 1)
    return np.stack(digits).reshape(100, 784)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score the 100 digits of a 10x10 grid picture.")
    parser.add_argument("grid", metavar="GRID.png", help="a grid that gan_mnist.py or the 2017 code drew")
    parser.add_argument("--classifier", default=gan_mnist.CLASSIFIER, help="the digit classifier that scores")
    args = parser.parse_args(argv)
    try:
        scorer = gan_mnist.DigitScorer(args.classifier)
        digits = grid_digits(args.grid)
        real = gan_mnist.load_mnist_data("subset", limit=100)[0]
        with tempfile.TemporaryDirectory() as folder:  # real digits, drawn and cut out the same way
            real_grid = gan_mnist.plot_generated_images(lambda noise, training: real, real,
                                                        os.path.join(folder, "real.png"))
            real_scores = scorer(grid_digits(real_grid))
    except gan_mnist.UsageError as e:
        print(f"score_grid.py: error: {e}", file=sys.stderr)
        return 2
    print(f"100 real digits drawn as a grid and cut out again: {gan_mnist.describe_scores(real_scores)}")
    print(f"{args.grid} (its 100 digits): {gan_mnist.describe_scores(scorer(digits))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
