// What the framework-free bindings of each kernel family share (lif_bindings.cc;
// a new family's bindings use the same): numpy argument checks with the op's
// words, per-neuron parameters and [batch, neurons] states, the option and
// device names, subnormal flushing, the emulation of a CUDA launch's threads
// on the CPU, and run_on, the one switch over device="cpu" / "emulated" /
// "cuda". Header-only; pybind11, no TensorFlow.
#ifndef FUSED_LIF_BINDINGS_HELPERS_H_
#define FUSED_LIF_BINDINGS_HELPERS_H_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <utility>
#include <vector>

#include "lif_cuda_threads.h"  // LaunchShape, the reductions' per-thread work
#include "lif_kernels.h"
#include "lif_options.h"

namespace fused_lif {
namespace bindings {

namespace py = pybind11;
using Array = py::array_t<float, py::array::c_style>;

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

// float32 arrays only: a silent float64 -> float32 cast would hide bugs.
inline Array as_float32(const py::handle& obj, const char* name) {
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

inline std::string shape_string(const Array& a) {
  std::string out = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) out += (d ? ", " : "") + std::to_string(a.shape(d));
  return out + (a.ndim() == 1 ? ",)" : ")");
}

inline void check_rank3(const Array& a, const char* name) {
  if (a.ndim() != 3) {
    throw py::value_error(std::string(name) + " must have rank 3 [batch, time, neurons], got shape " +
                          shape_string(a));
  }
}

// A [batch, neurons] state (initial_membrane, grad_final_membrane): zeros if None.
inline Array to_state(const py::handle& obj, const char* name, int64_t batch, int64_t neurons) {
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

inline Param to_param(const py::handle& obj, const char* name, int64_t neurons) {
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
inline std::pair<Param, Param> to_decay_threshold(const py::handle& decay,
                                                  const py::handle& threshold, int64_t neurons) {
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

inline Device to_device(const std::string& device) {
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

inline void check_cuda(const fused_lif::LifCudaStatus& status, const char* what, int64_t batch,
                       int64_t time, int64_t neurons) {
#if FUSED_LIF_WITH_CUDA
  if (!status.ok()) {
    throw std::runtime_error(fused_lif::describe_cuda_failure(status, what, batch, time, neurons));
  }
#endif
}

// A parameter's gradient: shaped like the parameter ([] or [neurons]).
inline Array like_param(const std::vector<float>& values, int64_t stride) {
  Array out(stride ? std::vector<py::ssize_t>{static_cast<py::ssize_t>(values.size())}
                   : std::vector<py::ssize_t>{});
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

// One launch of `shape` on the calling CPU thread: thread_work(block,
// thread, threads per block) for every block, thread by thread (a kernel's
// threads are independent). For any kernel family's emulated launches.
template <typename F>
void emulate_grid(fused_lif::LaunchShape shape, F&& thread_work) {
  for (int64_t block = 0; block < shape.blocks; ++block) {
    for (unsigned thread = 0; thread < shape.threads; ++thread) {
      thread_work(static_cast<unsigned>(block), thread, shape.threads);
    }
  }
}

// The parameter-gradient reductions of a Launch (lif_cuda_threads.h's
// lif_backward_reduce_launches), emulated: every kernel family's emulated
// Launch derives from it and adds its own kernels. The sum tree runs level
// by level, as its __syncthreads() orders it on the GPU.
struct EmulatedReduceLaunch {
  template <typename P>
  fused_lif::LifCudaStatus sum_over_batch(const fused_lif::SumArgs<P>& sum,
                                          fused_lif::LaunchShape s) {
    emulate_grid(s, [&](unsigned b, unsigned t, unsigned n) {
      fused_lif::sum_over_batch_thread(sum, b, t, n);
    });
    return {};
  }
  template <typename P>
  fused_lif::LifCudaStatus sum_all(const fused_lif::SumArgs<P>& sum) {
    float partial[fused_lif::kSumThreads];
    for (unsigned i = 0; i < fused_lif::kSumThreads; ++i) {
      fused_lif::sum_all_load(sum.rows, sum.batch * sum.neurons, i, partial);
    }
    for (unsigned width = fused_lif::kSumThreads / 2; width > 0; width /= 2) {
      for (unsigned i = 0; i < fused_lif::kSumThreads; ++i) {
        fused_lif::sum_all_step(width, i, partial);
      }
    }
    for (unsigned i = 0; i < fused_lif::kSumThreads; ++i) {
      fused_lif::sum_all_store(partial, i, sum.out);
    }
    return {};
  }
  fused_lif::LifCudaStatus zero(float* p, int64_t count) {
    std::fill(p, p + count, 0.0f);
    return {};
  }
};

// Runs one kernel of a family on `on`, with the GIL released and subnormals
// flushed: kernels.cpu() (the CPU loops), kernels.emulated() (the CUDA
// threads' functions on the CPU) or kernels.cuda() (on the GPU, from and to
// host memory; declared only in CUDA builds). A CUDA failure is raised as
// RuntimeError naming `what` and its [batch, time, neurons] shape. Each
// kernel family writes a small struct with those three members and calls
// this, rather than switching on the device itself.
template <typename Kernels>
void run_on(Device on, const Kernels& kernels, const char* what, int64_t batch, int64_t time,
            int64_t neurons) {
  fused_lif::LifCudaStatus status;
  {
    py::gil_scoped_release release;
    ScopedFlushDenormal flush;
    switch (on) {
      case Device::kCpu:
        kernels.cpu();
        break;
      case Device::kEmulated:
        status = kernels.emulated();
        break;
      case Device::kCuda:
#if FUSED_LIF_WITH_CUDA
        status = kernels.cuda();
#endif
        break;
    }
  }
  check_cuda(status, what, batch, time, neurons);
}

}  // namespace bindings
}  // namespace fused_lif

#endif  // FUSED_LIF_BINDINGS_HELPERS_H_
