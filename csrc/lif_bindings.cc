// fused_lif.kernels: the fused LIF kernels on float32 numpy arrays, without
// TensorFlow, so that any machine with a compiler (and a GPU, for
// device="cuda") can check them against numpy. Same loops, same math header,
// and the op's inputs and outputs under the op's names. device="emulated"
// runs the CUDA kernels' per-thread functions (lif_cuda_threads.h) on the CPU,
// over every block and thread of the launches a GPU would get.
//
//
//   lif_forward(currents, decay, threshold, *, bias, initial_membrane, reset, device)
//     -> LifForwardResult(spikes, pre_reset_membrane, final_membrane)
//   lif_backward(grad_spikes, pre_reset_membrane, decay, threshold, *,
//                grad_final_membrane, initial_membrane, bias, alpha, surrogate,
//                reset, detach_reset, param_grads, device)
//     -> LifBackwardResult(grad_currents, grad_bias, grad_decay, grad_threshold,
//                          grad_initial_membrane)
//   recurrent_lif_forward(currents, recurrent_kernel, decay, threshold, *, bias,
//                         initial_membrane, initial_spikes, reset, device)
//     -> RecurrentLifForwardResult(spikes, pre_reset_membrane, final_membrane)
//   recurrent_lif_backward(grad_spikes, pre_reset_membrane, recurrent_kernel,
//                          decay, threshold, *, grad_final_membrane,
//                          initial_membrane, bias, alpha, surrogate, reset,
//                          detach_reset, param_grads, device)
//     -> RecurrentLifBackwardResult(grad_currents, grad_bias, grad_decay,
//                                   grad_threshold, grad_initial_membrane,
//                                   grad_initial_spikes)
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <limits>
#include <string>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <utility>
#include <vector>

#include "lif_cpu.h"
#include "lif_cuda_threads.h"
#include "lif_kernels.h"
#include "lif_options.h"
#include "lif_recurrent_cpu.h"
#include "lif_recurrent_cuda_threads.h"
#include "lif_recurrent_kernels.h"
#if FUSED_LIF_WITH_CUDA
#include "lif_cuda_host.h"
#endif

namespace py = pybind11;
using fused_lif::Reset;
using fused_lif::Surrogate;
using Array = py::array_t<float, py::array::c_style>;

namespace {

// Subnormal floats flushed to zero (FTZ) and read as zero (DAZ) while the CPU
// and emulated kernels run, as TensorFlow runs its CPU kernels and as the
// CUDA kernels are compiled (--ftz=true): the same floats on every device.
class ScopedFlushDenormal {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  ScopedFlushDenormal() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }  // FTZ | DAZ
  ~ScopedFlushDenormal() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// The result types (collections.namedtuple), made when the module loads.
py::handle forward_result_type, backward_result_type;
py::handle recurrent_forward_result_type, recurrent_backward_result_type;

// float32 arrays only: a silent float64 -> float32 cast would hide bugs.
Array as_float32(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy array of float32");
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<float>())) {
    throw py::type_error(std::string(name) + " must be float32, got " +
                         py::str(arr.dtype()).cast<std::string>());
  }
  return Array::ensure(arr);  // C-contiguous (copies strided views)
}

std::string shape_string(const Array& a) {
  std::string out = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) out += (d ? ", " : "") + std::to_string(a.shape(d));
  return out + (a.ndim() == 1 ? ",)" : ")");
}

void check_rank3(const Array& a, const char* name) {
  if (a.ndim() != 3) {
    throw py::value_error(std::string(name) + " must have rank 3 [batch, time, neurons], got shape " +
                          shape_string(a));
  }
}

// A [batch, neurons] state (initial_membrane, grad_final_membrane): zeros if None.
Array to_state(const py::handle& obj, const char* name, int64_t batch, int64_t neurons) {
  if (obj.is_none()) {
    Array a({batch, neurons});
    std::fill(a.mutable_data(), a.mutable_data() + a.size(), 0.0f);
    return a;
  }
  Array a = as_float32(obj, name);
  if (a.ndim() != 2 || a.shape(0) != batch || a.shape(1) != neurons) {
    throw py::value_error(std::string(name) + " must have shape [batch, neurons] = [" +
                          std::to_string(batch) + ", " + std::to_string(neurons) + "], got shape " +
                          shape_string(a));
  }
  return a;
}

