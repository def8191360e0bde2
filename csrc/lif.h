// The leaky integrate-and-fire math, written once. Both the CPU loops
// (lif_cpu.h) and the CUDA threads' work (lif_cuda_threads.h, which
// lif_cuda.cu's kernels run) call these functions; nothing else in csrc/
// knows the recurrence.
//
// Notation (per batch row b and neuron n, time t = 0 .. T-1):
//   I[t]  input current                     currents[b, t, n] (+ bias[n])
//   d     decay = 1 - 1/tau                 (computed by the caller, float32)
//   θ     threshold
//   v[-1] initial membrane                  initial_membrane[b, n]
//
// Forward (the seed notebook's LIFLayer, exactly):
//   u[t] = d · v[t-1] + I[t]          charge (multiply, round, add, round)
//   s[t] = H(u[t] - θ) = [u[t] > θ]   spike (strict >)
//   v[t] = reset(u[t], s[t])
//          zero:     v = u · (1 - s)
//          subtract: v = u - s · θ
//          none:     v = u
// The kernels save u[t] ("pre_reset_membrane", not the membrane v[t] that
// "final_membrane" and "initial_membrane" are); s[t] and v[t] are recomputed
// from it.
//
// Backward: the spike's derivative is replaced by a surrogate
//   ∂s/∂u = σ'(u - θ) = -∂s/∂θ, where, with x = u - θ,
//          fast_sigmoid: 1 / (1 + |αx|)²
//          atan:         (α/2) / (1 + (π/2 · α · x)²)
//          sigmoid:      α · sig(αx) · (1 - sig(αx))
//          triangle:     max(0, 1 - |αx|)
// and, for t = T-1 .. 0, with gv[T-1] = dL/dv[T-1] (the final membrane's
// gradient) and gs[t] = dL/ds[t] (the spike output's gradient):
//   gŝ[t] = gs[t] + gv[t] · ∂v/∂s     (∂v/∂s = -u, -θ, 0; 0 if detach_reset)
//   gu[t] = gv[t] · ∂v/∂u + gŝ[t] · σ'(u[t] - θ)
//                                      (∂v/∂u = 1 - s, 1, 1)
//   dL/dI[t]   = gu[t]
//   gv[t-1]    = gu[t] · d
//   dL/dd     += gu[t] · v[t-1]
//   dL/dθ     += -gŝ[t] · σ'(u[t] - θ) + gv[t] · ∂v/∂θ   (∂v/∂θ = 0, -s, 0)
// and dL/dv[-1] = gv[-1].  This is exactly the autodiff of the forward pass
// through tf.custom_gradient, including the path through the reset.
//
// Recurrent LIF (FusedLif>RecurrentLif*, lif_recurrent_*.h): the spikes of
// t-1 feed back through R = recurrent_kernel [N, N] (rows presynaptic):
//   s[-1]  initial spikes (0 or 1)         initial_spikes[b, n]
//   I[t] = T(currents[t] + bias) + Σ_{j : s[t-1][j] = 1} R[j, :]
// The recurrent sum is a sum of rows, no multiplication, in float32 from 0,
// j ascending, then added to the rounded current (lif_recurrent_current);
// u[t], s[t], v[t] as above. Backward, for t = T-1 .. 0, the spike s[t]
// also feeds I[t+1]:
//   r[t][j]    = Σ_n dL/dI[t+1][n] · R[j, n]   (n ascending, each product
//                rounded then added; r[T-1] = 0)
//   gs[t]      = dL/ds[t] + r[t]                then gŝ, gu, ... as above
//   dL/ds[-1][j] = Σ_n dL/dI[0][n] · R[j, n]
//   dL/dR      = Σ_t s[t-1]ᵀ dL/dI[t]            (after the loop, outside the kernel)
// Both orders are fixed: the CPU and the CUDA kernels give the same floats,
// whatever the thread count.
#ifndef FUSED_LIF_LIF_H_
#define FUSED_LIF_LIF_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LIF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LIF_HOST_DEVICE inline
#endif

