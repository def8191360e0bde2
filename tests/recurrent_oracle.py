"""An independent numpy implementation of the recurrent LIF (csrc/lif.h,
"Recurrent LIF") and of its backpropagation through time, written from the
formulas, not from the kernels:

    I[t] = T(currents[t] + bias) + s[t-1] @ R      s[-1] = initial spikes
    u[t] = v[t-1] · decay + I[t],  s[t] = [u[t] > θ],  v[t] = reset(u[t], s[t])

The forward runs in float32 with one rounding per operation, as TensorFlow's
ops do, except the recurrent product s[t-1] @ R, which is a dense float64
matmul rounded once: for weights on a grid of 1/8 (and sums below 2^20) it
is exact, so it equals the kernels' row sums whatever their order. The
backward (dL/d currents, R, bias, decay, threshold, initial membrane,
initial spikes) accumulates in float64 throughout, surrogates included.
"""

import numpy as np

from oracle import decay_of, reset_of

f32 = np.float32


def forward(currents, recurrent_kernel, tau=20.0, threshold=1.0, reset="zero", initial=None,
            initial_spikes=None, bias=None, dtype=np.float32):
    """spikes, u (pre-reset membrane), final membrane; currents + bias are
    rounded to `dtype` (the op's element type) as T(currents + bias)."""
    currents = np.asarray(currents, f32)
    B, T, N = currents.shape
    R = np.asarray(recurrent_kernel, np.float64)
    decay = decay_of(tau)
    threshold = np.asarray(threshold, f32)
    current = currents if bias is None else currents + np.asarray(bias, f32)
    current = current.astype(dtype).astype(f32)
    v = np.zeros((B, N), f32) if initial is None else np.asarray(initial, f32).copy()
    s = np.zeros((B, N), f32) if initial_spikes is None else np.asarray(initial_spikes, f32)
    spikes = np.zeros_like(currents)
    u_all = np.zeros_like(currents)
    with np.errstate(invalid="ignore", over="ignore"):
        for t in range(T):
            recurrent = (s.astype(np.float64) @ R).astype(f32)
            u = v * decay + (current[:, t] + recurrent)
            s = (u > threshold).astype(f32)
            v = reset_of(u, s, threshold, reset)
            spikes[:, t], u_all[:, t] = s, u
    return spikes, u_all, v


def surrogate(x, alpha, kind):
    """σ'(x), float64."""
    a = float(alpha)
    if kind == "fast_sigmoid":
        return 1.0 / (1.0 + np.abs(a * x)) ** 2
    if kind == "atan":
        return (a / 2.0) / (1.0 + (np.pi / 2.0 * a * x) ** 2)
    if kind == "sigmoid":
        sig = 1.0 / (1.0 + np.exp(-a * x))
        return a * sig * (1.0 - sig)
    if kind == "triangle":
        return np.maximum(0.0, 1.0 - np.abs(a * x))
    raise ValueError(kind)


def backward(grad_spikes, spikes, u_all, recurrent_kernel, tau=20.0, threshold=1.0, alpha=10.0,
             surrogate_kind="fast_sigmoid", reset="zero", detach_reset=False, initial=None,
             initial_spikes=None, grad_final=None):
    """BPTT of `forward`, given its spikes and u; returns a dict of float64
    gradients: currents [B, T, N] (= dL/dI[t]), recurrent_kernel [N, N],
    decay and threshold per (batch row, neuron) [B, N] (sum them to the
    parameter's shape), initial_membrane and initial_spikes [B, N]."""
    g = np.asarray(grad_spikes, np.float64)
    u_all = np.asarray(u_all, np.float64)
    B, T, N = u_all.shape
    R = np.asarray(recurrent_kernel, np.float64)
    decay = np.asarray(decay_of(tau), np.float64)
    th = np.asarray(threshold, np.float64) + np.zeros(N)
    v0 = np.zeros((B, N)) if initial is None else np.asarray(initial, np.float64)
    s0 = np.zeros((B, N)) if initial_spikes is None else np.asarray(initial_spikes, np.float64)
    gv = np.zeros((B, N)) if grad_final is None else np.asarray(grad_final, np.float64).copy()
    grad_current = np.zeros((B, T, N))
    g_decay = np.zeros((B, N))
    g_th = np.zeros((B, N))
    g_next = np.zeros((B, N))  # dL/dI[t+1]
    for t in range(T - 1, -1, -1):
        u = u_all[:, t]
        s = (u > th).astype(np.float64)
        sg = surrogate(u - th, alpha, surrogate_kind)
        if reset == "zero":
            dv_du, dv_ds, dv_dth = 1 - s, -u, 0.0
        elif reset == "subtract":
            dv_du, dv_ds, dv_dth = 1.0, -th, -s
        else:
            dv_du, dv_ds, dv_dth = 1.0, 0.0, 0.0
        # s[t] reaches the loss directly, through I[t+1] = ... + s[t] @ R,
        # and (unless detached) through the reset.
        gs = g[:, t] + g_next @ R.T
        if not detach_reset and reset != "none":
            gs = gs + gv * dv_ds
        gu = gv * dv_du + gs * sg
        if t > 0:
            up = u_all[:, t - 1]
            v_prev = reset_of(up, (up > th).astype(np.float64), th, reset)
        else:
            v_prev = v0
        grad_current[:, t] = gu
        g_decay += gu * v_prev
        g_th += -gs * sg + gv * dv_dth
        gv = gu * decay
        g_next = gu
    s_prev = np.concatenate([s0[:, None], np.asarray(spikes, np.float64)[:, :-1]], axis=1)
    return {
        "currents": grad_current,
        "recurrent_kernel": np.einsum("btj,btn->jn", s_prev[:, :T], grad_current),
        "bias": grad_current.sum((0, 1)),
        "decay": g_decay,
        "threshold": g_th,
        "initial_membrane": gv,
        "initial_spikes": g_next @ R.T if T > 0 else np.zeros((B, N)),
    }


def grid_inputs(shape, seed=0, density=0.3, per_neuron=False):
    """Inputs on a grid of 1/8 (tau 2 or 4): every forward sum is exact in
    float32, whatever its order. Returns a dict: currents [B, T, N],
    recurrent_kernel [N, N] (float32), tau, threshold, bias, initial_membrane,
    initial_spikes. Recurrent weights are mostly small (a few nonzero per
    column) so that the layer neither falls silent nor saturates."""
    B, T, N = shape
    rng = np.random.default_rng(seed)
    eighths = lambda low, high, size: rng.integers(low, high + 1, size).astype(f32) / f32(8)  # noqa: E731
    nonzero = rng.random((N, N)) < min(1.0, 6.0 / max(N, 1))
    R = (eighths(-3, 2, (N, N)) * nonzero).astype(f32)
    inputs = {
        "currents": eighths(-4, 12, shape),
        "recurrent_kernel": R,
        "tau": rng.choice(np.float32([2.0, 4.0]), N) if per_neuron else 4.0,
        "threshold": eighths(6, 10, N) if per_neuron else 1.0,
        "bias": eighths(-1, 1, N) if per_neuron else 0.125,
        "initial_membrane": eighths(-4, 8, (B, N)),
        "initial_spikes": (rng.random((B, N)) < density).astype(f32),
    }
    return inputs
