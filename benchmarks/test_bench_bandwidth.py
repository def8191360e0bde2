"""The copy-bandwidth baseline: elementwise copies (on TensorFlow's threads,
into new tensors of the sizes the LIF kernels write) that move as many bytes
as the LIF op's forward + backward must at the same shape."""

import numpy as np

import harness as bm


def test_copy_bandwidth(run_benchmark, cache, shape_name):
    shape = bm.get_shape(shape_name)
    nbytes = bm.lif_bytes(*shape.op_shape, backward=True)
    sources, one = bm.copy_inputs(nbytes)
    outputs = run_benchmark(bm.copy_step(), (sources, one), group=f"copy bandwidth: {shape}",
                            kind="copy", shape=shape.name, bytes=bm.copy_bytes(sources))
    for out, src in zip(outputs, sources):
        assert np.array_equal(out.numpy(), src.numpy())
