// Checked CUDA launches and calls (CUDA translation units only). A launch
// goes through cudaLaunchKernel, whose return value is kept, and then reads
// (and clears) the runtime's last error, so that a failure either way is
// reported; it can never read as success.
#ifndef FUSED_LIF_LIF_CUDA_LAUNCH_H_
#define FUSED_LIF_LIF_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

#include <climits>

#include "lif_cuda_threads.h"
#include "lif_kernels.h"

namespace fused_lif {

// The status of a runtime call that returned `returned`, plus any error the
// runtime recorded without returning it.
inline LifCudaStatus checked_call(const char* what, cudaError_t returned) {
  const cudaError_t last = cudaGetLastError();
  const cudaError_t error = returned != cudaSuccess ? returned : last;
  return {static_cast<int>(error), error != cudaSuccess ? what : ""};
}

// Launches kernel<<<shape.blocks, shape.threads, 0, stream>>>(arg), checked.
template <typename Arg>
LifCudaStatus checked_launch(const char* name, void (*kernel)(Arg), LaunchShape shape,
                             cudaStream_t stream, Arg arg) {
  if (shape.blocks <= 0 || shape.blocks > INT_MAX) {  // no silent truncation to unsigned
    return {static_cast<int>(cudaErrorInvalidConfiguration), name};
  }
  void* params[] = {&arg};
  const cudaError_t returned =
      cudaLaunchKernel(reinterpret_cast<const void*>(kernel),
                       dim3(static_cast<unsigned>(shape.blocks)), dim3(shape.threads), params, 0,
                       stream);
  return checked_call(name, returned);
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_CUDA_LAUNCH_H_
