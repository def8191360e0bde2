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

// Launches kernel<<<shape.blocks, shape.threads, shape.shared_bytes,
// stream>>>(arg), checked.
template <typename Arg>
LifCudaStatus checked_launch(const char* name, void (*kernel)(Arg), LaunchShape shape,
                             cudaStream_t stream, Arg arg) {
  if (shape.blocks <= 0 || shape.blocks > INT_MAX || shape.shared_bytes < 0 ||
      shape.shared_bytes > INT_MAX) {  // no silent truncation to unsigned
    return {static_cast<int>(cudaErrorInvalidConfiguration), name};
  }
  void* params[] = {&arg};
  const cudaError_t returned =
      cudaLaunchKernel(reinterpret_cast<const void*>(kernel),
                       dim3(static_cast<unsigned>(shape.blocks)), dim3(shape.threads), params,
                       static_cast<size_t>(shape.shared_bytes), stream);
  return checked_call(name, returned);
}

namespace {

// The parameter gradients' sums (lif_cuda_threads.h's lif_backward_reduce_launches),
// for every launcher that ends with them.
template <typename P>
__global__ void sum_over_batch_kernel(const SumArgs<P> s) {
  sum_over_batch_thread(s, blockIdx.x, threadIdx.x, blockDim.x);
}

// One block of kSumThreads threads: strided partial sums, then the tree.
template <typename P>
__global__ void sum_all_kernel(const SumArgs<P> s) {
  __shared__ float partial[kSumThreads];
  sum_all_load(s.rows, s.batch * s.neurons, threadIdx.x, partial);
  __syncthreads();
  for (unsigned width = kSumThreads / 2; width > 0; width /= 2) {
    sum_all_step(width, threadIdx.x, partial);
    __syncthreads();
  }
  sum_all_store(partial, threadIdx.x, s.out);
}

// The reduction part of a Launch (lif_cuda_threads.h): real kernels on `stream`.
struct CudaReduceLaunch {
  cudaStream_t stream = nullptr;

  template <typename P>
  LifCudaStatus sum_over_batch(const SumArgs<P>& s, LaunchShape shape) {
    return checked_launch("sum_over_batch_kernel", sum_over_batch_kernel<P>, shape, stream, s);
  }
  template <typename P>
  LifCudaStatus sum_all(const SumArgs<P>& s) {
    return checked_launch("sum_all_kernel", sum_all_kernel<P>, LaunchShape{1, kSumThreads}, stream,
                          s);
  }
  LifCudaStatus zero(float* p, int64_t count) {
    return checked_call("cudaMemsetAsync",
                        cudaMemsetAsync(p, 0, static_cast<size_t>(count) * sizeof(float), stream));
  }
};

}  // namespace

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_CUDA_LAUNCH_H_
