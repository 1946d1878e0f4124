#include "gemm.hpp"

#include "kernels.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
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

// The native kernels, one namespace per instruction set (gemm_kernels.cpp compiled with different flags).
#define BLASGPT_DECLARE_KERNELS(ns)                                                                              \
    namespace ns {                                                                                               \
    std::size_t panel_size(int k, int n, std::size_t elem);                                                      \
    void gemm(Op, Op, int, int, int, float, const float*, int, const float*, int, float, float*, int, float*);    \
    void gemm(Op, Op, int, int, int, double, const double*, int, const double*, int, double, double*, int,       \
              double*);                                                                                          \
    void adam(float*, float*, float*, const float*, std::int64_t, const AdamStep&);                              \
    void adam(double*, double*, double*, const double*, std::int64_t, const AdamStep&);                          \
    double softmax_xent(float*, const float*, const std::int32_t*, const float*, std::int64_t, int);             \
    double softmax_xent(double*, const double*, const std::int32_t*, const double*, std::int64_t, int);          \
    void attention_forward(float*, float*, const float*, const DocSpan*, std::int64_t, int, int);                \
    void attention_forward(double*, double*, const double*, const DocSpan*, std::int64_t, int, int);             \
    void attention_backward(float*, const float*, const float*, const float*, const DocSpan*, std::int64_t, int, \
                            int);                                                                                \
    void attention_backward(double*, const double*, const double*, const double*, const DocSpan*, std::int64_t,  \
                            int, int);                                                                           \
    double fma_probe(bool, std::int64_t, double*);                                                               \
    bool attention_supports(int, int, int, std::size_t);                                                         \
    void causal_softmax(float*, int, int, int, float*, float*, std::ptrdiff_t);                                  \
    void causal_softmax(double*, int, int, int, double*, double*, std::ptrdiff_t);                               \
    void causal_softmax_backward(float*, const float*, float*, int, int, int, const float*, const float*, std::ptrdiff_t,       \
                                 const float*);                                                                  \
    void causal_softmax_backward(double*, const double*, double*, int, int, int, const double*, const double*, std::ptrdiff_t,   \
                                 const double*);                                                                 \
    void rmsnorm(float*, float*, const float*, std::int64_t, int, float);                                        \
    void embed_rmsnorm(float*, float*, float*, const std::int32_t*, const std::int32_t*, const float*, const float*,       \
                       std::int64_t, int, float);                                                                  \
    void rmsnorm_backward(float*, const float*, const float*, const float*, std::int64_t, int);                          \
    void embed_rmsnorm_backward(float*, float*, const float*, const float*, const float*, const std::int32_t*,             \
                                const std::int32_t*, std::int64_t, int);                                         \
    void relu(float*, const float*, const float*, std::int64_t);                                                       \
    void rmsnorm(double*, double*, const double*, std::int64_t, int, double);                                        \
    void embed_rmsnorm(double*, double*, double*, const std::int32_t*, const std::int32_t*, const double*, const double*,       \
                       std::int64_t, int, double);                                                                  \
    void rmsnorm_backward(double*, const double*, const double*, const double*, std::int64_t, int);                          \
    void embed_rmsnorm_backward(double*, double*, const double*, const double*, const double*, const std::int32_t*,             \
                                const std::int32_t*, std::int64_t, int);                                         \
    void relu(double*, const double*, const double*, std::int64_t);                                                       \
    }
}  // namespace
BLASGPT_DECLARE_KERNELS(kernels_base)
#if defined(BLASGPT_X86_KERNELS)
BLASGPT_DECLARE_KERNELS(kernels_avx2)
BLASGPT_DECLARE_KERNELS(kernels_avx512)
#endif
namespace {

struct NativeKernels {
    const char* isa;
    std::size_t (*panel_size)(int, int, std::size_t);
    void (*sgemm)(Op, Op, int, int, int, float, const float*, int, const float*, int, float, float*, int, float*);
    void (*dgemm)(Op, Op, int, int, int, double, const double*, int, const double*, int, double, double*, int,
                  double*);
    void (*sadam)(float*, float*, float*, const float*, std::int64_t, const AdamStep&);
    void (*dadam)(double*, double*, double*, const double*, std::int64_t, const AdamStep&);
    double (*sxent)(float*, const float*, const std::int32_t*, const float*, std::int64_t, int);
    double (*dxent)(double*, const double*, const std::int32_t*, const double*, std::int64_t, int);
    void (*satt_f)(float*, float*, const float*, const DocSpan*, std::int64_t, int, int);
    void (*datt_f)(double*, double*, const double*, const DocSpan*, std::int64_t, int, int);
    void (*satt_b)(float*, const float*, const float*, const float*, const DocSpan*, std::int64_t, int, int);
    void (*datt_b)(double*, const double*, const double*, const double*, const DocSpan*, std::int64_t, int, int);
    double (*fma_probe)(bool, std::int64_t, double*);
    bool (*attention_supports)(int, int, int, std::size_t);
    void (*ssoft)(float*, int, int, int, float*, float*, std::ptrdiff_t);
    void (*dsoft)(double*, int, int, int, double*, double*, std::ptrdiff_t);
    void (*ssoft_b)(float*, const float*, float*, int, int, int, const float*, const float*, std::ptrdiff_t, const float*);
    void (*dsoft_b)(double*, const double*, double*, int, int, int, const double*, const double*, std::ptrdiff_t, const double*);
    void (*srms)(float*, float*, const float*, std::int64_t, int, float);
    void (*serms)(float*, float*, float*, const std::int32_t*, const std::int32_t*, const float*, const float*, std::int64_t, int,
                  float);
    void (*srms_b)(float*, const float*, const float*, const float*, std::int64_t, int);
    void (*serms_b)(float*, float*, const float*, const float*, const float*, const std::int32_t*, const std::int32_t*, std::int64_t,
                    int);
    void (*srelu)(float*, const float*, const float*, std::int64_t);
    void (*drms)(double*, double*, const double*, std::int64_t, int, double);
    void (*derms)(double*, double*, double*, const std::int32_t*, const std::int32_t*, const double*, const double*, std::int64_t, int,
                  double);
    void (*drms_b)(double*, const double*, const double*, const double*, std::int64_t, int);
    void (*derms_b)(double*, double*, const double*, const double*, const double*, const std::int32_t*, const std::int32_t*, std::int64_t,
                    int);
    void (*drelu)(double*, const double*, const double*, std::int64_t);
};

#define BLASGPT_KERNEL_TABLE(ns, name)                                                                             \
    NativeKernels {                                                                                                \
        name, ns::panel_size, ns::gemm, ns::gemm, ns::adam, ns::adam, ns::softmax_xent, ns::softmax_xent,          \
            ns::attention_forward, ns::attention_forward, ns::attention_backward, ns::attention_backward,         \
            ns::fma_probe, ns::attention_supports, ns::causal_softmax, ns::causal_softmax,                         \
            ns::causal_softmax_backward, ns::causal_softmax_backward, ns::rmsnorm, ns::embed_rmsnorm,              \
            ns::rmsnorm_backward, ns::embed_rmsnorm_backward, ns::relu, ns::rmsnorm, ns::embed_rmsnorm,            \
            ns::rmsnorm_backward, ns::embed_rmsnorm_backward, ns::relu                                             \
    }

// The widest instruction set this CPU runs, capped by $BLASGPT_ISA (base | avx2 | avx512) for testing.
NativeKernels pick_kernels() {
    const char* cap = std::getenv("BLASGPT_ISA");
    const std::string limit = cap ? cap : "avx512";
#if defined(BLASGPT_X86_KERNELS)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx512 && limit == "avx512") return BLASGPT_KERNEL_TABLE(kernels_avx512, "avx512");
    if (avx2 && (limit == "avx512" || limit == "avx2")) return BLASGPT_KERNEL_TABLE(kernels_avx2, "avx2");
#endif
    (void)limit;
    return BLASGPT_KERNEL_TABLE(kernels_base, "base");
}

const NativeKernels& native_kernels() {
    static const NativeKernels k = pick_kernels();  // decided once: the CPU does not change under us
    return k;
}

// Per-thread packing buffer for B; grows to the largest panel seen, then never allocates again.
template <class T>
T* panel_scratch(std::size_t n) {
    thread_local std::vector<T> buf;
    if (buf.size() < n) buf.resize(n);
    return buf.data();
}

void native_gemm(Op ta, Op tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc) {
    const NativeKernels& kr = native_kernels();
    kr.sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
             panel_scratch<float>(kr.panel_size(k, n, sizeof(float))));
}

