// CPU loops of the fused recurrent LIF op (the math: lif.h, "Recurrent LIF";
// the arguments: lif_recurrent_kernels.h). Header-only templates over the
// element type T, like lif_cpu.h, whose per-neuron backward step, parameter
// loading and parameter-gradient sums they reuse.
//
// Work is split over batch rows, which are independent: callers split
// [0, units) of each pass over threads as they like, and every float comes
// out the same whatever the split (each sum has one fixed order, lif.h's).
//
//   forward, per batch row, t = 0 .. T-1:
//     acc = Σ_{j ∈ list(s[t-1]), j ascending} R[j, :]   rows summed in registers
//     the LIF step over the row's neurons with I = T(C + bias) + acc
//     list(s[t]) = the columns of the step's spikes, ascending (spike_matmul.h)
//   backward, per block of kRecurrentRowBlock batch rows in lock-step,
//   t = T-1 .. 0:
//     r[t] = gI[t+1] · Rᵀ  for the block's rows at once, so each row of Rᵀ
//            (the transposed copy, recurrent_transpose_cpu) is loaded once
//            per block from cache and the sum runs over contiguous j
//     gI[t] = lif.h's backward step with gs = grad_spikes[t] + r[t]
//   then dL/ds[-1] = gI[0] · Rᵀ and the parameter sums (lif_cpu.h's).
//
// Why no tiling over neurons with a barrier per step at small batch: a step
// of one row is short (N = 256 at 10% spikes: about 6,000 adds in the
// forward, N² = 65,536 multiply-adds in the backward), no longer than
// handing a barrier through TensorFlow's thread pool, which wakes its
// threads through the OS, so that splitting a row's neurons over threads
// would mostly add synchronisation (and a per-thread split of the row sums
// would have to keep their order); at batch >= the thread count the rows
// keep every thread busy.
#ifndef FUSED_LIF_LIF_RECURRENT_CPU_H_
#define FUSED_LIF_LIF_RECURRENT_CPU_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lif.h"
#include "lif_cpu.h"
#include "lif_dispatch.h"
#include "lif_recurrent_kernels.h"
#include "spike_matmul.h"

