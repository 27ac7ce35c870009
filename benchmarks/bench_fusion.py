"""BatchNorm folding (fastnorm.utils.fuse_conv_bn_weights) on a ResNet-sized 3x3 convolution's
weight, float32, against torch.nn.utils.fusion.fuse_conv_bn_weights. A one-off cost at model
load time: timed to keep it from regressing, not as a hot path."""
import numpy as np
import pytest

from fastnorm.utils import fuse_conv_bn_weights

SHAPE = (256, 256, 3, 3)


def _arrays():
    rng = np.random.default_rng(0)
    C = SHAPE[0]
    return (rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(C, dtype=np.float32),
            rng.standard_normal(C, dtype=np.float32),
            rng.uniform(0.5, 2.0, C).astype(np.float32), 1e-5,
            rng.standard_normal(C, dtype=np.float32), rng.standard_normal(C, dtype=np.float32))


@pytest.mark.parametrize("peer", ["fastnorm", "torch"])
def test_fuse_conv_bn_weights(benchmark, peer, request):
    args = _arrays()
    w, b = fuse_conv_bn_weights(*args)
    if peer == "fastnorm":
        call = lambda: fuse_conv_bn_weights(*args)  # noqa: E731
    else:
        torch = request.getfixturevalue("torch")
        fuse = torch.nn.utils.fusion.fuse_conv_bn_weights
        targs = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
        call = lambda: fuse(*targs)  # noqa: E731
        tw, tb = call()
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-6, atol=1e-6)
    benchmark.group = f"fuse_conv_bn_weights {'x'.join(map(str, SHAPE))} float32"
    benchmark(call)