// A per-neuron parameter (bias, decay, threshold): a Python number (one value
// for all neurons, rounded to float32 as TensorFlow converts it), or a
// float32 array, [] or [neurons].
struct Param {
  std::vector<float> values;
  int64_t stride = 0;
};

Param to_param(const py::handle& obj, const char* name, int64_t neurons) {
  Param p;
  if ((py::isinstance<py::float_>(obj) || py::isinstance<py::int_>(obj)) &&
      !py::isinstance<py::bool_>(obj)) {
    p.values.push_back(static_cast<float>(obj.cast<double>()));
    return p;
  }
  Array a = as_float32(obj, name);
  if (a.ndim() == 0) {
    p.values.push_back(*a.data());
    return p;
  }
  if (a.ndim() != 1 || a.shape(0) != neurons) {
    throw py::value_error(std::string(name) + " must be a number or a float32 array [neurons] = [" +
                          std::to_string(neurons) + "], got shape " + shape_string(a));
  }
  p.values.assign(a.data(), a.data() + neurons);
  p.stride = 1;
  return p;
}

// decay and threshold, with the op's value checks.
std::pair<Param, Param> to_decay_threshold(const py::handle& decay, const py::handle& threshold,
                                           int64_t neurons) {
  Param d = to_param(decay, "decay (1 - 1/tau)", neurons);
  Param th = to_param(threshold, "threshold", neurons);
  const std::string error = fused_lif::check_param_values(
      d.values.data(), static_cast<int64_t>(d.values.size()), th.values.data(),
      static_cast<int64_t>(th.values.size()));
  if (!error.empty()) throw py::value_error(error);
  return {std::move(d), std::move(th)};
}

template <typename E, size_t K>
E to_option(const std::string& name, const char* option,
            const fused_lif::OptionName<E> (&table)[K]) {
  E value{};
  if (!fused_lif::parse_option(name, table, &value)) {
    throw py::value_error(fused_lif::unknown_option(option, name, table));
  }
  return value;
}

enum class Device { kCpu, kCuda, kEmulated };

Device to_device(const std::string& device) {
  if (device == "cpu") return Device::kCpu;
  if (device == "emulated") return Device::kEmulated;
  if (device != "cuda") {
    throw py::value_error("device must be 'cpu', 'cuda' or 'emulated', got '" + device + "'");
  }
#if !FUSED_LIF_WITH_CUDA
  throw py::value_error("device='cuda': this build of fused_lif.kernels has no CUDA kernels "
                        "(rebuild with -Ccmake.define.FUSED_LIF_CUDA=ON)");
#endif
  return Device::kCuda;
}

void check_cuda(const fused_lif::LifCudaStatus& status, const char* what, int64_t batch,
                int64_t time, int64_t neurons) {
#if FUSED_LIF_WITH_CUDA
  if (!status.ok()) {
    throw std::runtime_error(fused_lif::describe_cuda_failure(status, what, batch, time, neurons));
  }
#endif
}

// The Launch of lif_cuda_threads.h's sequences that runs each launch's
// threads on the calling CPU thread, block by block, thread by thread (the
// kernels' threads are independent; the sum tree runs level by level, as
// its __syncthreads() orders it on the GPU).
struct EmulatedLaunch {
  template <typename F>
  static void grid(fused_lif::LaunchShape shape, F&& thread_work) {
    for (int64_t block = 0; block < shape.blocks; ++block) {
      for (unsigned thread = 0; thread < shape.threads; ++thread) {
        thread_work(static_cast<unsigned>(block), thread, shape.threads);
      }
    }
  }
  template <typename T, Reset R>
  fused_lif::LifCudaStatus forward(const fused_lif::LifForwardArgs& a, fused_lif::LaunchShape s) {
    grid(s, [&](unsigned b, unsigned t, unsigned n) { fused_lif::lif_forward_thread<T, R>(a, b, t, n); });
    return {};
  }
  template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
  fused_lif::LifCudaStatus backward(const fused_lif::LifBackwardArgs& a, fused_lif::LaunchShape s) {
    grid(s, [&](unsigned b, unsigned t, unsigned n) {
      fused_lif::lif_backward_thread<T, S, R, ParamGrads, DetachReset>(a, b, t, n);
    });
    return {};
  }
  template <typename P>
  fused_lif::LifCudaStatus sum_over_batch(const fused_lif::SumArgs<P>& sum, fused_lif::LaunchShape s) {
    grid(s, [&](unsigned b, unsigned t, unsigned n) { fused_lif::sum_over_batch_thread(sum, b, t, n); });
    return {};
  }
  template <typename P>
  fused_lif::LifCudaStatus sum_all(const fused_lif::SumArgs<P>& sum) {
    float partial[fused_lif::kSumThreads];
    for (unsigned i = 0; i < fused_lif::kSumThreads; ++i) {
      fused_lif::sum_all_load(sum.rows, sum.batch * sum.neurons, i, partial);
    }
    for (unsigned width = fused_lif::kSumThreads / 2; width > 0; width /= 2) {
      for (unsigned i = 0; i < fused_lif::kSumThreads; ++i) fused_lif::sum_all_step(width, i, partial);
    }
    for (unsigned i = 0; i < fused_lif::kSumThreads; ++i) fused_lif::sum_all_store(partial, i, sum.out);
    return {};
  }
  fused_lif::LifCudaStatus zero(float* p, int64_t count) {
    std::fill(p, p + count, 0.0f);
    return {};
  }

