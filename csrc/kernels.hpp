// blasgpt's own vectorized kernels: kernels.cpp, built once per instruction set, implements every entry of
// kernel_list.hpp; dispatch.cpp picks the table of the widest set this CPU runs, and name_kernel<T>(...) below calls
// through it. The gemm among them is reached through Gemm (gemm.hpp); the others are called directly.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm.hpp"

namespace blasgpt {

const char* native_isa();  // instruction set of the native kernels chosen for this CPU: avx512 | avx2 | base

// Measured FMA peak of one core in GFLOP/s for float32 (single) or float64, over about `seconds`, using the native
// kernels' vector width (independent multiply-add chains; the number the benchmark reports percentages of).
double peak_gflops(bool single, double seconds);

// One Adam update's scalars (bias1 = 1 − β1^t, bias2 = 1 − β2^t), for the vectorized kernel over a whole buffer:
//   m = β1 m + (1 − β1) g ;  v = β2 v + (1 − β2) g² ;  p −= lr · (m / bias1) / (sqrt(v / bias2) + eps)
struct AdamStep {
    double lr, beta1, beta2, eps, bias1, bias2;
};

// Per-document layout of a packed batch.
struct DocSpan {
    std::int64_t row;      // first row of the document in the packed matrices
    int n;                 // positions trained on
    std::int64_t att_off;  // offset of its H (n, n) probability matrices in the attention cache
};

// Longest document the fused attention kernel takes (its scratch is per document).
constexpr int kFusedMaxPositions = 128;

// One instruction set's kernels for element type T: a pointer per entry of kernel_list.hpp, in its order.
template <class T>
struct KernelTable {
#define BLASGPT_KERNEL(name, ret, params, args) ret(*name) params;
#include "kernel_list.hpp"
#undef BLASGPT_KERNEL
};

// Both element types' tables of one instruction set (what each per-ISA object of kernels.cpp exports).
struct KernelSet {
    const char* isa;
    KernelTable<float> f32;
    KernelTable<double> f64;
};

// The table chosen for this CPU (decided once; dispatch.cpp), for float or double.
template <class T>
const KernelTable<T>& native_kernels();
template <>
const KernelTable<float>& native_kernels<float>();
template <>
const KernelTable<double>& native_kernels<double>();

// The public kernels: name_kernel<T>(...) calls this CPU's name<T> (arguments as kernel_list.hpp documents).
#define BLASGPT_KERNEL(name, ret, params, args) \
    template <class T>                          \
    inline ret name##_kernel params {           \
        return native_kernels<T>().name args;   \
    }
#include "kernel_list.hpp"
#undef BLASGPT_KERNEL

}  // namespace blasgpt
