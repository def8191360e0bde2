// TensorFlow registration of the fused LIF ops (FusedLif>LifForward and
// FusedLif>LifBackward): op schemas, shape functions, the kernels for each
// device, and the CUDA device check that fused_lif.ops calls. Validation,
// sharding and the GPU upload of decay and threshold are op_helpers.h's; the
// loops are lif_cpu.h's and lif_cuda_threads.h's (launched by lif_cuda.cu),
// the math lif.h's.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstring>
#include <string>

#include "lif_cpu.h"
#include "lif_kernels.h"
#include "lif_options.h"
#include "op_helpers.h"

namespace fused_lif {
namespace {

// ---------------------------------------------------------------- schemas --

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

// ----------------------------------------------------------------- launch --

// Launch<Device, T>, called after the inputs are validated: DeviceSetup's
// Prepare and Params (op_helpers.h), then Forward and Backward.
template <typename Device, typename T>
struct Launch;

// The tiling of a scan for the threads it will run on.
template <typename Args>
LifCpuTiling Tiling(OpKernelContext* ctx, const Args& args) {
  return lif_cpu_tiling(args, ShardThreads(ctx, args.batch * args.time * args.neurons));
}

template <typename T>
struct Launch<CPUDevice, T> : DeviceSetup<CPUDevice> {
  static void Forward(OpKernelContext* ctx, const LifForwardArgs& args) {
    const LifCpuTiling tiling = Tiling(ctx, args);
    ShardWork(ctx, args.batch * args.time * args.neurons, tiling.count,
              lif_cpu_tile_cost(args, tiling), [&](int64_t begin, int64_t end) {
                lif_forward_cpu<T>(args, tiling, begin, end);
              });
  }
  static void Backward(OpKernelContext* ctx, const LifBackwardArgs& args) {
    const LifCpuTiling tiling = Tiling(ctx, args);
    ShardWork(ctx, args.batch * args.time * args.neurons, tiling.count,
              lif_cpu_tile_cost(args, tiling),
              [&](int64_t begin, int64_t end) { lif_backward_cpu<T>(args, tiling, begin, end); });
    LifReducePartials partials;
    ShardWork(ctx, args.batch * args.neurons, lif_cpu_reduce_units(args),
              lif_cpu_reduce_unit_cost(args), [&](int64_t begin, int64_t end) {
                lif_backward_reduce_cpu<T>(args, partials, begin, end);
              });
    lif_backward_reduce_finish_cpu<T>(args, partials);
  }
};

#if GOOGLE_CUDA
template <typename T>
struct Launch<GPUDevice, T> : DeviceSetup<GPUDevice> {
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
    LifForwardArgs a;
    OP_REQUIRES_OK(ctx, CheckNeuronInputs({{"currents", currents}}, bias, decay, threshold,
                                          {{"initial_membrane", initial}}, &a));

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
    LifBackwardArgs a;
    OP_REQUIRES_OK(ctx, CheckNeuronInputs(
                            {{"pre_reset_membrane", pre_reset}, {"grad_spikes", grad_spikes}},
                            bias, decay, threshold,
                            {{"grad_final_membrane", grad_final}, {"initial_membrane", initial}},
                            &a));
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
