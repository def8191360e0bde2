// The spike_matmul CPU kernels (csrc/spike_matmul.h) without TensorFlow, for
// the sanitizer run (tests/standalone/sanitize.sh): every pass on edge shapes
// (empty, one element, widths that are not a multiple of the tile or of 16)
// and densities 0, 0.1 and 1, each work item run alone; the forward and the
// weight gradient against a double oracle, the weight gradient identical for
// every split over threads, a non-binary value found at its row and column.
//   g++ -std=c++17 -I csrc tests/standalone/check_spike_matmul.cc && ./a.out
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "spike_matmul.h"

using namespace fused_lif;

namespace {

bool check(int64_t M, int64_t K, int64_t N, double density) {
  std::mt19937 rng(static_cast<unsigned>(M * 31 + K * 7 + N));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(M * K), w(K * N), g(M * N), out(M * N), dw(K * N);
  std::vector<float> packed_w(K * N), packed_dw(K * N);
  for (float& v : x) v = uniform(rng) < density ? 1.0f : 0.0f;
  for (float& v : w) v = uniform(rng) - 0.5f;
  for (float& v : g) v = uniform(rng) - 0.5f;

  std::vector<int64_t> row_ptr(M + 1, 0);
  for (int64_t m = 0; m < M; ++m) {  // one row per call: every boundary
    if (spike_count_rows_cpu<float>(x.data(), K, m, m + 1, row_ptr.data() + 1) >= 0) return false;
  }
  for (int64_t m = 0; m < M; ++m) row_ptr[m + 1] += row_ptr[m];
  std::vector<int32_t> cols(row_ptr[M]);
  for (int64_t m = 0; m < M; m += 7) {
    spike_fill_cols_cpu<float>(x.data(), K, row_ptr.data(), m, std::min(M, m + 7), cols.data());
  }
  spike_pack_cpu<float>(w.data(), K, N, 0, K, packed_w.data());

  SpikeMatmulArgs a;
  a.rows = M;
  a.inputs = K;
  a.outputs = N;
  a.row_ptr = row_ptr.data();
  a.cols = cols.data();
  a.packed_weights = packed_w.data();
  a.output = out.data();
  a.grad_output = g.data();
  a.packed_grad_weights = packed_dw.data();
  // Outputs start as garbage (1e30, which the error checks below see; NaN
  // they would not, max() ignoring it): an element a kernel skips fails.
  std::fill(out.begin(), out.end(), 1e30f);
  for (int64_t i = 0; i < spike_forward_items(a); ++i) spike_matmul_forward_cpu<float>(a, i, i + 1);

  const int64_t blocks = spike_row_blocks(M);
  std::vector<int64_t> block_ptr(blocks * K + 1);
  std::vector<int32_t> block_rows(row_ptr[M]);
  a.block_ptr = block_ptr.data();
  a.block_rows = block_rows.data();
  for (int64_t b = 0; b < blocks; ++b) spike_weight_grad_count_cpu(a, b, b + 1);
  spike_weight_grad_prefix(a);
  for (int64_t b = 0; b < blocks; ++b) spike_weight_grad_fill_cpu(a, b, b + 1);
  std::vector<float> first;
  for (int64_t threads : {1, 3, 16}) {
    std::fill(packed_dw.begin(), packed_dw.end(), 1e30f);
    for (int64_t i = 0; i < spike_weight_grad_items(a, threads); ++i) {
      spike_weight_grad_cpu(a, threads, i, i + 1);
    }
    spike_unpack_cpu<float>(packed_dw.data(), K, N, 0, K, dw.data());
    if (first.empty()) {
      first = dw;
    } else if (first != dw) {
      std::printf("M=%ld K=%ld N=%ld: dW differs with %ld threads\n", long(M), long(K), long(N),
                  long(threads));
      return false;
    }
  }

  double forward_error = 0.0, grad_error = 0.0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0.0;
      for (int64_t k = 0; k < K; ++k) exact += double(x[m * K + k]) * w[k * N + n];
      forward_error = std::max(forward_error, std::abs(exact - out[m * N + n]));
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0.0;
      for (int64_t m = 0; m < M; ++m) exact += double(x[m * K + k]) * g[m * N + n];
      grad_error = std::max(grad_error, std::abs(exact - dw[k * N + n]));
    }
  }
  // Sums of at most 600 terms of |value| <= 0.5 in float: far below 1e-3.
  const bool ok = forward_error < 1e-3 && grad_error < 1e-3;
  if (!ok) {
    std::printf("M=%ld K=%ld N=%ld density %g: errors %g %g\n", long(M), long(K), long(N),
                density, forward_error, grad_error);
  }
  return ok;
}

bool check_non_binary() {
  const int64_t M = 5, K = 37;
  std::vector<float> x(M * K, 0.0f);
  x[3 * K + 20] = 0.5f;
  x[4 * K + 2] = NAN;
  std::vector<int64_t> counts(M);
  const int64_t row = spike_count_rows_cpu<float>(x.data(), K, 0, M, counts.data());
  const int64_t col = row < 0 ? -1 : spike_first_bad_column(x.data(), K, row);
  if (row != 3 || col != 20) {
    std::printf("non-binary value found at [%ld, %ld], expected [3, 20]\n", long(row), long(col));
    return false;
  }
  return spike_count_rows_cpu<float>(x.data(), K, 4, 5, counts.data()) == 4;  // NaN
}

}  // namespace

int main() {
  bool ok = check_non_binary();
  const int64_t shapes[][3] = {{0, 5, 3},   {4, 0, 3},   {4, 5, 0},     {1, 1, 1},
                               {257, 130, 129}, {600, 17, 10}, {513, 300, 256}, {300, 64, 385}};
  for (const auto& s : shapes) {
    for (double density : {0.0, 0.1, 1.0}) ok = check(s[0], s[1], s[2], density) && ok;
  }
  std::printf("check_spike_matmul: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
