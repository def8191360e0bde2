// What each CUDA thread does, as host+device functions of its block and
// thread index, and the launches the CUDA path makes, in order. The kernels
// in lif_cuda.cu are one-line wrappers around these functions; the bindings'
// device="emulated" (lif_bindings.cc) runs the same functions on the CPU over
// every (block, thread) of the same launch shapes, so the GPU's indexing and
// launch arithmetic are tested on machines without a GPU.
//
// Layout: one thread per (batch row b, neuron n) column, col = b·N + n,
// looping over time; neighbouring threads touch neighbouring neurons, so
// every load and store is coalesced. The math is lif.h's.
#ifndef FUSED_LIF_LIF_CUDA_THREADS_H_
#define FUSED_LIF_LIF_CUDA_THREADS_H_

#include <cstdint>

#include "lif.h"
#include "lif_dispatch.h"
#include "lif_kernels.h"
#include "lif_reduce.h"

namespace fused_lif {

constexpr unsigned kCudaThreads = 256;  // threads per block

// A one-dimensional launch: `blocks` blocks of `threads` threads, and
// `shared_bytes` of dynamic shared memory per block.
struct LaunchShape {
  int64_t blocks = 0;
  unsigned threads = kCudaThreads;
  int64_t shared_bytes = 0;
};

// Enough blocks of kCudaThreads for one thread per item (the last block partial).
inline LaunchShape launch_for(int64_t items) {
  return {(items + kCudaThreads - 1) / kCudaThreads, kCudaThreads};
}

LIF_HOST_DEVICE int64_t global_index(unsigned block, unsigned thread, unsigned threads) {
  return static_cast<int64_t>(block) * threads + thread;
}

inline int64_t param_count(int64_t stride, int64_t neurons) { return stride ? neurons : 1; }

// Forward, one column: u[t], s[t], v[t] for t = 0 .. T-1.
template <typename T, Reset R>
LIF_HOST_DEVICE void lif_forward_thread(const LifForwardArgs& a, unsigned block, unsigned thread,
                                        unsigned threads) {
  const int64_t col = global_index(block, thread, threads);
  if (col >= a.batch * a.neurons) return;
  const int64_t N = a.neurons, b = col / N, n = col % N;
  const T* currents = static_cast<const T*>(a.currents);
  T* spikes = static_cast<T*>(a.spikes);
  const float bias = static_cast<float>(static_cast<const T*>(a.bias)[n * a.bias_stride]);
  const float decay = a.decay[n * a.decay_stride];
  const float threshold = a.threshold[n * a.threshold_stride];
  float v = a.initial_membrane[col];
  int64_t idx = b * a.time * N + n;  // [b, t, n]
  for (int64_t t = 0; t < a.time; ++t, idx += N) {
    const float u = lif_charge(decay, v, lif_current(currents[idx], bias));
    const float s = lif_spike(u, threshold);
    a.pre_reset_membrane[idx] = u;
    spikes[idx] = static_cast<T>(s);
    v = lif_reset<R>(u, s, threshold);
  }
  a.final_membrane[col] = v;
}

// Backward, one column: t = T-1 .. 0; its sums over time go to the scratch
// rows (decay, threshold, bias), reduced over the batch afterwards.
template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
LIF_HOST_DEVICE void lif_backward_thread(const LifBackwardArgs& a, unsigned block, unsigned thread,
                                         unsigned threads) {
  const int64_t col = global_index(block, thread, threads);
  const int64_t BN = a.batch * a.neurons;
  if (col >= BN) return;
  const int64_t N = a.neurons, b = col / N, n = col % N;
  const T* grad_spikes = static_cast<const T*>(a.grad_spikes);
  T* grad_currents = static_cast<T*>(a.grad_currents);
  const float decay = a.decay[n * a.decay_stride];
  const float threshold = a.threshold[n * a.threshold_stride];
  LifColumnGrads g{a.grad_final_membrane[col], 0.0f, 0.0f, 0.0f};
  int64_t idx = (b * a.time + a.time - 1) * N + n;
  float u = a.time > 0 ? a.pre_reset_membrane[idx] : 0.0f;
  for (int64_t t = a.time - 1; t >= 0; --t, idx -= N) {
    // v[t-1]: recomputed from u[t-1], or the initial membrane at t = 0.
    float u_prev = 0.0f, v_prev = 0.0f;
    if (t > 0) u_prev = a.pre_reset_membrane[idx - N];
    if (ParamGrads) {
      v_prev = t > 0 ? lif_reset<R>(u_prev, lif_spike(u_prev, threshold), threshold)
                     : a.initial_membrane[col];
    }
    const float grad_current = lif_backward_step<S, R, ParamGrads, DetachReset>(
        u, v_prev, static_cast<float>(grad_spikes[idx]), decay, threshold, a.alpha, g);
    grad_currents[idx] = static_cast<T>(grad_current);
    u = u_prev;
  }
  a.grad_initial_membrane[col] = g.membrane;
  a.scratch[col] = g.decay;
  a.scratch[BN + col] = g.threshold;
  a.scratch[2 * BN + col] = g.bias;
}

// Arguments of the reduction kernels: one scratch row [batch, neurons] -> out.
template <typename P>
struct SumArgs {
  const float* rows = nullptr;
  int64_t batch = 0, neurons = 0;
  P* out = nullptr;
};

// out[n] = Σ_b rows[b, n]: one thread per neuron.
template <typename P>
LIF_HOST_DEVICE void sum_over_batch_thread(const SumArgs<P>& s, unsigned block, unsigned thread,
                                           unsigned threads) {
  const int64_t n = global_index(block, thread, threads);
  if (n < s.neurons) sum_over_batch_column(s.rows, s.batch, s.neurons, n, s.out);
}

// The launches of the forward and the backward, in order, on a Launch that
// runs them: the CUDA launcher (lif_cuda.cu) or the emulator (bindings).
// Launch provides
//   forward<T, R>(args, shape), backward<T, S, R, ParamGrads, DetachReset>(args, shape),
//   sum_over_batch<P>(SumArgs<P>, shape), sum_all<P>(SumArgs<P>) (one block of
//   kSumThreads), zero(float* device_ptr, count)
// each returning a LifCudaStatus; the first failure stops the sequence.
template <typename T, typename Launch>
LifCudaStatus lif_forward_launches(const LifForwardArgs& a, Launch& launch) {
  const int64_t columns = a.batch * a.neurons;
  if (columns == 0) return {};
  return dispatch_forward(a, [&](auto reset) {
    return launch.template forward<T, decltype(reset)::value>(a, launch_for(columns));
  });
}

template <typename P, typename Launch>
LifCudaStatus lif_reduce_launches(const float* rows, const LifBackwardArgs& a, int64_t stride,
                                  P* out, Launch& launch) {
  SumArgs<P> s;
  s.rows = rows;
  s.batch = a.batch;
  s.neurons = a.neurons;
  s.out = out;
  if (stride == 0) return launch.sum_all(s);
  if (a.neurons == 0) return {};
  return launch.sum_over_batch(s, launch_for(a.neurons));
}

// After the backward scan: the parameter gradients from the scratch rows
// (lif_reduce.h's order), or zeros for tau and threshold when constant.
template <typename T, typename Launch>
LifCudaStatus lif_backward_reduce_launches(const LifBackwardArgs& a, Launch& launch) {
  const int64_t BN = a.batch * a.neurons;
  LifCudaStatus status;
  if (a.param_grads) {
    status = lif_reduce_launches(a.scratch, a, a.decay_stride, a.grad_decay, launch);
    if (!status.ok()) return status;
    status = lif_reduce_launches(a.scratch + BN, a, a.threshold_stride, a.grad_threshold, launch);
  } else {
    status = launch.zero(a.grad_decay, param_count(a.decay_stride, a.neurons));
    if (!status.ok()) return status;
    status = launch.zero(a.grad_threshold, param_count(a.threshold_stride, a.neurons));
  }
  if (!status.ok()) return status;
  return lif_reduce_launches(a.scratch + 2 * BN, a, a.bias_stride, static_cast<T*>(a.grad_bias),
                             launch);
}

template <typename T, typename Launch>
LifCudaStatus lif_backward_launches(const LifBackwardArgs& a, Launch& launch) {
  const int64_t BN = a.batch * a.neurons;
  if (BN > 0) {
    const LifCudaStatus status = dispatch_backward(a, [&](auto surrogate, auto reset,
                                                          auto param_grads, auto detach_reset) {
      return launch.template backward<T, decltype(surrogate)::value, decltype(reset)::value,
                                      decltype(param_grads)::value,
                                      decltype(detach_reset)::value>(a, launch_for(BN));
    });
    if (!status.ok()) return status;
  }
  return lif_backward_reduce_launches<T>(a, launch);
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_CUDA_THREADS_H_
