// Run-time choice of the native kernels: kernels.cpp is built once per instruction set, each build exporting its
// kernel_set(); this file picks the widest set the CPU runs (capped by $BLASGPT_ISA), once. Every Model's constructor
// makes the choice (runtime.cpp), so a $BLASGPT_ISA that cannot be honoured is refused there, on the caller's thread.
#include "kernels.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

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

// The kernel sets of this build, widest first, each with whether this CPU runs it.
struct Isa {
    const char* name;
    const KernelSet& (*set)();
    bool runs;
};

std::vector<Isa> isas() {
    std::vector<Isa> out;
#if defined(BLASGPT_X86_KERNELS)
    __builtin_cpu_init();
    out.push_back({"avx512", &kernels_avx512::kernel_set,
                   __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")});
    out.push_back({"avx2", &kernels_avx2::kernel_set, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")});
#endif
    out.push_back({"base", &kernels_base::kernel_set, true});
    return out;
}

// The widest instruction set this CPU runs, capped by $BLASGPT_ISA (one of isas(); unset or empty: no cap). A value
// that names no kernel set of this build, or one this CPU does not run, is refused (std::invalid_argument, one line
// listing the values this CPU accepts) rather than silently giving other kernels.
const KernelSet& pick_kernels() {
    const char* cap = std::getenv("BLASGPT_ISA");
    const std::string limit = cap ? cap : "";
    const std::vector<Isa> all = isas();
    std::string accepted;
    for (const Isa& isa : all)
        if (isa.runs) accepted += (accepted.empty() ? "" : ", ") + std::string(isa.name);
    const auto known = std::find_if(all.begin(), all.end(), [&](const Isa& isa) { return limit == isa.name; });
    if (!limit.empty() && known == all.end())
        throw std::invalid_argument("BLASGPT_ISA must be one of " + accepted +
                                    " (the instruction sets this CPU runs), got '" + limit + "'");
    if (!limit.empty() && !known->runs)
        throw std::invalid_argument("BLASGPT_ISA=" + limit + ": this CPU does not run " + limit +
                                    "; it must be one of " + accepted + " (the instruction sets this CPU runs)");
    for (auto it = limit.empty() ? all.begin() : known; it != all.end(); ++it)
        if (it->runs) return it->set();
    return kernels_base::kernel_set();  // (not reached: base always runs)
}

const KernelSet& chosen() {
    static const KernelSet& k = pick_kernels();  // decided once: the CPU does not change under us (a refusal is
                                                 // not cached: every later call refuses again)
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
