"""Checks the kernels through fused_lif.kernels against the numpy oracle
(spikes and membrane bit-identical; gradients within 1e-5 of max |grad|),
without TensorFlow. `--device cuda` (gpu_check.sh) also reports the CUDA
kernels' bandwidth; `--device cpu` is what sanitize.sh runs under ASan/UBSan.

    PYTHONPATH=<build dir>:tests python3 tests/standalone/check_kernels.py --device cpu
"""

import argparse
import itertools
import sys
import time

import numpy as np

import kernels  # the bindings built by gpu_check.sh
import oracle

SHAPES = [(1, 1, 1), (3, 50, 7), (7, 33, 300), (2, 1000, 257), (64, 100, 512), (33, 20, 1031)]
OPTIONS = list(itertools.product(["fast_sigmoid", "atan", "sigmoid", "triangle"],
                                 ["zero", "subtract", "none"], [False, True]))


def currents(shape, seed):
    return np.random.default_rng(seed).normal(0.3, 1.0, shape).astype(np.float32)


def decay(tau):
    """decay = 1 - 1/tau, as the op is given it (the oracle's rounding)."""
    value = oracle.decay_of(tau)
    return float(value) if np.ndim(value) == 0 else value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    device = parser.parse_args().device
    if device == "cuda" and not kernels.cuda_available():
        print("FAIL: no CUDA device visible to fused_lif.kernels")
        return 1
    failures = 0
    start = time.time()
    for i, shape in enumerate(SHAPES):
        for tau, threshold in [(20.0, 1.0), (3.0, 0.0)]:
            x = currents(shape, i)
            for reset in ["zero", "subtract", "none"]:
                s, u, v = kernels.lif_forward(x, decay(tau), threshold, reset=reset, device=device)
                es, eu, ev = oracle.forward(x, tau, threshold, reset)
                ok = np.array_equal(s, es) and np.array_equal(u, eu) and np.array_equal(v, ev)
                failures += not ok
                print(f"forward  {str(shape):16} tau={tau:<4} th={threshold:<3} {reset:8} "
                      f"{'ok' if ok else 'MISMATCH'}")
    tau = np.linspace(2, 30, 300).astype(np.float32)
    threshold_vec = np.linspace(0.6, 1.2, 300).astype(np.float32)
    for surrogate, reset, detach in OPTIONS:
        shape = (7, 33, 300)
        x = currents(shape, 99)
        g = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        u = kernels.lif_forward(x, decay(tau), 0.9, reset=reset, device=device)[1]
        got = kernels.lif_backward(g, u, decay(tau), 0.9, alpha=3.0, surrogate=surrogate,
                                   reset=reset, detach_reset=detach, device=device)
        want = oracle.backward(g, x, tau, 0.9, 3.0, surrogate, reset, detach)[0]
        err = np.max(np.abs(got.grad_currents - want)) / max(np.max(np.abs(want)), 1e-30)
        # Every gradient (decay, threshold, bias, initial membrane) vs the CPU kernels.
        got_all, cpu_all = (kernels.lif_backward(
            g, u, decay(tau), threshold_vec, bias=np.zeros(300, np.float32), alpha=3.0,
            surrogate=surrogate, reset=reset, detach_reset=detach, device=dev)
            for dev in (device, "cpu"))
        err_cpu = max(np.max(np.abs(got_all[k] - cpu_all[k]))
                      / max(np.max(np.abs(cpu_all[k])), 1e-30) for k in range(len(cpu_all)))
        ok = err <= 1e-5 and err_cpu <= 1e-5
        failures += not ok
        print(f"backward {surrogate:12} {reset:8} detach={detach!s:5} err={err:.1e} "
              f"vs-cpu={err_cpu:.1e} {'ok' if ok else 'MISMATCH'}")
    # Edge cases: empty dimensions, strided views, non-finite currents.
    for shape in [(0, 3, 2), (2, 0, 2), (2, 3, 0)]:
        s, u, _ = kernels.lif_forward(np.zeros(shape, np.float32), 0.95, 1.0, device=device)
        g = kernels.lif_backward(s, u, 0.95, 1.0, device=device).grad_currents
        failures += not (s.shape == u.shape == g.shape == shape)
    x = currents((4, 40, 30), 5)
    x[0, 3, :5] = [np.nan, np.inf, -np.inf, 3e38, -3e38]
    view = x[:, ::3, 1::2]
    s, u, _ = kernels.lif_forward(view, decay(20.0), 1.0, device=device)
    es, eu, _ = oracle.forward(np.ascontiguousarray(view))
    ok = np.array_equal(s, es) and np.array_equal(u, eu, equal_nan=True)
    failures += not ok
    print(f"edge cases (empty, strided, non-finite) {'ok' if ok else 'MISMATCH'}")
    print(f"\ncorrectness on {device}: {failures} failures ({time.time() - start:.1f} s)\n")
    if device != "cuda":
        return 1 if failures else 0
    print(f"{'shape':>18} {'kernel':>9} {'ms':>8} {'GB/s':>8} {'copy GB/s':>10} {'of copy':>8}")
    for shape in [(64, 100, 512), (128, 100, 512), (256, 200, 1024), (32, 1000, 1024)]:
        t = kernels.cuda_benchmark(*shape, 20)
        copy_bw = t["copy_bytes"] / t["copy_ms"] / 1e6
        for name in ("forward", "backward"):
            bw = t[f"{name}_bytes"] / t[f"{name}_ms"] / 1e6
            print(f"{str(shape):>18} {name:>9} {t[f'{name}_ms']:8.3f} {bw:8.0f} {copy_bw:10.0f} "
                  f"{bw / copy_bw:8.0%}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