namespace fused_lif {

// Batch rows per backward work unit, run in lock-step (each Rᵀ row loaded
// once serves them all; 4 rows x 64 columns of accumulators fill half the
// AVX-512 registers).
constexpr int64_t kRecurrentRowBlock = 4;
// Rows of Rᵀ per unit of the transpose.
constexpr int64_t kTransposeRows = 32;

inline int64_t recurrent_cpu_forward_units(const RecurrentForwardArgs& a) { return a.lif.batch; }
inline int64_t recurrent_cpu_backward_units(const RecurrentBackwardArgs& a) {
  return (a.lif.batch + kRecurrentRowBlock - 1) / kRecurrentRowBlock;
}
inline int64_t recurrent_cpu_transpose_units(const RecurrentBackwardArgs& a) {
  return (a.lif.neurons + kTransposeRows - 1) / kTransposeRows;
}
// Rough costs of one unit in cycles, for the thread pool's sharding.
inline int64_t recurrent_cpu_forward_unit_cost(const RecurrentForwardArgs& a) {
  const int64_t N = std::max<int64_t>(a.lif.neurons, 1);
  return std::max<int64_t>(a.lif.time, 1) * N * (20 + N / 16);
}
inline int64_t recurrent_cpu_backward_unit_cost(const RecurrentBackwardArgs& a) {
  const int64_t N = std::max<int64_t>(a.lif.neurons, 1);
  return kRecurrentRowBlock * (std::max<int64_t>(a.lif.time, 1) + 1) * N * (20 + N / 4);
}

namespace recurrent_detail {

using spike_detail::Vec16;

// acc[0, N) = Σ_{p < count} R[list[p], 0..N), p ascending, from +0: 128
// columns at a time in registers (8 AVX-512 vectors), the rest in memory.
// (The unroll pragmas let GCC keep the arrays of vectors in registers.)
FUSED_LIF_INLINE void sum_rows(const float* R, int64_t N, const int32_t* list, int64_t count,
                               float* acc) {
  constexpr int kVectors = 8;
  int64_t i = 0;
  for (; i + 16 * kVectors <= N; i += 16 * kVectors) {
    Vec16 sum[kVectors];
#pragma GCC unroll 16
    for (int k = 0; k < kVectors; ++k) sum[k] = Vec16{};
    for (int64_t p = 0; p < count; ++p) {
      const float* row = R + static_cast<int64_t>(list[p]) * N + i;
#pragma GCC unroll 16
      for (int k = 0; k < kVectors; ++k) {
        Vec16 w;
        __builtin_memcpy(&w, row + 16 * k, sizeof(w));
        sum[k] += w;
      }
    }
#pragma GCC unroll 16
    for (int k = 0; k < kVectors; ++k) __builtin_memcpy(acc + i + 16 * k, &sum[k], sizeof(Vec16));
  }
  const int64_t rest = N - i;
  float* tail = acc + i;
  for (int64_t k = 0; k < rest; ++k) tail[k] = 0.0f;
  for (int64_t p = 0; p < count; ++p) {
    const float* row = R + static_cast<int64_t>(list[p]) * N + i;
    for (int64_t k = 0; k < rest; ++k) tail[k] = add_rn(tail[k], row[k]);
  }
}

// r[k][0, N) = Σ_n g[k][n] · RT[n][0, N) for the block's rows k < Rows, n
// ascending, each product rounded then added (no FMA: -ffp-contract=off):
// 64 columns x Rows rows of accumulators in registers, each RT row segment
// loaded once for all rows.
template <int Rows>
FUSED_LIF_INLINE void grad_rows(const float* const* g, const float* RT, int64_t N, float* const* r) {
  constexpr int kVectors = 4;
  constexpr int64_t kWidth = 16 * kVectors;
  const float* gk[Rows];
#pragma GCC unroll 16
  for (int k = 0; k < Rows; ++k) gk[k] = g[k];
  int64_t j0 = 0;
  for (; j0 + kWidth <= N; j0 += kWidth) {
    Vec16 acc[Rows][kVectors];
#pragma GCC unroll 16
    for (int k = 0; k < Rows; ++k) {
#pragma GCC unroll 16
      for (int v = 0; v < kVectors; ++v) acc[k][v] = Vec16{};
    }
    for (int64_t n = 0; n < N; ++n) {
      const float* rt = RT + n * N + j0;
      Vec16 w[kVectors];
#pragma GCC unroll 16
      for (int v = 0; v < kVectors; ++v) __builtin_memcpy(&w[v], rt + 16 * v, sizeof(Vec16));
#pragma GCC unroll 16
      for (int k = 0; k < Rows; ++k) {
        const float gn = gk[k][n];
#pragma GCC unroll 16
        for (int v = 0; v < kVectors; ++v) acc[k][v] += gn * w[v];
      }
    }
#pragma GCC unroll 16
    for (int k = 0; k < Rows; ++k) {
#pragma GCC unroll 16
      for (int v = 0; v < kVectors; ++v) {
        __builtin_memcpy(r[k] + j0 + 16 * v, &acc[k][v], sizeof(Vec16));
      }
    }
  }
  const int64_t width = N - j0;
  if (width == 0) return;
  float acc[Rows][kWidth];
  for (int k = 0; k < Rows; ++k) {
    for (int64_t j = 0; j < width; ++j) acc[k][j] = 0.0f;
  }
  for (int64_t n = 0; n < N; ++n) {
    const float* w = RT + n * N + j0;
    for (int k = 0; k < Rows; ++k) {
      const float gn = gk[k][n];
      for (int64_t j = 0; j < width; ++j) acc[k][j] = add_rn(acc[k][j], mul_rn(gn, w[j]));
    }
  }
  for (int k = 0; k < Rows; ++k) {
    for (int64_t j = 0; j < width; ++j) r[k][j0 + j] = acc[k][j];
  }
}

// Called, not inlined, by every backward instantiation: it depends on none of
// their options, so it is compiled once per instruction set (a template only
// so that the header can define it with target_clones), not 144 times.
template <int kOnce = 0>
__attribute__((noinline)) FUSED_LIF_CPU_DISPATCH void grad_rows_any(
    int64_t rows, const float* const* g, const float* RT, int64_t N, float* const* r) {
  switch (rows) {
    case 1: return grad_rows<1>(g, RT, N, r);
    case 2: return grad_rows<2>(g, RT, N, r);
    case 3: return grad_rows<3>(g, RT, N, r);
    default: return grad_rows<4>(g, RT, N, r);
  }
}
static_assert(kRecurrentRowBlock == 4, "grad_rows_any covers 1 .. kRecurrentRowBlock rows");

// One forward step of a batch row's neurons: u, s and v from the currents
// and the recurrent sum (restrict: the arrays do not overlap, so it vectorizes).
template <typename T, Reset R>
FUSED_LIF_INLINE void forward_step(int64_t len, const T* __restrict currents,
                                   const float* __restrict bias, const float* __restrict decay,
                                   const float* __restrict threshold,
                                   const float* __restrict recurrent, float* __restrict v,
                                   float* __restrict u_out, T* __restrict s_out) {
  for (int64_t i = 0; i < len; ++i) {
    const float current = lif_recurrent_current(lif_current(currents[i], bias[i]), recurrent[i]);
    const float u = lif_charge(decay[i], v[i], current);
    const float s = lif_spike(u, threshold[i]);
    u_out[i] = u;
    s_out[i] = static_cast<T>(s);
    v[i] = lif_reset<R>(u, s, threshold[i]);
  }
}

template <typename T, Reset R>
FUSED_LIF_CPU_DISPATCH void forward_rows(const RecurrentForwardArgs& ra, int64_t begin,
                                         int64_t end) {
  const LifForwardArgs& a = ra.lif;
  const int64_t N = a.neurons, time = a.time;
  const T* currents = static_cast<const T*>(a.currents);
  T* spikes = static_cast<T*>(a.spikes);
  std::vector<float> buffer(5 * static_cast<size_t>(N));
  float* decay = buffer.data();
  float* threshold = decay + N;
  float* bias = threshold + N;
  float* v = bias + N;
  float* acc = v + N;
  std::vector<int32_t> list_buffer(static_cast<size_t>(N) + 16);
  int32_t* list = list_buffer.data();
  const cpu_detail::Tile all{0, 0, N};
  cpu_detail::load_param(static_cast<const T*>(a.bias), a.bias_stride, all, bias);
  cpu_detail::load_param(a.decay, a.decay_stride, all, decay);
  cpu_detail::load_param(a.threshold, a.threshold_stride, all, threshold);
  for (int64_t b = begin; b < end; ++b) {
    const float* initial = a.initial_membrane + b * N;
    for (int64_t i = 0; i < N; ++i) v[i] = initial[i];
    int64_t count = spike_row_columns(ra.initial_spikes + b * N, N, list);
    for (int64_t t = 0; t < time; ++t) {
      const int64_t row = (b * time + t) * N;
      sum_rows(ra.recurrent_kernel, N, list, count, acc);
      forward_step<T, R>(N, currents + row, bias, decay, threshold, acc, v,
                         a.pre_reset_membrane + row, spikes + row);
      count = spike_row_columns(spikes + row, N, list);
    }
    float* final_membrane = a.final_membrane + b * N;
    for (int64_t i = 0; i < N; ++i) final_membrane[i] = v[i];
  }
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool Detach>
FUSED_LIF_CPU_DISPATCH void backward_blocks(const RecurrentBackwardArgs& ra, int64_t begin,
                                            int64_t end) {
  using cpu_detail::BackwardTileState;
  const LifBackwardArgs& a = ra.lif;
  const int64_t N = a.neurons, time = a.time, B = a.batch, BN = a.batch * a.neurons;
  const int64_t tiles = (N + kBackwardBlock - 1) / kBackwardBlock;
  // gI[t] in float: written straight into grad_currents when T is float,
  // else into a buffer (and rounded to T from there).
  constexpr bool kDirect = std::is_same<T, float>::value;
  const T* grad_spikes = static_cast<const T*>(a.grad_spikes);
  T* grad_currents = static_cast<T*>(a.grad_currents);
  std::vector<BackwardTileState> states(static_cast<size_t>(kRecurrentRowBlock * tiles));
  std::vector<float> buffer(2 * kRecurrentRowBlock * static_cast<size_t>(N));
  float* r_buffer = buffer.data();
  float* g_buffer = r_buffer + kRecurrentRowBlock * N;
  for (int64_t block = begin; block < end; ++block) {
    const int64_t b0 = block * kRecurrentRowBlock;
    const int64_t rows = std::min(kRecurrentRowBlock, B - b0);
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t i = 0; i < tiles; ++i) {
        BackwardTileState& st = states[k * tiles + i];
        const cpu_detail::Tile tile{b0 + k, i * kBackwardBlock,
                                    std::min(kBackwardBlock, N - i * kBackwardBlock)};
        cpu_detail::load_param(a.decay, a.decay_stride, tile, st.decay);
        cpu_detail::load_param(a.threshold, a.threshold_stride, tile, st.threshold);
        const float* grad_final = a.grad_final_membrane + tile.b * N + tile.n0;
        for (int64_t j = 0; j < tile.len; ++j) {
          st.g_membrane[j] = grad_final[j];
          st.g_decay[j] = st.g_threshold[j] = st.g_bias[j] = 0.0f;
        }
      }
    }
    const float* g_next[kRecurrentRowBlock] = {};  // gI[t+1] of each row
    float* r[kRecurrentRowBlock];
    for (int64_t k = 0; k < kRecurrentRowBlock; ++k) r[k] = r_buffer + k * N;
    for (int64_t t = time - 1; t >= 0; --t) {
      if (t == time - 1) {
        std::fill_n(r_buffer, rows * N, 0.0f);  // r[T-1] = 0
      } else {
        grad_rows_any(rows, g_next, ra.recurrent_kernel_t, N, r);
      }
      for (int64_t k = 0; k < rows; ++k) {
        const int64_t b = b0 + k, row = (b * time + t) * N;
        float* gs = r[k];  // gs[t] = grad_spikes[t] + r[t], in place
        const T* g_in = grad_spikes + row;
        for (int64_t j = 0; j < N; ++j) gs[j] = add_rn(static_cast<float>(g_in[j]), gs[j]);
        float* g_out = kDirect ? reinterpret_cast<float*>(grad_currents + row) : g_buffer + k * N;
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t n0 = i * kBackwardBlock, len = std::min(kBackwardBlock, N - n0);
          BackwardTileState& st = states[k * tiles + i];
          const float* u = a.pre_reset_membrane + row + n0;
          if (t > 0) {
            cpu_detail::backward_row<float, S, R, ParamGrads, Detach>(
                len, u, cpu_detail::RecomputedVPrev<R>{u - N, st.threshold}, gs + n0, g_out + n0,
                a.alpha, st);
          } else {
            cpu_detail::backward_row<float, S, R, ParamGrads, Detach>(
                len, u, cpu_detail::InitialVPrev{a.initial_membrane + b * N + n0}, gs + n0,
                g_out + n0, a.alpha, st);
          }
        }
        if (!kDirect) {
          T* out = grad_currents + row;
          for (int64_t j = 0; j < N; ++j) out[j] = static_cast<T>(g_out[j]);
        }
        g_next[k] = g_out;
      }
    }
    // dL/ds[-1] = gI[0] · Rᵀ (0 for an empty sequence).
    float* grad_initial_spikes[kRecurrentRowBlock];
    for (int64_t k = 0; k < kRecurrentRowBlock; ++k) {
      grad_initial_spikes[k] = ra.grad_initial_spikes + std::min(b0 + k, B - 1) * N;
    }
    if (time > 0) {
      grad_rows_any(rows, g_next, ra.recurrent_kernel_t, N, grad_initial_spikes);
    } else {
      std::fill_n(ra.grad_initial_spikes + b0 * N, rows * N, 0.0f);
    }
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t i = 0; i < tiles; ++i) {
        const BackwardTileState& st = states[k * tiles + i];
        const int64_t n0 = i * kBackwardBlock, len = std::min(kBackwardBlock, N - n0);
        const int64_t state = (b0 + k) * N + n0;
        for (int64_t j = 0; j < len; ++j) {
          a.grad_initial_membrane[state + j] = st.g_membrane[j];
          a.scratch[state + j] = st.g_decay[j];
          a.scratch[BN + state + j] = st.g_threshold[j];
          a.scratch[2 * BN + state + j] = st.g_bias[j];
        }
      }
    }
  }
}

}  // namespace recurrent_detail

