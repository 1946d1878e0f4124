// The native kernels: register-blocked gemm for the small matrices this model makes, and the Adam update over the
// one parameter buffer. This file is compiled once per instruction set (BLASGPT_ISA = base | avx2 | avx512, each
// with its own compiler flags) and gemm.cpp picks the best one the CPU supports at run time, so one wheel runs on
// any x86-64 and uses AVX-512 where it exists.
//
// Every product is reduced to C (m, n) = alpha · A (m, k) · B (k, n) + beta · C where A is read element by
// element through strides (so A or Aᵀ costs the same) and B is first packed into column panels of NR, zero
// padded: the MR×NR accumulator tile then lives in vector registers for the whole k loop.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "gemm.hpp"

#ifndef BLASGPT_ISA
#error "compile with -DBLASGPT_ISA=<name> -DBLASGPT_VEC_BYTES=<vector register width>"
#endif
#define BLASGPT_CAT2(a, b) a##b
#define BLASGPT_CAT(a, b) BLASGPT_CAT2(a, b)
#define BLASGPT_KERNEL_NS BLASGPT_CAT(kernels_, BLASGPT_ISA)

namespace blasgpt {
namespace BLASGPT_KERNEL_NS {

namespace {

// A vector register of T (GCC/Clang vector extension: arithmetic with a scalar broadcasts it).
typedef float VecF __attribute__((vector_size(BLASGPT_VEC_BYTES)));
typedef double VecD __attribute__((vector_size(BLASGPT_VEC_BYTES)));
template <class T>
struct VecOf;
template <>
struct VecOf<float> {
    using type = VecF;
};
template <>
struct VecOf<double> {
    using type = VecD;
};
template <class T>
using Vec = typename VecOf<T>::type;

// Register tile of C: ROWS rows of NV vectors. NV = 1 when C is at most one vector wide (n = 16 at d16 in float32),
// so narrow products waste no lanes; then twice the rows share each loaded B vector.
template <class T>
constexpr int lanes() { return BLASGPT_VEC_BYTES / int(sizeof(T)); }
template <int NV>
constexpr int max_rows() { return (BLASGPT_VEC_BYTES >= 32 ? 6 : 4) * (NV == 1 ? 2 : 1); }

template <class T>
inline Vec<T> load(const T* p) {
    Vec<T> v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

template <class T>
inline void store(T* p, Vec<T> v) {
    __builtin_memcpy(p, &v, sizeof(v));
}

// acc (ROWS, NV·L) = A (ROWS, k) · panel (k, NV·L) in registers; then C[:, :nr] = alpha · acc + beta · C
template <class T, int NV, int ROWS>
inline void micro(int k, const T* a, std::ptrdiff_t sai, std::ptrdiff_t sap, const T* panel, T* c, int ldc, int nr,
                  T alpha, T beta) {
    constexpr int L = lanes<T>(), NR = NV * L;
    Vec<T> acc[ROWS][NV];
    for (int i = 0; i < ROWS; ++i)
        for (int v = 0; v < NV; ++v) acc[i][v] = Vec<T>{};
    for (int p = 0; p < k; ++p) {
        Vec<T> b[NV];
        for (int v = 0; v < NV; ++v) b[v] = load(panel + std::ptrdiff_t(p) * NR + v * L);
        for (int i = 0; i < ROWS; ++i) {
            const T av = a[i * sai + p * sap];
            for (int v = 0; v < NV; ++v) acc[i][v] += av * b[v];
        }
    }
    for (int i = 0; i < ROWS; ++i) {
        T* ci = c + std::ptrdiff_t(i) * ldc;
        if (nr == NR) {
            for (int v = 0; v < NV; ++v) {
                Vec<T> r = alpha * acc[i][v];
                if (beta != T(0)) r += beta * load(ci + v * L);
                store(ci + v * L, r);
            }
        } else {
            T tmp[NR];
            for (int v = 0; v < NV; ++v) store(tmp + v * L, acc[i][v]);
            for (int j = 0; j < nr; ++j) ci[j] = beta == T(0) ? alpha * tmp[j] : alpha * tmp[j] + beta * ci[j];
        }
    }
}

// micro<T, NV, rows> for a run-time row count 1 <= rows <= R (the leftover rows below a full tile)
template <class T, int NV, int R>
inline void micro_rows(int rows, int k, const T* a, std::ptrdiff_t sai, std::ptrdiff_t sap, const T* panel, T* c,
                       int ldc, int nr, T alpha, T beta) {
    if constexpr (R > 0) {
        if (rows == R) {
            micro<T, NV, R>(k, a, sai, sap, panel, c, ldc, nr, alpha, beta);
        } else {
            micro_rows<T, NV, R - 1>(rows, k, a, sai, sap, panel, c, ldc, nr, alpha, beta);
        }
    }
}

// panel[jb·k + p·NR + j] = op(B)[p, jb + j], zero beyond column n
template <class T>
void pack(Op tb, int k, int n, const T* b, int ldb, T* panel, int NR) {
    for (int jb = 0; jb < n; jb += NR) {
        const int nb = std::min(NR, n - jb);
        T* dst = panel + std::ptrdiff_t(jb) * k;
        for (int p = 0; p < k; ++p) {
            T* row = dst + std::ptrdiff_t(p) * NR;
            if (tb == Op::N) {
                const T* src = b + std::ptrdiff_t(p) * ldb + jb;
                for (int j = 0; j < nb; ++j) row[j] = src[j];
            } else {
                const T* src = b + std::ptrdiff_t(jb) * ldb + p;
                for (int j = 0; j < nb; ++j) row[j] = src[std::ptrdiff_t(j) * ldb];
            }
            for (int j = nb; j < NR; ++j) row[j] = T(0);
        }
    }
}

template <class T, int NV>
void gemm_tiles(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                int ldc, T* panel) {
    constexpr int MR = max_rows<NV>(), NR = NV * lanes<T>();
    pack(tb, k, n, b, ldb, panel, NR);
    const std::ptrdiff_t sai = ta == Op::N ? lda : 1, sap = ta == Op::N ? 1 : lda;
    for (int jb = 0; jb < n; jb += NR) {
        const int nr = std::min(NR, n - jb);
        const T* pb = panel + std::ptrdiff_t(jb) * k;
        int i = 0;
        for (; i + MR <= m; i += MR)
            micro<T, NV, MR>(k, a + i * sai, sai, sap, pb, c + std::ptrdiff_t(i) * ldc + jb, ldc, nr, alpha, beta);
        if (i < m)
            micro_rows<T, NV, MR - 1>(m - i, k, a + i * sai, sai, sap, pb, c + std::ptrdiff_t(i) * ldc + jb, ldc, nr,
                                      alpha, beta);
    }
}

template <class T>
void gemm_impl(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
               int ldc, T* panel) {
    if (k == 0) {  // no products: C = beta · C (beta == 0 clears, as BLAS)
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
                T& cij = c[std::ptrdiff_t(i) * ldc + j];
                cij = beta == T(0) ? T(0) : beta * cij;
            }
        return;
    }
    if (n <= lanes<T>()) {
        gemm_tiles<T, 1>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
    } else {
        gemm_tiles<T, 2>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
    }
}

// Adam, elementwise and branch-free so it vectorizes (division and sqrt included: built with -fno-math-errno)
template <class T>
void adam_impl(T* __restrict p, T* __restrict m, T* __restrict v, const T* __restrict g, std::int64_t n,
               const AdamStep& s) {
    const T b1 = T(s.beta1), b2 = T(s.beta2), c1 = T(1 - s.beta1), c2 = T(1 - s.beta2);
    const T bc1 = T(s.bias1), bc2 = T(s.bias2), eps = T(s.eps), lr = T(s.lr);
    for (std::int64_t i = 0; i < n; ++i) {
        const T gi = g[i];
        const T mi = b1 * m[i] + c1 * gi;
        const T vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi / bc1) / (std::sqrt(vi / bc2) + eps);
    }
}

}  // namespace

void adam(float* p, float* m, float* v, const float* g, std::int64_t n, const AdamStep& s) {
    adam_impl(p, m, v, g, n, s);
}

void adam(double* p, double* m, double* v, const double* g, std::int64_t n, const AdamStep& s) {
    adam_impl(p, m, v, g, n, s);
}

std::size_t panel_size(int k, int n, std::size_t elem) {
    const int nr = 2 * BLASGPT_VEC_BYTES / int(elem);  // the wider of the two tile shapes
    return std::size_t(k) * std::size_t((n + nr - 1) / nr * nr);
}

void gemm(Op ta, Op tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
          float beta, float* c, int ldc, float* panel) {
    gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
}

void gemm(Op ta, Op tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb,
          double beta, double* c, int ldc, double* panel) {
    gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
}

}  // namespace BLASGPT_KERNEL_NS
}  // namespace blasgpt
