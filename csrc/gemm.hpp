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

// Keep OpenBLAS single-threaded (our matrices are tiny; parallelism is ours to schedule) and report its build.
void blas_init();
std::string blas_info();  // e.g. "OpenBLAS 0.3.34 ... SkylakeX" (the kernel it picked at run time)

}  // namespace blasgpt