// Runs the forward on batch rows [begin, end).
template <typename T>
void recurrent_lif_forward_cpu(const RecurrentForwardArgs& a, int64_t begin, int64_t end) {
  dispatch_forward(a.lif, [&](auto reset) {
    recurrent_detail::forward_rows<T, reset.value>(a, begin, end);
  });
}

// Backward, first pass: rows [begin, end) of Rᵀ (units of kTransposeRows).
inline void recurrent_transpose_cpu(const RecurrentBackwardArgs& a, int64_t begin, int64_t end) {
  const int64_t N = a.lif.neurons;
  const float* R = a.recurrent_kernel;
  float* RT = a.recurrent_kernel_t;
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t n0 = unit * kTransposeRows, n1 = std::min(N, n0 + kTransposeRows);
    for (int64_t j0 = 0; j0 < N; j0 += kTransposeRows) {  // 32 x 32 blocks: both sides in cache
      const int64_t j1 = std::min(N, j0 + kTransposeRows);
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t j = j0; j < j1; ++j) RT[n * N + j] = R[j * N + n];
      }
    }
  }
}

// Backward, second pass (after the whole transpose): row blocks [begin,
// end) of recurrent_cpu_backward_units; fills a.lif.scratch for them. Then
// lif_cpu.h's lif_backward_reduce_cpu / _finish_cpu on a.lif.
template <typename T>
void recurrent_lif_backward_cpu(const RecurrentBackwardArgs& a, int64_t begin, int64_t end) {
  dispatch_backward(a.lif, [&](auto surrogate, auto reset, auto param_grads, auto detach_reset) {
    recurrent_detail::backward_blocks<T, surrogate.value, reset.value, param_grads.value,
                                      detach_reset.value>(a, begin, end);
  });
}

// The whole backward on the calling thread.
template <typename T>
void recurrent_lif_backward_all_cpu(const RecurrentBackwardArgs& a) {
  recurrent_transpose_cpu(a, 0, recurrent_cpu_transpose_units(a));
  recurrent_lif_backward_cpu<T>(a, 0, recurrent_cpu_backward_units(a));
  LifReducePartials partials;
  lif_backward_reduce_cpu<T>(a.lif, partials, 0, lif_cpu_reduce_units(a.lif));
  lif_backward_reduce_finish_cpu<T>(a.lif, partials);
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_RECURRENT_CPU_H_
