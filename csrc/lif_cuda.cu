// CUDA kernels of the fused LIF op: one thread per (batch row, neuron)
// column, looping over time; neighbouring threads touch neighbouring neurons,
// so every load and store is coalesced. The math is lif.h's. No TensorFlow
// header: launchers take raw pointers and a stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "lif.h"
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
    a.membrane[idx] = u;
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
  float u = a.time > 0 ? a.membrane[idx] : 0.0f;
  for (int64_t t = a.time - 1; t >= 0; --t, idx -= N) {
    // v[t-1]: recomputed from u[t-1], or the initial membrane at t = 0.
    float u_prev = 0.0f, v_prev = 0.0f;
    if (t > 0) u_prev = a.membrane[idx - N];
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

template <typename T, Surrogate S, Reset R, bool ParamGrads>
__global__ void lif_backward_kernel(const LifBackwardArgs a) {
  const int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (col >= a.batch * a.neurons) return;
  if (a.detach_reset) {
    lif_backward_column<T, S, R, ParamGrads, true>(a, col);
  } else {
    lif_backward_column<T, S, R, ParamGrads, false>(a, col);
  }
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
  switch (a.reset) {
    case Reset::kZero:
      lif_forward_kernel<T, Reset::kZero><<<blocks_for(columns), kThreads, 0, stream>>>(a);
      break;
    case Reset::kSubtract:
      lif_forward_kernel<T, Reset::kSubtract><<<blocks_for(columns), kThreads, 0, stream>>>(a);
      break;
    case Reset::kNone:
      lif_forward_kernel<T, Reset::kNone><<<blocks_for(columns), kThreads, 0, stream>>>(a);
      break;
  }
  return cudaGetLastError();
}

template <typename T, Surrogate S, bool ParamGrads>
void launch_backward(const LifBackwardArgs& a, cudaStream_t stream) {
  const unsigned blocks = blocks_for(a.batch * a.neurons);
  switch (a.reset) {
    case Reset::kZero:
      lif_backward_kernel<T, S, Reset::kZero, ParamGrads><<<blocks, kThreads, 0, stream>>>(a);
      break;
    case Reset::kSubtract:
      lif_backward_kernel<T, S, Reset::kSubtract, ParamGrads><<<blocks, kThreads, 0, stream>>>(a);
      break;
    case Reset::kNone:
      lif_backward_kernel<T, S, Reset::kNone, ParamGrads><<<blocks, kThreads, 0, stream>>>(a);
      break;
  }
}

template <typename T, bool ParamGrads>
void launch_backward(const LifBackwardArgs& a, cudaStream_t stream) {
  switch (a.surrogate) {
    case Surrogate::kFastSigmoid: launch_backward<T, Surrogate::kFastSigmoid, ParamGrads>(a, stream); break;
    case Surrogate::kAtan: launch_backward<T, Surrogate::kAtan, ParamGrads>(a, stream); break;
    case Surrogate::kSigmoid: launch_backward<T, Surrogate::kSigmoid, ParamGrads>(a, stream); break;
    case Surrogate::kTriangle: launch_backward<T, Surrogate::kTriangle, ParamGrads>(a, stream); break;
  }
}

template <typename T>
int backward(const LifBackwardArgs& a, cudaStream_t stream) {
  const int64_t BN = a.batch * a.neurons;
  if (BN > 0) {
    if (a.param_grads) {
      launch_backward<T, true>(a, stream);
    } else {
      launch_backward<T, false>(a, stream);
    }
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

// Device memory for the host-pointer entry points.
class DeviceBuffers {
 public:
  ~DeviceBuffers() {
    for (void* p : owned_) cudaFree(p);
  }
  // Copies `count` floats to the device (if `host` is given) and returns the
  // device pointer; records the first error.
  float* in(const void* host, int64_t count) {
    void* dev = nullptr;
    const size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(float);
    if (error_ == cudaSuccess) error_ = cudaMalloc(&dev, bytes);
    if (error_ == cudaSuccess) owned_.push_back(dev);
    if (error_ == cudaSuccess && host != nullptr && count > 0)
      error_ = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
    return static_cast<float*>(dev);
  }
  void out(void* host, const void* dev, int64_t count) {
    if (error_ == cudaSuccess && count > 0)
      error_ = cudaMemcpy(host, dev, count * sizeof(float), cudaMemcpyDeviceToHost);
  }
  void record(int err) {
    if (error_ == cudaSuccess) error_ = static_cast<cudaError_t>(err);
  }
  int error() const { return error_; }

 private:
  std::vector<void*> owned_;
  cudaError_t error_ = cudaSuccess;
};

}  // namespace

int lif_forward_cuda(const LifForwardArgs& args, DType dtype, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kFloat16: return forward<__half>(args, s);
    case DType::kBFloat16: return forward<__nv_bfloat16>(args, s);
    default: return forward<float>(args, s);
  }
}

int lif_backward_cuda(const LifBackwardArgs& args, DType dtype, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kFloat16: return backward<__half>(args, s);
    case DType::kBFloat16: return backward<__nv_bfloat16>(args, s);
    default: return backward<float>(args, s);
  }
}

