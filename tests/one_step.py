"""One training step as make_train_step builds it, from the weights, batch and noise in IN.npz, with
Dropout off; every weight after it, and the two losses, go to OUT.npz. tests/test_backends.py runs
it on each backend: python tests/one_step.py IN.npz OUT.npz"""
import sys

import keras
import numpy as np

import gan_mnist
from conftest import build

given = dict(np.load(sys.argv[1]))
generator, discriminator, gan = build()
for layer in discriminator.layers:
    if isinstance(layer, keras.layers.Dropout):
        layer.rate = 0.0  # the backends' random streams differ; with dropout off nothing else is random
ema = gan_mnist.get_ema_generator(generator)
for model, prefix in ((generator, "g"), (discriminator, "d"), (ema, "g")):
    model.set_weights([given[f"{prefix}{i}"] for i in range(len(model.weights))])
draws = iter([given["noise"], given["index"], given["fresh_noise"]])  # the step's three draws, in order
keras.random.normal = keras.random.randint = lambda *args, **kwargs: keras.ops.convert_to_tensor(next(draws))
step = gan_mnist.make_train_step(generator, discriminator, gan, given["x_train"], 16, 100, 0.9,
                                 keras.random.SeedGenerator(0), ema, 0.999)
[(d_loss, g_loss)] = np.array(step(1))
np.savez(sys.argv[2], losses=np.array([float(d_loss), float(g_loss)]),
         **{f"{name}{i}": np.array(w) for name, model in (("g", generator), ("d", discriminator), ("e", ema))
            for i, w in enumerate(model.weights)})
