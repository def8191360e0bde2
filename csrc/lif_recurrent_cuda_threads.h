// What each CUDA block and thread of the recurrent LIF kernels does, as
// host+device functions, and the launches in order (as lif_cuda_threads.h
// for the plain LIF kernels). lif_recurrent_cuda.cu runs them on the GPU; the
// bindings' device="emulated" (lif_bindings.cc) runs the same functions on the
// CPU over every block and thread of the same launches, the block's phases
// in the same order (a barrier is the end of a phase: every thread finishes
// one before any starts the next).
//
// Layout: one block per batch row, threads over its neurons (thread i owns
// neurons i, i + threads, ...: neighbouring threads touch neighbouring
// neurons, so loads and stores are coalesced), one barrier per time step.
//   forward: the spikes of t-1 are a bit mask in shared memory (bit j of
//     word j/32), read by every thread in ascending j: the row sum of
//     lif.h's order, with no index list to build (setting a bit is an
//     atomic OR: the mask does not depend on the order threads set it).
//     Three masks rotate: s[t-1] read, s[t] written, and the one for s[t+1]
//     cleared, so that one barrier per step orders them.
//   backward: gI[t+1] in shared memory, read by every thread for
//     r[t][j] = Σ_n gI[t+1][n] · Rᵀ[n][j] (n ascending; threads j read
//     neighbouring Rᵀ floats); gI[t] written to the other buffer. Each
//     thread's running gradients live in grad_initial_membrane and the
//     scratch rows (its own elements) between steps.
// Past kRecurrentSharedBytes the masks / gradient buffers are in global
// memory (RecurrentForwardArgs::global_masks, ::global_grads).
#ifndef FUSED_LIF_LIF_RECURRENT_CUDA_THREADS_H_
#define FUSED_LIF_LIF_RECURRENT_CUDA_THREADS_H_

#include <cstdint>

#include "lif.h"
#include "lif_cuda_threads.h"
#include "lif_dispatch.h"
#include "lif_recurrent_kernels.h"

