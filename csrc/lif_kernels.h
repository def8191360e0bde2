// Framework-free interface of the fused LIF kernels: argument structs with
// raw pointers, and the CUDA launchers. The TensorFlow op (lif_ops.cc) and the
// pybind11 bindings (lif_bindings.cc) both fill these structs; neither knows
// the math nor the loops (lif_cpu.h, lif_cuda.cu). It includes lif.h only for
// the option enums (Surrogate, Reset).
#ifndef FUSED_LIF_LIF_KERNELS_H_
#define FUSED_LIF_LIF_KERNELS_H_

#include <cstdint>

#include "lif.h"

namespace fused_lif {

// Element type of currents, bias, spikes and their gradients. The membrane,
// decay and threshold are always float32.
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Per-neuron parameters are either one value for all neurons (stride 0) or
// one per neuron (stride 1).
struct LifForwardArgs {
  int64_t batch = 0, time = 0, neurons = 0;
  const void* currents = nullptr;         // [batch, time, neurons]
  const void* bias = nullptr;             // [neurons] or []
  int64_t bias_stride = 0;
  const float* decay = nullptr;           // [neurons] or []
  int64_t decay_stride = 0;
  const float* threshold = nullptr;       // [neurons] or []
  int64_t threshold_stride = 0;
  const float* initial_membrane = nullptr;  // [batch, neurons]
  Reset reset = Reset::kZero;
  void* spikes = nullptr;                 // [batch, time, neurons] out
  float* pre_reset_membrane = nullptr;    // [batch, time, neurons] out: u[t]
  float* final_membrane = nullptr;        // [batch, neurons] out: v[T-1]
};

struct LifBackwardArgs {
  int64_t batch = 0, time = 0, neurons = 0;
  const void* grad_spikes = nullptr;            // [batch, time, neurons]
  const float* grad_final_membrane = nullptr;   // [batch, neurons]
  const float* pre_reset_membrane = nullptr;    // [batch, time, neurons]: u[t]
  const float* initial_membrane = nullptr;      // [batch, neurons]
  const float* decay = nullptr;                 // [neurons] or []
  int64_t decay_stride = 0;
  const float* threshold = nullptr;             // [neurons] or []
  int64_t threshold_stride = 0;
  float alpha = 10.0f;
  Surrogate surrogate = Surrogate::kFastSigmoid;
  Reset reset = Reset::kZero;
  bool detach_reset = false;
  bool param_grads = true;  // false: tau and threshold are constants, their gradients are 0
  int64_t bias_stride = 0;                      // shape of bias: [neurons] or []
  void* grad_currents = nullptr;                // [batch, time, neurons] out
  float* grad_initial_membrane = nullptr;       // [batch, neurons] out
  void* grad_bias = nullptr;                    // like bias, out
  float* grad_decay = nullptr;                  // like decay, out
  float* grad_threshold = nullptr;              // like threshold, out
  // Scratch of kScratchRows * batch * neurons floats: each column's sums over
  // time, reduced over the batch (in a fixed order: results are
  // deterministic) into the parameter gradients.
  float* scratch = nullptr;
};
constexpr int64_t kScratchRows = 3;  // decay, threshold, bias

// CUDA launchers (lif_cuda.cu), on device pointers. They validate nothing:
// the callers validate once at entry. They return a cudaError_t as int so that
// this header needs no CUDA include; `stream` is a cudaStream_t.
int lif_forward_cuda(const LifForwardArgs& args, DType dtype, void* stream);
int lif_backward_cuda(const LifBackwardArgs& args, DType dtype, void* stream);
const char* lif_cuda_error_string(int error);

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_KERNELS_H_
