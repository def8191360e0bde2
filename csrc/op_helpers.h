// What every TensorFlow op file of fused-lif shares (lif_ops.cc, spike_ops.cc,
// and any new op family): the error helper, shape-function pieces for
// [batch, time, neurons] sequences and per-neuron parameters, the neuron
// attributes and the checks of a neuron op's inputs (once, at entry), the
// sharding of CPU work over TensorFlow's threads, and on a GPU the device
// check and the upload of decay and threshold. Each op file registers its
// own schemas and kernels; nothing here registers anything.
#ifndef FUSED_LIF_OP_HELPERS_H_
#define FUSED_LIF_OP_HELPERS_H_

#ifndef EIGEN_USE_THREADS  // tensorflow::Shard and the CPU device's thread pool
#define EIGEN_USE_THREADS
#endif

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lif_kernels.h"
#include "lif_options.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#if GOOGLE_CUDA
#include "tensorflow/core/platform/stream_executor.h"
#endif

namespace fused_lif {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
// Device tags for the kernels' templates.
struct CPUDevice {};
struct GPUDevice {};

using Status = absl::Status;

template <typename... Args>
Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

inline std::string ShapeString(const Tensor& t) { return t.shape().DebugString(); }

// The kernels' element type (lif_kernels.h's DType) of a TensorFlow type.
template <typename T> constexpr DType kDType = DType::kFloat32;
template <> constexpr DType kDType<Eigen::half> = DType::kFloat16;
template <> constexpr DType kDType<Eigen::bfloat16> = DType::kBFloat16;

// --------------------------------------------------------- shape functions --

// A per-neuron parameter: a scalar, or a vector of `neurons`.
inline Status ParamShape(InferenceContext* c, int input, DimensionHandle neurons) {
  ShapeHandle shape;
  TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(input), 1, &shape));
  if (c->RankKnown(shape) && c->Rank(shape) == 1) {
    DimensionHandle unused;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(shape, 0), neurons, &unused));
  }
  return Status();
}

// [batch, time, neurons] currents (or gradients) and [batch, neurons] state.
inline Status SequenceShapes(InferenceContext* c, int sequence, int state, ShapeHandle* seq,
                             ShapeHandle* state_shape) {
  TF_RETURN_IF_ERROR(c->WithRank(c->input(sequence), 3, seq));
  ShapeHandle s;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(state), 2, &s));
  ShapeHandle expected = c->MakeShape({c->Dim(*seq, 0), c->Dim(*seq, 2)});
  TF_RETURN_IF_ERROR(c->Merge(s, expected, state_shape));
  // Refine the sequence with what the state knows of batch and neurons.
  TF_RETURN_IF_ERROR(
      c->ReplaceDim(*seq, 0, c->Dim(*state_shape, 0), seq));
  return c->ReplaceDim(*seq, 2, c->Dim(*state_shape, 1), seq);
}

// The attributes of a LIF neuron op (lif.h's options), in REGISTER_OP:
//   REGISTER_OP("FusedLif>...").Input(...).FUSED_LIF_ATTRS.SetShapeFn(...)
#define FUSED_LIF_ATTRS                                                            \
  Attr("T: {float, half, bfloat16}")                                               \
      .Attr("alpha: float = 10.0")                                                 \
      .Attr(attr_spec("surrogate", kSurrogateNames))                               \
      .Attr(attr_spec("reset", kResetNames))                                       \
      .Attr("detach_reset: bool = false")                                          \
      .Attr("param_grads: bool = true")

// ------------------------------------------------------------- validation --

// FUSED_LIF_ATTRS' values, checked when the kernel is built.
struct LifAttrs {
  float alpha = 10.0f;
  Surrogate surrogate = Surrogate::kFastSigmoid;
  Reset reset = Reset::kZero;
  bool detach_reset = false;
  bool param_grads = true;  // false: decay and threshold are constants (their gradients: 0)

  explicit LifAttrs(OpKernelConstruction* ctx) {
    std::string surrogate_name, reset_name;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("alpha", &alpha));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("surrogate", &surrogate_name));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reset", &reset_name));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("detach_reset", &detach_reset));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("param_grads", &param_grads));
    const std::string alpha_error = check_alpha(alpha);
    OP_REQUIRES(ctx, alpha_error.empty(), InvalidArgument(alpha_error));
    OP_REQUIRES(ctx, parse_option(surrogate_name, kSurrogateNames, &surrogate),
                InvalidArgument(unknown_option("surrogate", surrogate_name, kSurrogateNames)));
    OP_REQUIRES(ctx, parse_option(reset_name, kResetNames, &reset),
                InvalidArgument(unknown_option("reset", reset_name, kResetNames)));
  }
};

