// TensorFlow registration of the fused LIF ops: op schemas, shape functions,
// input validation (once, at entry) and the kernels for each device. The
// loops live in lif_cpu.h and lif_cuda.cu, the math in lif.h.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lif_cpu.h"
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
namespace {

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
// Device tags for the kernels below.
struct CPUDevice {};
struct GPUDevice {};

using Status = absl::Status;

template <typename... Args>
Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// ---------------------------------------------------------------- schemas --

// A per-neuron parameter: a scalar, or a vector of `neurons`.
Status ParamShape(InferenceContext* c, int input, DimensionHandle neurons) {
  ShapeHandle shape;
  TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(input), 1, &shape));
  if (c->RankKnown(shape) && c->Rank(shape) == 1) {
    DimensionHandle unused;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(shape, 0), neurons, &unused));
  }
  return Status();
}

// [batch, time, neurons] currents (or gradients) and [batch, neurons] state.
Status SequenceShapes(InferenceContext* c, int sequence, int state, ShapeHandle* seq,
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

#define FUSED_LIF_ATTRS                                                            \
  Attr("T: {float, half, bfloat16}")                                               \
      .Attr("alpha: float = 10.0")                                                 \
      .Attr(attr_spec("surrogate", kSurrogateNames))                               \
      .Attr(attr_spec("reset", kResetNames))                                       \
      .Attr("detach_reset: bool = false")                                          \
      .Attr("param_grads: bool = true")

REGISTER_OP("FusedLif>LifForward")
    .Input("currents: T")              // [batch, time, neurons]
    .Input("bias: T")                  // [neurons] or []
    .Input("decay: float")             // [neurons] or []: 1 - 1/tau
    .Input("threshold: float")         // [neurons] or []
    .Input("initial_membrane: float")  // [batch, neurons]: v[-1]
    .Output("spikes: T")               // [batch, time, neurons]: s[t]
    .Output("pre_reset_membrane: float")  // [batch, time, neurons]: u[t]
    .Output("final_membrane: float")   // [batch, neurons]: v[T-1]
    .FUSED_LIF_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle seq, state;
      TF_RETURN_IF_ERROR(SequenceShapes(c, 0, 4, &seq, &state));
      for (int param : {1, 2, 3}) TF_RETURN_IF_ERROR(ParamShape(c, param, c->Dim(seq, 2)));
      c->set_output(0, seq);
      c->set_output(1, seq);
      c->set_output(2, state);
      return Status();
    })
    .Doc("Leaky integrate-and-fire scan over time; see csrc/lif.h for the math.");

REGISTER_OP("FusedLif>LifBackward")
    .Input("grad_spikes: T")               // [batch, time, neurons]
    .Input("grad_final_membrane: float")   // [batch, neurons]
    .Input("pre_reset_membrane: float")    // [batch, time, neurons]: u[t]
    .Input("initial_membrane: float")      // [batch, neurons]
    .Input("bias: T")                      // [neurons] or []: only its shape is used
    .Input("decay: float")                 // [neurons] or []
    .Input("threshold: float")             // [neurons] or []
    .Output("grad_currents: T")            // [batch, time, neurons]
    .Output("grad_bias: T")                // like bias
    .Output("grad_decay: float")           // like decay
    .Output("grad_threshold: float")       // like threshold
    .Output("grad_initial_membrane: float")  // [batch, neurons]
    .FUSED_LIF_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle seq, state, pre_reset;
      TF_RETURN_IF_ERROR(SequenceShapes(c, 0, 1, &seq, &state));
      TF_RETURN_IF_ERROR(c->Merge(seq, c->input(2), &pre_reset));
      TF_RETURN_IF_ERROR(c->Merge(state, c->input(3), &state));
      for (int param : {4, 5, 6}) TF_RETURN_IF_ERROR(ParamShape(c, param, c->Dim(pre_reset, 2)));
      c->set_output(0, pre_reset);
      c->set_output(1, c->input(4));
      c->set_output(2, c->input(5));
      c->set_output(3, c->input(6));
      c->set_output(4, state);
      return Status();
    })
    .Doc("Surrogate-gradient backward of FusedLif>LifForward through time.");

// ------------------------------------------------------------- validation --

std::string ShapeString(const Tensor& t) { return t.shape().DebugString(); }

// Attributes shared by both ops, checked when the kernel is built.
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
Status CheckParam(const char* name, const Tensor& t, int64_t neurons, int64_t* stride) {
  const bool scalar = t.dims() == 0;
  if (!scalar && !(t.dims() == 1 && t.dim_size(0) == neurons)) {
    return InvalidArgument(name, " must be a scalar or a vector of one value per neuron [",
                           neurons, "], got shape ", ShapeString(t));
  }
  *stride = scalar ? 0 : 1;
  return Status();
}

