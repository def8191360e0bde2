// CPU kernels of spike_matmul: output = spikes @ weights for binary spikes,
// and its weight gradient, without multiplying by the zeros.
//
//   spikes  X [M, K], every value 0 or 1     weights W [K, N]
//   forward:  out[m, :] = Σ_{k ∈ nz(m), k ascending} W[k, :]
//   backward: dW[k, :]  = Σ_{m : X[m, k] = 1, m ascending} dOut[m, :]
//             dX = dOut · Wᵀ stays dense (the caller's matmul).
//
// nz(m), the columns where row m of X is 1, is found once in the forward as a
// CSR (row_ptr [M + 1] int64, cols [nnz] int32) that the backward reuses.
// Sums are accumulated in float whatever T is (float, Eigen::half,
// Eigen::bfloat16), in the fixed order above: the results do not depend on
// the number of threads. A BLAS GEMM orders its sums differently, so the
// output equals the dense product to float rounding, not bit for bit.
//
// Framework-free: callers split the [0, count) work items of each pass over
// their threads as they like; items write disjoint outputs.
#ifndef FUSED_LIF_SPIKE_MATMUL_H_
#define FUSED_LIF_SPIKE_MATMUL_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lif_cpu.h"  // FUSED_LIF_CPU_DISPATCH, FUSED_LIF_INLINE

