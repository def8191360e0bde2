// TensorFlow registration of the fused LIF ops: op schemas, shape functions,
// input validation (once, at entry) and the kernels for each device. The
// loops live in lif_cpu.h and lif_cuda.cu, the math in lif.h.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "lif_cpu.h"
#include "lif_kernels.h"
#include "lif_options.h"
#include "spike_matmul.h"
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

// ============================================================ spike_matmul ==
// output = spikes @ weights for binary spikes (spike_matmul.h): the op, its
// weight gradient and the density probe of LIFLayer(spike_input="auto").
// CPU kernels only: on a GPU TensorFlow places these ops on the CPU.

namespace fused_lif {
namespace {

REGISTER_OP("FusedLif>SpikeMatmul")
    .Input("spikes: T")    // [M, K], every value 0 or 1
    .Input("weights: T")   // [K, N]
    .Output("output: T")   // [M, N]
    .Output("row_ptr: int64")  // [M + 1]: row m's ones are cols[row_ptr[m] .. row_ptr[m + 1])
    .Output("cols: int32")     // [nnz]: their columns, ascending per row
    .Attr("T: {float, half, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle spikes, weights;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &spikes));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &weights));
      DimensionHandle unused, rows_plus_one;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(spikes, 1), c->Dim(weights, 0), &unused));
      TF_RETURN_IF_ERROR(c->Add(c->Dim(spikes, 0), 1, &rows_plus_one));
      c->set_output(0, c->Matrix(c->Dim(spikes, 0), c->Dim(weights, 1)));
      c->set_output(1, c->Vector(rows_plus_one));
      c->set_output(2, c->Vector(c->UnknownDim()));
      return Status();
    })
    .Doc("spikes @ weights for binary spikes, as sums of weights' rows; see csrc/spike_matmul.h.");

REGISTER_OP("FusedLif>SpikeMatmulWeightGrad")
    .Input("grad_output: T")  // [M, N]
    .Input("row_ptr: int64")  // [M + 1], from FusedLif>SpikeMatmul
    .Input("cols: int32")     // [nnz], from FusedLif>SpikeMatmul
    .Input("weights: T")      // [K, N]: only its shape is used
    .Output("grad_weights: T")  // [K, N] = spikesᵀ @ grad_output
    .Attr("T: {float, half, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle grad, weights, unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &grad));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &weights));
      DimensionHandle n;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(grad, 1), c->Dim(weights, 1), &n));
      c->set_output(0, c->Matrix(c->Dim(weights, 0), n));
      return Status();
    })
    .Doc("The weight gradient of FusedLif>SpikeMatmul from its saved row lists.");

REGISTER_OP("FusedLif>SpikeDensity")
    .Input("spikes: T")        // any shape
    .Output("density: float")  // []: the fraction of nonzero values
    .Output("binary: bool")    // []: whether every value is 0 or 1
    .Attr("T: {float, half, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return Status();
    })
    .Doc("One pass over spikes: its density and whether it is binary (spike_input='auto').");

// Below this many multiply-adds a pass runs on the calling thread.
constexpr int64_t kSpikeInlineWork = 1 << 16;
// Rows of the spikes per work item of the index passes (count, fill).
constexpr int64_t kSpikeIndexRows = 64;

template <typename Fn>
void ShardSpikeWork(OpKernelContext* ctx, int64_t items, int64_t cost_per_item, Fn fn) {
  if (items <= 0) return;
  if (items == 1 || items * cost_per_item <= kSpikeInlineWork) {
    fn(0, items);
    return;
  }
  const auto& workers = *ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers.num_threads, workers.workers, items, cost_per_item, fn);
}

// Counts the ones of each row of x [rows, K] into counts [rows] (in
// parallel); returns InvalidArgument naming the first value other than 0 or 1.
template <typename T>
Status CountSpikeRows(OpKernelContext* ctx, const T* x, int64_t rows, int64_t K, int64_t* counts,
                      const char* name) {
  std::atomic<int64_t> first_bad{rows};
  ShardSpikeWork(ctx, ceil_div(rows, kSpikeIndexRows), kSpikeIndexRows * K,
                 [&](int64_t b, int64_t e) {
    const int64_t bad = spike_count_rows_cpu<T>(x, K, b * kSpikeIndexRows,
                                                std::min(rows, e * kSpikeIndexRows), counts);
    if (bad < 0) return;
    int64_t seen = first_bad.load();
    while (bad < seen && !first_bad.compare_exchange_weak(seen, bad)) {
    }
  });
  const int64_t row = first_bad.load();
  if (row == rows) return Status();
  const int64_t col = spike_first_bad_column(x, K, row);
  return InvalidArgument(name, " must be binary (every value 0 or 1), got ",
                         static_cast<float>(x[row * K + col]), " at [", row, ", ", col,
                         "]; use the dense matmul (tf.matmul, or LIFLayer(spike_input=False)) "
                         "for other inputs");
}

