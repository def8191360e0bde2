"""The copy-bandwidth baseline: elementwise copies (on TensorFlow's threads,
into new tensors of the sizes the LIF kernels write) that move as many bytes
as the LIF op's forward + backward must at the same shape."""

import numpy as np

from fused_lif._bench_model import get_shape
from harness import op_level


def test_copy_bandwidth(run_benchmark, cache, shape_name):
    shape = get_shape(shape_name)
    nbytes = op_level.lif_bytes(*shape.op_shape, backward=True)
    sources, one = op_level.copy_inputs(nbytes)
    outputs = run_benchmark(op_level.copy_step(), (sources, one), group=f"copy bandwidth: {shape}",
                            kind="copy", shape=shape.name, bytes=op_level.copy_bytes(sources))
    for out, src in zip(outputs, sources):
        assert np.array_equal(out.numpy(), src.numpy())