namespace fused_lif {

// Output columns per tile: a W tile [K, 128] of floats is 400 KB at K = 784,
// in L2 while a block of rows reads it; the 128-float accumulator of a row
// fits in registers (8 AVX-512 vectors).
constexpr int64_t kSpikeColumnTile = 128;
// Rows per block: forward work items, and the backward's dOut block
// [256, 128] floats (128 KB) that stays in L2 while the dW tile takes its rows.
constexpr int64_t kSpikeRowBlock = 256;

struct SpikeMatmulArgs {
  int64_t rows = 0;     // M
  int64_t inputs = 0;   // K
  int64_t outputs = 0;  // N
  const int64_t* row_ptr = nullptr;  // [M + 1]
  const int32_t* cols = nullptr;     // [row_ptr[M]]
  const void* weights = nullptr;     // T [K, N]        (forward)
  void* output = nullptr;            // T [M, N]        (forward)
  const void* grad_output = nullptr;  // T [M, N]       (backward)
  float* grad_weights = nullptr;      // float [K, N]   (backward)
  // Backward scratch, filled by spike_weight_grad_index_cpu: the nonzeros of
  // each row block grouped by column: block_ptr [blocks * K + 1], rows [nnz].
  int64_t* block_ptr = nullptr;
  int32_t* block_rows = nullptr;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t spike_row_blocks(int64_t rows) { return ceil_div(rows, kSpikeRowBlock); }
inline int64_t spike_column_tiles(int64_t outputs) { return ceil_div(outputs, kSpikeColumnTile); }

namespace spike_detail {

// acc[0, width) += float(src[0, width)); Width > 0 fixes the width at compile
// time (a full tile: unrolled, acc in registers), 0 takes it at run time.
template <int64_t Width, typename T>
FUSED_LIF_INLINE void add_row(const T* src, int64_t width, float* acc) {
  const int64_t w = Width > 0 ? Width : width;
  for (int64_t j = 0; j < w; ++j) acc[j] += static_cast<float>(src[j]);
}

template <int64_t Width, typename T>
FUSED_LIF_INLINE void forward_block(const SpikeMatmulArgs& a, int64_t m0, int64_t m1, int64_t n0,
                                    int64_t width) {
  const int64_t N = a.outputs;
  const T* weights = static_cast<const T*>(a.weights) + n0;
  T* output = static_cast<T*>(a.output) + n0;
  const int64_t w = Width > 0 ? Width : width;
  for (int64_t m = m0; m < m1; ++m) {
    float acc[kSpikeColumnTile];
    for (int64_t j = 0; j < w; ++j) acc[j] = 0.0f;
    for (int64_t p = a.row_ptr[m]; p < a.row_ptr[m + 1]; ++p) {
      add_row<Width>(weights + static_cast<int64_t>(a.cols[p]) * N, width, acc);
    }
    for (int64_t j = 0; j < w; ++j) output[m * N + j] = static_cast<T>(acc[j]);
  }
}

template <int64_t Width, typename T>
FUSED_LIF_INLINE void weight_grad_tile(const SpikeMatmulArgs& a, int64_t k0, int64_t k1,
                                       int64_t n0, int64_t width) {
  const int64_t K = a.inputs, N = a.outputs;
  const T* grad_output = static_cast<const T*>(a.grad_output) + n0;
  float* grad_weights = a.grad_weights + n0;
  const int64_t w = Width > 0 ? Width : width;
  for (int64_t k = k0; k < k1; ++k) {
    for (int64_t j = 0; j < w; ++j) grad_weights[k * N + j] = 0.0f;
  }
  const int64_t blocks = spike_row_blocks(a.rows);
  for (int64_t b = 0; b < blocks; ++b) {  // blocks ascending: m ascending per k
    const int64_t* ptr = a.block_ptr + b * K;
    for (int64_t k = k0; k < k1; ++k) {
      if (ptr[k] == ptr[k + 1]) continue;
      float acc[kSpikeColumnTile];
      float* dw = grad_weights + k * N;
      for (int64_t j = 0; j < w; ++j) acc[j] = dw[j];
      for (int64_t p = ptr[k]; p < ptr[k + 1]; ++p) {
        add_row<Width>(grad_output + static_cast<int64_t>(a.block_rows[p]) * N, width, acc);
      }
      for (int64_t j = 0; j < w; ++j) dw[j] = acc[j];
    }
  }
}

}  // namespace spike_detail

// ------------------------------------------------------------ index build --

// Pass 1, rows [begin, end) of x [M, K]: counts[m] = the nonzeros of row m.
// Returns the first row in the range with a value other than 0 or 1 (NaN
// included), or -1.
template <typename T>
FUSED_LIF_CPU_DISPATCH int64_t spike_count_rows_cpu(const T* x, int64_t K, int64_t begin,
                                                    int64_t end, int64_t* counts) {
  int64_t first_bad = -1;
  for (int64_t m = begin; m < end; ++m) {
    const T* row = x + m * K;
    int64_t n = 0, bad = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float v = static_cast<float>(row[k]);
      n += v != 0.0f;
      bad += (v != 0.0f) & (v != 1.0f);
    }
    counts[m] = n;
    if (bad != 0 && first_bad < 0) first_bad = m;
  }
  return first_bad;
}

// The first column of row `m` that is not 0 or 1.
template <typename T>
int64_t spike_first_bad_column(const T* x, int64_t K, int64_t m) {
  for (int64_t k = 0; k < K; ++k) {
    const float v = static_cast<float>(x[m * K + k]);
    if (!(v == 0.0f || v == 1.0f)) return k;
  }
  return -1;
}

// Pass 2, rows [begin, end): the columns of each row's ones, ascending, at
// cols[row_ptr[m] ...] (row_ptr: the exclusive prefix sum of the counts).
template <typename T>
FUSED_LIF_CPU_DISPATCH void spike_fill_cols_cpu(const T* x, int64_t K, const int64_t* row_ptr,
                                                int64_t begin, int64_t end, int32_t* cols) {
  for (int64_t m = begin; m < end; ++m) {
    const T* row = x + m * K;
    int32_t* out = cols + row_ptr[m];
    for (int64_t k = 0; k < K; ++k) {
      if (static_cast<float>(row[k]) != 0.0f) *out++ = static_cast<int32_t>(k);
    }
  }
}

// ---------------------------------------------------------------- forward --

// Work items: column tiles x row blocks, column tile major (a thread's run of
// items reads one W tile).
inline int64_t spike_forward_items(const SpikeMatmulArgs& a) {
  return spike_column_tiles(a.outputs) * spike_row_blocks(a.rows);
}

template <typename T>
FUSED_LIF_CPU_DISPATCH void spike_matmul_forward_cpu(const SpikeMatmulArgs& a, int64_t begin,
                                                     int64_t end) {
  const int64_t blocks = spike_row_blocks(a.rows);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n0 = (item / blocks) * kSpikeColumnTile;
    const int64_t m0 = (item % blocks) * kSpikeRowBlock;
    const int64_t m1 = std::min(a.rows, m0 + kSpikeRowBlock);
    const int64_t width = std::min(kSpikeColumnTile, a.outputs - n0);
    if (width == kSpikeColumnTile) {
      spike_detail::forward_block<kSpikeColumnTile, T>(a, m0, m1, n0, width);
    } else {
      spike_detail::forward_block<0, T>(a, m0, m1, n0, width);
    }
  }
}