template <typename T>
class SpikeMatmulOp : public OpKernel {
 public:
  explicit SpikeMatmulOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& spikes = ctx->input(0);
    const Tensor& weights = ctx->input(1);
    OP_REQUIRES(ctx, spikes.dims() == 2,
                InvalidArgument("spikes must have rank 2 [rows, inputs], got shape ",
                                ShapeString(spikes)));
    OP_REQUIRES(ctx, weights.dims() == 2,
                InvalidArgument("weights must have rank 2 [inputs, outputs], got shape ",
                                ShapeString(weights)));
    OP_REQUIRES(ctx, spikes.dim_size(1) == weights.dim_size(0),
                InvalidArgument("spikes [rows, inputs] and weights [inputs, outputs] must agree "
                                "on inputs, got spikes ", ShapeString(spikes), " and weights ",
                                ShapeString(weights)));
    SpikeMatmulArgs a;
    a.rows = spikes.dim_size(0);
    a.inputs = spikes.dim_size(1);
    a.outputs = weights.dim_size(1);
    // Column and (in the weight gradient) row indices are int32.
    OP_REQUIRES(ctx, a.inputs <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("spikes may have at most 2^31 - 1 inputs (columns), got ",
                                a.inputs));
    OP_REQUIRES(ctx, a.rows <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("spikes may have at most 2^31 - 1 rows, got ", a.rows));
    Tensor *output, *row_ptr, *cols;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({a.rows, a.outputs}), &output));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({a.rows + 1}), &row_ptr));
    int64_t* ptr = row_ptr->flat<int64_t>().data();
    ptr[0] = 0;
    const T* x = spikes.flat<T>().data();
    OP_REQUIRES_OK(ctx, CountSpikeRows(ctx, x, a.rows, a.inputs, ptr + 1, "spikes"));
    for (int64_t m = 0; m < a.rows; ++m) ptr[m + 1] += ptr[m];
    const int64_t nnz = ptr[a.rows];
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({nnz}), &cols));
    a.row_ptr = ptr;
    a.cols = cols->flat<int32_t>().data();
    a.output = output->flat<T>().data();
    int32_t* cols_out = cols->flat<int32_t>().data();
    ShardSpikeWork(ctx, ceil_div(a.rows, kSpikeIndexRows), kSpikeIndexRows * a.inputs,
                   [&](int64_t b, int64_t e) {
                     spike_fill_cols_cpu<T>(x, a.inputs, ptr, b * kSpikeIndexRows,
                                            std::min(a.rows, e * kSpikeIndexRows), cols_out);
                   });
    if (a.outputs == 0) return;
    Tensor packed;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({a.inputs * a.outputs}), &packed));
    const T* w = weights.flat<T>().data();
    float* packed_weights = packed.flat<float>().data();
    ShardSpikeWork(ctx, a.inputs, a.outputs, [&](int64_t b, int64_t e) {
      spike_pack_cpu<T>(w, a.inputs, a.outputs, b, e, packed_weights);
    });
    a.packed_weights = packed_weights;
    // Cost of an item: its rows' ones times the tile's width.
    const int64_t per_item =
        std::max<int64_t>(1, nnz / std::max<int64_t>(1, spike_row_blocks(a.rows))) *
        std::min(a.outputs, kSpikeColumnTile);
    ShardSpikeWork(ctx, spike_forward_items(a), per_item,
                   [&a](int64_t b, int64_t e) { spike_matmul_forward_cpu<T>(a, b, e); });
  }
};

