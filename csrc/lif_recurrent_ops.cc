// TensorFlow registration of the fused recurrent LIF ops: schemas, shape
// functions, input validation (once, at entry) and the kernels for each
// device. The loops live in lif_recurrent_cpu.h and
// lif_recurrent_cuda_threads.h, the math in lif.h ("Recurrent LIF"); the
// checks, sharding and device set-up shared with the LIF ops in op_helpers.h.
#include <algorithm>
#include <cstdint>

#include "lif_cpu.h"
#include "lif_recurrent_cpu.h"
#include "lif_recurrent_kernels.h"
#include "op_helpers.h"

namespace fused_lif {
namespace {

// ---------------------------------------------------------------- schemas --

// recurrent_kernel [neurons, neurons].
Status RecurrentKernelShape(InferenceContext* c, int input, DimensionHandle neurons) {
  ShapeHandle kernel;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 2, &kernel));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(kernel, 0), neurons, &unused));
  return c->Merge(c->Dim(kernel, 1), neurons, &unused);
}

REGISTER_OP("FusedLif>RecurrentLifForward")
    .Input("currents: T")                 // [batch, time, neurons]: x[t] @ w
    .Input("bias: T")                     // [neurons] or []
    .Input("recurrent_kernel: float")     // [neurons, neurons]: R, rows presynaptic
    .Input("decay: float")                // [neurons] or []: 1 - 1/tau
    .Input("threshold: float")            // [neurons] or []
    .Input("initial_membrane: float")     // [batch, neurons]: v[-1]
    .Input("initial_spikes: float")       // [batch, neurons]: s[-1], every value 0 or 1
    .Output("spikes: T")                  // [batch, time, neurons]: s[t]
    .Output("pre_reset_membrane: float")  // [batch, time, neurons]: u[t]
    .Output("final_membrane: float")      // [batch, neurons]: v[T-1]
    .FUSED_LIF_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle seq, state;
      TF_RETURN_IF_ERROR(SequenceShapes(c, 0, 5, &seq, &state));
      TF_RETURN_IF_ERROR(c->Merge(state, c->input(6), &state));
      TF_RETURN_IF_ERROR(c->ReplaceDim(seq, 0, c->Dim(state, 0), &seq));
      TF_RETURN_IF_ERROR(c->ReplaceDim(seq, 2, c->Dim(state, 1), &seq));
      for (int param : {1, 3, 4}) TF_RETURN_IF_ERROR(ParamShape(c, param, c->Dim(seq, 2)));
      TF_RETURN_IF_ERROR(RecurrentKernelShape(c, 2, c->Dim(seq, 2)));
      c->set_output(0, seq);
      c->set_output(1, seq);
      c->set_output(2, state);
      return Status();
    })
    .Doc("Recurrent leaky integrate-and-fire scan: I[t] = currents[t] + bias + s[t-1] @ "
         "recurrent_kernel; see csrc/lif.h for the math.");

REGISTER_OP("FusedLif>RecurrentLifBackward")
    .Input("grad_spikes: T")                // [batch, time, neurons]
    .Input("grad_final_membrane: float")    // [batch, neurons]
    .Input("pre_reset_membrane: float")     // [batch, time, neurons]: u[t]
    .Input("initial_membrane: float")       // [batch, neurons]
    .Input("recurrent_kernel: float")       // [neurons, neurons]
    .Input("bias: T")                       // [neurons] or []: only its shape is used
    .Input("decay: float")                  // [neurons] or []
    .Input("threshold: float")              // [neurons] or []
    .Output("grad_currents: T")             // [batch, time, neurons]: dL/dI[t]
    .Output("grad_bias: T")                 // like bias
    .Output("grad_decay: float")            // like decay
    .Output("grad_threshold: float")        // like threshold
    .Output("grad_initial_membrane: float")  // [batch, neurons]
    .Output("grad_initial_spikes: float")   // [batch, neurons]
    .FUSED_LIF_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle seq, state, pre_reset;
      TF_RETURN_IF_ERROR(SequenceShapes(c, 0, 1, &seq, &state));
      TF_RETURN_IF_ERROR(c->Merge(seq, c->input(2), &pre_reset));
      TF_RETURN_IF_ERROR(c->Merge(state, c->input(3), &state));
      for (int param : {5, 6, 7}) TF_RETURN_IF_ERROR(ParamShape(c, param, c->Dim(pre_reset, 2)));
      TF_RETURN_IF_ERROR(RecurrentKernelShape(c, 4, c->Dim(pre_reset, 2)));
      c->set_output(0, pre_reset);
      c->set_output(1, c->input(5));
      c->set_output(2, c->input(6));
      c->set_output(3, c->input(7));
      c->set_output(4, state);
      c->set_output(5, state);
      return Status();
    })
    .Doc("Backward of FusedLif>RecurrentLifForward through time (all but d recurrent_kernel, "
         "which is Σ_t s[t-1]ᵀ grad_currents[t]).");

