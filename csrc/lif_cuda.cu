// CUDA kernels of the fused LIF op and their launchers. Each kernel runs one
// thread's work from lif_cuda_threads.h; the order of launches is
// lif_cuda_threads.h's too. No TensorFlow header: launchers take raw pointers
// and the op's stream.
//
// Compiled with --fmad=false (every a·b + c is a rounded multiply then a
// rounded add, as on the CPU, -ffp-contract=off) and --ftz=true (subnormals
// flushed to zero, as TensorFlow runs its CPU kernels), so the GPU's spikes
// and gradients are the CPU's, bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "lif.h"
#include "lif_cuda_launch.h"
#include "lif_cuda_threads.h"
#include "lif_kernels.h"

#ifndef FUSED_LIF_CUDA_ARCHITECTURES
#define FUSED_LIF_CUDA_ARCHITECTURES "unknown"
#endif

namespace fused_lif {
namespace {

template <typename T, Reset R>
__global__ void lif_forward_kernel(const LifForwardArgs a) {
  lif_forward_thread<T, R>(a, blockIdx.x, threadIdx.x, blockDim.x);
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
__global__ void lif_backward_kernel(const LifBackwardArgs a) {
  lif_backward_thread<T, S, R, ParamGrads, DetachReset>(a, blockIdx.x, threadIdx.x, blockDim.x);
}

// The Launch of lif_cuda_threads.h's sequences: real kernels, on one stream
// (the reductions: lif_cuda_launch.h's CudaReduceLaunch).
struct CudaLaunch : CudaReduceLaunch {
  template <typename T, Reset R>
  LifCudaStatus forward(const LifForwardArgs& a, LaunchShape shape) {
    return checked_launch("lif_forward_kernel", lif_forward_kernel<T, R>, shape, stream, a);
  }
  template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
  LifCudaStatus backward(const LifBackwardArgs& a, LaunchShape shape) {
    return checked_launch("lif_backward_kernel",
                          lif_backward_kernel<T, S, R, ParamGrads, DetachReset>, shape, stream, a);
  }
};

}  // namespace

LifCudaStatus lif_forward_cuda(const LifForwardArgs& args, DType dtype, void* stream) {
  CudaLaunch launch;
  launch.stream = static_cast<cudaStream_t>(stream);
  return dispatch_dtype<__half, __nv_bfloat16>(dtype, [&](auto element) {
    return lif_forward_launches<decltype(element)>(args, launch);
  });
}

LifCudaStatus lif_backward_cuda(const LifBackwardArgs& args, DType dtype, void* stream) {
  CudaLaunch launch;
  launch.stream = static_cast<cudaStream_t>(stream);
  return dispatch_dtype<__half, __nv_bfloat16>(dtype, [&](auto element) {
    return lif_backward_launches<decltype(element)>(args, launch);
  });
}

LifCudaStatus lif_cuda_upload_params(const float* decay, int64_t decay_count,
                                     const float* threshold, int64_t threshold_count,
                                     float* device_params, void* stream) {
  // Pageable staging: cudaMemcpyAsync copies it to the driver's staging
  // memory before returning, so neither it nor the op's host tensors need to
  // outlive the call.
  std::vector<float> staging(decay, decay + decay_count);
  staging.insert(staging.end(), threshold, threshold + threshold_count);
  return checked_call("cudaMemcpyAsync (decay, threshold to the device)",
                      cudaMemcpyAsync(device_params, staging.data(), staging.size() * sizeof(float),
                                      cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
}

LifCudaStatus lif_cuda_check_image(int* device, int* major, int* minor) {
  *major = *minor = 0;
  LifCudaStatus status = *device < 0 ? checked_call("cudaGetDevice", cudaGetDevice(device))
                                     : checked_call("cudaSetDevice", cudaSetDevice(*device));
  if (!status.ok()) return status;
  status = checked_call("cudaDeviceGetAttribute",
                        cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, *device));
  if (status.ok()) {
    status = checked_call("cudaDeviceGetAttribute",
                          cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, *device));
  }
  if (!status.ok()) return status;
  // Every kernel is in the same fatbinary: one has an image for the device iff all do.
  cudaFuncAttributes attributes;
  return checked_call("cudaFuncGetAttributes (kernel image for this GPU)",
                      cudaFuncGetAttributes(&attributes, lif_forward_kernel<float, Reset::kZero>));
}

const char* lif_cuda_architectures() { return FUSED_LIF_CUDA_ARCHITECTURES; }

const char* lif_cuda_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

const char* lif_cuda_error_name(int error) {
  return cudaGetErrorName(static_cast<cudaError_t>(error));
}

}  // namespace fused_lif
