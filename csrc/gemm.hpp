// The one matrix-multiply interface of blasgpt. Every product in model.cpp goes through Gemm, so the choice of
// kernel (OpenBLAS, or the portable loops used as a cross-check) is made in exactly one place.
#pragma once

#include <cstdint>
#include <string>

namespace blasgpt {

// Whether an operand is used as stored (N) or transposed (T). Matrices are row-major.
enum class Op { N, T };

enum class Backend {
    Blas,    // scipy-openblas32's cblas_?gemm: the production path
    Native,  // blasgpt's own register-blocked kernels for small matrices (gemm_kernels.cpp), no BLAS involved
};

Backend backend_from_name(const std::string& name);  // "blas" | "native"; throws std::invalid_argument
const char* backend_name(Backend b);

// C (m,n) = alpha * op(A) op(B) + beta * C, with op(A) (m,k) and op(B) (k,n); lda/ldb/ldc are row strides.
struct Gemm {
    Backend backend = Backend::Blas;

    template <class T>
    void operator()(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                    T* c, int ldc) const;
};

// One Adam update's scalars (bias1 = 1 − β1^t, bias2 = 1 − β2^t), for the vectorized kernel over a whole buffer:
//   m = β1 m + (1 − β1) g ;  v = β2 v + (1 − β2) g² ;  p −= lr · (m / bias1) / (sqrt(v / bias2) + eps)
struct AdamStep {
    double lr, beta1, beta2, eps, bias1, bias2;
};
void adam_kernel(float* p, float* m, float* v, const float* g, std::int64_t n, const AdamStep& s);
void adam_kernel(double* p, double* m, double* v, const double* g, std::int64_t n, const AdamStep& s);

// Keep OpenBLAS single-threaded (our matrices are tiny; parallelism is ours to schedule) and report its build.
void blas_init();
std::string blas_info();  // e.g. "OpenBLAS 0.3.34 ... SkylakeX" (the kernel it picked at run time)
const char* native_isa();  // instruction set of the native kernels chosen for this CPU: avx512 | avx2 | base

}  // namespace blasgpt