// ------------------------------------------------------------- validation --

Status CheckRecurrentKernel(const Tensor& kernel, int64_t neurons) {
  if (kernel.dims() != 2 || kernel.dim_size(0) != neurons || kernel.dim_size(1) != neurons) {
    return InvalidArgument("recurrent_kernel must have shape [neurons, neurons] = [", neurons,
                           ", ", neurons, "], got shape ", ShapeString(kernel));
  }
  return Status();
}

// initial_spikes [batch, neurons] (host memory): every value 0 or 1.
Status CheckInitialSpikes(const Tensor& spikes, int64_t neurons) {
  const std::string error =
      check_initial_spikes(spikes.flat<float>().data(), spikes.NumElements(), neurons);
  return error.empty() ? Status() : InvalidArgument(error);
}

// ----------------------------------------------------------------- launch --

template <typename Device, typename T>
struct RecurrentLaunch;

// A pass's work in elements for the sharding threshold: the forward reads and
// writes three values per element and adds about N/8 weights (spikes at
// 10%); the backward does N multiply-adds per element.
int64_t ForwardWork(const LifForwardArgs& a) { return a.batch * a.time * a.neurons * (3 + a.neurons / 8); }
int64_t BackwardWork(const LifBackwardArgs& a) { return a.batch * (a.time + 1) * a.neurons * (3 + a.neurons); }

// RecurrentLaunch<Device, T>, after the inputs are validated: InitialSpikes
// (host memory, checked there, where the kernels read them: on the GPU a copy
// in `device_copy`), Forward and Backward.
template <typename T>
struct RecurrentLaunch<CPUDevice, T> : DeviceSetup<CPUDevice> {
  static Status InitialSpikes(OpKernelContext*, const Tensor& spikes, Tensor*,
                              const float** out) {
    *out = spikes.flat<float>().data();
    return Status();
  }
  static Status Forward(OpKernelContext* ctx, const RecurrentForwardArgs& a) {
    ShardWork(ctx, ForwardWork(a.lif), recurrent_cpu_forward_units(a),
              recurrent_cpu_forward_unit_cost(a),
              [&](int64_t begin, int64_t end) { recurrent_lif_forward_cpu<T>(a, begin, end); });
    return Status();
  }
  static Status Backward(OpKernelContext* ctx, RecurrentBackwardArgs& a) {
    const int64_t N = a.lif.neurons;
    Tensor transposed;
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({N * N}), &transposed));
    a.recurrent_kernel_t = transposed.flat<float>().data();
    ShardWork(ctx, N * N, recurrent_cpu_transpose_units(a), 4 * kTransposeRows * N,
              [&](int64_t begin, int64_t end) { recurrent_transpose_cpu(a, begin, end); });
    ShardWork(ctx, BackwardWork(a.lif), recurrent_cpu_backward_units(a),
              recurrent_cpu_backward_unit_cost(a),
              [&](int64_t begin, int64_t end) { recurrent_lif_backward_cpu<T>(a, begin, end); });
    LifReducePartials partials;
    ShardWork(ctx, a.lif.batch * N, lif_cpu_reduce_units(a.lif), lif_cpu_reduce_unit_cost(a.lif),
              [&](int64_t begin, int64_t end) {
                lif_backward_reduce_cpu<T>(a.lif, partials, begin, end);
              });
    lif_backward_reduce_finish_cpu<T>(a.lif, partials);
    return Status();
  }
};

