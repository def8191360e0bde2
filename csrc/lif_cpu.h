// CPU loops of the fused LIF op: the time loop runs inside the kernel, over
// tiles of (batch row, block of neurons). The inner loop runs over
// contiguous neurons so that it vectorizes; the math is lif.h's.
//
// Header-only templates over the element type T (float, Eigen::half,
// Eigen::bfloat16: anything with static_cast to and from float), so that the
// TensorFlow op and the framework-free bindings instantiate the same code.
// Callers split [0, lif_cpu_tiles(args)) over threads as they like: tiles
// are independent and each writes only its own outputs.
#ifndef FUSED_LIF_LIF_CPU_H_
#define FUSED_LIF_LIF_CPU_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "lif.h"
#include "lif_dispatch.h"
#include "lif_kernels.h"
#include "lif_reduce.h"

namespace fused_lif {

// Neurons per tile. The forward streams whole rows (time-major within a batch
// row, so reads and writes are sequential); the backward, with four
// accumulators per neuron, is fastest on L1-sized tiles (measured on Zen 4:
// 2x and 1.2x over one size for both).
constexpr int64_t kForwardBlock = 2048;
constexpr int64_t kBackwardBlock = 256;

// The scans are compiled for AVX-512, AVX2 and baseline x86-64; the loader
// picks the widest the CPU has (GCC/Clang function multiversioning). Results
// are the same on each: no FMA contraction anywhere (-ffp-contract=off).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__CUDACC__)
#define FUSED_LIF_CPU_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FUSED_LIF_CPU_DISPATCH
#endif
// Helpers of the dispatched loops must be inlined into each clone (else they
// are compiled for baseline x86-64 only).
#if defined(__GNUC__)
#define FUSED_LIF_INLINE __attribute__((always_inline)) inline
#else
#define FUSED_LIF_INLINE inline
#endif

template <int64_t Block>
inline int64_t tile_count(int64_t batch, int64_t neurons) {
  return batch * ((neurons + Block - 1) / Block);
}
inline int64_t lif_cpu_tiles(const LifForwardArgs& a) {
  return tile_count<kForwardBlock>(a.batch, a.neurons);
}
inline int64_t lif_cpu_tiles(const LifBackwardArgs& a) {
  return tile_count<kBackwardBlock>(a.batch, a.neurons);
}

// Rough cost of one tile in cycles, for the thread pool's sharding.
template <typename Args>
inline int64_t lif_cpu_tile_cost(const Args& a) {
  const int64_t width = std::min(a.neurons, std::is_same<Args, LifForwardArgs>::value ? kForwardBlock : kBackwardBlock);
  return 20 * std::max<int64_t>(width, 1) * std::max<int64_t>(a.time, 1);
}

namespace cpu_detail {

struct Tile {
  int64_t b, n0, len;
};
template <int64_t Block>
inline Tile tile_at(int64_t tile, int64_t neurons) {
  const int64_t blocks = (neurons + Block - 1) / Block;
  const int64_t n0 = (tile % blocks) * Block;
  return {tile / blocks, n0, std::min(Block, neurons - n0)};
}

// Copies a per-neuron (stride 1) or shared (stride 0) parameter of a tile.
template <typename P>
inline void load_param(const P* p, int64_t stride, const Tile& tile, float* out) {
  for (int64_t i = 0; i < tile.len; ++i) out[i] = static_cast<float>(p[(tile.n0 + i) * stride]);
}

template <typename T, Reset R>
FUSED_LIF_CPU_DISPATCH void forward_tiles(const LifForwardArgs& a, int64_t begin, int64_t end) {
  const int64_t N = a.neurons;
  const T* currents = static_cast<const T*>(a.currents);
  T* spikes = static_cast<T*>(a.spikes);
  float decay[kForwardBlock], threshold[kForwardBlock], bias[kForwardBlock], v[kForwardBlock];
  for (int64_t k = begin; k < end; ++k) {
    const Tile tile = tile_at<kForwardBlock>(k, N);
    load_param(static_cast<const T*>(a.bias), a.bias_stride, tile, bias);
    load_param(a.decay, a.decay_stride, tile, decay);
    load_param(a.threshold, a.threshold_stride, tile, threshold);
    const int64_t state = tile.b * N + tile.n0;
    for (int64_t i = 0; i < tile.len; ++i) v[i] = a.initial_membrane[state + i];
    for (int64_t t = 0; t < a.time; ++t) {
      const int64_t row = (tile.b * a.time + t) * N + tile.n0;
      for (int64_t i = 0; i < tile.len; ++i) {
        const float u = lif_charge(decay[i], v[i], lif_current(currents[row + i], bias[i]));
        const float s = lif_spike(u, threshold[i]);
        a.pre_reset_membrane[row + i] = u;
        spikes[row + i] = static_cast<T>(s);
        v[i] = lif_reset<R>(u, s, threshold[i]);
      }
    }
    for (int64_t i = 0; i < tile.len; ++i) a.final_membrane[state + i] = v[i];
  }
}

// v[t-1] for the backward: recomputed from u[t-1] ...
template <Reset R>
struct RecomputedVPrev {
  const float* u_prev;
  const float* threshold;
  FUSED_LIF_INLINE float operator()(int64_t i) const {
    return lif_reset<R>(u_prev[i], lif_spike(u_prev[i], threshold[i]), threshold[i]);
  }
};
// ... or, at t = 0, the initial membrane. (Two loops: a select between the
// two would not vectorize.)
struct InitialVPrev {
  const float* initial;
  FUSED_LIF_INLINE float operator()(int64_t i) const { return initial[i]; }
};

// Per-neuron state of a backward tile: parameters and running sums.
struct BackwardTileState {
  float decay[kBackwardBlock], threshold[kBackwardBlock];
  float g_membrane[kBackwardBlock], g_decay[kBackwardBlock], g_threshold[kBackwardBlock],
      g_bias[kBackwardBlock];
};

// One time step of a backward tile: all pointers are plain locals, so the
// loop's accesses are affine and it vectorizes.
template <typename T, Surrogate S, Reset R, bool ParamGrads, bool Detach, typename VPrev>
FUSED_LIF_INLINE void backward_row(int64_t len, const float* u, VPrev v_prev_of, const T* grad_spikes,
                         T* grad_currents, float alpha, BackwardTileState& st) {
  const float* decay = st.decay;
  const float* threshold = st.threshold;
  float* g_membrane = st.g_membrane;
  float* g_decay = st.g_decay;
  float* g_threshold = st.g_threshold;
  float* g_bias = st.g_bias;
  for (int64_t i = 0; i < len; ++i) {
    LifColumnGrads g{g_membrane[i], g_decay[i], g_threshold[i], g_bias[i]};
    const float grad_current = lif_backward_step<S, R, ParamGrads, Detach>(
        u[i], ParamGrads ? v_prev_of(i) : 0.0f, static_cast<float>(grad_spikes[i]), decay[i],
        threshold[i], alpha, g);
    grad_currents[i] = static_cast<T>(grad_current);
    g_membrane[i] = g.membrane;
    g_decay[i] = g.decay;
    g_threshold[i] = g.threshold;
    g_bias[i] = g.bias;
  }
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool Detach>
FUSED_LIF_INLINE void backward_tile(const LifBackwardArgs& a, const Tile& tile, BackwardTileState& st) {
  const int64_t N = a.neurons;
  const T* grad_spikes = static_cast<const T*>(a.grad_spikes);
  T* grad_currents = static_cast<T*>(a.grad_currents);
  for (int64_t t = a.time - 1; t >= 0; --t) {
    const int64_t row = (tile.b * a.time + t) * N + tile.n0;
    if (t > 0) {
      backward_row<T, S, R, ParamGrads, Detach>(
          tile.len, a.pre_reset_membrane + row,
          RecomputedVPrev<R>{a.pre_reset_membrane + row - N, st.threshold}, grad_spikes + row,
          grad_currents + row, a.alpha, st);
    } else {
      backward_row<T, S, R, ParamGrads, Detach>(
          tile.len, a.pre_reset_membrane + row,
          InitialVPrev{a.initial_membrane + tile.b * N + tile.n0}, grad_spikes + row,
          grad_currents + row, a.alpha, st);
    }
  }
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool Detach>
FUSED_LIF_CPU_DISPATCH void backward_tiles(const LifBackwardArgs& a, int64_t begin, int64_t end) {
  const int64_t N = a.neurons, BN = a.batch * a.neurons;
  BackwardTileState st;
  for (int64_t k = begin; k < end; ++k) {
    const Tile tile = tile_at<kBackwardBlock>(k, N);
    load_param(a.decay, a.decay_stride, tile, st.decay);
    load_param(a.threshold, a.threshold_stride, tile, st.threshold);
    const int64_t state = tile.b * N + tile.n0;
    for (int64_t i = 0; i < tile.len; ++i) {
      st.g_membrane[i] = a.grad_final_membrane[state + i];
      st.g_decay[i] = st.g_threshold[i] = st.g_bias[i] = 0.0f;
    }
    backward_tile<T, S, R, ParamGrads, Detach>(a, tile, st);
    for (int64_t i = 0; i < tile.len; ++i) {
      a.grad_initial_membrane[state + i] = st.g_membrane[i];
      a.scratch[state + i] = st.g_decay[i];
      a.scratch[BN + state + i] = st.g_threshold[i];
      a.scratch[2 * BN + state + i] = st.g_bias[i];
    }
  }
}

// Sums one scratch row [batch, neurons] over the batch (stride 1) or over
// everything (stride 0), in lif_reduce.h's order (the CUDA kernels' too).
template <typename P>
void reduce_scratch(const float* rows, int64_t batch, int64_t neurons, int64_t stride, P* out) {
  if (stride == 1) {
    for (int64_t n = 0; n < neurons; ++n) sum_over_batch_column(rows, batch, neurons, n, out);
  } else {
    sum_all_host(rows, batch * neurons, out);
  }
}

}  // namespace cpu_detail

// Runs the forward scan on tiles [begin, end).
template <typename T>
void lif_forward_cpu(const LifForwardArgs& a, int64_t begin, int64_t end) {
  dispatch_forward(a, [&](auto reset) { cpu_detail::forward_tiles<T, reset.value>(a, begin, end); });
}

// Runs the backward scan on tiles [begin, end); fills a.scratch for them.
template <typename T>
void lif_backward_cpu(const LifBackwardArgs& a, int64_t begin, int64_t end) {
  dispatch_backward(a, [&](auto surrogate, auto reset, auto param_grads, auto detach_reset) {
    cpu_detail::backward_tiles<T, surrogate.value, reset.value, param_grads.value,
                               detach_reset.value>(a, begin, end);
  });
}

// After every tile's backward: the parameter gradients from a.scratch.
template <typename T>
void lif_backward_reduce_cpu(const LifBackwardArgs& a) {
  const int64_t BN = a.batch * a.neurons;
  if (a.param_grads) {
    cpu_detail::reduce_scratch(a.scratch, a.batch, a.neurons, a.decay_stride, a.grad_decay);
    cpu_detail::reduce_scratch(a.scratch + BN, a.batch, a.neurons, a.threshold_stride,
                               a.grad_threshold);
  } else {
    std::fill_n(a.grad_decay, a.decay_stride ? a.neurons : 1, 0.0f);
    std::fill_n(a.grad_threshold, a.threshold_stride ? a.neurons : 1, 0.0f);
  }
  cpu_detail::reduce_scratch(a.scratch + 2 * BN, a.batch, a.neurons, a.bias_stride,
                             static_cast<T*>(a.grad_bias));
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_CPU_H_
