"""One training step as make_train_steps builds it, from the weights, batch and noise in IN.npz,
with Dropout off; every weight after it, and the two losses, go to OUT.npz. tests/test_backends.py
runs it on each backend: python tests/one_step.py IN.npz OUT.npz"""
import argparse
import sys

import keras
import numpy as np

import gan_mnist
from conftest import build

given = dict(np.load(sys.argv[1]))
generator, discriminator, gan = build()
for layer in discriminator.layers:
    if isinstance(layer, keras.layers.Dropout):
        # the backends' random streams differ; with dropout off nothing else is random
        layer.rate = 0.0
ema = gan_mnist.get_ema_generator(generator, 0.999)
for model, prefix in ((generator, "g"), (discriminator, "d"), (ema, "g")):
    model.set_weights([given[f"{prefix}{i}"] for i in range(len(model.weights))])
# the step's three draws, in order
draws = iter([given["noise"], given["index"], given["fresh_noise"]])
keras.random.normal = keras.random.randint = lambda *_, **__: keras.ops.array(next(draws))
settings = argparse.Namespace(batch_size=16, random_dim=100, real_label=0.9, ema_decay=0.999)
step = gan_mnist.make_train_steps(generator, discriminator, gan, given["x_train"], settings,
                                  keras.random.SeedGenerator(0), ema)
[(d_loss, g_loss)] = np.array(step(1))
models = (("g", generator), ("d", discriminator), ("e", ema))
np.savez(sys.argv[2], losses=np.array([float(d_loss), float(g_loss)]),
         **{f"{name}{i}": np.array(w) for name, m in models for i, w in enumerate(m.weights)})