#if GOOGLE_CUDA
template <typename T>
struct RecurrentLaunch<GPUDevice, T> : DeviceSetup<GPUDevice> {
  static Status InitialSpikes(OpKernelContext* ctx, const Tensor& spikes, Tensor* device_copy,
                              const float** out) {
    const int64_t count = spikes.NumElements();
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({count}), device_copy));
    float* dst = device_copy->flat<float>().data();
    const LifCudaStatus status =
        lif_cuda_upload_params(spikes.flat<float>().data(), count, nullptr, 0, dst, GpuStream(ctx));
    if (!status.ok()) {
      return absl::InternalError(describe_cuda_failure(status, "initial_spikes", 0, 0, count));
    }
    *out = dst;
    return Status();
  }
  static Status Forward(OpKernelContext* ctx, RecurrentForwardArgs& a) {
    Tensor masks;
    const int64_t words = recurrent_global_mask_words(a.lif.batch, a.lif.neurons);
    if (words > 0) {
      TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_INT32, TensorShape({words}), &masks));
      a.global_masks = reinterpret_cast<uint32_t*>(masks.flat<int32_t>().data());
    }
    const LifCudaStatus status = recurrent_lif_forward_cuda(a, kDType<T>, GpuStream(ctx));
    if (!status.ok()) {
      return absl::InternalError(describe_cuda_failure(status, "currents", a.lif.batch,
                                                       a.lif.time, a.lif.neurons));
    }
    return Status();
  }
  static Status Backward(OpKernelContext* ctx, RecurrentBackwardArgs& a) {
    const int64_t N = a.lif.neurons;
    Tensor transposed, grads;
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({N * N}), &transposed));
    a.recurrent_kernel_t = transposed.flat<float>().data();
    const int64_t floats = recurrent_global_grad_floats(a.lif.batch, N);
    if (floats > 0) {
      TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({floats}), &grads));
      a.global_grads = grads.flat<float>().data();
    }
    const LifCudaStatus status = recurrent_lif_backward_cuda(a, kDType<T>, GpuStream(ctx));
    if (!status.ok()) {
      return absl::InternalError(describe_cuda_failure(status, "pre_reset_membrane", a.lif.batch,
                                                       a.lif.time, N));
    }
    return Status();
  }
};
#endif  // GOOGLE_CUDA

// ---------------------------------------------------------------- kernels --

template <typename Device, typename T>
class RecurrentLifForwardOp : public OpKernel {
 public:
  explicit RecurrentLifForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& currents = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    const Tensor& kernel = ctx->input(2);
    const Tensor& decay = ctx->input(3);
    const Tensor& threshold = ctx->input(4);
    const Tensor& initial = ctx->input(5);
    const Tensor& initial_spikes = ctx->input(6);
    RecurrentForwardArgs ra;
    LifForwardArgs& a = ra.lif;
    OP_REQUIRES_OK(ctx, CheckNeuronInputs({{"currents", currents}}, bias, decay, threshold,
                                          {{"initial_membrane", initial},
                                           {"initial_spikes", initial_spikes}},
                                          &a));
    OP_REQUIRES_OK(ctx, CheckRecurrentKernel(kernel, a.neurons));
    OP_REQUIRES_OK(ctx, CheckInitialSpikes(initial_spikes, a.neurons));

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
    ra.recurrent_kernel = kernel.flat<float>().data();
    if (a.batch * a.neurons == 0) return;
    using Launch = RecurrentLaunch<Device, T>;
    OP_REQUIRES_OK(ctx, Launch::Prepare(ctx));
    Tensor device_params, device_spikes;
    OP_REQUIRES_OK(ctx, Launch::Params(ctx, decay, threshold, &device_params, &a));
    OP_REQUIRES_OK(ctx, Launch::InitialSpikes(ctx, initial_spikes, &device_spikes,
                                              &ra.initial_spikes));
    OP_REQUIRES_OK(ctx, Launch::Forward(ctx, ra));
  }

 private:
  LifAttrs attrs_;
};

