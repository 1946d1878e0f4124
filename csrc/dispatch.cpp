// Run-time choice of the native kernels: kernels.cpp is built once per instruction set, each build exporting its
// kernel_set(); this file picks the widest set the CPU runs (capped by $BLASGPT_ISA), once.
#include "kernels.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

namespace blasgpt {

#define BLASGPT_DECLARE_ISA(isa) \
    namespace kernels_##isa {    \
    const KernelSet& kernel_set(); \
    }
BLASGPT_DECLARE_ISA(base)
#if defined(BLASGPT_X86_KERNELS)
BLASGPT_DECLARE_ISA(avx2)
BLASGPT_DECLARE_ISA(avx512)
#endif
#undef BLASGPT_DECLARE_ISA

namespace {

// The widest instruction set this CPU runs, capped by $BLASGPT_ISA (base | avx2 | avx512) for testing.
const KernelSet& pick_kernels() {
    const char* cap = std::getenv("BLASGPT_ISA");
    const std::string limit = cap ? cap : "avx512";
#if defined(BLASGPT_X86_KERNELS)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx512 && limit == "avx512") return kernels_avx512::kernel_set();
    if (avx2 && (limit == "avx512" || limit == "avx2")) return kernels_avx2::kernel_set();
#endif
    (void)limit;
    return kernels_base::kernel_set();
}

const KernelSet& chosen() {
    static const KernelSet& k = pick_kernels();  // decided once: the CPU does not change under us
    return k;
}

}  // namespace

template <>
const KernelTable<float>& native_kernels<float>() {
    return chosen().f32;
}
template <>
const KernelTable<double>& native_kernels<double>() {
    return chosen().f64;
}

const char* native_isa() { return chosen().isa; }

double peak_gflops(bool single, double seconds) {
    double flops = 0, sink = 0, best = 0;
    std::int64_t iters = 1 << 14;
    for (;;) {  // grow the loop until one run takes a measurable time, then keep the best of a few runs
        const auto t0 = std::chrono::steady_clock::now();
        sink += single ? fma_probe_kernel<float>(iters, &flops) : fma_probe_kernel<double>(iters, &flops);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (dt < seconds / 8) {
            iters *= 2;
            continue;
        }
        best = std::max(best, flops / dt);
        if ((seconds -= dt) <= 0) break;
    }
    return sink == 12345.678 ? 0 : best / 1e9;  // (the comparison keeps sink alive)
}

}  // namespace blasgpt
