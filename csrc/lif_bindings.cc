// fused_lif.kernels: the fused LIF kernels on float32 numpy arrays, without
// TensorFlow, so that any machine with a compiler (and a GPU, for
// device="cuda") can check them against numpy. Same loops, same math header.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "lif_cpu.h"
#include "lif_kernels.h"

namespace py = pybind11;
using fused_lif::Reset;
using fused_lif::Surrogate;
using Array = py::array_t<float, py::array::c_style>;

namespace {

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

void check_rank3(const Array& a, const char* name) {
  if (a.ndim() != 3) {
    throw py::value_error(std::string(name) + " must have rank 3 [batch, time, neurons], got rank " +
                          std::to_string(a.ndim()));
  }
}

// A per-neuron parameter given as a Python number (one value for all neurons)
// or a float32 array [neurons]. Stored as float32 in `values`.
struct Param {
  std::vector<float> values;
  int64_t stride = 0;
};

Param to_param(const py::handle& obj, const char* name, int64_t neurons) {
  Param p;
  if (py::isinstance<py::float_>(obj) || py::isinstance<py::int_>(obj)) {
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
                          std::to_string(neurons) + "]");
  }
  p.values.assign(a.data(), a.data() + neurons);
  p.stride = 1;
  return p;
}

// decay = 1 - 1/tau: in double for a Python number (as Python computes the
// seed's `1.0 - 1.0/tau`), in float32 for an array (as TensorFlow does).
Param to_decay(const py::handle& tau, int64_t neurons) {
  const bool number = py::isinstance<py::float_>(tau) || py::isinstance<py::int_>(tau);
  Param p = to_param(tau, "tau", neurons);
  const double scalar_tau = number ? tau.cast<double>() : 0.0;
  for (float& v : p.values) {
    const double t = number ? scalar_tau : v;
    if (!(std::isfinite(t) && t > 0.0)) {
      throw py::value_error("tau must be positive and finite, got " + std::to_string(t));
    }
    v = number ? static_cast<float>(1.0 - 1.0 / t) : 1.0f - 1.0f / v;
  }
  return p;
}

Param to_threshold(const py::handle& threshold, int64_t neurons) {
  Param p = to_param(threshold, "threshold", neurons);
  for (float v : p.values) {
    if (std::isnan(v)) throw py::value_error("threshold must not be NaN");
  }
  return p;
}

Reset to_reset(const std::string& name) {
  if (name == "zero") return Reset::kZero;
  if (name == "subtract") return Reset::kSubtract;
  if (name == "none") return Reset::kNone;
  throw py::value_error("reset must be 'zero', 'subtract' or 'none', got '" + name + "'");
}

Surrogate to_surrogate(const std::string& name) {
  if (name == "fast_sigmoid") return Surrogate::kFastSigmoid;
  if (name == "atan") return Surrogate::kAtan;
  if (name == "sigmoid") return Surrogate::kSigmoid;
  if (name == "triangle") return Surrogate::kTriangle;
  throw py::value_error("surrogate must be 'fast_sigmoid', 'atan', 'sigmoid' or 'triangle', got '" +
                        name + "'");
}

bool on_cuda(const std::string& device) {
  if (device == "cpu") return false;
  if (device != "cuda") throw py::value_error("device must be 'cpu' or 'cuda', got '" + device + "'");
#if FUSED_LIF_WITH_CUDA
  return true;
#else
  throw py::value_error("device='cuda': this build of fused_lif.kernels has no CUDA kernels "
                        "(rebuild with -Ccmake.define.FUSED_LIF_CUDA=ON)");
#endif
}

void check_cuda(int err) {
  if (err != 0) throw std::runtime_error(std::string("CUDA error: ") + fused_lif::lif_cuda_error_string(err));
}

Array zeros(std::vector<py::ssize_t> shape) {
  Array a(shape);
  std::fill(a.mutable_data(), a.mutable_data() + a.size(), 0.0f);
  return a;
}

py::tuple lif_forward(const py::handle& currents_obj, const py::handle& tau,
                      const py::handle& threshold, const std::string& device,
                      const std::string& reset) {
  Array currents = as_float32(currents_obj, "currents");
  check_rank3(currents, "currents");
  fused_lif::LifForwardArgs a;
  a.batch = currents.shape(0);
  a.time = currents.shape(1);
  a.neurons = currents.shape(2);
  const Param decay = to_decay(tau, a.neurons);
  const Param th = to_threshold(threshold, a.neurons);
  const float bias = 0.0f;
  Array initial = zeros({a.batch, a.neurons}), final_membrane({a.batch, a.neurons});
  Array spikes({a.batch, a.time, a.neurons}), membrane({a.batch, a.time, a.neurons});
  a.reset = to_reset(reset);
  const bool cuda = on_cuda(device);
  a.currents = currents.data();
  a.bias = &bias;
  a.decay = decay.values.data();
  a.decay_stride = decay.stride;
  a.threshold = th.values.data();
  a.threshold_stride = th.stride;
  a.initial_membrane = initial.data();
  a.spikes = spikes.mutable_data();
  a.membrane = membrane.mutable_data();
  a.final_membrane = final_membrane.mutable_data();
  if (a.batch * a.neurons > 0) {
    py::gil_scoped_release release;
    if (cuda) {
#if FUSED_LIF_WITH_CUDA
      check_cuda(fused_lif::lif_forward_cuda_from_host(a));
#endif
    } else {
      fused_lif::lif_forward_cpu<float>(a, 0, fused_lif::lif_cpu_tiles(a));
    }
  }
  return py::make_tuple(spikes, membrane);
}

