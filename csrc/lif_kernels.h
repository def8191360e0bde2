// Framework-free interface of the fused LIF kernels: argument structs with
// raw pointers, and the CUDA launchers. The TensorFlow op (lif_ops.cc) and the
// pybind11 bindings (lif_bindings.cc) both fill these structs; neither knows
// the math nor the loops (lif_cpu.h, lif_cuda_threads.h). It includes lif.h
// only for the option enums (Surrogate, Reset).
#ifndef FUSED_LIF_LIF_KERNELS_H_
#define FUSED_LIF_LIF_KERNELS_H_

#include <cstdint>
#include <string>

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

// What a CUDA call returned: `error` is a cudaError_t (0: success) and
// `kernel` names the launch or call that failed.
struct LifCudaStatus {
  int error = 0;
  const char* kernel = "";
  bool ok() const { return error == 0; }
};

// CUDA launchers (lif_cuda.cu), on device pointers, on `stream` (a
// cudaStream_t; this header needs no CUDA include). They validate nothing:
// the callers validate once at entry. Every launch's return value and the
// runtime's last error are checked: a failure is returned, never dropped.
LifCudaStatus lif_forward_cuda(const LifForwardArgs& args, DType dtype, void* stream);
LifCudaStatus lif_backward_cuda(const LifBackwardArgs& args, DType dtype, void* stream);
// Copies decay and threshold (host memory, already checked) into
// device_params ([decay_count + threshold_count] floats on the device), on
// `stream`; the host memory may be freed as soon as it returns.
LifCudaStatus lif_cuda_upload_params(const float* decay, int64_t decay_count,
                                     const float* threshold, int64_t threshold_count,
                                     float* device_params, void* stream);
// Whether the kernels have an image that `device` can run (cudaFuncGetAttributes
// on a kernel; device < 0: the current device, else it becomes the current
// device); sets *device to the device checked and fills in its compute capability.
LifCudaStatus lif_cuda_check_image(int* device, int* major, int* minor);
const char* lif_cuda_architectures();  // CMAKE_CUDA_ARCHITECTURES of the build, e.g. "75-real;90-virtual"
const char* lif_cuda_error_string(int error);
const char* lif_cuda_error_name(int error);

// "fused-lif: CUDA kernel lif_forward_kernel failed for currents of shape
// [batch, time, neurons] = [2, 3, 4]: <CUDA's words> (cudaErrorX)"
inline std::string describe_cuda_failure(const LifCudaStatus& status, const char* what,
                                         int64_t batch, int64_t time, int64_t neurons) {
  return std::string("fused-lif: CUDA ") + status.kernel + " failed for " + what +
         " of shape [batch, time, neurons] = [" + std::to_string(batch) + ", " +
         std::to_string(time) + ", " + std::to_string(neurons) + "]: " +
         lif_cuda_error_string(status.error) + " (" + lif_cuda_error_name(status.error) + ")";
}

// Why the kernels cannot run on a device, and what to do: the words of the
// op's error, of fused_lif's fallback warning and of FusedOpUnavailableError.
inline std::string describe_unusable_device(const LifCudaStatus& status, int device, int major,
                                            int minor) {
  const std::string cc =
      major > 0 ? std::to_string(major) + "." + std::to_string(minor) : std::string("unknown");
  const std::string arch = std::to_string(major) + std::to_string(minor);
  std::string out = "fused-lif: the CUDA kernels cannot run on GPU " + std::to_string(device) +
                    " (compute capability " + cc + "): " + lif_cuda_error_string(status.error) +
                    " (" + lif_cuda_error_name(status.error) + "). This build has CUDA code for " +
                    "architectures " + lif_cuda_architectures() + ".";
  if (status.error == 209 /* cudaErrorNoKernelImageForDevice */ ||
      status.error == 98 /* cudaErrorInvalidDeviceFunction */) {
    out += " Rebuild for this GPU: pip install --no-build-isolation --no-deps --force-reinstall "
           "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=" + arch + "-real . (from a fused-lif "
           "checkout; append it to the list, e.g. \"" + arch + "-real;90-virtual\", to keep "
           "the others).";
  } else if (status.error == 35 /* cudaErrorInsufficientDriver */) {
    out += " The CUDA runtime built in needs a newer NVIDIA driver (CUDA 13: R580 or newer), "
           "or rebuild with the CUDA toolkit the driver supports (CMAKE_CUDA_COMPILER).";
  }
  return out + " Or use implementation='reference'.";
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_KERNELS_H_