namespace fused_lif {

constexpr unsigned kRecurrentMaxThreads = 512;  // threads per block (one block per batch row)

// One block per batch row; threads: the neurons rounded up to a warp, at
// most kRecurrentMaxThreads.
inline LaunchShape recurrent_launch_for(int64_t batch, int64_t neurons) {
  const int64_t warps = (neurons + 31) / 32;
  const int64_t threads = warps < 1 ? 32 : warps * 32;
  return {batch, static_cast<unsigned>(threads < kRecurrentMaxThreads ? threads
                                                                      : kRecurrentMaxThreads), 0};
}
inline LaunchShape recurrent_forward_launch(int64_t batch, int64_t neurons) {
  LaunchShape shape = recurrent_launch_for(batch, neurons);
  if (recurrent_masks_in_shared(neurons)) {
    shape.shared_bytes = kRecurrentMasks * recurrent_mask_words(neurons) * 4;
  }
  return shape;
}
inline LaunchShape recurrent_backward_launch(int64_t batch, int64_t neurons) {
  LaunchShape shape = recurrent_launch_for(batch, neurons);
  if (recurrent_grads_in_shared(neurons)) shape.shared_bytes = 2 * neurons * 4;
  return shape;
}

// Index of the lowest set bit of x != 0.
LIF_HOST_DEVICE int lowest_set_bit(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __ffs(static_cast<int>(x)) - 1;
#else
  return __builtin_ctz(x);
#endif
}

// *word |= bit, atomically on the GPU.
LIF_HOST_DEVICE void set_bit(uint32_t* word, uint32_t bit) {
#if defined(__CUDA_ARCH__)
  atomicOr(word, bit);
#else
  *word |= bit;
#endif
}

// Σ_{j : bit j of mask set, j ascending} R[j, n], from +0.
LIF_HOST_DEVICE float recurrent_row_sum(const uint32_t* mask, int64_t words, const float* R,
                                        int64_t N, int64_t n) {
  float sum = 0.0f;
  for (int64_t w = 0; w < words; ++w) {
    for (uint32_t bits = mask[w]; bits != 0; bits &= bits - 1) {
      const int64_t j = w * 32 + lowest_set_bit(bits);
      sum = add_rn(sum, R[j * N + n]);
    }
  }
  return sum;
}

// Σ_n g[n] · RT[n][j], n ascending, from +0.
LIF_HOST_DEVICE float recurrent_grad_sum(const float* g, const float* RT, int64_t N, int64_t j) {
  float sum = 0.0f;
  for (int64_t n = 0; n < N; ++n) sum = add_rn(sum, mul_rn(g[n], RT[n * N + j]));
  return sum;
}

// ------------------------------------------------------------- forward --

// Before the first step: s[-1]'s mask (words whole, from initial_spikes),
// s[0]'s cleared, v[-1] into final_membrane (each thread's running membrane).
LIF_HOST_DEVICE void recurrent_forward_begin_thread(const RecurrentForwardArgs& ra, int64_t b,
                                                    unsigned thread, unsigned threads,
                                                    uint32_t* masks) {
  const LifForwardArgs& a = ra.lif;
  const int64_t N = a.neurons, words = recurrent_mask_words(N);
  uint32_t* initial_mask = masks + 2 * words;  // s[t-1] of step t is mask (t + 2) % 3
  for (int64_t w = thread; w < words; w += threads) {
    uint32_t word = 0;
    for (int64_t k = 0; k < 32 && w * 32 + k < N; ++k) {
      if (ra.initial_spikes[b * N + w * 32 + k] != 0.0f) word |= 1u << k;
    }
    initial_mask[w] = word;
    masks[w] = 0;
  }
  for (int64_t n = thread; n < N; n += threads) a.final_membrane[b * N + n] = a.initial_membrane[b * N + n];
}

// Step t of the thread's neurons: reads s[t-1] (prev), sets s[t]'s bits
// (next), clears the mask that step t+1 will set (clear).
template <typename T, Reset R>
LIF_HOST_DEVICE void recurrent_forward_step_thread(const RecurrentForwardArgs& ra, int64_t b,
                                                   int64_t t, unsigned thread, unsigned threads,
                                                   uint32_t* masks) {
  const LifForwardArgs& a = ra.lif;
  const int64_t N = a.neurons, words = recurrent_mask_words(N);
  const uint32_t* prev = masks + ((t + 2) % 3) * words;
  uint32_t* next = masks + (t % 3) * words;
  uint32_t* clear = masks + ((t + 1) % 3) * words;
  for (int64_t w = thread; w < words; w += threads) clear[w] = 0;
  const T* currents = static_cast<const T*>(a.currents);
  T* spikes = static_cast<T*>(a.spikes);
  for (int64_t n = thread; n < N; n += threads) {
    const int64_t idx = (b * a.time + t) * N + n, col = b * N + n;
    const float bias = static_cast<float>(static_cast<const T*>(a.bias)[n * a.bias_stride]);
    const float decay = a.decay[n * a.decay_stride];
    const float threshold = a.threshold[n * a.threshold_stride];
    const float recurrent = recurrent_row_sum(prev, words, ra.recurrent_kernel, N, n);
    const float current = lif_recurrent_current(lif_current(currents[idx], bias), recurrent);
    const float u = lif_charge(decay, a.final_membrane[col], current);
    const float s = lif_spike(u, threshold);
    a.pre_reset_membrane[idx] = u;
    spikes[idx] = static_cast<T>(s);
    a.final_membrane[col] = lif_reset<R>(u, s, threshold);
    if (s != 0.0f) set_bit(next + n / 32, 1u << (n % 32));
  }
}

// One block's forward: its phases, a barrier (block.sync()) after each.
// Block provides `row` (the batch row), for_each_thread(f) (f(thread,
// threads) for each of its threads) and sync().
template <typename T, Reset R, typename Block>
LIF_HOST_DEVICE void recurrent_forward_block(const RecurrentForwardArgs& ra, Block& block,
                                             uint32_t* masks) {
  const int64_t b = block.row;
  block.for_each_thread([&](unsigned thread, unsigned threads) {
    recurrent_forward_begin_thread(ra, b, thread, threads, masks);
  });
  block.sync();
  for (int64_t t = 0; t < ra.lif.time; ++t) {
    block.for_each_thread([&](unsigned thread, unsigned threads) {
      recurrent_forward_step_thread<T, R>(ra, b, t, thread, threads, masks);
    });
    block.sync();
  }
}

// ------------------------------------------------------------ backward --

// Rᵀ, one thread per element (lif_recurrent_kernels.h's recurrent_kernel_t).
LIF_HOST_DEVICE void recurrent_transpose_thread(const RecurrentBackwardArgs& ra, unsigned block,
                                                unsigned thread, unsigned threads) {
  const int64_t N = ra.lif.neurons, i = global_index(block, thread, threads);
  if (i >= N * N) return;
  const int64_t n = i / N, j = i % N;
  ra.recurrent_kernel_t[i] = ra.recurrent_kernel[j * N + n];
}

// Before the last step: each thread's running gradients (gv from the final
// membrane's gradient, the sums from 0).
LIF_HOST_DEVICE void recurrent_backward_begin_thread(const RecurrentBackwardArgs& ra, int64_t b,
                                                     unsigned thread, unsigned threads) {
  const LifBackwardArgs& a = ra.lif;
  const int64_t N = a.neurons, BN = a.batch * N;
  for (int64_t n = thread; n < N; n += threads) {
    const int64_t col = b * N + n;
    a.grad_initial_membrane[col] = a.grad_final_membrane[col];
    a.scratch[col] = a.scratch[BN + col] = a.scratch[2 * BN + col] = 0.0f;
  }
}

// Step t (T-1 .. 0) of the thread's neurons j: r[t][j] from gI[t+1]
// (`next`; r[T-1] = 0), then lif.h's backward step; gI[t] into `current`.
template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
LIF_HOST_DEVICE void recurrent_backward_step_thread(const RecurrentBackwardArgs& ra, int64_t b,
                                                    int64_t t, unsigned thread, unsigned threads,
                                                    const float* next, float* current) {
  const LifBackwardArgs& a = ra.lif;
  const int64_t N = a.neurons, BN = a.batch * N;
  const T* grad_spikes = static_cast<const T*>(a.grad_spikes);
  T* grad_currents = static_cast<T*>(a.grad_currents);
  for (int64_t j = thread; j < N; j += threads) {
    const int64_t col = b * N + j, idx = (b * a.time + t) * N + j;
    const float r = t + 1 < a.time ? recurrent_grad_sum(next, ra.recurrent_kernel_t, N, j) : 0.0f;
    const float grad_spike = add_rn(static_cast<float>(grad_spikes[idx]), r);
    const float decay = a.decay[j * a.decay_stride];
    const float threshold = a.threshold[j * a.threshold_stride];
    LifColumnGrads g{a.grad_initial_membrane[col], a.scratch[col], a.scratch[BN + col],
                     a.scratch[2 * BN + col]};
    float v_prev = 0.0f;
    if (ParamGrads) {
      if (t > 0) {
        const float u_prev = a.pre_reset_membrane[idx - N];
        v_prev = lif_reset<R>(u_prev, lif_spike(u_prev, threshold), threshold);
      } else {
        v_prev = a.initial_membrane[col];
      }
    }
    const float grad_current = lif_backward_step<S, R, ParamGrads, DetachReset>(
        a.pre_reset_membrane[idx], v_prev, grad_spike, decay, threshold, a.alpha, g);
    current[j] = grad_current;
    grad_currents[idx] = static_cast<T>(grad_current);
    a.grad_initial_membrane[col] = g.membrane;
    a.scratch[col] = g.decay;
    a.scratch[BN + col] = g.threshold;
    a.scratch[2 * BN + col] = g.bias;
  }
}

// After the first step: dL/ds[-1] = gI[0] · Rᵀ (0 for an empty sequence).
LIF_HOST_DEVICE void recurrent_backward_end_thread(const RecurrentBackwardArgs& ra, int64_t b,
                                                   unsigned thread, unsigned threads,
                                                   const float* first) {
  const int64_t N = ra.lif.neurons;
  for (int64_t j = thread; j < N; j += threads) {
    ra.grad_initial_spikes[b * N + j] =
        ra.lif.time > 0 ? recurrent_grad_sum(first, ra.recurrent_kernel_t, N, j) : 0.0f;
  }
}

// One block's backward (after the transpose): gI[t] in grads[(t % 2) · N ...].
template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset, typename Block>
LIF_HOST_DEVICE void recurrent_backward_block(const RecurrentBackwardArgs& ra, Block& block,
                                              float* grads) {
  const int64_t b = block.row, N = ra.lif.neurons;
  block.for_each_thread([&](unsigned thread, unsigned threads) {
    recurrent_backward_begin_thread(ra, b, thread, threads);
  });
  block.sync();
  for (int64_t t = ra.lif.time - 1; t >= 0; --t) {
    const float* next = grads + ((t + 1) % 2) * N;
    float* current = grads + (t % 2) * N;
    block.for_each_thread([&](unsigned thread, unsigned threads) {
      recurrent_backward_step_thread<T, S, R, ParamGrads, DetachReset>(ra, b, t, thread, threads,
                                                                       next, current);
    });
    block.sync();
  }
  block.for_each_thread([&](unsigned thread, unsigned threads) {
    recurrent_backward_end_thread(ra, b, thread, threads, grads);
  });
}

// ------------------------------------------------------------ launches --

// The launches, in order, on a Launch (the CUDA launcher or the emulator)
// that provides, besides lif_cuda_threads.h's sum_over_batch, sum_all and zero,
//   recurrent_forward<T, R>(args, shape), transpose(args, shape),
//   recurrent_backward<T, S, R, ParamGrads, DetachReset>(args, shape).
template <typename T, typename Launch>
LifCudaStatus recurrent_lif_forward_launches(const RecurrentForwardArgs& a, Launch& launch) {
  if (a.lif.batch * a.lif.neurons == 0) return {};
  return dispatch_forward(a.lif, [&](auto reset) {
    return launch.template recurrent_forward<T, decltype(reset)::value>(
        a, recurrent_forward_launch(a.lif.batch, a.lif.neurons));
  });
}

template <typename T, typename Launch>
LifCudaStatus recurrent_lif_backward_launches(const RecurrentBackwardArgs& a, Launch& launch) {
  const int64_t N = a.lif.neurons;
  if (a.lif.batch * N > 0) {
    LifCudaStatus status = launch.transpose(a, launch_for(N * N));
    if (!status.ok()) return status;
    status = dispatch_backward(a.lif, [&](auto surrogate, auto reset, auto param_grads,
                                          auto detach_reset) {
      return launch.template recurrent_backward<T, decltype(surrogate)::value,
                                                decltype(reset)::value,
                                                decltype(param_grads)::value,
                                                decltype(detach_reset)::value>(
          a, recurrent_backward_launch(a.lif.batch, N));
    });
    if (!status.ok()) return status;
  }
  return lif_backward_reduce_launches<T>(a.lif, launch);
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_RECURRENT_CUDA_THREADS_H_