void native_gemm(Op ta, Op tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb,
                 double beta, double* c, int ldc) {
    const NativeKernels& kr = native_kernels();
    kr.dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
             panel_scratch<double>(kr.panel_size(k, n, sizeof(double))));
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

const char* native_isa() { return native_kernels().isa; }

void adam_kernel(float* p, float* m, float* v, const float* g, std::int64_t n, const AdamStep& s) {
    native_kernels().sadam(p, m, v, g, n, s);
}

void adam_kernel(double* p, double* m, double* v, const double* g, std::int64_t n, const AdamStep& s) {
    native_kernels().dadam(p, m, v, g, n, s);
}

double peak_gflops(bool single, double seconds) {
    const NativeKernels& k = native_kernels();
    double flops = 0, sink = 0, best = 0;
    std::int64_t iters = 1 << 14;
    for (;;) {  // grow the loop until one run takes a measurable time, then keep the best of a few runs
        const auto t0 = std::chrono::steady_clock::now();
        sink += k.fma_probe(single, iters, &flops);
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

double softmax_xent_kernel(float* probs, const float* logits, const std::int32_t* target, const float* weight,
                           std::int64_t N, int V) {
    return native_kernels().sxent(probs, logits, target, weight, N, V);
}
double softmax_xent_kernel(double* probs, const double* logits, const std::int32_t* target, const double* weight,
                           std::int64_t N, int V) {
    return native_kernels().dxent(probs, logits, target, weight, N, V);
}

bool attention_kernel_supports(int C, int H, int max_positions, std::size_t elem_size) {
    return native_kernels().attention_supports(C, H, max_positions, elem_size);
}

void attention_kernel_forward(float* out, float* att, const float* qkv, const DocSpan* docs, std::int64_t ndocs,
                              int C, int H) {
    native_kernels().satt_f(out, att, qkv, docs, ndocs, C, H);
}
void attention_kernel_forward(double* out, double* att, const double* qkv, const DocSpan* docs, std::int64_t ndocs,
                              int C, int H) {
    native_kernels().datt_f(out, att, qkv, docs, ndocs, C, H);
}
void attention_kernel_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                               const DocSpan* docs, std::int64_t ndocs, int C, int H) {
    native_kernels().satt_b(dqkv, dout, qkv, att, docs, ndocs, C, H);
}
void attention_kernel_backward(double* dqkv, const double* dout, const double* qkv, const double* att,
                               const DocSpan* docs, std::int64_t ndocs, int C, int H) {
    native_kernels().datt_b(dqkv, dout, qkv, att, docs, ndocs, C, H);
}

void causal_softmax_kernel(float* s, int rows, int first, int width, float* mx, float* inv, std::ptrdiff_t st) {
    native_kernels().ssoft(s, rows, first, width, mx, inv, st);
}
void causal_softmax_kernel(double* s, int rows, int first, int width, double* mx, double* inv, std::ptrdiff_t st) {
    native_kernels().dsoft(s, rows, first, width, mx, inv, st);
}
void causal_softmax_backward_kernel(float* ds, const float* p, float* pout, int rows, int first, int width, const float* mx,
                                    const float* inv, std::ptrdiff_t st, const float* dot) {
    native_kernels().ssoft_b(ds, p, pout, rows, first, width, mx, inv, st, dot);
}
void causal_softmax_backward_kernel(double* ds, const double* p, double* pout, int rows, int first, int width, const double* mx,
                                    const double* inv, std::ptrdiff_t st, const double* dot) {
    native_kernels().dsoft_b(ds, p, pout, rows, first, width, mx, inv, st, dot);
}

void rmsnorm_kernel(float* y, float* rstd, const float* x, std::int64_t N, int C, float eps) {
    native_kernels().srms(y, rstd, x, N, C, eps);
}
void embed_rmsnorm_kernel(float* e, float* y, float* rstd, const std::int32_t* tok, const std::int32_t* pos, const float* wte,
                          const float* wpe, std::int64_t N, int C, float eps) {
    native_kernels().serms(e, y, rstd, tok, pos, wte, wpe, N, C, eps);
}
void rmsnorm_backward_kernel(float* dx, const float* dy, const float* x, const float* rstd, std::int64_t N, int C) {
    native_kernels().srms_b(dx, dy, x, rstd, N, C);
}
void embed_rmsnorm_backward_kernel(float* dwte, float* dwpe, const float* dy, const float* x, const float* rstd,
                                   const std::int32_t* tok, const std::int32_t* pos, std::int64_t N, int C) {
    native_kernels().serms_b(dwte, dwpe, dy, x, rstd, tok, pos, N, C);
}
void relu_kernel(float* h, const float* u, const float* dh, std::int64_t n) { native_kernels().srelu(h, u, dh, n); }
void rmsnorm_kernel(double* y, double* rstd, const double* x, std::int64_t N, int C, double eps) {
    native_kernels().drms(y, rstd, x, N, C, eps);
}
void embed_rmsnorm_kernel(double* e, double* y, double* rstd, const std::int32_t* tok, const std::int32_t* pos, const double* wte,
                          const double* wpe, std::int64_t N, int C, double eps) {
    native_kernels().derms(e, y, rstd, tok, pos, wte, wpe, N, C, eps);
}
void rmsnorm_backward_kernel(double* dx, const double* dy, const double* x, const double* rstd, std::int64_t N, int C) {
    native_kernels().drms_b(dx, dy, x, rstd, N, C);
}
void embed_rmsnorm_backward_kernel(double* dwte, double* dwpe, const double* dy, const double* x, const double* rstd,
                                   const std::int32_t* tok, const std::int32_t* pos, std::int64_t N, int C) {
    native_kernels().derms_b(dwte, dwpe, dy, x, rstd, tok, pos, N, C);
}
void relu_kernel(double* h, const double* u, const double* dh, std::int64_t n) { native_kernels().drelu(h, u, dh, n); }

std::string blas_info() {
    std::string info = scipy_openblas_get_config();
    info += " | kernel ";
    info += scipy_openblas_get_corename();
    return info;
}

}  // namespace blasgpt