py::object lif_backward(const py::handle& grad_obj, const py::handle& membrane_obj, const py::handle& tau,
                   const py::handle& threshold, double alpha, const std::string& device,
                   const std::string& surrogate, const std::string& reset, bool detach_reset,
                   bool all_grads) {
  Array grad_spikes = as_float32(grad_obj, "grad_spikes");
  Array membrane = as_float32(membrane_obj, "membrane");
  check_rank3(membrane, "membrane");
  check_rank3(grad_spikes, "grad_spikes");
  for (int d = 0; d < 3; ++d) {
    if (grad_spikes.shape(d) != membrane.shape(d)) {
      throw py::value_error("grad_spikes and membrane must have the same shape");
    }
  }
  if (!(std::isfinite(alpha) && alpha >= 0.0)) {
    throw py::value_error("alpha must be finite and >= 0, got " + std::to_string(alpha));
  }
  fused_lif::LifBackwardArgs a;
  a.batch = membrane.shape(0);
  a.time = membrane.shape(1);
  a.neurons = membrane.shape(2);
  const Param decay = to_decay(tau, a.neurons);
  const Param th = to_threshold(threshold, a.neurons);
  a.surrogate = to_surrogate(surrogate);
  a.reset = to_reset(reset);
  const bool cuda = on_cuda(device);
  Array initial = zeros({a.batch, a.neurons}), grad_final = zeros({a.batch, a.neurons});
  Array grad_initial({a.batch, a.neurons}), grad_currents({a.batch, a.time, a.neurons});
  std::vector<float> scratch(fused_lif::kScratchRows * a.batch * a.neurons);
  float grad_bias = 0.0f;
  std::vector<float> grad_decay(decay.values.size()), grad_threshold(th.values.size());
  a.grad_spikes = grad_spikes.data();
  a.grad_final_membrane = grad_final.data();
  a.membrane = membrane.data();
  a.initial_membrane = initial.data();
  a.decay = decay.values.data();
  a.decay_stride = decay.stride;
  a.threshold = th.values.data();
  a.threshold_stride = th.stride;
  a.alpha = static_cast<float>(alpha);
  a.detach_reset = detach_reset;
  a.param_grads = all_grads;
  a.grad_currents = grad_currents.mutable_data();
  a.grad_initial_membrane = grad_initial.mutable_data();
  a.grad_bias = &grad_bias;
  a.grad_decay = grad_decay.data();
  a.grad_threshold = grad_threshold.data();
  a.scratch = scratch.data();
  {
    py::gil_scoped_release release;
    if (cuda) {
#if FUSED_LIF_WITH_CUDA
      check_cuda(fused_lif::lif_backward_cuda_from_host(a));
#endif
    } else {
      fused_lif::lif_backward_cpu<float>(a, 0, fused_lif::lif_cpu_tiles(a));
      fused_lif::lif_backward_reduce_cpu<float>(a);
    }
  }
  if (!all_grads) return std::move(grad_currents);
  // d/d(decay) and d/d(threshold) ([] or [neurons], like tau and threshold),
  // d/d(bias) of a scalar bias, and d/d(initial membrane) [batch, neurons].
  auto vector = [](const std::vector<float>& v, bool per_neuron) {
    Array out(per_neuron ? std::vector<py::ssize_t>{static_cast<py::ssize_t>(v.size())}
                         : std::vector<py::ssize_t>{});
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
  };
  py::dict out;
  out["grad_currents"] = grad_currents;
  out["grad_decay"] = vector(grad_decay, decay.stride != 0);
  out["grad_threshold"] = vector(grad_threshold, th.stride != 0);
  out["grad_bias"] = grad_bias;
  out["grad_initial_membrane"] = grad_initial;
  return std::move(out);
}

}  // namespace

PYBIND11_MODULE(kernels, m) {
  m.doc() = "The fused LIF kernels on float32 numpy arrays, without TensorFlow.";
  m.def("lif_forward", &lif_forward, py::arg("currents"), py::arg("tau"), py::arg("threshold"),
        py::arg("device") = "cpu", py::kw_only(), py::arg("reset") = "zero",
        "LIF forward scan from a zero membrane: currents [batch, time, neurons] -> "
        "(spikes, membrane), membrane being the pre-reset potential u[t].");
  m.def("lif_backward", &lif_backward, py::arg("grad_spikes"), py::arg("membrane"), py::arg("tau"),
        py::arg("threshold"), py::arg("alpha") = 10.0, py::arg("device") = "cpu", py::kw_only(),
        py::arg("surrogate") = "fast_sigmoid", py::arg("reset") = "zero",
        py::arg("detach_reset") = false, py::arg("all_grads") = false,
        "Surrogate-gradient backward through time: dL/dspikes and membrane -> dL/dcurrents; "
        "with all_grads=True a dict that also has grad_decay, grad_threshold (shaped like "
        "tau and threshold), grad_bias and grad_initial_membrane.");
  m.def("cuda_benchmark", [](int64_t batch, int64_t time, int64_t neurons, int repeats) {
    if (batch <= 0 || time <= 0 || neurons <= 0 || repeats <= 0) {
      throw py::value_error("cuda_benchmark: batch, time, neurons and repeats must be positive");
    }
#if FUSED_LIF_WITH_CUDA
    fused_lif::LifCudaTimings t;
    check_cuda(fused_lif::lif_cuda_benchmark(batch, time, neurons, repeats, &t));
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
  m.def("cuda_available", []() {
#if FUSED_LIF_WITH_CUDA
    return fused_lif::lif_cuda_device_count() > 0;
#else
    return false;
#endif
  }, "Whether this build has CUDA kernels and a CUDA device is present.");
}