  // The recurrent kernels: one block after another, each block's phases in
  // order, every thread of a phase before the next (its barrier). The
  // block's working memory (shared memory on the GPU) starts as garbage, as
  // shared memory does: a read before a write shows.
  struct Block {
    int64_t row;
    unsigned threads;
    template <typename F>
    void for_each_thread(F&& f) const {
      for (unsigned thread = 0; thread < threads; ++thread) f(thread, threads);
    }
    void sync() const {}
  };
  template <typename T, Reset R>
  fused_lif::LifCudaStatus recurrent_forward(const fused_lif::RecurrentForwardArgs& a,
                                             fused_lif::LaunchShape s) {
    std::vector<uint32_t> masks(fused_lif::kRecurrentMasks *
                                fused_lif::recurrent_mask_words(a.lif.neurons));
    for (int64_t row = 0; row < s.blocks; ++row) {
      std::fill(masks.begin(), masks.end(), 0xA5A5A5A5u);
      Block block{row, s.threads};
      fused_lif::recurrent_forward_block<T, R>(a, block, masks.data());
    }
    return {};
  }
  fused_lif::LifCudaStatus transpose(const fused_lif::RecurrentBackwardArgs& a,
                                     fused_lif::LaunchShape s) {
    grid(s, [&](unsigned b, unsigned t, unsigned n) { fused_lif::recurrent_transpose_thread(a, b, t, n); });
    return {};
  }
  template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
  fused_lif::LifCudaStatus recurrent_backward(const fused_lif::RecurrentBackwardArgs& a,
                                              fused_lif::LaunchShape s) {
    std::vector<float> grads(2 * a.lif.neurons);
    for (int64_t row = 0; row < s.blocks; ++row) {
      std::fill(grads.begin(), grads.end(), std::numeric_limits<float>::quiet_NaN());
      Block block{row, s.threads};
      fused_lif::recurrent_backward_block<T, S, R, ParamGrads, DetachReset>(a, block, grads.data());
    }
    return {};
  }
};