template <typename T>
class SpikeMatmulWeightGradOp : public OpKernel {
 public:
  explicit SpikeMatmulWeightGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& row_ptr = ctx->input(1);
    const Tensor& cols = ctx->input(2);
    const Tensor& weights = ctx->input(3);
    OP_REQUIRES(ctx, weights.dims() == 2,
                InvalidArgument("weights must have rank 2 [inputs, outputs], got shape ",
                                ShapeString(weights)));
    OP_REQUIRES(ctx, grad.dims() == 2 && grad.dim_size(1) == weights.dim_size(1),
                InvalidArgument("grad_output must have shape [rows, ", weights.dim_size(1),
                                "], got shape ", ShapeString(grad)));
    SpikeMatmulArgs a;
    a.rows = grad.dim_size(0);
    a.inputs = weights.dim_size(0);
    a.outputs = weights.dim_size(1);
    OP_REQUIRES(ctx, a.rows <= std::numeric_limits<int32_t>::max(),
                InvalidArgument("grad_output may have at most 2^31 - 1 rows, got ", a.rows));
    OP_REQUIRES(ctx, row_ptr.dims() == 1 && row_ptr.dim_size(0) == a.rows + 1,
                InvalidArgument("row_ptr must have shape [rows + 1] = [", a.rows + 1,
                                "], got shape ", ShapeString(row_ptr)));
    OP_REQUIRES(ctx, cols.dims() == 1,
                InvalidArgument("cols must have rank 1, got shape ", ShapeString(cols)));
    const int64_t* ptr = row_ptr.flat<int64_t>().data();
    const int32_t* col = cols.flat<int32_t>().data();
    const int64_t nnz = cols.dim_size(0);
    // The row lists come from FusedLif>SpikeMatmul; checked all the same
    // (O(rows + nnz)), since a bad index would write out of bounds.
    bool ok = ptr[0] == 0 && ptr[a.rows] == nnz;
    for (int64_t m = 0; ok && m < a.rows; ++m) ok = ptr[m] <= ptr[m + 1];
    for (int64_t p = 0; ok && p < nnz; ++p) ok = col[p] >= 0 && col[p] < a.inputs;
    OP_REQUIRES(ctx, ok,
                InvalidArgument("row_ptr and cols are not the row lists of a [", a.rows, ", ",
                                a.inputs, "] spike matrix (pass the outputs of "
                                "FusedLif>SpikeMatmul)"));
    Tensor* grad_weights;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, weights.shape(), &grad_weights));
    const int64_t KN = a.inputs * a.outputs;
    if (KN == 0) return;
    const int64_t blocks = spike_row_blocks(a.rows);
    Tensor packed, grad_float, block_ptr, block_rows;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({KN}), &packed));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT64,
                                           TensorShape({blocks * a.inputs + 1}), &block_ptr));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({nnz}), &block_rows));
    if (std::is_same<T, float>::value) {
      a.grad_output = reinterpret_cast<const float*>(grad.flat<T>().data());
    } else {  // summed in float: dOut converted once
      const int64_t MN = a.rows * a.outputs;
      OP_REQUIRES_OK(ctx,
                     ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({MN}), &grad_float));
      const T* src = grad.flat<T>().data();
      float* dst = grad_float.flat<float>().data();
      constexpr int64_t kChunk = 1 << 14;
      ShardSpikeWork(ctx, ceil_div(MN, kChunk), kChunk, [&](int64_t b, int64_t e) {
        spike_to_float_cpu<T>(src, b * kChunk, std::min(MN, e * kChunk), dst);
      });
      a.grad_output = dst;
    }
    a.row_ptr = ptr;
    a.cols = col;
    a.packed_grad_weights = packed.flat<float>().data();
    a.block_ptr = block_ptr.flat<int64_t>().data();
    a.block_rows = block_rows.flat<int32_t>().data();
    const int64_t per_block = std::max<int64_t>(1, nnz / std::max<int64_t>(1, blocks)) + a.inputs;
    ShardSpikeWork(ctx, blocks, per_block,
                   [&a](int64_t b, int64_t e) { spike_weight_grad_count_cpu(a, b, e); });
    spike_weight_grad_prefix(a);
    ShardSpikeWork(ctx, blocks, per_block,
                   [&a](int64_t b, int64_t e) { spike_weight_grad_fill_cpu(a, b, e); });
    const int64_t threads = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
    const int64_t items = spike_weight_grad_items(a, threads);
    const int64_t per_item = std::max<int64_t>(1, nnz * std::min(a.outputs, kSpikeColumnTile) /
                                                      spike_weight_grad_chunks(a, threads));
    ShardSpikeWork(ctx, items, per_item, [&a, threads](int64_t b, int64_t e) {
      spike_weight_grad_cpu(a, threads, b, e);
    });
    T* out = grad_weights->flat<T>().data();
    ShardSpikeWork(ctx, a.inputs, a.outputs, [&](int64_t b, int64_t e) {
      spike_unpack_cpu<T>(a.packed_grad_weights, a.inputs, a.outputs, b, e, out);
    });
  }
};

template <typename T>
class SpikeDensityOp : public OpKernel {
 public:
  explicit SpikeDensityOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& spikes = ctx->input(0);
    const int64_t size = spikes.NumElements();
    const int64_t K = spikes.dims() > 0 ? spikes.dim_size(spikes.dims() - 1) : 1;
    const int64_t rows = K > 0 ? size / K : 0;
    Tensor *density, *binary, counts;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &density));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &binary));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT64, TensorShape({rows}), &counts));
    int64_t* c = counts.flat<int64_t>().data();
    const Status status = CountSpikeRows(ctx, spikes.flat<T>().data(), rows, K, c, "spikes");
    int64_t ones = 0;
    for (int64_t m = 0; m < rows; ++m) ones += c[m];
    binary->scalar<bool>()() = status.ok();
    density->scalar<float>()() =
        size == 0 ? 0.0f : static_cast<float>(static_cast<double>(ones) / size);
  }
};

#define REGISTER_SPIKE_KERNELS(T)                                                            \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("FusedLif>SpikeMatmul").Device(DEVICE_CPU).TypeConstraint<T>("T"),                \
      SpikeMatmulOp<T>);                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("FusedLif>SpikeMatmulWeightGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),      \
      SpikeMatmulWeightGradOp<T>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("FusedLif>SpikeDensity").Device(DEVICE_CPU).TypeConstraint<T>("T"),               \
      SpikeDensityOp<T>);

REGISTER_SPIKE_KERNELS(float)
REGISTER_SPIKE_KERNELS(Eigen::half)
REGISTER_SPIKE_KERNELS(Eigen::bfloat16)

}  // namespace
}  // namespace fused_lif
