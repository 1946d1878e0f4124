// The one matrix-multiply interface of blasgpt. Every product of the model goes through Gemm, so the choice of
// kernel (OpenBLAS or the native kernels) is made in exactly one place, Gemm::operator().
#pragma once

#include <cstdint>
#include <string>

#include "gemm_plan.hpp"

namespace blasgpt {

// Whether an operand is used as stored (N) or transposed (T). Matrices are row-major.
enum class Op { N, T };

enum class Backend {
    Blas,    // scipy-openblas32's cblas_?gemm for every product: the reference path
    Native,  // blasgpt's own register-blocked kernels (kernels.cpp), and OpenBLAS for the large products it wins
    Auto,    // per product shape, whichever of the two was faster on this machine (Gemm::plan), else as Native
};

// The native backend hands a product to OpenBLAS when m·n·k >= kBlasMinVolume: a crossover measured per product
// shape, one core, float32 on AVX-512, where the native kernels (no k blocking) fall behind once their panels leave
// L1/L2 (the d384 model's linear layers); re-measure by timing a product of each shape on both backends
// (Model backend "blas" vs "native", or $BLASGPT_GEMM).
constexpr double kBlasMinVolume = double(1 << 29);

Backend backend_from_name(const std::string& name);  // "blas" | "native" | "auto"; throws std::invalid_argument
const char* backend_name(Backend b);

// C (m,n) = alpha * op(A) op(B) + beta * C, with op(A) (m,k) and op(B) (k,n); lda/ldb/ldc are row strides.
struct Gemm {
    Backend backend = Backend::Blas;
    GemmPlan plan;  // the Auto backend's measured choices (empty: the Native backend's rule)

    template <class T>
    void operator()(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                    T* c, int ldc) const;

    // The one decision: does this product go to OpenBLAS?
    bool use_blas(const GemmShape& s) const;
    // Does attention run as the native fused kernel where it applies (else as gemm products)?
    bool fused_attention() const {
        return backend == Backend::Native || (backend == Backend::Auto && plan.fused_attention());
    }
};

// One product on the given kernels, no decision (what Gemm runs once it has decided; the calibration times both).
template <class T>
void gemm_on(bool blas, Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
             T* c, int ldc);

// Keep OpenBLAS single-threaded (our matrices are tiny; parallelism is ours to schedule) and report its build.
void blas_init();
std::string blas_info();  // e.g. "OpenBLAS 0.3.34 ... SkylakeX" (the kernel it picked at run time)

}  // namespace blasgpt