// Values of decay (1 - 1/tau) and threshold; host memory only.
Status CheckParamValues(const Tensor& decay, const Tensor& threshold) {
  const std::string error = check_param_values(decay.flat<float>().data(), decay.NumElements(),
                                               threshold.flat<float>().data(),
                                               threshold.NumElements());
  return error.empty() ? Status() : InvalidArgument(error);
}

Status CheckSequence(const char* name, const Tensor& t) {
  if (t.dims() != 3) {
    return InvalidArgument(name, " must have rank 3 [batch, time, neurons], got shape ",
                           ShapeString(t));
  }
  return Status();
}

Status CheckState(const char* name, const Tensor& t, int64_t batch, int64_t neurons) {
  if (t.dims() != 2 || t.dim_size(0) != batch || t.dim_size(1) != neurons) {
    return InvalidArgument(name, " must have shape [batch, neurons] = [", batch, ", ", neurons,
                           "], got shape ", ShapeString(t));
  }
  return Status();
}

// ----------------------------------------------------------------- launch --

template <typename T> constexpr DType kDType = DType::kFloat32;
template <> constexpr DType kDType<Eigen::half> = DType::kFloat16;
template <> constexpr DType kDType<Eigen::bfloat16> = DType::kBFloat16;

template <typename Device, typename T>
struct Launch;

// Below this many elements a scan (and below this many columns the parameter
// gradients' sums) runs on the calling thread: handing tiles to the pool
// costs more than it saves (measured: 0.26 vs 0.43 ms at 32x20x10).
constexpr int64_t kInlineElements = 1 << 16;

// Runs run(begin, end) over [0, units), each unit costing about `cost`
// cycles, on TensorFlow's intra-op threads (or inline when `elements` is small).
template <typename Run>
void RunUnits(OpKernelContext* ctx, int64_t elements, int64_t units, int64_t cost, Run run) {
  if (elements <= kInlineElements) {
    run(0, units);
    return;
  }
  const auto& workers = *ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers.num_threads, workers.workers, units, cost, run);
}

// The tiling of a scan for this op's threads.
template <typename Args>
LifCpuTiling Tiling(OpKernelContext* ctx, const Args& args) {
  const int64_t elements = args.batch * args.time * args.neurons;
  return lif_cpu_tiling(args, elements <= kInlineElements
                                  ? 1 : ctx->device()->tensorflow_cpu_worker_threads()->num_threads);
}

// Launch<Device, T>, called after the inputs are validated: Prepare (on
// the GPU: can the kernels run on this device?), Params (decay and
// threshold, checked in host memory, where the kernels read them from),
// Forward and Backward.
template <typename T>
struct Launch<CPUDevice, T> {
  static Status Prepare(OpKernelContext*) { return Status(); }
  template <typename Args>
  static Status Params(OpKernelContext*, const Tensor& decay, const Tensor& threshold, Tensor*,
                       Args* args) {
    args->decay = decay.flat<float>().data();
    args->threshold = threshold.flat<float>().data();
    return Status();
  }
  static void Forward(OpKernelContext* ctx, const LifForwardArgs& args) {
    const LifCpuTiling tiling = Tiling(ctx, args);
    RunUnits(ctx, args.batch * args.time * args.neurons, tiling.count,
             lif_cpu_tile_cost(args, tiling), [&](int64_t begin, int64_t end) {
               lif_forward_cpu<T>(args, tiling, begin, end);
             });
  }
  static void Backward(OpKernelContext* ctx, const LifBackwardArgs& args) {
    const int64_t elements = args.batch * args.time * args.neurons;
    const LifCpuTiling tiling = Tiling(ctx, args);
    RunUnits(ctx, elements, tiling.count, lif_cpu_tile_cost(args, tiling),
             [&](int64_t begin, int64_t end) { lif_backward_cpu<T>(args, tiling, begin, end); });
    LifReducePartials partials;
    RunUnits(ctx, args.batch * args.neurons, lif_cpu_reduce_units(args),
             lif_cpu_reduce_unit_cost(args), [&](int64_t begin, int64_t end) {
               lif_backward_reduce_cpu<T>(args, partials, begin, end);
             });
    lif_backward_reduce_finish_cpu<T>(args, partials);
  }
};

#if GOOGLE_CUDA
void* GpuStream(OpKernelContext* ctx) {
  return ctx->op_device_context()->stream()->platform_specific_handle().stream;
}

// Whether the kernels can run on the op's GPU (TensorFlow makes it the
// current device while the kernel computes): checked on first use of each
// device (cudaFuncGetAttributes: no image for the device's architecture, a
// driver too old for the runtime, ...). The error names the compute
// capability, the architectures built and the rebuild command.
constexpr int kMaxDevices = 64;
std::atomic<bool> device_usable[kMaxDevices];

