"""An independent numpy implementation of the LIF recurrence and of its
backward pass, written from the formulas (csrc/lif.h), not from the
kernels: the oracle that both the fused op and the reference are checked
against. float32 throughout, one rounding per operation, like TensorFlow."""

import numpy as np

f32 = np.float32


def decay_of(tau):
    """1 - 1/tau: double for a Python number (as the seed), float32 for arrays."""
    if isinstance(tau, (int, float)):
        return f32(1.0 - 1.0 / tau)
    tau = np.asarray(tau, f32)
    return f32(1.0) - f32(1.0) / tau


def surrogate(x, alpha, kind):
    a = f32(alpha)
    if kind == "fast_sigmoid":
        return f32(1.0) / (f32(1.0) + np.abs(a * x)) ** 2
    if kind == "atan":
        return (a / f32(2.0)) / (f32(1.0) + (f32(np.pi / 2) * a * x) ** 2)
    if kind == "sigmoid":
        sig = f32(1.0) / (f32(1.0) + np.exp(-a * x))
        return a * sig * (f32(1.0) - sig)
    if kind == "triangle":
        return np.maximum(f32(0.0), f32(1.0) - np.abs(a * x))
    raise ValueError(kind)


def reset_of(u, s, threshold, reset):
    if reset == "zero":
        return u * (f32(1.0) - s)
    if reset == "subtract":
        return u - s * threshold
    return u


def forward(currents, tau=20.0, threshold=1.0, reset="zero", initial=None):
    """Returns spikes, u (pre-reset membrane) and the final membrane."""
    currents = np.asarray(currents, f32)
    B, T, N = currents.shape
    decay = decay_of(tau)
    threshold = np.asarray(threshold, f32)
    v = np.zeros((B, N), f32) if initial is None else np.asarray(initial, f32).copy()
    spikes = np.zeros_like(currents)
    u_all = np.zeros_like(currents)
    with np.errstate(invalid="ignore", over="ignore"):
        for t in range(T):
            u = v * decay + currents[:, t]
            s = (u > threshold).astype(f32)
            v = reset_of(u, s, threshold, reset)
            spikes[:, t], u_all[:, t] = s, u
    return spikes, u_all, v


def backward(grad_spikes, currents, tau=20.0, threshold=1.0, alpha=10.0, surrogate_kind="fast_sigmoid",
             reset="zero", detach_reset=False, initial=None, grad_final=None):
    """dL/d(currents, decay, threshold, initial) by the backward recurrence
    (float64 accumulation: an independent check, not a bit-for-bit copy)."""
    _, u_all, _ = forward(currents, tau, threshold, reset, initial)
    g = np.asarray(grad_spikes, np.float64)
    u_all = u_all.astype(np.float64)
    B, T, N = u_all.shape
    decay = np.float64(decay_of(tau))
    th = np.asarray(threshold, np.float64) + np.zeros(N)
    v0 = np.zeros((B, N)) if initial is None else np.asarray(initial, np.float64)
    gv = np.zeros((B, N)) if grad_final is None else np.asarray(grad_final, np.float64).copy()
    grad_currents = np.zeros_like(u_all)
    g_decay = np.zeros((B, N))
    g_th = np.zeros((B, N))
    for t in range(T - 1, -1, -1):
        u = u_all[:, t]
        s = (u > th).astype(np.float64)
        sg = surrogate(u - th, alpha, surrogate_kind).astype(np.float64)
        if reset == "zero":
            dv_du, dv_ds, dv_dth = 1 - s, -u, 0.0
        elif reset == "subtract":
            dv_du, dv_ds, dv_dth = 1.0, -th, -s
        else:
            dv_du, dv_ds, dv_dth = 1.0, 0.0, 0.0
        gs_total = g[:, t] + (0.0 if detach_reset or reset == "none" else gv * dv_ds)
        gu = gv * dv_du + gs_total * sg
        if t > 0:
            up = u_all[:, t - 1]
            v_prev = reset_of(up, (up > th).astype(np.float64), th, reset)
        else:
            v_prev = v0
        grad_currents[:, t] = gu
        g_decay += gu * v_prev
        g_th += -gs_total * sg + gv * dv_dth
        gv = gu * decay
    return grad_currents, g_decay, g_th, gv
