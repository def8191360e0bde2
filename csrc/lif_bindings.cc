// fused_lif.kernels: the fused LIF kernels on float32 numpy arrays, without
// TensorFlow, so that any machine with a compiler (and a GPU, for
// device="cuda") can check them against numpy. Same loops, same math header,
// and the op's inputs and outputs under the op's names. device="emulated"
// runs the CUDA kernels' per-thread functions (lif_cuda_threads.h) on the CPU,
// over every block and thread of the launches a GPU would get. The argument
// checks and the device switch (run_on) are bindings_helpers.h's, for every
// kernel family.
//
//   lif_forward(currents, decay, threshold, *, bias, initial_membrane, reset, device)
//     -> LifForwardResult(spikes, pre_reset_membrane, final_membrane)
//   lif_backward(grad_spikes, pre_reset_membrane, decay, threshold, *,
//                grad_final_membrane, initial_membrane, bias, alpha, surrogate,
//                reset, detach_reset, param_grads, device)
//     -> LifBackwardResult(grad_currents, grad_bias, grad_decay, grad_threshold,
//                          grad_initial_membrane)
//
// The recurrent LIF kernels' functions (recurrent_lif_forward, _backward) are
// lif_recurrent_bindings.cc's, added to the same module.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bindings_helpers.h"
#include "lif_cpu.h"
#include "lif_cuda_threads.h"
#include "lif_kernels.h"
#include "lif_options.h"
#if FUSED_LIF_WITH_CUDA
#include "lif_cuda_host.h"
#endif

namespace py = pybind11;
using fused_lif::Reset;
using fused_lif::Surrogate;
using namespace fused_lif::bindings;  // Array, the argument checks, run_on

namespace fused_lif {
namespace bindings {
// The recurrent LIF kernels' functions and result types (lif_recurrent_bindings.cc).
void add_recurrent_lif_bindings(py::module_& m);
}  // namespace bindings
}  // namespace fused_lif

namespace {

// The result types (collections.namedtuple), made when the module loads.
py::handle forward_result_type, backward_result_type;

// The Launch of lif_cuda_threads.h's sequences that runs each launch's
// threads on the calling CPU thread, block by block, thread by thread (the
// kernels' threads are independent); the reductions are
// bindings_helpers.h's EmulatedReduceLaunch.
struct EmulatedLaunch : EmulatedReduceLaunch {
  template <typename T, Reset R>
  fused_lif::LifCudaStatus forward(const fused_lif::LifForwardArgs& a, fused_lif::LaunchShape s) {
    emulate_grid(s, [&](unsigned b, unsigned t, unsigned n) { fused_lif::lif_forward_thread<T, R>(a, b, t, n); });
    return {};
  }
  template <typename T, Surrogate S, Reset R, bool ParamGrads, bool DetachReset>
  fused_lif::LifCudaStatus backward(const fused_lif::LifBackwardArgs& a, fused_lif::LaunchShape s) {
    emulate_grid(s, [&](unsigned b, unsigned t, unsigned n) {
      fused_lif::lif_backward_thread<T, S, R, ParamGrads, DetachReset>(a, b, t, n);
    });
    return {};
  }
};

// The LIF scans, for run_on.
struct LifForwardKernels {
  const fused_lif::LifForwardArgs& a;
  void cpu() const {
    const fused_lif::LifCpuTiling tiling = fused_lif::lif_cpu_tiling(a);
    fused_lif::lif_forward_cpu<float>(a, tiling, 0, tiling.count);
  }
  fused_lif::LifCudaStatus emulated() const {
    EmulatedLaunch launch;
    return fused_lif::lif_forward_launches<float>(a, launch);
  }
#if FUSED_LIF_WITH_CUDA
  fused_lif::LifCudaStatus cuda() const { return fused_lif::lif_forward_cuda_from_host(a); }
#endif
};

struct LifBackwardKernels {
  const fused_lif::LifBackwardArgs& a;
  void cpu() const { fused_lif::lif_backward_all_cpu<float>(a); }
  fused_lif::LifCudaStatus emulated() const {
    EmulatedLaunch launch;
    return fused_lif::lif_backward_launches<float>(a, launch);
  }
#if FUSED_LIF_WITH_CUDA
  fused_lif::LifCudaStatus cuda() const { return fused_lif::lif_backward_cuda_from_host(a); }
#endif
};

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
  if (a.batch * a.neurons > 0) {
    run_on(on, LifForwardKernels{a}, "currents", a.batch, a.time, a.neurons);
  }
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
  run_on(on, LifBackwardKernels{a}, "pre_reset_membrane", a.batch, a.time, a.neurons);
  return backward_result_type(grad_currents, like_param(grad_bias, bias.stride),
                              like_param(grad_decay, decay.stride),
                              like_param(grad_threshold, threshold.stride), grad_initial);
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
  add_recurrent_lif_bindings(m);
}
