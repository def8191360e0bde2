"""The benchmark harness: what `benchmarks/` measures with, on top of
`fused_lif._bench_model` (the shape grid, the seed model's inputs, training
step and GEMM floor) and `fused_lif._bench` (the check against the reference,
round-robin timing, the step table), which `fused-lif bench` uses alone.

- `machine`: TensorFlow's thread pools; how busy the CPUs are (/proc/stat).
- `op_level`: the LIF op alone, fused or reference; its bytes; the copy
  baseline that moves as many.
- `model_level`: the seed notebook's own model, the model without the scan,
  DFA, the notebook's model.fit; the checks that the GEMM floor and the bound
  run their GEMMs as a step does.
- `memory`: peak host memory of one layer's step, in a fresh process.
- `conv_level`: the spiking CNN (create_conv_snn_model) fused, reference,
  every LIF a ReLU (the no-scan bound), with TimeDistributed synapses.
- `recurrent_level`: the recurrent network (LIFLayer(recurrent=True)) fused,
  reference and feed-forward; the recurrent forward's density sweep.
- `interleaved`: the scripts' round-robin runs as a benchmark JSON that
  ratios.py reads.

The targets and their ratio table are in `benchmarks/ratios.py`. Used by the
pytest-benchmark suite (benchmarks/test_bench_*.py) and the scripts beside it,
which find it on sys.path (pytest and `python benchmarks/x.py` both put
benchmarks/ there). Every measurement of the fused op is paired with a check
against the reference (a fast wrong result is worthless): spikes must be
equal, gradients equal to float rounding.

Times are medians of `repeats` calls after `warmup` calls; implementations
are measured interleaved (round-robin) so that ratios come from the same
conditions. Compare ratios, never absolute times across machines or runs.
"""
