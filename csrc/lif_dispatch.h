// Runtime options -> template parameters, written once for the CPU loops and
// the CUDA launchers (in the manner of flash-attention's static_switch.h).
//
//   dispatch_forward(args, [&](auto reset) {
//     forward_kernel<T, reset.value>(...);
//   });
//   dispatch_backward(args, [&](auto surrogate, auto reset, auto param_grads,
//                               auto detach_reset) { ... });
//
// Each `auto` argument is a std::integral_constant: `decltype(x)::value` (or
// `x.value`) is a constant expression. Every option combination is one
// instantiation of the callee, with no branch on the option inside.
#ifndef FUSED_LIF_LIF_DISPATCH_H_
#define FUSED_LIF_LIF_DISPATCH_H_

#include <type_traits>

#include "lif.h"
#include "lif_kernels.h"

namespace fused_lif {

template <Reset R>
using ResetC = std::integral_constant<Reset, R>;
template <Surrogate S>
using SurrogateC = std::integral_constant<Surrogate, S>;
template <bool B>
using BoolC = std::integral_constant<bool, B>;

template <typename F>
decltype(auto) dispatch_reset(Reset reset, F&& f) {
  switch (reset) {
    case Reset::kSubtract: return f(ResetC<Reset::kSubtract>{});
    case Reset::kNone: return f(ResetC<Reset::kNone>{});
    case Reset::kZero: break;
  }
  return f(ResetC<Reset::kZero>{});
}

template <typename F>
decltype(auto) dispatch_surrogate(Surrogate surrogate, F&& f) {
  switch (surrogate) {
    case Surrogate::kAtan: return f(SurrogateC<Surrogate::kAtan>{});
    case Surrogate::kSigmoid: return f(SurrogateC<Surrogate::kSigmoid>{});
    case Surrogate::kTriangle: return f(SurrogateC<Surrogate::kTriangle>{});
    case Surrogate::kFastSigmoid: break;
  }
  return f(SurrogateC<Surrogate::kFastSigmoid>{});
}

template <typename F>
decltype(auto) dispatch_bool(bool value, F&& f) {
  if (value) return f(BoolC<true>{});
  return f(BoolC<false>{});
}

// The forward's options: the reset.
template <typename F>
decltype(auto) dispatch_forward(const LifForwardArgs& a, F&& f) {
  return dispatch_reset(a.reset, f);
}

// The backward's options: surrogate, reset, param_grads, detach_reset.
template <typename F>
decltype(auto) dispatch_backward(const LifBackwardArgs& a, F&& f) {
  return dispatch_surrogate(a.surrogate, [&](auto surrogate) {
    return dispatch_reset(a.reset, [&](auto reset) {
      return dispatch_bool(a.param_grads, [&](auto param_grads) {
        return dispatch_bool(a.detach_reset, [&](auto detach_reset) {
          return f(surrogate, reset, param_grads, detach_reset);
        });
      });
    });
  });
}

// The element type: F is called with a value of the type (float, or the
// device's half and bfloat16 types given as Half and BFloat16).
template <typename Half, typename BFloat16, typename F>
decltype(auto) dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16: return f(Half{});
    case DType::kBFloat16: return f(BFloat16{});
    case DType::kFloat32: break;
  }
  return f(float{});
}

}  // namespace fused_lif

#endif  // FUSED_LIF_LIF_DISPATCH_H_