// A per-neuron parameter: [] or [neurons]. Returns its stride (0 or 1).
inline Status CheckParam(const char* name, const Tensor& t, int64_t neurons, int64_t* stride) {
  const bool scalar = t.dims() == 0;
  if (!scalar && !(t.dims() == 1 && t.dim_size(0) == neurons)) {
    return InvalidArgument(name, " must be a scalar or a vector of one value per neuron [",
                           neurons, "], got shape ", ShapeString(t));
  }
  *stride = scalar ? 0 : 1;
  return Status();
}

// Values of decay (1 - 1/tau) and threshold; host memory only.
inline Status CheckParamValues(const Tensor& decay, const Tensor& threshold) {
  const std::string error = check_param_values(decay.flat<float>().data(), decay.NumElements(),
                                               threshold.flat<float>().data(),
                                               threshold.NumElements());
  return error.empty() ? Status() : InvalidArgument(error);
}

inline Status CheckSequence(const char* name, const Tensor& t) {
  if (t.dims() != 3) {
    return InvalidArgument(name, " must have rank 3 [batch, time, neurons], got shape ",
                           ShapeString(t));
  }
  return Status();
}

inline Status CheckState(const char* name, const Tensor& t, int64_t batch, int64_t neurons) {
  if (t.dims() != 2 || t.dim_size(0) != batch || t.dim_size(1) != neurons) {
    return InvalidArgument(name, " must have shape [batch, neurons] = [", batch, ", ", neurons,
                           "], got shape ", ShapeString(t));
  }
  return Status();
}

// An input and the name its errors give it.
struct NamedInput {
  const char* name;
  const Tensor& tensor;
};

// The inputs of a neuron op over time, checked in this order:
//   sequences  [batch, time, neurons]: the first gives args' batch, time and
//              neurons; the others must have its shape
//   bias, decay (1 - 1/tau), threshold: [] or [neurons]; their strides
//              into args' bias_stride, decay_stride, threshold_stride
//   states     [batch, neurons]
//   decay's and threshold's values (host memory, lif_options.h's checks)
// Args: any struct with those six fields (lif_kernels.h's argument structs).
template <typename Args>
Status CheckNeuronInputs(std::initializer_list<NamedInput> sequences, const Tensor& bias,
                         const Tensor& decay, const Tensor& threshold,
                         std::initializer_list<NamedInput> states, Args* args) {
  const NamedInput& first = *sequences.begin();
  TF_RETURN_IF_ERROR(CheckSequence(first.name, first.tensor));
  for (const NamedInput& other : sequences) {
    if (other.tensor.shape() != first.tensor.shape()) {
      return InvalidArgument(other.name, " must have the shape of ", first.name, " ",
                             ShapeString(first.tensor), ", got ", ShapeString(other.tensor));
    }
  }
  args->batch = first.tensor.dim_size(0);
  args->time = first.tensor.dim_size(1);
  args->neurons = first.tensor.dim_size(2);
  TF_RETURN_IF_ERROR(CheckParam("bias", bias, args->neurons, &args->bias_stride));
  TF_RETURN_IF_ERROR(
      CheckParam("decay (1 - 1/tau)", decay, args->neurons, &args->decay_stride));
  TF_RETURN_IF_ERROR(CheckParam("threshold", threshold, args->neurons, &args->threshold_stride));
  for (const NamedInput& state : states) {
    TF_RETURN_IF_ERROR(CheckState(state.name, state.tensor, args->batch, args->neurons));
  }
  return CheckParamValues(decay, threshold);
}

// --------------------------------------------------------------- sharding --

// A CPU pass whose work is at most this many elements (values it reads or
// writes, or multiply-adds it does) runs on the calling thread: below it,
// handing units to the pool costs more than the threads give back. One
// round threshold for every op, not tuned per op; benchmarks/README.md times
// the ops and training steps that run through it.
constexpr int64_t kInlineWork = 1 << 16;

// The threads a pass of `work` elements runs on: 1 when it runs inline, else
// the op's intra-op thread count (for tilings that depend on it).
inline int64_t ShardThreads(OpKernelContext* ctx, int64_t work) {
  return work <= kInlineWork ? 1 : ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
}

