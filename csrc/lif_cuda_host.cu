// Host-side CUDA entry points of the framework-free bindings (fused_lif.kernels)
// only: host-pointer wrappers (copy in, launch, copy out), the kernel
// benchmark and a launch-failure probe. The op library does not link this file.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "lif_cuda_host.h"
#include "lif_cuda_launch.h"
#include "lif_kernels.h"
#include "lif_recurrent_kernels.h"

namespace fused_lif {
namespace {

// Device memory for the host-pointer entry points; keeps the first failure.
class DeviceBuffers {
 public:
  ~DeviceBuffers() {
    for (void* p : owned_) cudaFree(p);
  }
  // Copies `count` floats to the device (if `host` is given) and returns the
  // device pointer.
  float* in(const void* host, int64_t count) {
    if (!status_.ok()) return nullptr;  // after a failure, allocate nothing more
    void* dev = nullptr;
    const size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(float);
    record(checked_call("cudaMalloc", cudaMalloc(&dev, bytes)));
    if (dev != nullptr) owned_.push_back(dev);  // freed by the destructor, whatever happens
    if (!status_.ok()) return nullptr;
    if (host != nullptr && count > 0) {
      record(checked_call("cudaMemcpy (to the device)",
                          cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice)));
    }
    return static_cast<float*>(dev);
  }
  void out(void* host, const void* dev, int64_t count) {
    if (status_.ok() && count > 0) {
      record(checked_call("cudaMemcpy (to the host)",
                          cudaMemcpy(host, dev, count * sizeof(float), cudaMemcpyDeviceToHost)));
    }
  }
  void record(const LifCudaStatus& status) {
    if (status_.ok()) status_ = status;
  }
  const LifCudaStatus& status() const { return status_; }

 private:
  std::vector<void*> owned_;
  LifCudaStatus status_;
};

}  // namespace

LifCudaStatus lif_forward_cuda_from_host(const LifForwardArgs& h) {
  const int64_t seq = h.batch * h.time * h.neurons, state = h.batch * h.neurons;
  DeviceBuffers buf;
  LifForwardArgs d = h;
  d.currents = buf.in(h.currents, seq);
  d.bias = buf.in(h.bias, param_count(h.bias_stride, h.neurons));
  d.decay = buf.in(h.decay, param_count(h.decay_stride, h.neurons));
  d.threshold = buf.in(h.threshold, param_count(h.threshold_stride, h.neurons));
  d.initial_membrane = buf.in(h.initial_membrane, state);
  d.spikes = buf.in(nullptr, seq);
  d.pre_reset_membrane = buf.in(nullptr, seq);
  d.final_membrane = buf.in(nullptr, state);
  if (buf.status().ok()) buf.record(lif_forward_cuda(d, DType::kFloat32, nullptr));
  buf.out(h.spikes, d.spikes, seq);
  buf.out(h.pre_reset_membrane, d.pre_reset_membrane, seq);
  buf.out(h.final_membrane, d.final_membrane, state);
  return buf.status();
}

LifCudaStatus lif_backward_cuda_from_host(const LifBackwardArgs& h) {
  const int64_t seq = h.batch * h.time * h.neurons, state = h.batch * h.neurons;
  DeviceBuffers buf;
  LifBackwardArgs d = h;
  d.grad_spikes = buf.in(h.grad_spikes, seq);
  d.grad_final_membrane = buf.in(h.grad_final_membrane, state);
  d.pre_reset_membrane = buf.in(h.pre_reset_membrane, seq);
  d.initial_membrane = buf.in(h.initial_membrane, state);
  d.decay = buf.in(h.decay, param_count(h.decay_stride, h.neurons));
  d.threshold = buf.in(h.threshold, param_count(h.threshold_stride, h.neurons));
  d.grad_currents = buf.in(nullptr, seq);
  d.grad_initial_membrane = buf.in(nullptr, state);
  d.grad_bias = buf.in(nullptr, param_count(h.bias_stride, h.neurons));
  d.grad_decay = buf.in(nullptr, param_count(h.decay_stride, h.neurons));
  d.grad_threshold = buf.in(nullptr, param_count(h.threshold_stride, h.neurons));
  d.scratch = buf.in(nullptr, kScratchRows * state);
  if (buf.status().ok()) buf.record(lif_backward_cuda(d, DType::kFloat32, nullptr));
  buf.out(h.grad_currents, d.grad_currents, seq);
  buf.out(h.grad_initial_membrane, d.grad_initial_membrane, state);
  buf.out(h.grad_bias, d.grad_bias, param_count(h.bias_stride, h.neurons));
  buf.out(h.grad_decay, d.grad_decay, param_count(h.decay_stride, h.neurons));
  buf.out(h.grad_threshold, d.grad_threshold, param_count(h.threshold_stride, h.neurons));
  return buf.status();
}

