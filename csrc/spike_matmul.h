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
#include <type_traits>
#include <vector>

#include "cpu_common.h"  // FUSED_LIF_CPU_DISPATCH, FUSED_LIF_INLINE, ceil_div
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

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
  // Forward: W packed by spike_pack_cpu (float, column tiles contiguous).
  const float* packed_weights = nullptr;  // [K * N]
  void* output = nullptr;                 // T [M, N]
  // Backward: dOut as float, and dW packed (spike_unpack_cpu writes dW).
  const float* grad_output = nullptr;   // [M, N]
  float* packed_grad_weights = nullptr;  // [K * N]
  // Backward scratch, filled by the spike_weight_grad_{count,prefix,fill}
  // passes: the ones of each row block grouped by column k, rows ascending:
  // block_ptr [blocks * K + 1], block_rows [nnz].
  int64_t* block_ptr = nullptr;
  int32_t* block_rows = nullptr;
};

inline int64_t spike_row_blocks(int64_t rows) { return ceil_div(rows, kSpikeRowBlock); }
inline int64_t spike_column_tiles(int64_t outputs) { return ceil_div(outputs, kSpikeColumnTile); }

namespace spike_detail {

// 16 floats, loaded and stored unaligned (memcpy): 1 AVX-512, 2 AVX2 or 4
// SSE registers, as each target_clones variant compiles it.
typedef float Vec16 __attribute__((vector_size(64)));
constexpr int64_t kTileVectors = kSpikeColumnTile / 16;

// acc[0, 128) += src[0, 128): a full tile, in registers.
FUSED_LIF_INLINE void add_tile(const float* src, Vec16* acc) {
  for (int64_t i = 0; i < kTileVectors; ++i) {
    Vec16 v;
    __builtin_memcpy(&v, src + 16 * i, sizeof(v));
    acc[i] += v;
  }
}

// acc[0, width) += src[0, width): a narrower last tile.
FUSED_LIF_INLINE void add_row(const float* src, int64_t width, float* acc) {
  for (int64_t j = 0; j < width; ++j) acc[j] += src[j];
}

// Rows [m0, m1) of the output's columns [n0, n0 + width); w: the packed tile.
template <typename T>
FUSED_LIF_INLINE void forward_block(const SpikeMatmulArgs& a, int64_t m0, int64_t m1, int64_t n0,
                                    int64_t width) {
  const float* w = a.packed_weights + a.inputs * n0;
  T* output = static_cast<T*>(a.output) + n0;
  const int64_t N = a.outputs;
  for (int64_t m = m0; m < m1; ++m) {
    alignas(64) float acc[kSpikeColumnTile];
    if (width == kSpikeColumnTile) {
      Vec16 v[kTileVectors] = {};
      for (int64_t p = a.row_ptr[m]; p < a.row_ptr[m + 1]; ++p) {
        add_tile(w + static_cast<int64_t>(a.cols[p]) * kSpikeColumnTile, v);
      }
      __builtin_memcpy(acc, v, sizeof(v));
    } else {
      for (int64_t j = 0; j < width; ++j) acc[j] = 0.0f;
      for (int64_t p = a.row_ptr[m]; p < a.row_ptr[m + 1]; ++p) {
        add_row(w + static_cast<int64_t>(a.cols[p]) * width, width, acc);
      }
    }
    for (int64_t j = 0; j < width; ++j) output[m * N + j] = static_cast<T>(acc[j]);
  }
}

// dW rows [k0, k1) of the packed tile at column n0: row blocks in turn (the
// block's dOut rows stay in L2), each dW row's sum carried across them.
FUSED_LIF_INLINE void weight_grad_tile(const SpikeMatmulArgs& a, int64_t k0, int64_t k1,
                                       int64_t n0, int64_t width) {
  const int64_t K = a.inputs, N = a.outputs;
  const float* g = a.grad_output + n0;
  float* dw_tile = a.packed_grad_weights + K * n0;
  std::fill(dw_tile + k0 * width, dw_tile + k1 * width, 0.0f);
  const int64_t blocks = spike_row_blocks(a.rows);
  for (int64_t b = 0; b < blocks; ++b) {  // blocks ascending: m ascending per k
    const int64_t* ptr = a.block_ptr + b * K;
    for (int64_t k = k0; k < k1; ++k) {
      if (ptr[k] == ptr[k + 1]) continue;
      float* dw = dw_tile + k * width;
      if (width == kSpikeColumnTile) {
        Vec16 acc[kTileVectors];
        __builtin_memcpy(acc, dw, sizeof(acc));
        for (int64_t p = ptr[k]; p < ptr[k + 1]; ++p) {
          add_tile(g + static_cast<int64_t>(a.block_rows[p]) * N, acc);
        }
        __builtin_memcpy(dw, acc, sizeof(acc));
      } else {
        for (int64_t p = ptr[k]; p < ptr[k + 1]; ++p) {
          add_row(g + static_cast<int64_t>(a.block_rows[p]) * N, width, dw);
        }
      }
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

namespace spike_detail {

// The columns of row[0, K)'s nonzeros, ascending, into buf (K + 16 slots);
// returns how many. Branch-free: every column is written, the count moves on
// only past a nonzero.
template <typename T>
FUSED_LIF_CPU_DISPATCH int64_t compact_row(const T* row, int64_t K, int32_t* buf) {
  int64_t n = 0;
  for (int64_t k = 0; k < K; ++k) {
    buf[n] = static_cast<int32_t>(k);
    n += static_cast<float>(row[k]) != 0.0f;
  }
  return n;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define FUSED_LIF_SPIKE_AVX512_FILL 1
// The same for float rows, 16 columns at a time: AVX-512 compress in a
// register (vpcompressd to memory is microcoded on Zen 4), stored whole
// (hence the 16 spare slots). Several times faster than compact_row, whose
// store position depends on the previous count (GCC does not vectorize it).
__attribute__((target("avx512f"))) inline int64_t compact_row_avx512(const float* row, int64_t K,
                                                                     int32_t* buf) {
  int64_t n = 0;
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (int64_t k = 0; k < K; k += 16) {
    // The last block masked: masked-off lanes are neither read nor counted.
    const int64_t left = K - k;
    const __mmask16 valid = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1u);
    const __mmask16 ones = _mm512_mask_cmp_ps_mask(valid, _mm512_maskz_loadu_ps(valid, row + k),
                                                   _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_si512(buf + n, _mm512_maskz_compress_epi32(ones, index));
    n += __builtin_popcount(ones);
    index = _mm512_add_epi32(index, step);
  }
  return n;
}

inline bool has_avx512f() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

}  // namespace spike_detail

// The columns of row[0, K)'s nonzeros, ascending, into buf (K + 16 slots);
// returns how many.
template <typename T>
inline int64_t spike_row_columns(const T* row, int64_t K, int32_t* buf) {
#ifdef FUSED_LIF_SPIKE_AVX512_FILL
  if (std::is_same<T, float>::value && spike_detail::has_avx512f()) {
    return spike_detail::compact_row_avx512(reinterpret_cast<const float*>(row), K, buf);
  }
#endif
  return spike_detail::compact_row(row, K, buf);
}

// Pass 2, rows [begin, end): the columns of each row's ones, ascending, at
// cols[row_ptr[m] ...] (row_ptr: the exclusive prefix sum of the counts).
template <typename T>
void spike_fill_cols_cpu(const T* x, int64_t K, const int64_t* row_ptr, int64_t begin,
                         int64_t end, int32_t* cols) {
  std::vector<int32_t> buffer(static_cast<size_t>(K) + 16);
  int32_t* buf = buffer.data();
  for (int64_t m = begin; m < end; ++m) {
    const int64_t n = spike_row_columns(x + m * K, K, buf);
    // n equals pass 1's count (same test); clamped all the same, so that a
    // disagreement could never write into the next row's slots.
    std::copy_n(buf, std::min<int64_t>(n, row_ptr[m + 1] - row_ptr[m]), cols + row_ptr[m]);
  }
}

// ---------------------------------------------------------------- packing --
// A [K, N] matrix as float, column tiles contiguous: tile [n0, n0 + width)
// at packed + K * n0, row k at + k * width: a tile's rows are contiguous,
// rather than N floats apart (at N = 512, 2 KB: all in 1/32 of L2's sets),
// and float16 / bfloat16 weights are converted once. Rows [k_begin, k_end)
// per call.

template <typename T>
FUSED_LIF_CPU_DISPATCH void spike_pack_cpu(const T* src, int64_t K, int64_t N, int64_t k_begin,
                                           int64_t k_end, float* packed) {
  for (int64_t n0 = 0; n0 < N; n0 += kSpikeColumnTile) {
    const int64_t width = std::min(kSpikeColumnTile, N - n0);
    for (int64_t k = k_begin; k < k_end; ++k) {
      for (int64_t j = 0; j < width; ++j) {
        packed[K * n0 + k * width + j] = static_cast<float>(src[k * N + n0 + j]);
      }
    }
  }
}

template <typename T>
FUSED_LIF_CPU_DISPATCH void spike_unpack_cpu(const float* packed, int64_t K, int64_t N,
                                             int64_t k_begin, int64_t k_end, T* dst) {
  for (int64_t n0 = 0; n0 < N; n0 += kSpikeColumnTile) {
    const int64_t width = std::min(kSpikeColumnTile, N - n0);
    for (int64_t k = k_begin; k < k_end; ++k) {
      for (int64_t j = 0; j < width; ++j) {
        dst[k * N + n0 + j] = static_cast<T>(packed[K * n0 + k * width + j]);
      }
    }
  }
}

// Elements [begin, end) of src as float (dOut of a float16 / bfloat16 op).
template <typename T>
FUSED_LIF_CPU_DISPATCH void spike_to_float_cpu(const T* src, int64_t begin, int64_t end,
                                               float* dst) {
  for (int64_t i = begin; i < end; ++i) dst[i] = static_cast<float>(src[i]);
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
    spike_detail::forward_block<T>(a, m0, m1, n0, width);
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
// Each item owns its dW elements (no write conflicts) and sums each in the
// same order whatever the chunking, so `threads` only sets how the work is
// split: into chunks when there are fewer column tiles than threads (each
// chunk streams the tile's dOut columns again, so no more than needed).
inline int64_t spike_weight_grad_chunks(const SpikeMatmulArgs& a, int64_t threads) {
  const int64_t tiles = std::max<int64_t>(1, spike_column_tiles(a.outputs));
  return std::max<int64_t>(1, std::min<int64_t>(a.inputs, ceil_div(threads, tiles)));
}
inline int64_t spike_weight_grad_items(const SpikeMatmulArgs& a, int64_t threads) {
  return spike_column_tiles(a.outputs) * spike_weight_grad_chunks(a, threads);
}

// Items [begin, end) of spike_weight_grad_items(a, threads).
FUSED_LIF_CPU_DISPATCH inline void spike_weight_grad_cpu(const SpikeMatmulArgs& a, int64_t threads,
                                                         int64_t begin, int64_t end) {
  const int64_t chunks = spike_weight_grad_chunks(a, threads);
  const int64_t chunk_rows = ceil_div(a.inputs, chunks);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n0 = (item / chunks) * kSpikeColumnTile;
    const int64_t k0 = std::min(a.inputs, (item % chunks) * chunk_rows);
    const int64_t k1 = std::min(a.inputs, k0 + chunk_rows);
    const int64_t width = std::min(kSpikeColumnTile, a.outputs - n0);
    spike_detail::weight_grad_tile(a, k0, k1, n0, width);
  }
}

}  // namespace fused_lif

#endif  // FUSED_LIF_SPIKE_MATMUL_H_