// Runs run(begin, end) over [0, units), a pass of `work` elements in all
// (kInlineWork decides whether the pool is used), each unit costing about
// `cycles_per_unit` cycles (tensorflow::Shard's cost model, which decides
// how many threads and how the units are split). Units must be independent.
template <typename Run>
void ShardWork(OpKernelContext* ctx, int64_t work, int64_t units, int64_t cycles_per_unit,
               Run run) {
  if (units <= 0) return;
  if (units == 1 || work <= kInlineWork) {
    run(0, units);
    return;
  }
  const auto& workers = *ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers.num_threads, workers.workers, units, cycles_per_unit, run);
}

// -------------------------------------------------------- device set-up --

// DeviceSetup<Device>, called after a neuron op's inputs are validated and
// before its kernels: Prepare (on the GPU: can the kernels run on this
// device?) and Params (decay and threshold, checked in host memory, into
// args' decay and threshold pointers where the kernels read them: on the GPU
// a copy in `device_params`, which must outlive the kernels' launch). An
// op's Launch<Device, T> derives from it and adds its kernels.
template <typename Device>
struct DeviceSetup;

template <>
struct DeviceSetup<CPUDevice> {
  static Status Prepare(OpKernelContext*) { return Status(); }
  template <typename Args>
  static Status Params(OpKernelContext*, const Tensor& decay, const Tensor& threshold, Tensor*,
                       Args* args) {
    args->decay = decay.flat<float>().data();
    args->threshold = threshold.flat<float>().data();
    return Status();
  }
};

#if GOOGLE_CUDA
// The op's CUDA stream (a cudaStream_t), for the launchers of lif_kernels.h.
inline void* GpuStream(OpKernelContext* ctx) {
  return ctx->op_device_context()->stream()->platform_specific_handle().stream;
}

// Whether the kernels can run on the op's GPU (TensorFlow makes it the
// current device while the kernel computes): checked on first use of each
// device (cudaFuncGetAttributes: no image for the device's architecture, a
// driver too old for the runtime, ...). The error names the compute
// capability, the architectures built and the rebuild command.
inline Status CheckDeviceOnce(OpKernelContext* ctx) {
  constexpr int kMaxDevices = 64;
  static std::atomic<bool> device_usable[kMaxDevices];
  const int id = ctx->device()->parsed_name().id;
  const bool cached = id >= 0 && id < kMaxDevices;
  if (cached && device_usable[id].load(std::memory_order_relaxed)) return Status();
  int device = -1, major = 0, minor = 0;
  const LifCudaStatus status = lif_cuda_check_image(&device, &major, &minor);
  if (!status.ok()) {
    return absl::FailedPreconditionError(describe_unusable_device(status, device, major, minor));
  }
  if (cached) device_usable[id].store(true, std::memory_order_relaxed);
  return Status();
}

// decay and threshold live in host memory (HostMemory in the registration):
// checked there as on the CPU, then copied to the device for the kernels.
inline Status UploadParams(OpKernelContext* ctx, const Tensor& decay, const Tensor& threshold,
                           Tensor* device_params, const float** device_decay,
                           const float** device_threshold) {
  const int64_t nd = decay.NumElements(), nt = threshold.NumElements();
  TF_RETURN_IF_ERROR(
      ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({nd + nt}), device_params));
  float* dst = device_params->flat<float>().data();
  const LifCudaStatus status = lif_cuda_upload_params(
      decay.flat<float>().data(), nd, threshold.flat<float>().data(), nt, dst, GpuStream(ctx));
  if (!status.ok()) {
    return absl::InternalError(describe_cuda_failure(status, "decay and threshold", 0, 0, nd));
  }
  *device_decay = dst;
  *device_threshold = dst + nd;
  return Status();
}

template <>
struct DeviceSetup<GPUDevice> {
  static Status Prepare(OpKernelContext* ctx) { return CheckDeviceOnce(ctx); }
  template <typename Args>
  static Status Params(OpKernelContext* ctx, const Tensor& decay, const Tensor& threshold,
                       Tensor* device_params, Args* args) {
    return UploadParams(ctx, decay, threshold, device_params, &args->decay, &args->threshold);
  }
};
#endif  // GOOGLE_CUDA

}  // namespace fused_lif

#endif  // FUSED_LIF_OP_HELPERS_H_