LifCudaStatus recurrent_lif_forward_cuda_from_host(const RecurrentForwardArgs& h) {
  const LifForwardArgs& l = h.lif;
  const int64_t seq = l.batch * l.time * l.neurons, state = l.batch * l.neurons;
  DeviceBuffers buf;
  RecurrentForwardArgs d = h;
  d.lif.currents = buf.in(l.currents, seq);
  d.lif.bias = buf.in(l.bias, param_count(l.bias_stride, l.neurons));
  d.lif.decay = buf.in(l.decay, param_count(l.decay_stride, l.neurons));
  d.lif.threshold = buf.in(l.threshold, param_count(l.threshold_stride, l.neurons));
  d.lif.initial_membrane = buf.in(l.initial_membrane, state);
  d.lif.spikes = buf.in(nullptr, seq);
  d.lif.pre_reset_membrane = buf.in(nullptr, seq);
  d.lif.final_membrane = buf.in(nullptr, state);
  d.recurrent_kernel = buf.in(h.recurrent_kernel, l.neurons * l.neurons);
  d.initial_spikes = buf.in(h.initial_spikes, state);
  const int64_t mask_words = recurrent_global_mask_words(l.batch, l.neurons);
  d.global_masks = mask_words > 0 ? reinterpret_cast<uint32_t*>(buf.in(nullptr, mask_words))
                                  : nullptr;
  if (buf.status().ok()) buf.record(recurrent_lif_forward_cuda(d, DType::kFloat32, nullptr));
  buf.out(l.spikes, d.lif.spikes, seq);
  buf.out(l.pre_reset_membrane, d.lif.pre_reset_membrane, seq);
  buf.out(l.final_membrane, d.lif.final_membrane, state);
  return buf.status();
}

LifCudaStatus recurrent_lif_backward_cuda_from_host(const RecurrentBackwardArgs& h) {
  const LifBackwardArgs& l = h.lif;
  const int64_t seq = l.batch * l.time * l.neurons, state = l.batch * l.neurons;
  DeviceBuffers buf;
  RecurrentBackwardArgs d = h;
  d.lif.grad_spikes = buf.in(l.grad_spikes, seq);
  d.lif.grad_final_membrane = buf.in(l.grad_final_membrane, state);
  d.lif.pre_reset_membrane = buf.in(l.pre_reset_membrane, seq);
  d.lif.initial_membrane = buf.in(l.initial_membrane, state);
  d.lif.decay = buf.in(l.decay, param_count(l.decay_stride, l.neurons));
  d.lif.threshold = buf.in(l.threshold, param_count(l.threshold_stride, l.neurons));
  d.lif.grad_currents = buf.in(nullptr, seq);
  d.lif.grad_initial_membrane = buf.in(nullptr, state);
  d.lif.grad_bias = buf.in(nullptr, param_count(l.bias_stride, l.neurons));
  d.lif.grad_decay = buf.in(nullptr, param_count(l.decay_stride, l.neurons));
  d.lif.grad_threshold = buf.in(nullptr, param_count(l.threshold_stride, l.neurons));
  d.lif.scratch = buf.in(nullptr, kScratchRows * state);
  d.recurrent_kernel = buf.in(h.recurrent_kernel, l.neurons * l.neurons);
  d.recurrent_kernel_t = buf.in(nullptr, l.neurons * l.neurons);
  d.grad_initial_spikes = buf.in(nullptr, state);
  const int64_t grad_floats = recurrent_global_grad_floats(l.batch, l.neurons);
  d.global_grads = grad_floats > 0 ? buf.in(nullptr, grad_floats) : nullptr;
  if (buf.status().ok()) buf.record(recurrent_lif_backward_cuda(d, DType::kFloat32, nullptr));
  buf.out(l.grad_currents, d.lif.grad_currents, seq);
  buf.out(l.grad_initial_membrane, d.lif.grad_initial_membrane, state);
  buf.out(l.grad_bias, d.lif.grad_bias, param_count(l.bias_stride, l.neurons));
  buf.out(l.grad_decay, d.lif.grad_decay, param_count(l.decay_stride, l.neurons));
  buf.out(l.grad_threshold, d.lif.grad_threshold, param_count(l.threshold_stride, l.neurons));
  buf.out(h.grad_initial_spikes, d.grad_initial_spikes, state);
  return buf.status();
}