template <typename Device, typename T>
class RecurrentLifBackwardOp : public OpKernel {
 public:
  explicit RecurrentLifBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_spikes = ctx->input(0);
    const Tensor& grad_final = ctx->input(1);
    const Tensor& pre_reset = ctx->input(2);
    const Tensor& initial = ctx->input(3);
    const Tensor& kernel = ctx->input(4);
    const Tensor& bias = ctx->input(5);
    const Tensor& decay = ctx->input(6);
    const Tensor& threshold = ctx->input(7);
    RecurrentBackwardArgs ra;
    LifBackwardArgs& a = ra.lif;
    OP_REQUIRES_OK(ctx, CheckNeuronInputs({{"pre_reset_membrane", pre_reset},
                                           {"grad_spikes", grad_spikes}},
                                          bias, decay, threshold,
                                          {{"grad_final_membrane", grad_final},
                                           {"initial_membrane", initial}},
                                          &a));
    OP_REQUIRES_OK(ctx, CheckRecurrentKernel(kernel, a.neurons));
    using Launch = RecurrentLaunch<Device, T>;
    OP_REQUIRES_OK(ctx, Launch::Prepare(ctx));

    Tensor *grad_currents, *grad_bias, *grad_decay, *grad_threshold, *grad_initial,
        *grad_initial_spikes;
    OP_REQUIRES_OK(
        ctx, ctx->forward_input_or_allocate_output({0}, 0, pre_reset.shape(), &grad_currents));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, bias.shape(), &grad_bias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, decay.shape(), &grad_decay));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, threshold.shape(), &grad_threshold));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, initial.shape(), &grad_initial));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, initial.shape(), &grad_initial_spikes));
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
    ra.recurrent_kernel = kernel.flat<float>().data();
    ra.grad_initial_spikes = grad_initial_spikes->flat<float>().data();
    Tensor device_params;
    OP_REQUIRES_OK(ctx, Launch::Params(ctx, decay, threshold, &device_params, &a));
    OP_REQUIRES_OK(ctx, Launch::Backward(ctx, ra));
  }

 private:
  LifAttrs attrs_;
};

#define REGISTER_RECURRENT_CPU_KERNELS(T)                                              \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedLif>RecurrentLifForward").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
      RecurrentLifForwardOp<CPUDevice, T>);                                            \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("FusedLif>RecurrentLifBackward").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      RecurrentLifBackwardOp<CPUDevice, T>);

REGISTER_RECURRENT_CPU_KERNELS(float)
REGISTER_RECURRENT_CPU_KERNELS(Eigen::half)
REGISTER_RECURRENT_CPU_KERNELS(Eigen::bfloat16)

#if GOOGLE_CUDA
// decay, threshold and initial_spikes in host memory: checked there as on the
// CPU, then copied to the device.
#define REGISTER_RECURRENT_GPU_KERNELS(T)                                              \
  REGISTER_KERNEL_BUILDER(Name("FusedLif>RecurrentLifForward")                         \
                              .Device(DEVICE_GPU)                                      \
                              .TypeConstraint<T>("T")                                  \
                              .HostMemory("decay")                                     \
                              .HostMemory("threshold")                                 \
                              .HostMemory("initial_spikes"),                           \
                          RecurrentLifForwardOp<GPUDevice, T>);                        \
  REGISTER_KERNEL_BUILDER(Name("FusedLif>RecurrentLifBackward")                        \
                              .Device(DEVICE_GPU)                                      \
                              .TypeConstraint<T>("T")                                  \
                              .HostMemory("decay")                                     \
                              .HostMemory("threshold"),                                \
                          RecurrentLifBackwardOp<GPUDevice, T>);

REGISTER_RECURRENT_GPU_KERNELS(float)
REGISTER_RECURRENT_GPU_KERNELS(Eigen::half)
REGISTER_RECURRENT_GPU_KERNELS(Eigen::bfloat16)
#endif

}  // namespace
}  // namespace fused_lif
