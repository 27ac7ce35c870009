"""The training example (examples/train_mlp.py) in a tiny version: the loss goes down."""
import importlib.util
import pathlib

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "train_mlp.py"


def test_train_mlp_loss_goes_down():
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    losses, accuracy = mod.main(steps=40, verbose=False)
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * losses[0], losses
    assert accuracy > 0.8
