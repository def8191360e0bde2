"""Checks the kernels through fused_lif.kernels, without TensorFlow:
spikes, pre-reset and final membrane bit-identical to the numpy oracle;
gradients within 1e-5 of max |grad| of it, and every gradient (currents,
decay, threshold, bias, initial membrane) bit-identical to the CPU kernels'
for the other devices. The same for the recurrent LIF kernels (against
recurrent_oracle.py on its exact 1/8 grid; gradients within 2e-5, initial
spikes' included, and bit-identical to the CPU kernels').

  --device cpu       the CPU loops (what sanitize.sh runs under ASan/UBSan)
  --device emulated  the CUDA kernels' per-thread code over every index of
                     their launches, on the CPU (sanitize.sh too)
  --device cuda      the CUDA kernels (gpu_check.sh); also checks that a
                     failed launch is reported, that the device has a kernel
                     image, and reports bandwidth next to a device copy

    PYTHONPATH=<build dir>:tests python3 tests/standalone/check_kernels.py --device cpu
"""

import argparse
import itertools
import sys
import time

import numpy as np

import kernels  # the bindings built by gpu_check.sh / sanitize.sh
import oracle
import recurrent_oracle

SHAPES = [(1, 1, 1), (3, 50, 7), (7, 33, 300), (2, 1000, 257), (64, 100, 512), (33, 20, 1031)]
OPTIONS = list(itertools.product(["fast_sigmoid", "atan", "sigmoid", "triangle"],
                                 ["zero", "subtract", "none"], [False, True]))


def currents(shape, seed):
    return np.random.default_rng(seed).normal(0.3, 1.0, shape).astype(np.float32)


def decay(tau):
    """decay = 1 - 1/tau, as the op is given it (the oracle's rounding)."""
    value = oracle.decay_of(tau)
    return float(value) if np.ndim(value) == 0 else value


def report(ok, line):
    print(f"{line} {'ok' if ok else 'MISMATCH'}")
    return not ok


def check_forward(device):
    failures = 0
    for i, shape in enumerate(SHAPES):
        for tau, threshold in [(20.0, 1.0), (3.0, 0.0)]:
            x = currents(shape, i)
            for reset in ["zero", "subtract", "none"]:
                got = kernels.lif_forward(x, decay(tau), threshold, reset=reset, device=device)
                want = oracle.forward(x, tau, threshold, reset)
                ok = all(np.array_equal(a, b) for a, b in zip(got, want))
                failures += report(ok, f"forward  {str(shape):16} tau={tau:<4} th={threshold:<3} "
                                       f"{reset:8}")
    return failures


def check_backward(device):
    """Every option; per-neuron and scalar parameters (per-neuron sums and the
    sum tree); vs the oracle (tolerance) and the CPU kernels (bit for bit)."""
    failures = 0
    rng = np.random.default_rng(1)
    for shape in [(7, 33, 300), (40, 9, 5)]:
        b, _, n = shape
        x = currents(shape, 99)
        g = rng.normal(size=shape).astype(np.float32)
        g_final = rng.normal(size=(b, n)).astype(np.float32)
        initial = rng.normal(0, 0.5, (b, n)).astype(np.float32)
        per_neuron = dict(tau=np.linspace(2, 30, n).astype(np.float32),
                          threshold=np.linspace(0.6, 1.2, n).astype(np.float32),
                          bias=np.linspace(-0.1, 0.1, n).astype(np.float32))
        scalar = dict(tau=7.0, threshold=0.9, bias=0.05)
        for (surrogate, reset, detach), (kind, p) in itertools.product(
                OPTIONS, [("per-neuron", per_neuron), ("scalar", scalar)]):
            xb = x + np.float32(p["bias"])
            u = kernels.lif_forward(x, decay(p["tau"]), p["threshold"], bias=p["bias"],
                                    initial_membrane=initial, reset=reset, device=device)[1]
            got, cpu = (kernels.lif_backward(
                g, u, decay(p["tau"]), p["threshold"], grad_final_membrane=g_final,
                initial_membrane=initial, bias=p["bias"], alpha=3.0, surrogate=surrogate,
                reset=reset, detach_reset=detach, device=dev) for dev in (device, "cpu"))
            want = oracle.backward(g, xb, p["tau"], p["threshold"], 3.0, surrogate, reset, detach,
                                   initial, g_final)[0]
            err = np.max(np.abs(got.grad_currents - want)) / max(np.max(np.abs(want)), 1e-30)
            same = [name for name, a, c in zip(cpu._fields, got, cpu) if not np.array_equal(a, c)]
            failures += report(err <= 1e-5 and not same,
                               f"backward {str(shape):12} {kind:10} {surrogate:12} {reset:8} "
                               f"detach={detach!s:5} vs-oracle={err:.1e} "
                               f"vs-cpu={'identical' if not same else 'differ: ' + ','.join(same)}")
    return failures