Status CheckDeviceOnce(OpKernelContext* ctx) {
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
Status UploadParams(OpKernelContext* ctx, const Tensor& decay, const Tensor& threshold,
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

template <typename T>
struct Launch<GPUDevice, T> {
  static Status Prepare(OpKernelContext* ctx) { return CheckDeviceOnce(ctx); }
  template <typename Args>
  static Status Params(OpKernelContext* ctx, const Tensor& decay, const Tensor& threshold,
                       Tensor* device_params, Args* args) {
    return UploadParams(ctx, decay, threshold, device_params, &args->decay, &args->threshold);
  }
  static void Forward(OpKernelContext* ctx, const LifForwardArgs& args) {
    const LifCudaStatus status = lif_forward_cuda(args, kDType<T>, GpuStream(ctx));
    OP_REQUIRES(ctx, status.ok(),
                absl::InternalError(describe_cuda_failure(status, "currents", args.batch,
                                                          args.time, args.neurons)));
  }
  static void Backward(OpKernelContext* ctx, const LifBackwardArgs& args) {
    const LifCudaStatus status = lif_backward_cuda(args, kDType<T>, GpuStream(ctx));
    OP_REQUIRES(ctx, status.ok(),
                absl::InternalError(describe_cuda_failure(status, "pre_reset_membrane", args.batch,
                                                          args.time, args.neurons)));
  }
};
#endif  // GOOGLE_CUDA

// ---------------------------------------------------------------- kernels --

template <typename Device, typename T>
class LifForwardOp : public OpKernel {
 public:
  explicit LifForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& currents = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    const Tensor& decay = ctx->input(2);
    const Tensor& threshold = ctx->input(3);
    const Tensor& initial = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckSequence("currents", currents));
    LifForwardArgs a;
    a.batch = currents.dim_size(0);
    a.time = currents.dim_size(1);
    a.neurons = currents.dim_size(2);
    OP_REQUIRES_OK(ctx, CheckParam("bias", bias, a.neurons, &a.bias_stride));
    OP_REQUIRES_OK(ctx, CheckParam("decay (1 - 1/tau)", decay, a.neurons, &a.decay_stride));
    OP_REQUIRES_OK(ctx, CheckParam("threshold", threshold, a.neurons, &a.threshold_stride));
    OP_REQUIRES_OK(ctx, CheckState("initial_membrane", initial, a.batch, a.neurons));
    OP_REQUIRES_OK(ctx, CheckParamValues(decay, threshold));

    Tensor *spikes, *pre_reset, *final_membrane;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, currents.shape(), &spikes));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, currents.shape(), &pre_reset));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, initial.shape(), &final_membrane));
    a.currents = currents.flat<T>().data();
    a.bias = bias.flat<T>().data();
    a.initial_membrane = initial.flat<float>().data();
    a.reset = attrs_.reset;
    a.spikes = spikes->flat<T>().data();
    a.pre_reset_membrane = pre_reset->flat<float>().data();
    a.final_membrane = final_membrane->flat<float>().data();
    if (a.batch * a.neurons == 0) return;
    OP_REQUIRES_OK(ctx, Launch<Device, T>::Prepare(ctx));
    Tensor device_params;
    OP_REQUIRES_OK(ctx, Launch<Device, T>::Params(ctx, decay, threshold, &device_params, &a));
    Launch<Device, T>::Forward(ctx, a);
  }

 private:
  LifAttrs attrs_;
};

template <typename Device, typename T>
class LifBackwardOp : public OpKernel {
 public:
  explicit LifBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_spikes = ctx->input(0);
    const Tensor& grad_final = ctx->input(1);
    const Tensor& pre_reset = ctx->input(2);
    const Tensor& initial = ctx->input(3);
    const Tensor& bias = ctx->input(4);
    const Tensor& decay = ctx->input(5);
    const Tensor& threshold = ctx->input(6);
    OP_REQUIRES_OK(ctx, CheckSequence("pre_reset_membrane", pre_reset));
    OP_REQUIRES(ctx, grad_spikes.shape() == pre_reset.shape(),
                InvalidArgument("grad_spikes must have the shape of pre_reset_membrane ",
                                ShapeString(pre_reset), ", got ", ShapeString(grad_spikes)));
    LifBackwardArgs a;
    a.batch = pre_reset.dim_size(0);
    a.time = pre_reset.dim_size(1);
    a.neurons = pre_reset.dim_size(2);
    OP_REQUIRES_OK(ctx, CheckState("grad_final_membrane", grad_final, a.batch, a.neurons));
    OP_REQUIRES_OK(ctx, CheckState("initial_membrane", initial, a.batch, a.neurons));
    OP_REQUIRES_OK(ctx, CheckParam("bias", bias, a.neurons, &a.bias_stride));
    OP_REQUIRES_OK(ctx, CheckParam("decay (1 - 1/tau)", decay, a.neurons, &a.decay_stride));
    OP_REQUIRES_OK(ctx, CheckParam("threshold", threshold, a.neurons, &a.threshold_stride));
    OP_REQUIRES_OK(ctx, CheckParamValues(decay, threshold));
    OP_REQUIRES_OK(ctx, Launch<Device, T>::Prepare(ctx));