// A parameter's gradient: shaped like the parameter ([] or [neurons]).
Array like_param(const std::vector<float>& values, int64_t stride) {
  Array out(stride ? std::vector<py::ssize_t>{static_cast<py::ssize_t>(values.size())}
                   : std::vector<py::ssize_t>{});
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

py::object lif_forward(const py::handle& currents_obj, const py::handle& decay_obj,
                       const py::handle& threshold_obj, const py::handle& bias_obj,
                       const py::handle& initial_obj, const std::string& reset,
                       const std::string& device) {
  Array currents = as_float32(currents_obj, "currents");
  check_rank3(currents, "currents");
  fused_lif::LifForwardArgs a;
  a.batch = currents.shape(0);
  a.time = currents.shape(1);
  a.neurons = currents.shape(2);
  const auto [decay, threshold] = to_decay_threshold(decay_obj, threshold_obj, a.neurons);
  const Param bias = to_param(bias_obj, "bias", a.neurons);
  const Array initial = to_state(initial_obj, "initial_membrane", a.batch, a.neurons);
  a.reset = to_option(reset, "reset", fused_lif::kResetNames);
  const Device on = to_device(device);
  Array spikes({a.batch, a.time, a.neurons}), pre_reset({a.batch, a.time, a.neurons});
  Array final_membrane({a.batch, a.neurons});
  a.currents = currents.data();
  a.bias = bias.values.data();
  a.bias_stride = bias.stride;
  a.decay = decay.values.data();
  a.decay_stride = decay.stride;
  a.threshold = threshold.values.data();
  a.threshold_stride = threshold.stride;
  a.initial_membrane = initial.data();
  a.spikes = spikes.mutable_data();
  a.pre_reset_membrane = pre_reset.mutable_data();
  a.final_membrane = final_membrane.mutable_data();
  fused_lif::LifCudaStatus status;
  if (a.batch * a.neurons > 0) {
    py::gil_scoped_release release;
    ScopedFlushDenormal flush;
    if (on == Device::kCpu) {
      const fused_lif::LifCpuTiling tiling = fused_lif::lif_cpu_tiling(a);
      fused_lif::lif_forward_cpu<float>(a, tiling, 0, tiling.count);
    } else if (on == Device::kEmulated) {
      EmulatedLaunch launch;
      status = fused_lif::lif_forward_launches<float>(a, launch);
    } else {
#if FUSED_LIF_WITH_CUDA
      status = fused_lif::lif_forward_cuda_from_host(a);
#endif
    }
  }
  check_cuda(status, "currents", a.batch, a.time, a.neurons);
  return forward_result_type(spikes, pre_reset, final_membrane);
}

py::object lif_backward(const py::handle& grad_obj, const py::handle& pre_reset_obj,
                        const py::handle& decay_obj, const py::handle& threshold_obj,
                        const py::handle& grad_final_obj, const py::handle& initial_obj,
                        const py::handle& bias_obj, double alpha, const std::string& surrogate,
                        const std::string& reset, bool detach_reset, bool param_grads,
                        const std::string& device) {
  Array grad_spikes = as_float32(grad_obj, "grad_spikes");
  Array pre_reset = as_float32(pre_reset_obj, "pre_reset_membrane");
  check_rank3(pre_reset, "pre_reset_membrane");
  if (grad_spikes.ndim() != 3 || !std::equal(pre_reset.shape(), pre_reset.shape() + 3, grad_spikes.shape())) {
    throw py::value_error("grad_spikes must have the shape of pre_reset_membrane " +
                          shape_string(pre_reset) + ", got " + shape_string(grad_spikes));
  }
  const std::string alpha_error = fused_lif::check_alpha(alpha);
  if (!alpha_error.empty()) throw py::value_error(alpha_error);
  fused_lif::LifBackwardArgs a;
  a.batch = pre_reset.shape(0);
  a.time = pre_reset.shape(1);
  a.neurons = pre_reset.shape(2);
  const auto [decay, threshold] = to_decay_threshold(decay_obj, threshold_obj, a.neurons);
  const Param bias = to_param(bias_obj, "bias", a.neurons);
  const Array grad_final = to_state(grad_final_obj, "grad_final_membrane", a.batch, a.neurons);
  const Array initial = to_state(initial_obj, "initial_membrane", a.batch, a.neurons);
  a.surrogate = to_option(surrogate, "surrogate", fused_lif::kSurrogateNames);
  a.reset = to_option(reset, "reset", fused_lif::kResetNames);
  const Device on = to_device(device);
  Array grad_initial({a.batch, a.neurons}), grad_currents({a.batch, a.time, a.neurons});
  std::vector<float> scratch(fused_lif::kScratchRows * a.batch * a.neurons);
  std::vector<float> grad_bias(bias.values.size()), grad_decay(decay.values.size()),
      grad_threshold(threshold.values.size());
  a.grad_spikes = grad_spikes.data();
  a.grad_final_membrane = grad_final.data();
  a.pre_reset_membrane = pre_reset.data();
  a.initial_membrane = initial.data();
  a.decay = decay.values.data();
  a.decay_stride = decay.stride;
  a.threshold = threshold.values.data();
  a.threshold_stride = threshold.stride;
  a.bias_stride = bias.stride;
  a.alpha = static_cast<float>(alpha);
  a.detach_reset = detach_reset;
  a.param_grads = param_grads;
  a.grad_currents = grad_currents.mutable_data();
  a.grad_initial_membrane = grad_initial.mutable_data();
  a.grad_bias = grad_bias.data();
  a.grad_decay = grad_decay.data();
  a.grad_threshold = grad_threshold.data();
  a.scratch = scratch.data();
  fused_lif::LifCudaStatus status;
  {
    py::gil_scoped_release release;
    ScopedFlushDenormal flush;
    if (on == Device::kCpu) {
      fused_lif::lif_backward_all_cpu<float>(a);
    } else if (on == Device::kEmulated) {
      EmulatedLaunch launch;
      status = fused_lif::lif_backward_launches<float>(a, launch);
    } else {
#if FUSED_LIF_WITH_CUDA
      status = fused_lif::lif_backward_cuda_from_host(a);
#endif
    }
  }
  check_cuda(status, "pre_reset_membrane", a.batch, a.time, a.neurons);
  return backward_result_type(grad_currents, like_param(grad_bias, bias.stride),
                              like_param(grad_decay, decay.stride),
                              like_param(grad_threshold, threshold.stride), grad_initial);
}

// recurrent_kernel [neurons, neurons].
Array to_recurrent_kernel(const py::handle& obj, int64_t neurons) {
  Array a = as_float32(obj, "recurrent_kernel");
  if (a.ndim() != 2 || a.shape(0) != neurons || a.shape(1) != neurons) {
    throw py::value_error("recurrent_kernel must have shape [neurons, neurons] = [" +
                          std::to_string(neurons) + ", " + std::to_string(neurons) +
                          "], got shape " + shape_string(a));
  }
  return a;
}

py::object recurrent_lif_forward(const py::handle& currents_obj, const py::handle& kernel_obj,
                                 const py::handle& decay_obj, const py::handle& threshold_obj,
                                 const py::handle& bias_obj, const py::handle& initial_obj,
                                 const py::handle& initial_spikes_obj, const std::string& reset,
                                 const std::string& device) {
  Array currents = as_float32(currents_obj, "currents");
  check_rank3(currents, "currents");
  fused_lif::RecurrentForwardArgs ra;
  fused_lif::LifForwardArgs& a = ra.lif;
  a.batch = currents.shape(0);
  a.time = currents.shape(1);
  a.neurons = currents.shape(2);
  const Array kernel = to_recurrent_kernel(kernel_obj, a.neurons);
  const auto [decay, threshold] = to_decay_threshold(decay_obj, threshold_obj, a.neurons);
  const Param bias = to_param(bias_obj, "bias", a.neurons);
  const Array initial = to_state(initial_obj, "initial_membrane", a.batch, a.neurons);
  const Array initial_spikes = to_state(initial_spikes_obj, "initial_spikes", a.batch, a.neurons);
  const std::string spikes_error =
      fused_lif::check_initial_spikes(initial_spikes.data(), initial_spikes.size(), a.neurons);
  if (!spikes_error.empty()) throw py::value_error(spikes_error);
  a.reset = to_option(reset, "reset", fused_lif::kResetNames);
  const Device on = to_device(device);
  Array spikes({a.batch, a.time, a.neurons}), pre_reset({a.batch, a.time, a.neurons});
  Array final_membrane({a.batch, a.neurons});
  a.currents = currents.data();
  a.bias = bias.values.data();
  a.bias_stride = bias.stride;
  a.decay = decay.values.data();
  a.decay_stride = decay.stride;
  a.threshold = threshold.values.data();
  a.threshold_stride = threshold.stride;
  a.initial_membrane = initial.data();
  a.spikes = spikes.mutable_data();
  a.pre_reset_membrane = pre_reset.mutable_data();
  a.final_membrane = final_membrane.mutable_data();
  ra.recurrent_kernel = kernel.data();
  ra.initial_spikes = initial_spikes.data();
  fused_lif::LifCudaStatus status;
  if (a.batch * a.neurons > 0) {
    py::gil_scoped_release release;
    ScopedFlushDenormal flush;
    if (on == Device::kCpu) {
      fused_lif::recurrent_lif_forward_cpu<float>(ra, 0, fused_lif::recurrent_cpu_forward_units(ra));
    } else if (on == Device::kEmulated) {
      EmulatedLaunch launch;
      status = fused_lif::recurrent_lif_forward_launches<float>(ra, launch);
    } else {
#if FUSED_LIF_WITH_CUDA
      status = fused_lif::recurrent_lif_forward_cuda_from_host(ra);
#endif
    }
  }
  check_cuda(status, "currents", a.batch, a.time, a.neurons);
  return recurrent_forward_result_type(spikes, pre_reset, final_membrane);
}

py::object recurrent_lif_backward(const py::handle& grad_obj, const py::handle& pre_reset_obj,
                                  const py::handle& kernel_obj, const py::handle& decay_obj,
                                  const py::handle& threshold_obj,
                                  const py::handle& grad_final_obj, const py::handle& initial_obj,
                                  const py::handle& bias_obj, double alpha,
                                  const std::string& surrogate, const std::string& reset,
                                  bool detach_reset, bool param_grads, const std::string& device) {
  Array grad_spikes = as_float32(grad_obj, "grad_spikes");
  Array pre_reset = as_float32(pre_reset_obj, "pre_reset_membrane");
  check_rank3(pre_reset, "pre_reset_membrane");
  if (grad_spikes.ndim() != 3 ||
      !std::equal(pre_reset.shape(), pre_reset.shape() + 3, grad_spikes.shape())) {
    throw py::value_error("grad_spikes must have the shape of pre_reset_membrane " +
                          shape_string(pre_reset) + ", got " + shape_string(grad_spikes));
  }
  const std::string alpha_error = fused_lif::check_alpha(alpha);
  if (!alpha_error.empty()) throw py::value_error(alpha_error);
  fused_lif::RecurrentBackwardArgs ra;
  fused_lif::LifBackwardArgs& a = ra.lif;
  a.batch = pre_reset.shape(0);
  a.time = pre_reset.shape(1);
  a.neurons = pre_reset.shape(2);
  const Array kernel = to_recurrent_kernel(kernel_obj, a.neurons);
  const auto [decay, threshold] = to_decay_threshold(decay_obj, threshold_obj, a.neurons);
  const Param bias = to_param(bias_obj, "bias", a.neurons);
  const Array grad_final = to_state(grad_final_obj, "grad_final_membrane", a.batch, a.neurons);
  const Array initial = to_state(initial_obj, "initial_membrane", a.batch, a.neurons);
  a.surrogate = to_option(surrogate, "surrogate", fused_lif::kSurrogateNames);
  a.reset = to_option(reset, "reset", fused_lif::kResetNames);
  const Device on = to_device(device);
  Array grad_initial({a.batch, a.neurons}), grad_initial_spikes({a.batch, a.neurons});
  Array grad_currents({a.batch, a.time, a.neurons});
  std::vector<float> scratch(fused_lif::kScratchRows * a.batch * a.neurons);
  std::vector<float> transposed(a.neurons * a.neurons);
  std::vector<float> grad_bias(bias.values.size()), grad_decay(decay.values.size()),
      grad_threshold(threshold.values.size());
  a.grad_spikes = grad_spikes.data();
  a.grad_final_membrane = grad_final.data();
  a.pre_reset_membrane = pre_reset.data();
  a.initial_membrane = initial.data();
  a.decay = decay.values.data();
  a.decay_stride = decay.stride;
  a.threshold = threshold.values.data();
  a.threshold_stride = threshold.stride;
  a.bias_stride = bias.stride;
  a.alpha = static_cast<float>(alpha);
  a.detach_reset = detach_reset;
  a.param_grads = param_grads;
  a.grad_currents = grad_currents.mutable_data();
  a.grad_initial_membrane = grad_initial.mutable_data();
  a.grad_bias = grad_bias.data();
  a.grad_decay = grad_decay.data();
  a.grad_threshold = grad_threshold.data();
  a.scratch = scratch.data();
  ra.recurrent_kernel = kernel.data();
  ra.recurrent_kernel_t = transposed.data();
  ra.grad_initial_spikes = grad_initial_spikes.mutable_data();
  fused_lif::LifCudaStatus status;
  {
    py::gil_scoped_release release;
    ScopedFlushDenormal flush;
    if (on == Device::kCpu) {
      fused_lif::recurrent_lif_backward_all_cpu<float>(ra);
    } else if (on == Device::kEmulated) {
      EmulatedLaunch launch;
      status = fused_lif::recurrent_lif_backward_launches<float>(ra, launch);
    } else {
#if FUSED_LIF_WITH_CUDA
      status = fused_lif::recurrent_lif_backward_cuda_from_host(ra);
#endif
    }
  }
  check_cuda(status, "pre_reset_membrane", a.batch, a.time, a.neurons);
  return recurrent_backward_result_type(grad_currents, like_param(grad_bias, bias.stride),
                                        like_param(grad_decay, decay.stride),
                                        like_param(grad_threshold, threshold.stride),
                                        grad_initial, grad_initial_spikes);
}

}  // namespace

