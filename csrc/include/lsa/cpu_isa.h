// Run-time choice between two builds of a CPU kernel: generic code and an AVX2+FMA copy.
// A source compiles its loops twice, into namespaces `generic` and (when LSA_CPU_AVX2 is
// defined) `avx2` under `#pragma GCC target("avx2,fma")`, then calls them through
// LSA_ISA_CALL(fn, args...), which picks the AVX2 copy when the CPU supports it.
#pragma once

// AVX2+FMA copies of the compute loops are built (and chosen at run time) with GCC on x86-64.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LSA_CPU_AVX2 1
#endif

namespace lsa {
namespace cpu {

// Whether this CPU runs the AVX2+FMA copies (checked once).
inline bool use_avx2() {
#ifdef LSA_CPU_AVX2
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace lsa

// fn: a function name, with template arguments only if they contain no comma.
#ifdef LSA_CPU_AVX2
#define LSA_ISA_CALL(fn, ...) \
  (::lsa::cpu::use_avx2() ? avx2::fn(__VA_ARGS__) : generic::fn(__VA_ARGS__))
#else
#define LSA_ISA_CALL(fn, ...) generic::fn(__VA_ARGS__)
#endif