    Tensor *grad_currents, *grad_bias, *grad_decay, *grad_threshold, *grad_initial;
    OP_REQUIRES_OK(
        ctx, ctx->forward_input_or_allocate_output({0}, 0, pre_reset.shape(), &grad_currents));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, bias.shape(), &grad_bias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, decay.shape(), &grad_decay));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, threshold.shape(), &grad_threshold));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, initial.shape(), &grad_initial));
    Tensor scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({kScratchRows, a.batch, a.neurons}),
                                           &scratch));
    a.grad_spikes = grad_spikes.flat<T>().data();
    a.grad_final_membrane = grad_final.flat<float>().data();
    a.pre_reset_membrane = pre_reset.flat<float>().data();
    a.initial_membrane = initial.flat<float>().data();
    a.alpha = attrs_.alpha;
    a.surrogate = attrs_.surrogate;
    a.reset = attrs_.reset;
    a.detach_reset = attrs_.detach_reset;
    a.param_grads = attrs_.param_grads;
    a.grad_currents = grad_currents->flat<T>().data();
    a.grad_initial_membrane = grad_initial->flat<float>().data();
    a.grad_bias = grad_bias->flat<T>().data();
    a.grad_decay = grad_decay->flat<float>().data();
    a.grad_threshold = grad_threshold->flat<float>().data();
    a.scratch = scratch.flat<float>().data();
    Tensor device_params;
    OP_REQUIRES_OK(ctx, Launch<Device, T>::Params(ctx, decay, threshold, &device_params, &a));
    Launch<Device, T>::Backward(ctx, a);
  }

 private:
  LifAttrs attrs_;
};

#define REGISTER_LIF_CPU_KERNELS(T)                                                    \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedLif>LifForward").Device(DEVICE_CPU).TypeConstraint<T>("T"),           \
      LifForwardOp<CPUDevice, T>);                                                     \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedLif>LifBackward").Device(DEVICE_CPU).TypeConstraint<T>("T"),          \
      LifBackwardOp<CPUDevice, T>);

REGISTER_LIF_CPU_KERNELS(float)
REGISTER_LIF_CPU_KERNELS(Eigen::half)
REGISTER_LIF_CPU_KERNELS(Eigen::bfloat16)

#if GOOGLE_CUDA
// decay and threshold ([neurons] or [] floats) in host memory: the op checks
// their values as the CPU kernel does, then copies them to the device.
#define REGISTER_LIF_GPU_KERNELS(T)                                                    \
  REGISTER_KERNEL_BUILDER(Name("FusedLif>LifForward")                                 \
                              .Device(DEVICE_GPU)                                      \
                              .TypeConstraint<T>("T")                                  \
                              .HostMemory("decay")                                     \
                              .HostMemory("threshold"),                                \
                          LifForwardOp<GPUDevice, T>);                                 \
  REGISTER_KERNEL_BUILDER(Name("FusedLif>LifBackward")                                \
                              .Device(DEVICE_GPU)                                      \
                              .TypeConstraint<T>("T")                                  \
                              .HostMemory("decay")                                     \
                              .HostMemory("threshold"),                                \
                          LifBackwardOp<GPUDevice, T>);

REGISTER_LIF_GPU_KERNELS(float)
REGISTER_LIF_GPU_KERNELS(Eigen::half)
REGISTER_LIF_GPU_KERNELS(Eigen::bfloat16)
#endif

}  // namespace
}  // namespace fused_lif

#if GOOGLE_CUDA
// For fused_lif.ops (through ctypes), before it chooses the fused op: 0 if
// the kernels can run on CUDA device `device`, else 1 and why (the op's own
// error words) in `message`.
extern "C" __attribute__((visibility("default"))) int fused_lif_cuda_check_device(
    int device, char* message, int size) {
  int major = 0, minor = 0;
  const fused_lif::LifCudaStatus status = fused_lif::lif_cuda_check_image(&device, &major, &minor);
  if (status.ok()) return 0;
  const std::string why = fused_lif::describe_unusable_device(status, device, major, minor);
  if (size > 0) {
    const size_t n = std::min(why.size(), static_cast<size_t>(size - 1));
    std::memcpy(message, why.data(), n);
    message[n] = '\0';
  }
  return 1;
}
#endif  // GOOGLE_CUDA