namespace {
// Deterministic currents in about [-0.5, 1.5) for the benchmark.
__global__ void fill_kernel(float* x, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = static_cast<float>((i * 2654435761u) % 1000u) * 0.002f - 0.5f;
}

// Milliseconds per call of `launch`, averaged over `repeats` after a warm-up.
template <typename F>
LifCudaStatus time_ms(F launch, int repeats, cudaEvent_t start, cudaEvent_t stop, float* ms) {
  LifCudaStatus status = launch();  // warm-up
  if (!status.ok()) return status;
  status = checked_call("cudaEventRecord", cudaEventRecord(start));
  for (int r = 0; r < repeats && status.ok(); ++r) status = launch();
  if (!status.ok()) return status;
  status = checked_call("cudaEventRecord", cudaEventRecord(stop));
  if (!status.ok()) return status;
  status = checked_call("cudaEventSynchronize", cudaEventSynchronize(stop));
  if (!status.ok()) return status;
  status = checked_call("cudaEventElapsedTime", cudaEventElapsedTime(ms, start, stop));
  *ms /= repeats;
  return status;
}

// A kernel that does nothing, for the launch-failure probe.
__global__ void probe_kernel(int) {}
}  // namespace

LifCudaStatus lif_cuda_benchmark(int64_t batch, int64_t time, int64_t neurons, int repeats,
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
  // The forward reads currents and writes spikes and pre_reset_membrane; the
  // backward reads grad_spikes and pre_reset_membrane and writes grad_currents
  // (4 bytes each).
  out->forward_bytes = out->backward_bytes = 12 * seq;
  out->copy_bytes = 12 * seq;  // a copy of 6·seq bytes reads and writes 12·seq
  float* copy_src = buf.in(nullptr, seq * 3 / 2 + 1);
  float* copy_dst = buf.in(nullptr, seq * 3 / 2 + 1);
  if (!buf.status().ok()) return buf.status();
  fill_kernel<<<static_cast<unsigned>((seq + kCudaThreads - 1) / kCudaThreads), kCudaThreads>>>(
      const_cast<float*>(static_cast<const float*>(f.currents)), seq);
  LifCudaStatus status = checked_call("fill_kernel", cudaSuccess);
  if (!status.ok()) return status;
  status = checked_call("cudaMemset", cudaMemset(initial, 0, state * sizeof(float)));
  if (!status.ok()) return status;
  cudaEvent_t start = nullptr, stop = nullptr;
  status = checked_call("cudaEventCreate", cudaEventCreate(&start));
  if (status.ok()) status = checked_call("cudaEventCreate", cudaEventCreate(&stop));
  if (!status.ok()) {
    if (start != nullptr) cudaEventDestroy(start);
    return status;
  }
  status = time_ms([&] { return lif_forward_cuda(f, DType::kFloat32, nullptr); }, repeats, start,
                   stop, &out->forward_ms);
  if (status.ok()) {
    status = time_ms([&] { return lif_backward_cuda(b, DType::kFloat32, nullptr); }, repeats,
                     start, stop, &out->backward_ms);
  }
  if (status.ok()) {
    status = time_ms(
        [&] {
          return checked_call("cudaMemcpyAsync (device copy)",
                              cudaMemcpyAsync(copy_dst, copy_src, 6 * seq, cudaMemcpyDeviceToDevice));
        },
        repeats, start, stop, &out->copy_ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return status;
}

LifCudaStatus lif_cuda_launch_probe(unsigned threads) {
  return checked_launch("probe_kernel", probe_kernel, LaunchShape{1, threads}, nullptr, 0);
}

int lif_cuda_device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

}  // namespace fused_lif