// --------------------------------------------------------------- backward --

// Index pass 1, row blocks [begin, end): block_ptr[b * K + k + 1] = the ones
// of column k in block b. Then spike_weight_grad_prefix (one thread), then
// pass 2 (spike_weight_grad_fill_cpu) over the blocks again.
inline void spike_weight_grad_count_cpu(const SpikeMatmulArgs& a, int64_t begin, int64_t end) {
  const int64_t K = a.inputs;
  for (int64_t b = begin; b < end; ++b) {
    int64_t* count = a.block_ptr + b * K + 1;
    std::fill_n(count, K, int64_t{0});
    const int64_t m1 = std::min(a.rows, (b + 1) * kSpikeRowBlock);
    for (int64_t p = a.row_ptr[b * kSpikeRowBlock]; p < a.row_ptr[m1]; ++p) ++count[a.cols[p]];
  }
}

inline void spike_weight_grad_prefix(const SpikeMatmulArgs& a) {
  const int64_t n = spike_row_blocks(a.rows) * a.inputs;
  a.block_ptr[0] = 0;
  for (int64_t i = 0; i < n; ++i) a.block_ptr[i + 1] += a.block_ptr[i];
}

inline void spike_weight_grad_fill_cpu(const SpikeMatmulArgs& a, int64_t begin, int64_t end) {
  const int64_t K = a.inputs;
  std::vector<int64_t> next(static_cast<size_t>(K));
  for (int64_t b = begin; b < end; ++b) {
    std::copy_n(a.block_ptr + b * K, K, next.begin());
    const int64_t m0 = b * kSpikeRowBlock, m1 = std::min(a.rows, m0 + kSpikeRowBlock);
    for (int64_t m = m0; m < m1; ++m) {  // rows ascending within each column
      for (int64_t p = a.row_ptr[m]; p < a.row_ptr[m + 1]; ++p) {
        a.block_rows[next[a.cols[p]]++] = static_cast<int32_t>(m);
      }
    }
  }
}

// Work items of the weight gradient: column tiles x chunks of dW's rows k.
// Each item owns its dW elements (no write conflicts); chunks only split the
// work when there are few column tiles (e.g. a 10-unit output layer).
inline int64_t spike_weight_grad_chunks(const SpikeMatmulArgs& a) {
  const int64_t tiles = spike_column_tiles(a.outputs);
  return std::max<int64_t>(1, std::min<int64_t>(a.inputs, ceil_div(16, std::max<int64_t>(tiles, 1))));
}
inline int64_t spike_weight_grad_items(const SpikeMatmulArgs& a) {
  return spike_column_tiles(a.outputs) * spike_weight_grad_chunks(a);
}

template <typename T>
FUSED_LIF_CPU_DISPATCH void spike_weight_grad_cpu(const SpikeMatmulArgs& a, int64_t begin,
                                                  int64_t end) {
  const int64_t chunks = spike_weight_grad_chunks(a);
  const int64_t chunk_rows = ceil_div(a.inputs, chunks);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n0 = (item / chunks) * kSpikeColumnTile;
    const int64_t k0 = std::min(a.inputs, (item % chunks) * chunk_rows);
    const int64_t k1 = std::min(a.inputs, k0 + chunk_rows);
    const int64_t width = std::min(kSpikeColumnTile, a.outputs - n0);
    if (width == kSpikeColumnTile) {
      spike_detail::weight_grad_tile<kSpikeColumnTile, T>(a, k0, k1, n0, width);
    } else {
      spike_detail::weight_grad_tile<0, T>(a, k0, k1, n0, width);
    }
  }
}

}  // namespace fused_lif

#endif  // FUSED_LIF_SPIKE_MATMUL_H_
