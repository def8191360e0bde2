// What every CPU kernel header shares (lif_cpu.h, spike_matmul.h): the
// instruction-set dispatch of the hot loops and small integer helpers.
// Framework-free, header-only.
#ifndef FUSED_LIF_CPU_COMMON_H_
#define FUSED_LIF_CPU_COMMON_H_

#include <cstdint>

// The hot loops are compiled for AVX-512, AVX2 and baseline x86-64; the
// loader picks the widest the CPU has (GCC/Clang function multiversioning).
// Results are the same on each: no FMA contraction anywhere (-ffp-contract=off).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__CUDACC__)
#define FUSED_LIF_CPU_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FUSED_LIF_CPU_DISPATCH
#endif
// Helpers of the dispatched loops must be inlined into each clone (else they
// are compiled for baseline x86-64 only).
#if defined(__GNUC__)
#define FUSED_LIF_INLINE __attribute__((always_inline)) inline
#else
#define FUSED_LIF_INLINE inline
#endif

namespace fused_lif {

// ⌈a / b⌉ for a >= 0, b > 0.
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace fused_lif

#endif  // FUSED_LIF_CPU_COMMON_H_