int lif_forward_cuda_from_host(const LifForwardArgs& h) {
  const int64_t seq = h.batch * h.time * h.neurons, state = h.batch * h.neurons;
  DeviceBuffers buf;
  LifForwardArgs d = h;
  d.currents = buf.in(h.currents, seq);
  d.bias = buf.in(h.bias, param_size(h.bias_stride, h.neurons));
  d.decay = buf.in(h.decay, param_size(h.decay_stride, h.neurons));
  d.threshold = buf.in(h.threshold, param_size(h.threshold_stride, h.neurons));
  d.initial_membrane = buf.in(h.initial_membrane, state);
  d.spikes = buf.in(nullptr, seq);
  d.membrane = buf.in(nullptr, seq);
  d.final_membrane = buf.in(nullptr, state);
  if (buf.error() == cudaSuccess) buf.record(forward<float>(d, nullptr));
  buf.out(h.spikes, d.spikes, seq);
  buf.out(h.membrane, d.membrane, seq);
  buf.out(h.final_membrane, d.final_membrane, state);
  return buf.error();
}

int lif_backward_cuda_from_host(const LifBackwardArgs& h) {
  const int64_t seq = h.batch * h.time * h.neurons, state = h.batch * h.neurons;
  DeviceBuffers buf;
  LifBackwardArgs d = h;
  d.grad_spikes = buf.in(h.grad_spikes, seq);
  d.grad_final_membrane = buf.in(h.grad_final_membrane, state);
  d.membrane = buf.in(h.membrane, seq);
  d.initial_membrane = buf.in(h.initial_membrane, state);
  d.decay = buf.in(h.decay, param_size(h.decay_stride, h.neurons));
  d.threshold = buf.in(h.threshold, param_size(h.threshold_stride, h.neurons));
  d.grad_currents = buf.in(nullptr, seq);
  d.grad_initial_membrane = buf.in(nullptr, state);
  d.grad_bias = buf.in(nullptr, param_size(h.bias_stride, h.neurons));
  d.grad_decay = buf.in(nullptr, param_size(h.decay_stride, h.neurons));
  d.grad_threshold = buf.in(nullptr, param_size(h.threshold_stride, h.neurons));
  d.scratch = buf.in(nullptr, kScratchRows * state);
  if (buf.error() == cudaSuccess) buf.record(backward<float>(d, nullptr));
  buf.out(h.grad_currents, d.grad_currents, seq);
  buf.out(h.grad_initial_membrane, d.grad_initial_membrane, state);
  buf.out(h.grad_bias, d.grad_bias, param_size(h.bias_stride, h.neurons));
  buf.out(h.grad_decay, d.grad_decay, param_size(h.decay_stride, h.neurons));
  buf.out(h.grad_threshold, d.grad_threshold, param_size(h.threshold_stride, h.neurons));
  return buf.error();
}

