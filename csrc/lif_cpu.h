// CPU loops of the fused LIF op: the time loop runs inside the kernel, over
// tiles of (batch row, block of neurons). The inner loop runs over
// contiguous neurons so that it vectorizes; the math is lif.h's.
//
// Header-only templates over the element type T (float, Eigen::half,
// Eigen::bfloat16: anything with static_cast to and from float), so that the
// TensorFlow op and the framework-free bindings instantiate the same code.
// Callers pick a tiling for their thread count (lif_cpu_tiling) and split
// [0, tiling.count) over threads as they like: tiles are independent and each
// writes only its own outputs. The parameter gradients' sums then run in
// parallel units too (lif_cpu_reduce_units), in an order that depends on
// neither the tiling nor the threads.
#ifndef FUSED_LIF_LIF_CPU_H_
#define FUSED_LIF_LIF_CPU_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu_common.h"  // FUSED_LIF_CPU_DISPATCH, FUSED_LIF_INLINE, ceil_div
#include "lif.h"
#include "lif_dispatch.h"
#include "lif_kernels.h"
#include "lif_reduce.h"

namespace fused_lif {

// Neurons per tile. The forward streams whole rows (time-major within a batch
// row, so reads and writes are sequential); the backward, with four
// accumulators per neuron, is faster on L1-sized tiles. benchmarks/README.md
// ("Where the time goes") has the scans' timings and the tile widths tried.
constexpr int64_t kForwardBlock = 2048;
constexpr int64_t kBackwardBlock = 256;

// How a scan's [batch, neurons] columns are cut into tiles: `width`
// neurons of one batch row each (the last of a row may be narrower), `blocks`
// tiles per batch row, `count` in all, numbered batch row by batch row. The
// columns are independent, so results do not depend on the tiling.
struct LifCpuTiling {
  int64_t width = 1, blocks = 0, count = 0;
};

// Tiles narrower than this would cost more in loop overhead than the threads
// they feed give back (4 AVX-512 vectors, a multiple of every vector width).
constexpr int64_t kMinTileWidth = 64;
// Enough tiles that uneven ones and busy threads even out, whatever the count.
constexpr int64_t kTilesPerThread = 4;

// Block neurons per tile; when the batch alone does not share out evenly
// (batch · ⌈N/Block⌉ neither a multiple of the thread count nor at least
// kTilesPerThread tiles per thread) the width is halved, down to
// kMinTileWidth. Halving no further than that keeps each tile's rows long:
// a row of a narrow tile is a short run of memory, N floats from the next,
// which streams slower than whole rows (benchmarks/README.md, "Where the
// time goes", has the small-batch splits measured).
template <int64_t Block>
inline LifCpuTiling tiling_for(int64_t batch, int64_t neurons, int64_t threads) {
  static_assert(Block >= kMinTileWidth && Block % kMinTileWidth == 0 &&
                    ((Block / kMinTileWidth) & (Block / kMinTileWidth - 1)) == 0,
                "halving keeps tile widths multiples of kMinTileWidth");
  LifCpuTiling tiling;
  threads = std::max<int64_t>(threads, 1);
  for (tiling.width = Block;; tiling.width /= 2) {
    tiling.blocks = ceil_div(neurons, tiling.width);
    const int64_t count = batch * tiling.blocks;
    const bool even = count >= threads && count % threads == 0;
    if (tiling.width <= kMinTileWidth || even || count >= kTilesPerThread * threads) break;
  }
  tiling.count = batch * tiling.blocks;
  return tiling;
}
// The tiling of a scan that `threads` threads will share.
inline LifCpuTiling lif_cpu_tiling(const LifForwardArgs& a, int64_t threads = 1) {
  return tiling_for<kForwardBlock>(a.batch, a.neurons, threads);
}
inline LifCpuTiling lif_cpu_tiling(const LifBackwardArgs& a, int64_t threads = 1) {
  return tiling_for<kBackwardBlock>(a.batch, a.neurons, threads);
}

// Rough cost of one tile in cycles, for the thread pool's sharding.
template <typename Args>
inline int64_t lif_cpu_tile_cost(const Args& a, const LifCpuTiling& tiling) {
  return 20 * std::max<int64_t>(std::min(a.neurons, tiling.width), 1) *
         std::max<int64_t>(a.time, 1);
}

namespace cpu_detail {

struct Tile {
  int64_t b, n0, len;
};
inline Tile tile_at(const LifCpuTiling& tiling, int64_t tile, int64_t neurons) {
  const int64_t n0 = (tile % tiling.blocks) * tiling.width;
  return {tile / tiling.blocks, n0, std::min(tiling.width, neurons - n0)};
}

// Copies a per-neuron (stride 1) or shared (stride 0) parameter of a tile.
template <typename P>
inline void load_param(const P* p, int64_t stride, const Tile& tile, float* out) {
  for (int64_t i = 0; i < tile.len; ++i) out[i] = static_cast<float>(p[(tile.n0 + i) * stride]);
}

template <typename T, Reset R>
FUSED_LIF_CPU_DISPATCH void forward_tiles(const LifForwardArgs& a, const LifCpuTiling& tiling,
                                          int64_t begin, int64_t end) {
  const int64_t N = a.neurons;
  const T* currents = static_cast<const T*>(a.currents);
  T* spikes = static_cast<T*>(a.spikes);
  float decay[kForwardBlock], threshold[kForwardBlock], bias[kForwardBlock], v[kForwardBlock];
  for (int64_t k = begin; k < end; ++k) {
    const Tile tile = tile_at(tiling, k, N);
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
FUSED_LIF_CPU_DISPATCH void backward_tiles(const LifBackwardArgs& a, const LifCpuTiling& tiling,
                                           int64_t begin, int64_t end) {
  const int64_t N = a.neurons, BN = a.batch * a.neurons;
  BackwardTileState st;
  for (int64_t k = begin; k < end; ++k) {
    const Tile tile = tile_at(tiling, k, N);
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

// Neurons per unit of the per-neuron sums, and lanes of the sum tree
// (lif_reduce.h) per unit of the sums over everything.
constexpr int64_t kReduceNeurons = 512;
constexpr int64_t kReduceLanes = 32;
static_assert(kSumThreads % kReduceLanes == 0, "lane units cover the tree's lanes");

// Per-neuron sums of one scratch row [batch, neurons] for neurons [n0, n1):
// out[n] = Σ_b rows[b, n], b ascending (sum_over_batch_column's order),
// vectorized over n.
template <typename P>
FUSED_LIF_INLINE void sum_columns(const float* rows, int64_t batch, int64_t neurons, int64_t n0,
                                  int64_t n1, P* out) {
  float sum[kReduceNeurons];
  const int64_t len = n1 - n0;
  for (int64_t i = 0; i < len; ++i) sum[i] = 0.0f;
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = rows + b * neurons + n0;
    for (int64_t i = 0; i < len; ++i) sum[i] = add_rn(sum[i], row[i]);
  }
  for (int64_t i = 0; i < len; ++i) out[n0 + i] = static_cast<P>(sum[i]);
}

// Lanes [l0, l0 + kReduceLanes) of the sum tree's strided partial sums over
// `count` floats: partial[i] = Σ_{j ≡ i mod kSumThreads} rows[j], j ascending
// (sum_all_load's order), vectorized over the lanes.
FUSED_LIF_INLINE void sum_lanes(const float* rows, int64_t count, int64_t l0, float* partial) {
  float sum[kReduceLanes];
  for (int64_t i = 0; i < kReduceLanes; ++i) sum[i] = 0.0f;
  int64_t j = 0;
  for (; j + kSumThreads <= count; j += kSumThreads) {
    for (int64_t i = 0; i < kReduceLanes; ++i) sum[i] = add_rn(sum[i], rows[j + l0 + i]);
  }
  for (int64_t i = 0; i < kReduceLanes && j + l0 + i < count; ++i) {
    sum[i] = add_rn(sum[i], rows[j + l0 + i]);
  }
  for (int64_t i = 0; i < kReduceLanes; ++i) partial[l0 + i] = sum[i];
}

// The tree over the partial sums (lif_reduce.h's tree: sum_all_step's levels).
template <typename P>
void sum_tree(float* partial, P* out) {
  for (unsigned width = kSumThreads / 2; width > 0; width /= 2) {
    for (unsigned i = 0; i < kSumThreads; ++i) sum_all_step(width, i, partial);
  }
  sum_all_store(partial, 0, out);
}

}  // namespace cpu_detail

// Partial sums of the parameter gradients over everything ([] parameters),
// filled by lif_backward_reduce_cpu, summed by lif_backward_reduce_finish_cpu.
struct LifReducePartials {
  float lanes[kScratchRows][kSumThreads];
};

// Units of lif_backward_reduce_cpu: the per-neuron sums in blocks of
// kReduceNeurons, the tree's lanes in groups of kReduceLanes.
inline int64_t lif_cpu_reduce_units(const LifBackwardArgs& a) {
  return std::max<int64_t>(ceil_div(a.neurons, cpu_detail::kReduceNeurons),
                           kSumThreads / cpu_detail::kReduceLanes);
}
// Rough cost of one unit in cycles, for the thread pool's sharding.
inline int64_t lif_cpu_reduce_unit_cost(const LifBackwardArgs& a) {
  return 2 * kScratchRows * std::max<int64_t>(a.batch * a.neurons / lif_cpu_reduce_units(a), 1);
}

// Runs the forward scan on tiles [begin, end) of `tiling`.
template <typename T>
void lif_forward_cpu(const LifForwardArgs& a, const LifCpuTiling& tiling, int64_t begin,
                     int64_t end) {
  dispatch_forward(a, [&](auto reset) {
    cpu_detail::forward_tiles<T, reset.value>(a, tiling, begin, end);
  });
}

// Runs the backward scan on tiles [begin, end) of `tiling`; fills a.scratch for them.
template <typename T>
void lif_backward_cpu(const LifBackwardArgs& a, const LifCpuTiling& tiling, int64_t begin,
                      int64_t end) {
  dispatch_backward(a, [&](auto surrogate, auto reset, auto param_grads, auto detach_reset) {
    cpu_detail::backward_tiles<T, surrogate.value, reset.value, param_grads.value,
                               detach_reset.value>(a, tiling, begin, end);
  });
}

// After every tile's backward: units [begin, end) of the parameter
// gradients' sums over a.scratch (per-neuron sums into the gradients, lanes
// of the sums over everything into `partials`) ...
template <typename T>
void lif_backward_reduce_cpu(const LifBackwardArgs& a, LifReducePartials& partials, int64_t begin,
                             int64_t end) {
  const int64_t BN = a.batch * a.neurons;
  const int64_t strides[kScratchRows] = {a.decay_stride, a.threshold_stride, a.bias_stride};
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t n0 = std::min(unit * cpu_detail::kReduceNeurons, a.neurons);
    const int64_t n1 = std::min(n0 + cpu_detail::kReduceNeurons, a.neurons);
    const int64_t l0 = unit * cpu_detail::kReduceLanes;
    for (int64_t r = a.param_grads ? 0 : 2; r < kScratchRows; ++r) {
      const float* rows = a.scratch + r * BN;
      if (strides[r] == 1) {
        if (r == 0) cpu_detail::sum_columns(rows, a.batch, a.neurons, n0, n1, a.grad_decay);
        if (r == 1) cpu_detail::sum_columns(rows, a.batch, a.neurons, n0, n1, a.grad_threshold);
        if (r == 2) {
          cpu_detail::sum_columns(rows, a.batch, a.neurons, n0, n1, static_cast<T*>(a.grad_bias));
        }
      } else if (l0 < kSumThreads) {
        cpu_detail::sum_lanes(rows, BN, l0, partials.lanes[r]);
      }
    }
  }
}

// ... then, on one thread, the trees of the sums over everything (and zeros
// for tau and threshold when they are constants).
template <typename T>
void lif_backward_reduce_finish_cpu(const LifBackwardArgs& a, LifReducePartials& partials) {
  if (a.param_grads) {
    if (a.decay_stride == 0) cpu_detail::sum_tree(partials.lanes[0], a.grad_decay);
    if (a.threshold_stride == 0) cpu_detail::sum_tree(partials.lanes[1], a.grad_threshold);
  } else {
    std::fill_n(a.grad_decay, a.decay_stride ? a.neurons : 1, 0.0f);
    std::fill_n(a.grad_threshold, a.threshold_stride ? a.neurons : 1, 0.0f);
  }
  if (a.bias_stride == 0) cpu_detail::sum_tree(partials.lanes[2], static_cast<T*>(a.grad_bias));
}

// The whole backward on the calling thread.
template <typename T>
void lif_backward_all_cpu(const LifBackwardArgs& a) {
  const LifCpuTiling tiling = lif_cpu_tiling(a);
  lif_backward_cpu<T>(a, tiling, 0, tiling.count);
  LifReducePartials partials;
  lif_backward_reduce_cpu<T>(a, partials, 0, lif_cpu_reduce_units(a));
  lif_backward_reduce_finish_cpu<T>(a, partials);
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_CPU_H_
