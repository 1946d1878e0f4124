#include "gemm.hpp"

#include "kernels.hpp"

#include <cblas.h>

#include <stdexcept>
#include <vector>

namespace blasgpt {

Backend backend_from_name(const std::string& name) {
    if (name == "blas") return Backend::Blas;
    if (name == "native") return Backend::Native;
    if (name == "auto") return Backend::Auto;
    throw std::invalid_argument("unknown gemm backend '" + name + "': expected 'blas', 'native' or 'auto'");
}

const char* backend_name(Backend b) { return b == Backend::Blas ? "blas" : b == Backend::Native ? "native" : "auto"; }

namespace {

CBLAS_TRANSPOSE cblas_op(Op op) { return op == Op::N ? CblasNoTrans : CblasTrans; }

void blas_gemm(Op ta, Op tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
               float beta, float* c, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, cblas_op(ta), cblas_op(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_gemm(Op ta, Op tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb,
               double beta, double* c, int ldc) {
    scipy_cblas_dgemm(CblasRowMajor, cblas_op(ta), cblas_op(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Per-thread packing buffer for B; grows to the largest panel seen, then never allocates again.
template <class T>
T* panel_scratch(std::size_t n) {
    thread_local std::vector<T> buf;
    if (buf.size() < n) buf.resize(n);
    return buf.data();
}

// The native kernel chosen for this CPU (kernels.hpp), with this thread's packing buffer.
template <class T>
void native_gemm(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                 int ldc) {
    const KernelTable<T>& kr = native_kernels<T>();
    kr.gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel_scratch<T>(kr.panel_size(k, n)));
}

}  // namespace

bool Gemm::use_blas(const GemmShape& s) const {
    if (backend == Backend::Blas) return true;
    if (backend == Backend::Auto) {
        const int planned = plan.lookup(s);
        if (planned >= 0) return planned == 1;
    }
    return double(s.m) * s.n * s.k >= kBlasMinVolume;  // Native, and Auto for a shape it has no plan near
}

template <class T>
void gemm_on(bool blas, Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
             T* c, int ldc) {
    if (m == 0 || n == 0) return;
    if (blas)
        blas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        native_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class T>
void Gemm::operator()(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
                      T* c, int ldc) const {
    const bool blas = use_blas({int(sizeof(T)), ta == Op::T, tb == Op::T, m, n, k});
    gemm_on(blas, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template void Gemm::operator()<float>(Op, Op, int, int, int, float, const float*, int, const float*, int, float,
                                      float*, int) const;
template void Gemm::operator()<double>(Op, Op, int, int, int, double, const double*, int, const double*, int, double,
                                       double*, int) const;
template void gemm_on<float>(bool, Op, Op, int, int, int, float, const float*, int, const float*, int, float, float*,
                             int);
template void gemm_on<double>(bool, Op, Op, int, int, int, double, const double*, int, const double*, int, double,
                              double*, int);

void blas_init() { scipy_openblas_set_num_threads(1); }

std::string blas_info() {
    std::string info = scipy_openblas_get_config();
    info += " | kernel ";
    info += scipy_openblas_get_corename();
    return info;
}

}  // namespace blasgpt