namespace {
// Deterministic currents in about [-0.5, 1.5) for the benchmark.
__global__ void fill_kernel(float* x, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = static_cast<float>((i * 2654435761u) % 1000u) * 0.002f - 0.5f;
}

template <typename F>
cudaError_t time_ms(F launch, int repeats, cudaEvent_t start, cudaEvent_t stop, float* ms) {
  launch();  // warm-up
  cudaEventRecord(start);
  for (int r = 0; r < repeats; ++r) launch();
  cudaEventRecord(stop);
  cudaError_t err = cudaEventSynchronize(stop);
  if (err != cudaSuccess) return err;
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  cudaEventElapsedTime(ms, start, stop);
  *ms /= repeats;
  return cudaSuccess;
}
}  // namespace

int lif_cuda_benchmark(int64_t batch, int64_t time, int64_t neurons, int repeats,
                       LifCudaTimings* out) {
  const int64_t seq = batch * time * neurons, state = batch * neurons;
  DeviceBuffers buf;
  const float zero = 0.0f, decay = 0.95f, threshold = 1.0f;
  LifForwardArgs f;
  f.batch = batch;
  f.time = time;
  f.neurons = neurons;
  f.currents = buf.in(nullptr, seq);
  f.bias = buf.in(&zero, 1);
  f.decay = buf.in(&decay, 1);
  f.threshold = buf.in(&threshold, 1);
  float* initial = buf.in(nullptr, state);
  f.initial_membrane = initial;
  f.spikes = buf.in(nullptr, seq);
  f.membrane = buf.in(nullptr, seq);
  f.final_membrane = buf.in(nullptr, state);
  LifBackwardArgs b;
  b.batch = batch;
  b.time = time;
  b.neurons = neurons;
  b.grad_spikes = f.spikes;
  b.grad_final_membrane = initial;
  b.membrane = f.membrane;
  b.initial_membrane = initial;
  b.decay = f.decay;
  b.threshold = f.threshold;
  b.grad_currents = buf.in(nullptr, seq);
  b.grad_initial_membrane = buf.in(nullptr, state);
  b.grad_bias = buf.in(nullptr, 1);
  b.grad_decay = buf.in(nullptr, 1);
  b.grad_threshold = buf.in(nullptr, 1);
  b.scratch = buf.in(nullptr, kScratchRows * state);
  // The forward reads currents and writes spikes and membrane; the backward
  // reads grad_spikes and membrane and writes grad_currents (4 bytes each).
  out->forward_bytes = out->backward_bytes = 12 * seq;
  out->copy_bytes = 12 * seq;  // a copy of 6·seq bytes reads and writes 12·seq
  float* copy_src = buf.in(nullptr, seq * 3 / 2 + 1);
  float* copy_dst = buf.in(nullptr, seq * 3 / 2 + 1);
  if (buf.error() != cudaSuccess) return buf.error();
  fill_kernel<<<blocks_for(seq), kThreads>>>(const_cast<float*>(static_cast<const float*>(f.currents)), seq);
  cudaMemset(initial, 0, state * sizeof(float));
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaError_t err = time_ms([&] { forward<float>(f, nullptr); }, repeats, start, stop, &out->forward_ms);
  if (err == cudaSuccess)
    err = time_ms([&] { backward<float>(b, nullptr); }, repeats, start, stop, &out->backward_ms);
  if (err == cudaSuccess)
    err = time_ms([&] { cudaMemcpyAsync(copy_dst, copy_src, 6 * seq, cudaMemcpyDeviceToDevice); },
                  repeats, start, stop, &out->copy_ms);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return err;
}

int lif_cuda_device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

const char* lif_cuda_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

}  // namespace fused_lif