PYBIND11_MODULE(kernels, m) {
  m.doc() = "The fused LIF kernels on float32 numpy arrays, without TensorFlow.";
  auto namedtuple = py::module_::import("collections").attr("namedtuple");
  m.attr("LifForwardResult") =
      namedtuple("LifForwardResult", py::make_tuple("spikes", "pre_reset_membrane", "final_membrane"),
                 py::arg("module") = m.attr("__name__"));
  m.attr("LifBackwardResult") = namedtuple(
      "LifBackwardResult",
      py::make_tuple("grad_currents", "grad_bias", "grad_decay", "grad_threshold",
                     "grad_initial_membrane"),
      py::arg("module") = m.attr("__name__"));
  forward_result_type = m.attr("LifForwardResult");
  backward_result_type = m.attr("LifBackwardResult");
  m.attr("RecurrentLifForwardResult") = namedtuple(
      "RecurrentLifForwardResult",
      py::make_tuple("spikes", "pre_reset_membrane", "final_membrane"),
      py::arg("module") = m.attr("__name__"));
  m.attr("RecurrentLifBackwardResult") = namedtuple(
      "RecurrentLifBackwardResult",
      py::make_tuple("grad_currents", "grad_bias", "grad_decay", "grad_threshold",
                     "grad_initial_membrane", "grad_initial_spikes"),
      py::arg("module") = m.attr("__name__"));
  recurrent_forward_result_type = m.attr("RecurrentLifForwardResult");
  recurrent_backward_result_type = m.attr("RecurrentLifBackwardResult");

  m.def("lif_forward", &lif_forward, py::arg("currents"), py::arg("decay"), py::arg("threshold"),
        py::kw_only(), py::arg("bias") = 0.0, py::arg("initial_membrane") = py::none(),
        py::arg("reset") = "zero", py::arg("device") = "cpu",
        "The op FusedLif>LifForward: currents [batch, time, neurons], decay (1 - 1/tau), "
        "threshold and bias (numbers or float32 [neurons]), initial_membrane [batch, neurons] "
        "(zeros if None) -> LifForwardResult(spikes, pre_reset_membrane u[t], final_membrane "
        "v[T-1]).");
  m.def("lif_backward", &lif_backward, py::arg("grad_spikes"), py::arg("pre_reset_membrane"),
        py::arg("decay"), py::arg("threshold"), py::kw_only(),
        py::arg("grad_final_membrane") = py::none(), py::arg("initial_membrane") = py::none(),
        py::arg("bias") = 0.0, py::arg("alpha") = 10.0, py::arg("surrogate") = "fast_sigmoid",
        py::arg("reset") = "zero", py::arg("detach_reset") = false,
        py::arg("param_grads") = true, py::arg("device") = "cpu",
        "The op FusedLif>LifBackward: the surrogate-gradient backward through time -> "
        "LifBackwardResult(grad_currents, grad_bias, grad_decay, grad_threshold, "
        "grad_initial_membrane), each parameter's gradient shaped like the parameter "
        "(bias: only its shape is used). param_grads=False: grad_decay and grad_threshold are 0.");
  m.def("recurrent_lif_forward", &recurrent_lif_forward, py::arg("currents"),
        py::arg("recurrent_kernel"), py::arg("decay"), py::arg("threshold"), py::kw_only(),
        py::arg("bias") = 0.0, py::arg("initial_membrane") = py::none(),
        py::arg("initial_spikes") = py::none(), py::arg("reset") = "zero",
        py::arg("device") = "cpu",
        "The op FusedLif>RecurrentLifForward: lif_forward with I[t] = currents[t] + bias + "
        "s[t-1] @ recurrent_kernel ([neurons, neurons], rows presynaptic), s[-1] = "
        "initial_spikes ([batch, neurons], every value 0 or 1; zeros if None) -> "
        "RecurrentLifForwardResult(spikes, pre_reset_membrane, final_membrane).");
  m.def("recurrent_lif_backward", &recurrent_lif_backward, py::arg("grad_spikes"),
        py::arg("pre_reset_membrane"), py::arg("recurrent_kernel"), py::arg("decay"),
        py::arg("threshold"), py::kw_only(), py::arg("grad_final_membrane") = py::none(),
        py::arg("initial_membrane") = py::none(), py::arg("bias") = 0.0,
        py::arg("alpha") = 10.0, py::arg("surrogate") = "fast_sigmoid",
        py::arg("reset") = "zero", py::arg("detach_reset") = false,
        py::arg("param_grads") = true, py::arg("device") = "cpu",
        "The op FusedLif>RecurrentLifBackward: backpropagation through time -> "
        "RecurrentLifBackwardResult(grad_currents (dL/dI[t]), grad_bias, grad_decay, "
        "grad_threshold, grad_initial_membrane, grad_initial_spikes); d recurrent_kernel is "
        "Σ_t s[t-1]ᵀ grad_currents[t], not computed here.");
  m.def("cuda_benchmark", [](int64_t batch, int64_t time, int64_t neurons, int repeats) {
    if (batch <= 0 || time <= 0 || neurons <= 0 || repeats <= 0) {
      throw py::value_error("cuda_benchmark: batch, time, neurons and repeats must be positive");
    }
#if FUSED_LIF_WITH_CUDA
    fused_lif::LifCudaTimings t;
    check_cuda(fused_lif::lif_cuda_benchmark(batch, time, neurons, repeats, &t), "the benchmark",
               batch, time, neurons);
    py::dict d;
    d["forward_ms"] = t.forward_ms;
    d["backward_ms"] = t.backward_ms;
    d["copy_ms"] = t.copy_ms;
    d["forward_bytes"] = t.forward_bytes;
    d["backward_bytes"] = t.backward_bytes;
    d["copy_bytes"] = t.copy_bytes;
    return d;
#else
    throw py::value_error("cuda_benchmark: this build of fused_lif.kernels has no CUDA kernels");
#endif
  }, py::arg("batch"), py::arg("time"), py::arg("neurons"), py::arg("repeats") = 20,
     "Times the CUDA kernels and a device-to-device copy on device-resident data.");
  m.def("exp", [](const py::handle& x_obj) {
    Array x = as_float32(x_obj, "x");
    Array out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    const float* in = x.data();
    float* o = out.mutable_data();
    for (py::ssize_t i = 0; i < x.size(); ++i) o[i] = fused_lif::lif_exp(in[i]);
    return out;
  }, py::arg("x"),
     "lif.h's e^x (the sigmoid surrogate's, the same floats on CPU and GPU), elementwise, "
     "for checking it against a reference exp.");
  m.def("cuda_available", []() {
#if FUSED_LIF_WITH_CUDA
    return fused_lif::lif_cuda_device_count() > 0;
#else
    return false;
#endif
  }, "Whether this build has CUDA kernels and a CUDA device is present.");
  m.def("cuda_architectures", []() {
#if FUSED_LIF_WITH_CUDA
    return std::string(fused_lif::lif_cuda_architectures());
#else
    return std::string();
#endif
  }, "The CUDA architectures this build has code for (CMAKE_CUDA_ARCHITECTURES); '' if none.");
  m.def("cuda_check_device", [](int device) -> py::object {
#if FUSED_LIF_WITH_CUDA
    int checked = device, major = 0, minor = 0;
    const fused_lif::LifCudaStatus status = fused_lif::lif_cuda_check_image(&checked, &major, &minor);
    if (status.ok()) return py::none();
    return py::str(fused_lif::describe_unusable_device(status, device, major, minor));
#else
    (void)device;
    throw py::value_error("cuda_check_device: this build of fused_lif.kernels has no CUDA kernels");
#endif
  }, py::arg("device") = 0,
     "None if the CUDA kernels can run on this GPU, else why not and how to rebuild.");
  m.def("cuda_launch_probe", [](unsigned threads) -> py::object {
#if FUSED_LIF_WITH_CUDA
    const fused_lif::LifCudaStatus status = fused_lif::lif_cuda_launch_probe(threads);
    if (status.ok()) return py::none();
    return py::str(fused_lif::describe_cuda_failure(status, "a probe", 1, 1, threads));
#else
    (void)threads;
    throw py::value_error("cuda_launch_probe: this build of fused_lif.kernels has no CUDA kernels");
#endif
  }, py::arg("threads"),
     "Launches an empty kernel with `threads` threads per block through the kernels' checked "
     "launch: None on success, else the error message the kernels would raise.");
}