namespace fused_lif {

enum class Surrogate : int { kFastSigmoid = 0, kAtan = 1, kSigmoid = 2, kTriangle = 3 };
enum class Reset : int { kZero = 0, kSubtract = 1, kNone = 2 };

// Round-to-nearest multiply and add that the compiler may not fuse into an
// FMA: TensorFlow computes the reference as separate ops, so must we.
// (Host code is also compiled with -ffp-contract=off, device code with
// --fmad=false. Subnormals are flushed to zero on both: TensorFlow sets
// FTZ/DAZ while its CPU kernels run, and the CUDA code has --ftz=true.)
LIF_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LIF_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
LIF_HOST_DEVICE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// The float with these IEEE-754 bits.
LIF_HOST_DEVICE float float_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// e^x from +, ·, comparisons and bit operations only, each rounded to
// nearest, so that the CPU and the GPU compute the same float (glibc's expf
// and CUDA's differ in the last bit for some x). Within 2 ulp of e^x;
// e^NaN = NaN, overflow gives inf and underflow 0, as expf.
//   n = round(x / ln 2), r = x - n·ln 2 (Cody-Waite: ln 2 in two parts, n·hi
//   exact), |r| <= ln2/2; e^r = 1 + r + r²/2 + ... + r⁷/7! (error < 1e-8);
//   e^x = e^r · 2^⌊n/2⌋ · 2^(n-⌊n/2⌋), two exact powers of two, so that
//   n = 128 (x near 88.7) and subnormal results need no special case.
// Every step is a plain vector operation (min, max, shifts, no division or
// branch), so the CPU loops that call it vectorize in each ISA's clone.
LIF_HOST_DEVICE float lif_exp(float x) {
  // Beyond [-104, 89] e^x rounds to 0 or overflows to inf whatever x is.
  // (As written, max then min: NaN becomes -104, a finite stand-in; NaN is
  // returned below.)
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 89.0f ? xc : 89.0f;
  const float kShift = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
  const float n = sub_rn(add_rn(mul_rn(xc, 1.44269502f), kShift), kShift);
  const float r = sub_rn(sub_rn(xc, mul_rn(n, 0.693145751953125f)), mul_rn(n, 1.42860677e-06f));
  float p = 1.98412701e-04f;  // 1/7!
  p = add_rn(mul_rn(p, r), 1.38888889e-03f);
  p = add_rn(mul_rn(p, r), 8.33333377e-03f);
  p = add_rn(mul_rn(p, r), 4.16666679e-02f);
  p = add_rn(mul_rn(p, r), 1.66666672e-01f);
  p = add_rn(mul_rn(p, r), 0.5f);
  const float em1 = add_rn(mul_rn(mul_rn(p, r), r), r);  // e^r - 1
  const int32_t k = static_cast<int32_t>(n);            // exact: n is an integer in [-150, 129]
  const int32_t k1 = k >> 1, k2 = k - k1;                // ⌊k/2⌋ (arithmetic shift): both in [-75, 65]
  const float scaled = mul_rn(mul_rn(add_rn(1.0f, em1), float_from_bits(static_cast<uint32_t>(k1 + 127) << 23)),
                              float_from_bits(static_cast<uint32_t>(k2 + 127) << 23));
  return x == x ? scaled : x;
}

// I[t] = currents + bias, rounded to the element type T as TensorFlow's add
// of two T tensors would be.
template <typename T>
LIF_HOST_DEVICE float lif_current(T current, float bias) {
  return static_cast<float>(static_cast<T>(add_rn(static_cast<float>(current), bias)));
}

// u[t] = d · v[t-1] + I[t]
LIF_HOST_DEVICE float lif_charge(float decay, float v_prev, float current) {
  return add_rn(mul_rn(v_prev, decay), current);
}

// s[t] = [u[t] > θ]   (NaN never spikes)
LIF_HOST_DEVICE float lif_spike(float u, float threshold) {
  return static_cast<float>(u > threshold);
}

// I[t] of the recurrent LIF: the rounded current plus the recurrent sum.
LIF_HOST_DEVICE float lif_recurrent_current(float current, float recurrent) {
  return add_rn(current, recurrent);
}

// v[t] = reset(u[t], s[t])
template <Reset R>
LIF_HOST_DEVICE float lif_reset(float u, float s, float threshold) {
  if (R == Reset::kZero) return mul_rn(u, 1.0f - s);
  if (R == Reset::kSubtract) return sub_rn(u, mul_rn(s, threshold));
  return u;
}

// σ'(x), x = u - θ
template <Surrogate S>
LIF_HOST_DEVICE float lif_surrogate(float x, float alpha) {
  if (S == Surrogate::kFastSigmoid) {
    const float a = 1.0f + fabsf(alpha * x);
    return 1.0f / (a * a);
  }
  if (S == Surrogate::kAtan) {
    const float z = 1.5707963267948966f * alpha * x;
    return (0.5f * alpha) / (1.0f + z * z);
  }
  if (S == Surrogate::kSigmoid) {
    const float sig = 1.0f / (1.0f + lif_exp(-alpha * x));
    return alpha * sig * (1.0f - sig);
  }
  const float t = 1.0f - fabsf(alpha * x);
  return t < 0.0f ? 0.0f : t;  // max(0, t), NaN propagating as tf.maximum
}

// Gradients accumulated over t by one (b, n) column.
struct LifColumnGrads {
  float membrane;   // gv: dL/dv[t], carried backward through time
  float decay;      // Σ_t gu[t] · v[t-1]
  float threshold;  // Σ_t -gŝ[t] σ'[t] + gv[t] ∂v/∂θ
  float bias;       // Σ_t gu[t]
};

// One backward step at time t. `u` is u[t], `v_prev` is v[t-1] and
// `grad_spike` is gs[t]; returns dL/dI[t] and updates `g` in place. Without
// ParamGrads (tau and threshold are constants) dL/dd and dL/dθ are not
// accumulated and `v_prev` is not used. (Options are template parameters so
// that the CPU loops have no branch and vectorize.)
template <Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
LIF_HOST_DEVICE float lif_backward_step(float u, float v_prev, float grad_spike,
                                        float decay, float threshold, float alpha,
                                        LifColumnGrads& g) {
  const float s = lif_spike(u, threshold);
  const float sg = lif_surrogate<S>(u - threshold, alpha);
  const float gv = g.membrane;
  float dv_du = 1.0f, dv_ds = 0.0f, dv_dth = 0.0f;
  if (R == Reset::kZero) {
    dv_du = 1.0f - s;
    dv_ds = -u;
  } else if (R == Reset::kSubtract) {
    dv_ds = -threshold;
    dv_dth = -s;
  }
  // Without a gradient path through the reset (none, or detach_reset), the
  // term gv · ∂v/∂s is absent, not zero: 0 · inf would be NaN.
  constexpr bool reset_path = R != Reset::kNone && !DetachReset;
  const float gs_total = reset_path ? grad_spike + gv * dv_ds : grad_spike;
  const float gu = gv * dv_du + gs_total * sg;
  if (ParamGrads) {
    g.decay += gu * v_prev;
    g.threshold += R == Reset::kSubtract ? gv * dv_dth - gs_total * sg : -gs_total * sg;
  }
  g.bias += gu;
  g.membrane = gu * decay;
  return gu;
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_H_