def check_edge_cases(device):
    """Empty dimensions, strided views, non-finite currents."""
    failures = 0
    for shape in [(0, 3, 2), (2, 0, 2), (2, 3, 0)]:
        s, u, v = kernels.lif_forward(np.zeros(shape, np.float32), 0.95, 1.0, device=device)
        g = kernels.lif_backward(s, u, 0.95, 1.0, device=device)
        failures += not (s.shape == u.shape == g.grad_currents.shape == shape)
    x = currents((4, 40, 30), 5)
    x[0, 3, :5] = [np.nan, np.inf, -np.inf, 3e38, -3e38]
    view = x[:, ::3, 1::2]
    s, u, _ = kernels.lif_forward(view, decay(20.0), 1.0, device=device)
    es, eu, _ = oracle.forward(np.ascontiguousarray(view))
    ok = np.array_equal(s, es) and np.array_equal(u, eu, equal_nan=True)
    return failures + report(ok, "edge cases (empty, strided, non-finite)")


# Recurrent shapes: one neuron, partial warps, threads owning 2-3 neurons
# (past 512), rows past the CPU's 4-row blocks; on the GPU also a layer whose
# gradient buffers do not fit in shared memory (global memory instead).
RECURRENT_SHAPES = [(1, 1, 1), (3, 40, 7), (9, 20, 33), (5, 12, 130), (2, 6, 600), (2, 8, 1100)]
RECURRENT_GPU_SHAPES = [(64, 100, 256), (2, 3, 6200)]


def recurrent_call(p, device, reset, g=None, g_final=None, **options):
    decay = recurrent_oracle.decay_of(p["tau"])
    decay = float(decay) if np.ndim(decay) == 0 else decay
    common = dict(initial_membrane=p["initial_membrane"], bias=p["bias"], device=device)
    if g is None:
        return kernels.recurrent_lif_forward(p["currents"], p["recurrent_kernel"], decay,
                                             p["threshold"], initial_spikes=p["initial_spikes"],
                                             reset=reset, **common)
    return kernels.recurrent_lif_backward(g, p["pre_reset"], p["recurrent_kernel"], decay,
                                          p["threshold"], grad_final_membrane=g_final,
                                          reset=reset, **common, **options)


