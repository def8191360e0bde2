// Framework-free interface of the fused recurrent LIF kernels (the math in
// lif.h, "Recurrent LIF"): argument structs with raw pointers, and the CUDA
// launchers. The TensorFlow op (lif_recurrent_ops.cc) and the pybind11
// bindings (lif_bindings.cc) fill these structs; the loops are in
// lif_recurrent_cpu.h and lif_recurrent_cuda_threads.h.
//
// Each struct holds the plain LIF op's arguments (`lif`: currents, bias,
// decay, threshold, membranes, options, outputs, the parameter gradients'
// scratch) and adds the recurrence's.
#ifndef FUSED_LIF_LIF_RECURRENT_KERNELS_H_
#define FUSED_LIF_LIF_RECURRENT_KERNELS_H_

#include <cstdint>

#include "lif_kernels.h"

namespace fused_lif {

struct RecurrentForwardArgs {
  LifForwardArgs lif;
  const float* recurrent_kernel = nullptr;  // [neurons, neurons]: R, rows presynaptic
  const float* initial_spikes = nullptr;    // [batch, neurons]: s[-1], every value 0 or 1
  // CUDA only: the spike bit masks of each block in global memory,
  // [batch, kRecurrentMasks, words], when they do not fit in shared memory
  // (recurrent_masks_in_shared); nullptr: in shared memory.
  uint32_t* global_masks = nullptr;
};

struct RecurrentBackwardArgs {
  LifBackwardArgs lif;  // lif.grad_currents is dL/dI[t], the gradient of the summed current
  const float* recurrent_kernel = nullptr;  // [neurons, neurons]: R
  // Scratch [neurons, neurons]: Rᵀ, written by the backward's first pass, so
  // that r[t][j] = Σ_n gI[t+1][n] · Rᵀ[n][j] runs over contiguous j.
  float* recurrent_kernel_t = nullptr;
  float* grad_initial_spikes = nullptr;  // [batch, neurons] out: dL/ds[-1]
  // CUDA only: gI[t] and gI[t+1] of each block in global memory, [batch, 2,
  // neurons], when they do not fit in shared memory
  // (recurrent_grads_in_shared); nullptr: in shared memory.
  float* global_grads = nullptr;
};

// The CUDA kernels' per-block working memory: without opting in, a block may
// have 48 KiB of shared memory; beyond it the launchers expect global
// scratch from the caller (the sizes below), never a failed launch.
constexpr int64_t kRecurrentSharedBytes = 48 * 1024;
constexpr int64_t kRecurrentMasks = 3;  // s[t-1], s[t], and the one cleared for s[t+1]
LIF_HOST_DEVICE int64_t recurrent_mask_words(int64_t neurons) { return (neurons + 31) / 32; }
inline bool recurrent_masks_in_shared(int64_t neurons) {
  return kRecurrentMasks * recurrent_mask_words(neurons) * 4 <= kRecurrentSharedBytes;
}
inline bool recurrent_grads_in_shared(int64_t neurons) {
  return 2 * neurons * 4 <= kRecurrentSharedBytes;
}
// uint32 words of RecurrentForwardArgs::global_masks (0: not needed).
inline int64_t recurrent_global_mask_words(int64_t batch, int64_t neurons) {
  return recurrent_masks_in_shared(neurons)
             ? 0 : batch * kRecurrentMasks * recurrent_mask_words(neurons);
}
// floats of RecurrentBackwardArgs::global_grads (0: not needed).
inline int64_t recurrent_global_grad_floats(int64_t batch, int64_t neurons) {
  return recurrent_grads_in_shared(neurons) ? 0 : batch * 2 * neurons;
}

// CUDA launchers (lif_recurrent_cuda.cu), on device pointers, on `stream`.
// They validate nothing (the callers validate once at entry); every launch
// is checked and its failure returned.
LifCudaStatus recurrent_lif_forward_cuda(const RecurrentForwardArgs& args, DType dtype,
                                         void* stream);
LifCudaStatus recurrent_lif_backward_cuda(const RecurrentBackwardArgs& args, DType dtype,
                                          void* stream);

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_RECURRENT_KERNELS_H_
