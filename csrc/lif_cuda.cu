// CUDA kernels of the fused LIF op: one thread per (batch row, neuron)
// column, looping over time; neighbouring threads touch neighbouring neurons,
// so every load and store is coalesced. The math is lif.h's. No TensorFlow
// header: launchers take raw pointers and a stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lif.h"
#include "lif_dispatch.h"
#include "lif_kernels.h"

namespace fused_lif {
namespace {

constexpr int kThreads = 256;

inline int64_t param_size(int64_t stride, int64_t neurons) { return stride ? neurons : 1; }

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename T, Reset R>
__global__ void lif_forward_kernel(const LifForwardArgs a) {
  const int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // b·N + n
  if (col >= a.batch * a.neurons) return;
  const int64_t N = a.neurons, b = col / N, n = col % N;
  const T* currents = static_cast<const T*>(a.currents);
  T* spikes = static_cast<T*>(a.spikes);
  const float bias = static_cast<float>(static_cast<const T*>(a.bias)[n * a.bias_stride]);
  const float decay = a.decay[n * a.decay_stride];
  const float threshold = a.threshold[n * a.threshold_stride];
  float v = a.initial_membrane[col];
  int64_t idx = b * a.time * N + n;  // [b, t, n], 64-bit
  for (int64_t t = 0; t < a.time; ++t, idx += N) {
    const float u = lif_charge(decay, v, lif_current(currents[idx], bias));
    const float s = lif_spike(u, threshold);
    a.pre_reset_membrane[idx] = u;
    spikes[idx] = static_cast<T>(s);
    v = lif_reset<R>(u, s, threshold);
  }
  a.final_membrane[col] = v;
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
__device__ void lif_backward_column(const LifBackwardArgs& a, int64_t col) {
  const int64_t BN = a.batch * a.neurons;
  const int64_t N = a.neurons, b = col / N, n = col % N;
  const T* grad_spikes = static_cast<const T*>(a.grad_spikes);
  T* grad_currents = static_cast<T*>(a.grad_currents);
  const float decay = a.decay[n * a.decay_stride];
  const float threshold = a.threshold[n * a.threshold_stride];
  LifColumnGrads g{a.grad_final_membrane[col], 0.0f, 0.0f, 0.0f};
  int64_t idx = (b * a.time + a.time - 1) * N + n;
  float u = a.time > 0 ? a.pre_reset_membrane[idx] : 0.0f;
  for (int64_t t = a.time - 1; t >= 0; --t, idx -= N) {
    // v[t-1]: recomputed from u[t-1], or the initial membrane at t = 0.
    float u_prev = 0.0f, v_prev = 0.0f;
    if (t > 0) u_prev = a.pre_reset_membrane[idx - N];
    if (ParamGrads) {
      v_prev = t > 0 ? lif_reset<R>(u_prev, lif_spike(u_prev, threshold), threshold)
                     : a.initial_membrane[col];
    }
    const float grad_current = lif_backward_step<S, R, ParamGrads, DetachReset>(
        u, v_prev, static_cast<float>(grad_spikes[idx]), decay, threshold, a.alpha, g);
    grad_currents[idx] = static_cast<T>(grad_current);
    u = u_prev;
  }
  a.grad_initial_membrane[col] = g.membrane;
  a.scratch[col] = g.decay;
  a.scratch[BN + col] = g.threshold;
  a.scratch[2 * BN + col] = g.bias;
}

template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
__global__ void lif_backward_kernel(const LifBackwardArgs a) {
  const int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (col >= a.batch * a.neurons) return;
  lif_backward_column<T, S, R, ParamGrads, DetachReset>(a, col);
}

// out[n] = Σ_b rows[b, n], b ascending (deterministic).
template <typename P>
__global__ void sum_over_batch_kernel(const float* rows, int64_t batch, int64_t neurons, P* out) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= neurons) return;
  float sum = 0.0f;
  for (int64_t b = 0; b < batch; ++b) sum += rows[b * neurons + n];
  out[n] = static_cast<P>(sum);
}

// out[0] = Σ_j rows[j], in one block with a fixed reduction tree.
template <typename P>
__global__ void sum_all_kernel(const float* rows, int64_t count, P* out) {
  __shared__ float partial[kThreads];
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < count; j += kThreads) sum += rows[j];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<P>(partial[0]);
}

template <typename P>
void reduce_scratch(const float* rows, int64_t batch, int64_t neurons, int64_t stride, P* out,
                    cudaStream_t stream) {
  if (stride == 1) {
    if (neurons > 0) sum_over_batch_kernel<P><<<blocks_for(neurons), kThreads, 0, stream>>>(rows, batch, neurons, out);
  } else {
    sum_all_kernel<P><<<1, kThreads, 0, stream>>>(rows, batch * neurons, out);
  }
}

template <typename T>
int forward(const LifForwardArgs& a, cudaStream_t stream) {
  const int64_t columns = a.batch * a.neurons;
  if (columns == 0) return cudaSuccess;
  dispatch_forward(a, [&](auto reset) {
    lif_forward_kernel<T, decltype(reset)::value><<<blocks_for(columns), kThreads, 0, stream>>>(a);
  });
  return cudaGetLastError();
}

template <typename T>
int backward(const LifBackwardArgs& a, cudaStream_t stream) {
  const int64_t BN = a.batch * a.neurons;
  if (BN > 0) {
    dispatch_backward(a, [&](auto surrogate, auto reset, auto param_grads, auto detach_reset) {
      lif_backward_kernel<T, decltype(surrogate)::value, decltype(reset)::value,
                          decltype(param_grads)::value, decltype(detach_reset)::value>
          <<<blocks_for(BN), kThreads, 0, stream>>>(a);
    });
    const int err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (a.param_grads) {
    reduce_scratch(a.scratch, a.batch, a.neurons, a.decay_stride, a.grad_decay, stream);
    reduce_scratch(a.scratch + BN, a.batch, a.neurons, a.threshold_stride, a.grad_threshold,
                   stream);
  } else {
    cudaMemsetAsync(a.grad_decay, 0, param_size(a.decay_stride, a.neurons) * sizeof(float), stream);
    cudaMemsetAsync(a.grad_threshold, 0, param_size(a.threshold_stride, a.neurons) * sizeof(float),
                    stream);
  }
  reduce_scratch(a.scratch + 2 * BN, a.batch, a.neurons, a.bias_stride,
                 static_cast<T*>(a.grad_bias), stream);
  return cudaGetLastError();
}

}  // namespace

int lif_forward_cuda(const LifForwardArgs& args, DType dtype, void* stream) {
  return dispatch_dtype<__half, __nv_bfloat16>(dtype, [&](auto element) {
    return forward<decltype(element)>(args, static_cast<cudaStream_t>(stream));
  });
}

int lif_backward_cuda(const LifBackwardArgs& args, DType dtype, void* stream) {
  return dispatch_dtype<__half, __nv_bfloat16>(dtype, [&](auto element) {
    return backward<decltype(element)>(args, static_cast<cudaStream_t>(stream));
  });
}

const char* lif_cuda_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

}  // namespace fused_lif