def check_recurrent(device):
    """Forward bit for bit against the oracle on its 1/8 grid (every reset);
    backward for every option against the oracle (2e-5 of max |grad|) and
    bit for bit against the CPU kernels."""
    failures = 0
    shapes = RECURRENT_SHAPES + (RECURRENT_GPU_SHAPES if device == "cuda" else [])
    rng = np.random.default_rng(2)
    for i, shape in enumerate(shapes):
        b, _, n = shape
        for per_neuron in (False, True):
            p = recurrent_oracle.grid_inputs(shape, seed=i, per_neuron=per_neuron)
            kind = "per-neuron" if per_neuron else "scalar"
            for reset in ["zero", "subtract", "none"]:
                got = recurrent_call(p, device, reset)
                want = recurrent_oracle.forward(p["currents"], p["recurrent_kernel"], p["tau"],
                                                p["threshold"], reset, p["initial_membrane"],
                                                p["initial_spikes"], p["bias"])
                ok = all(np.array_equal(a, c) for a, c in zip(got, want))
                failures += report(ok, f"recurrent forward  {str(shape):16} {kind:10} {reset:8}")
            small = b * n <= 300 or device == "cuda"
            g = rng.normal(size=shape).astype(np.float32)
            g_final = rng.normal(size=(b, n)).astype(np.float32)
            options = OPTIONS if small else [("atan", "subtract", False)]
            for surrogate, reset, detach in options:
                fwd = recurrent_call(p, device, reset)
                q = dict(p, pre_reset=fwd.pre_reset_membrane)
                kw = dict(alpha=3.0, surrogate=surrogate, detach_reset=detach)
                got, cpu = (recurrent_call(q, dev, reset, g, g_final, **kw)
                            for dev in (device, "cpu"))
                want = recurrent_oracle.backward(g, fwd.spikes, fwd.pre_reset_membrane,
                                                 p["recurrent_kernel"], p["tau"], p["threshold"],
                                                 3.0, surrogate, reset, detach,
                                                 p["initial_membrane"], p["initial_spikes"],
                                                 g_final)
                errors = []
                for name in ("currents", "initial_membrane", "initial_spikes"):
                    w = want[name]
                    a = getattr(got, f"grad_{name}")
                    errors.append(np.max(np.abs(a - w), initial=0) /
                                  max(np.max(np.abs(w), initial=0), 1e-30))
                same = [name for name, a, c in zip(cpu._fields, got, cpu)
                        if not np.array_equal(a, c)]
                failures += report(max(errors) <= 2e-5 and not same,
                                   f"recurrent backward {str(shape):16} {kind:10} {surrogate:12} "
                                   f"{reset:8} detach={detach!s:5} vs-oracle={max(errors):.1e} "
                                   f"vs-cpu={'identical' if not same else 'differ: ' + ','.join(same)}")
    return failures


def check_cuda_reporting():
    """A launch that fails is reported with the kernel's name and CUDA's words;
    the device has an image of the kernels."""
    failures = 0
    message = kernels.cuda_launch_probe(2048)  # > 1024 threads per block: cannot launch
    ok = message is not None and "probe_kernel" in message and "cudaError" in message
    failures += report(ok, f"launch failure reported: {message}")
    failures += report(kernels.cuda_launch_probe(256) is None, "a valid launch reports success")
    problem = kernels.cuda_check_device(0)
    failures += report(problem is None, f"kernel image for GPU 0 (built for "
                                        f"{kernels.cuda_architectures()}): {problem or 'present'}")
    return failures


def bandwidth_table():
    print(f"{'shape':>18} {'kernel':>9} {'ms':>8} {'GB/s':>8} {'copy GB/s':>10} {'of copy':>8}")
    for shape in [(64, 100, 512), (128, 100, 512), (256, 200, 1024), (32, 1000, 1024)]:
        t = kernels.cuda_benchmark(*shape, 20)
        copy_bw = t["copy_bytes"] / t["copy_ms"] / 1e6
        for name in ("forward", "backward"):
            bw = t[f"{name}_bytes"] / t[f"{name}_ms"] / 1e6
            print(f"{str(shape):>18} {name:>9} {t[f'{name}_ms']:8.3f} {bw:8.0f} {copy_bw:10.0f} "
                  f"{bw / copy_bw:8.0%}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["cpu", "emulated", "cuda"], default="cuda")
    device = parser.parse_args().device
    if device == "cuda" and not kernels.cuda_available():
        print("FAIL: no CUDA device visible to fused_lif.kernels")
        return 1
    start = time.time()
    failures = 0
    if device == "cuda":
        failures += check_cuda_reporting()
    failures += check_forward(device) + check_backward(device) + check_edge_cases(device)
    failures += check_recurrent(device)
    print(f"\ncorrectness on {device}: {failures} failures ({time.time() - start:.1f} s)\n")
    if device == "cuda":
        bandwidth_table()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
