// Host-side CUDA entry points of the framework-free bindings (fused_lif.kernels)
// only: host-pointer wrappers (copy in, launch, copy out) and the kernel
// benchmark. The op library does not link this file.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "lif_cuda_host.h"
#include "lif_kernels.h"

namespace fused_lif {
namespace {

constexpr int kThreads = 256;

inline int64_t param_size(int64_t stride, int64_t neurons) { return stride ? neurons : 1; }

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
  d.pre_reset_membrane = buf.in(nullptr, seq);
  d.final_membrane = buf.in(nullptr, state);
  if (buf.error() == cudaSuccess) buf.record(lif_forward_cuda(d, DType::kFloat32, nullptr));
  buf.out(h.spikes, d.spikes, seq);
  buf.out(h.pre_reset_membrane, d.pre_reset_membrane, seq);
  buf.out(h.final_membrane, d.final_membrane, state);
  return buf.error();
}

int lif_backward_cuda_from_host(const LifBackwardArgs& h) {
  const int64_t seq = h.batch * h.time * h.neurons, state = h.batch * h.neurons;
  DeviceBuffers buf;
  LifBackwardArgs d = h;
  d.grad_spikes = buf.in(h.grad_spikes, seq);
  d.grad_final_membrane = buf.in(h.grad_final_membrane, state);
  d.pre_reset_membrane = buf.in(h.pre_reset_membrane, seq);
  d.initial_membrane = buf.in(h.initial_membrane, state);
  d.decay = buf.in(h.decay, param_size(h.decay_stride, h.neurons));
  d.threshold = buf.in(h.threshold, param_size(h.threshold_stride, h.neurons));
  d.grad_currents = buf.in(nullptr, seq);
  d.grad_initial_membrane = buf.in(nullptr, state);
  d.grad_bias = buf.in(nullptr, param_size(h.bias_stride, h.neurons));
  d.grad_decay = buf.in(nullptr, param_size(h.decay_stride, h.neurons));
  d.grad_threshold = buf.in(nullptr, param_size(h.threshold_stride, h.neurons));
  d.scratch = buf.in(nullptr, kScratchRows * state);
  if (buf.error() == cudaSuccess) buf.record(lif_backward_cuda(d, DType::kFloat32, nullptr));
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
  f.pre_reset_membrane = buf.in(nullptr, seq);
  f.final_membrane = buf.in(nullptr, state);
  LifBackwardArgs b;
  b.batch = batch;
  b.time = time;
  b.neurons = neurons;
  b.grad_spikes = f.spikes;
  b.grad_final_membrane = initial;
  b.pre_reset_membrane = f.pre_reset_membrane;
  b.initial_membrane = initial;
  b.decay = f.decay;
  b.threshold = f.threshold;
  b.grad_currents = buf.in(nullptr, seq);
  b.grad_initial_membrane = buf.in(nullptr, state);
  b.grad_bias = buf.in(nullptr, 1);
  b.grad_decay = buf.in(nullptr, 1);
  b.grad_threshold = buf.in(nullptr, 1);
  b.scratch = buf.in(nullptr, kScratchRows * state);
  // The forward reads currents and writes spikes and pre_reset_membrane; the backward
  // reads grad_spikes and pre_reset_membrane and writes grad_currents (4 bytes each).
  out->forward_bytes = out->backward_bytes = 12 * seq;
  out->copy_bytes = 12 * seq;  // a copy of 6·seq bytes reads and writes 12·seq
  float* copy_src = buf.in(nullptr, seq * 3 / 2 + 1);
  float* copy_dst = buf.in(nullptr, seq * 3 / 2 + 1);
  if (buf.error() != cudaSuccess) return buf.error();
  fill_kernel<<<static_cast<unsigned>((seq + kThreads - 1) / kThreads), kThreads>>>(const_cast<float*>(static_cast<const float*>(f.currents)), seq);
  cudaMemset(initial, 0, state * sizeof(float));
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaError_t err = time_ms([&] { lif_forward_cuda(f, DType::kFloat32, nullptr); }, repeats, start, stop, &out->forward_ms);
  if (err == cudaSuccess)
    err = time_ms([&] { lif_backward_cuda(b, DType::kFloat32, nullptr); }, repeats, start, stop, &out->backward_ms);
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

}  // namespace fused_lif
