// CUDA kernels of the fused recurrent LIF op and their launchers. Each
// kernel runs one block's phases from lif_recurrent_cuda_threads.h, with
// __syncthreads() as the barrier between them; the launches and their order
// are that header's too. Built as lif_cuda.cu is (--fmad=false, --ftz=true):
// the CPU's floats, bit for bit. No TensorFlow header.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lif.h"
#include "lif_cuda_launch.h"
#include "lif_cuda_threads.h"
#include "lif_recurrent_cuda_threads.h"
#include "lif_recurrent_kernels.h"

namespace fused_lif {
namespace {

// The Block of lif_recurrent_cuda_threads.h on the GPU: this thread does its
// share of each phase; a barrier ends it.
// (Host+device, as the block functions that call it; only device code runs it.)
struct CudaBlock {
  int64_t row;
  template <typename F>
  LIF_HOST_DEVICE void for_each_thread(F&& f) const {
#if defined(__CUDA_ARCH__)
    f(threadIdx.x, blockDim.x);
#endif
  }
  LIF_HOST_DEVICE void sync() const {
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
  }
};

template <typename T, Reset R>
__global__ void recurrent_lif_forward_kernel(const RecurrentForwardArgs a) {
  extern __shared__ uint32_t shared_masks[];
  const int64_t words = kRecurrentMasks * recurrent_mask_words(a.lif.neurons);
  uint32_t* masks = a.global_masks != nullptr ? a.global_masks + blockIdx.x * words : shared_masks;
  CudaBlock block{blockIdx.x};
  recurrent_forward_block<T, R>(a, block, masks);
}

__global__ void recurrent_transpose_kernel(const RecurrentBackwardArgs a) {
  recurrent_transpose_thread(a, blockIdx.x, threadIdx.x, blockDim.x);
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
__global__ void recurrent_lif_backward_kernel(const RecurrentBackwardArgs a) {
  extern __shared__ float shared_grads[];
  float* grads = a.global_grads != nullptr ? a.global_grads + blockIdx.x * 2 * a.lif.neurons
                                           : shared_grads;
  CudaBlock block{blockIdx.x};
  recurrent_backward_block<T, S, R, ParamGrads, DetachReset>(a, block, grads);
}

// The Launch of lif_recurrent_cuda_threads.h's sequences (the reductions:
// lif_cuda_launch.h's CudaReduceLaunch).
struct RecurrentCudaLaunch : CudaReduceLaunch {
  template <typename T, Reset R>
  LifCudaStatus recurrent_forward(const RecurrentForwardArgs& a, LaunchShape shape) {
    return checked_launch("recurrent_lif_forward_kernel", recurrent_lif_forward_kernel<T, R>,
                          shape, stream, a);
  }
  LifCudaStatus transpose(const RecurrentBackwardArgs& a, LaunchShape shape) {
    return checked_launch("recurrent_transpose_kernel", recurrent_transpose_kernel, shape, stream,
                          a);
  }
  template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
  LifCudaStatus recurrent_backward(const RecurrentBackwardArgs& a, LaunchShape shape) {
    return checked_launch("recurrent_lif_backward_kernel",
                          recurrent_lif_backward_kernel<T, S, R, ParamGrads, DetachReset>, shape,
                          stream, a);
  }
};

}  // namespace

LifCudaStatus recurrent_lif_forward_cuda(const RecurrentForwardArgs& args, DType dtype,
                                         void* stream) {
  RecurrentCudaLaunch launch;
  launch.stream = static_cast<cudaStream_t>(stream);
  return dispatch_dtype<__half, __nv_bfloat16>(dtype, [&](auto element) {
    return recurrent_lif_forward_launches<decltype(element)>(args, launch);
  });
}

LifCudaStatus recurrent_lif_backward_cuda(const RecurrentBackwardArgs& args, DType dtype,
                                          void* stream) {
  RecurrentCudaLaunch launch;
  launch.stream = static_cast<cudaStream_t>(stream);
  return dispatch_dtype<__half, __nv_bfloat16>(dtype, [&](auto element) {
    return recurrent_lif_backward_launches<decltype(element)>(args, launch);
  });
}

}  // namespace fused_lif
