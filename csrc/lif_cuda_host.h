// Host-pointer CUDA entry points for the framework-free bindings only
// (lif_cuda_host.cu; the op library does not link them).
#ifndef FUSED_LIF_LIF_CUDA_HOST_H_
#define FUSED_LIF_LIF_CUDA_HOST_H_

#include <cstdint>

#include "lif_kernels.h"
#include "lif_recurrent_kernels.h"

namespace fused_lif {

// The launchers on float32 host pointers: copy in, launch, copy out.
LifCudaStatus lif_forward_cuda_from_host(const LifForwardArgs& host_args);
LifCudaStatus lif_backward_cuda_from_host(const LifBackwardArgs& host_args);
LifCudaStatus recurrent_lif_forward_cuda_from_host(const RecurrentForwardArgs& host_args);
LifCudaStatus recurrent_lif_backward_cuda_from_host(const RecurrentBackwardArgs& host_args);
int lif_cuda_device_count();
// Launches an empty kernel with `threads` threads per block through the same
// checked launch as the kernels (more than 1024 threads: a launch failure).
LifCudaStatus lif_cuda_launch_probe(unsigned threads);

// Times the kernels on device-resident data (float32, reset "zero",
// fast_sigmoid) and a device-to-device copy of as many bytes as the forward
// kernel moves; milliseconds per call, averaged over `repeats`.
struct LifCudaTimings {
  float forward_ms = 0, backward_ms = 0, copy_ms = 0;
  int64_t forward_bytes = 0, backward_bytes = 0, copy_bytes = 0;  // bytes read + written
};
LifCudaStatus lif_cuda_benchmark(int64_t batch, int64_t time, int64_t neurons, int repeats,
                       LifCudaTimings* timings);

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_CUDA_HOST_H_
