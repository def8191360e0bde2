// The parameter gradients' sums over the batch (scratch rows -> grad_decay,
// grad_threshold, grad_bias), in one fixed order that the CPU and the CUDA
// kernels share, so that both give the same float:
//   per neuron ([neurons] parameters): Σ_b rows[b, n], b ascending;
//   over everything ([] parameters):   kSumThreads strided partial sums
//     partial[i] = Σ_{j ≡ i mod kSumThreads} rows[j] (j ascending), then a
//     pairwise tree: partial[i] += partial[i + w] for w = kSumThreads/2 .. 1.
// On the GPU each step is one thread's work (one block of kSumThreads
// threads for the tree); on the CPU (lif_cpu.h) threads share the per-neuron
// sums and the partial sums, vectorized, and one thread runs the tree.
#ifndef FUSED_LIF_LIF_REDUCE_H_
#define FUSED_LIF_LIF_REDUCE_H_

#include <cstdint>

#include "lif.h"

namespace fused_lif {

constexpr unsigned kSumThreads = 256;  // a power of two

// out[n] = Σ_b rows[b, n]
template <typename P>
LIF_HOST_DEVICE void sum_over_batch_column(const float* rows, int64_t batch, int64_t neurons,
                                           int64_t n, P* out) {
  float sum = 0.0f;
  for (int64_t b = 0; b < batch; ++b) sum = add_rn(sum, rows[b * neurons + n]);
  out[n] = static_cast<P>(sum);
}

// Thread `i` of the tree's block: its strided partial sum.
LIF_HOST_DEVICE void sum_all_load(const float* rows, int64_t count, unsigned i, float* partial) {
  float sum = 0.0f;
  for (int64_t j = i; j < count; j += kSumThreads) sum = add_rn(sum, rows[j]);
  partial[i] = sum;
}

// Thread `i` at one level of the tree (all threads of a level run before the next level).
LIF_HOST_DEVICE void sum_all_step(unsigned width, unsigned i, float* partial) {
  if (i < width) partial[i] = add_rn(partial[i], partial[i + width]);
}

template <typename P>
LIF_HOST_DEVICE void sum_all_store(const float* partial, unsigned i, P* out) {
  if (i == 0) out[0] = static_cast<P>(partial[0]);
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_REDUCE_H_
