// fused_lif.kernels' recurrent LIF functions (added to the module by
// lif_bindings.cc): the recurrent LIF kernels (lif_recurrent_cpu.h, and the
// CUDA blocks' work of lif_recurrent_cuda_threads.h on the GPU or emulated)
// on float32 numpy arrays, without TensorFlow, under the op's names. The
// argument checks and the device switch (run_on) are bindings_helpers.h's.
//
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
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bindings_helpers.h"
#include "lif_cpu.h"
#include "lif_options.h"
#include "lif_recurrent_cpu.h"
#include "lif_recurrent_cuda_threads.h"
#include "lif_recurrent_kernels.h"
#if FUSED_LIF_WITH_CUDA
#include "lif_cuda_host.h"
#endif

namespace fused_lif {
namespace bindings {
namespace {

using fused_lif::Reset;
using fused_lif::Surrogate;

// The result types (collections.namedtuple), made when the module loads.
py::handle recurrent_forward_result_type, recurrent_backward_result_type;

// The Launch of lif_recurrent_cuda_threads.h's sequences on the calling CPU
// thread: one block after another, each block's phases in order, every
// thread of a phase before the next (its barrier). The block's working
// memory (shared memory on the GPU) starts as garbage, as shared memory
// does: a read before a write shows.
struct RecurrentEmulatedLaunch : EmulatedReduceLaunch {
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
    emulate_grid(s, [&](unsigned b, unsigned t, unsigned n) {
      fused_lif::recurrent_transpose_thread(a, b, t, n);
    });
    return {};
  }
  template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
  fused_lif::LifCudaStatus recurrent_backward(const fused_lif::RecurrentBackwardArgs& a,
                                              fused_lif::LaunchShape s) {
    std::vector<float> grads(2 * a.lif.neurons);
    for (int64_t row = 0; row < s.blocks; ++row) {
      std::fill(grads.begin(), grads.end(), std::numeric_limits<float>::quiet_NaN());
      Block block{row, s.threads};
      fused_lif::recurrent_backward_block<T, S, R, ParamGrads, DetachReset>(a, block,
                                                                          grads.data());
    }
    return {};
  }
};

// The recurrent scans, for run_on.
struct RecurrentForwardKernels {
  const fused_lif::RecurrentForwardArgs& a;
  void cpu() const {
    fused_lif::recurrent_lif_forward_cpu<float>(a, 0, fused_lif::recurrent_cpu_forward_units(a));
  }
  fused_lif::LifCudaStatus emulated() const {
    RecurrentEmulatedLaunch launch;
    return fused_lif::recurrent_lif_forward_launches<float>(a, launch);
  }
#if FUSED_LIF_WITH_CUDA
  fused_lif::LifCudaStatus cuda() const {
    return fused_lif::recurrent_lif_forward_cuda_from_host(a);
  }
#endif
};

struct RecurrentBackwardKernels {
  const fused_lif::RecurrentBackwardArgs& a;
  void cpu() const { fused_lif::recurrent_lif_backward_all_cpu<float>(a); }
  fused_lif::LifCudaStatus emulated() const {
    RecurrentEmulatedLaunch launch;
    return fused_lif::recurrent_lif_backward_launches<float>(a, launch);
  }
#if FUSED_LIF_WITH_CUDA
  fused_lif::LifCudaStatus cuda() const {
    return fused_lif::recurrent_lif_backward_cuda_from_host(a);
  }
#endif
};

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
  if (a.batch * a.neurons > 0) {
    run_on(on, RecurrentForwardKernels{ra}, "currents", a.batch, a.time, a.neurons);
  }
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
  run_on(on, RecurrentBackwardKernels{ra}, "pre_reset_membrane", a.batch, a.time, a.neurons);
  return recurrent_backward_result_type(grad_currents, like_param(grad_bias, bias.stride),
                                        like_param(grad_decay, decay.stride),
                                        like_param(grad_threshold, threshold.stride),
                                        grad_initial, grad_initial_spikes);
}

}  // namespace

void add_recurrent_lif_bindings(py::module_& m) {
  auto namedtuple = py::module_::import("collections").attr("namedtuple");
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
}

}  // namespace bindings
}  // namespace fused_lif
