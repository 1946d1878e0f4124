// blasgpt's own vectorized kernels (kernels.cpp, built once per instruction set; gemm.cpp dispatches to the best
// one this CPU runs). The gemm among them is reached through Gemm (gemm.hpp); the others are called directly.
#pragma once

#include <cstddef>
#include <cstdint>

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
void adam_kernel(float* p, float* m, float* v, const float* g, std::int64_t n, const AdamStep& s);
void adam_kernel(double* p, double* m, double* v, const double* g, std::int64_t n, const AdamStep& s);

// Row-wise softmax + cross-entropy: probs = softmax(logits) (may alias); returns Σ_r weight_r · −log probs_r[target_r]
// (target may be null: probabilities only).
double softmax_xent_kernel(float* probs, const float* logits, const std::int32_t* target, const float* weight,
                           std::int64_t N, int V);
double softmax_xent_kernel(double* probs, const double* logits, const std::int32_t* target, const double* weight,
                           std::int64_t N, int V);

// Causal softmax of `rows` score rows of attention's gemm path (row stride `width`), row r being query position
// first + r: p_j = exp(s_j − m)·inv over keys j <= first + r, zero after; m = max_j s_j and inv = 1 / Σ exp(s_j − m)
// are stored at mx[r·st], inv[r·st] when mx is not null. Vector exp (kernels.cpp), the same as the fused kernel's.
void causal_softmax_kernel(float* s, int rows, int first, int width, float* mx, float* inv, std::ptrdiff_t st);
void causal_softmax_kernel(double* s, int rows, int first, int width, double* mx, double* inv, std::ptrdiff_t st);
// Its backward in place of dP (same layout): dS = P ⊙ (dP − rowsum(dP ⊙ P)). With mx null, P is read from p and the
// row sums computed; otherwise p holds the scores, P = exp(s − mx_r)·inv_r is recomputed into pout (may be p) and
// dot_r is the row sum (dO_r · O_r).
void causal_softmax_backward_kernel(float* ds, const float* p, float* pout, int rows, int first, int width, const float* mx,
                                    const float* inv, std::ptrdiff_t st, const float* dot);
void causal_softmax_backward_kernel(double* ds, const double* p, double* pout, int rows, int first, int width, const double* mx,
                                    const double* inv, std::ptrdiff_t st, const double* dot);

// The model's row-wise passes (model.cpp gives the formulas), vectorized per ISA. rmsnorm: y = r·x with
// r = 1 / sqrt(mean_c x_c² + eps) -> rstd; embed_rmsnorm does the first one on e = wte[tok] + wpe[pos], storing e.
// rmsnorm_backward: dx += r·dy − (r³ / C)·x·Σ_c(dy_c x_c); embed_rmsnorm_backward adds that dx to the rows
// dwte[tok], dwpe[pos] instead. relu: h = max(u, 0), or with dh its backward h = dh·[u > 0] (h may alias dh).
void rmsnorm_kernel(float* y, float* rstd, const float* x, std::int64_t N, int C, float eps);
void embed_rmsnorm_kernel(float* e, float* y, float* rstd, const std::int32_t* tok, const std::int32_t* pos, const float* wte,
                          const float* wpe, std::int64_t N, int C, float eps);
void rmsnorm_backward_kernel(float* dx, const float* dy, const float* x, const float* rstd, std::int64_t N, int C);
void embed_rmsnorm_backward_kernel(float* dwte, float* dwpe, const float* dy, const float* x, const float* rstd,
                                   const std::int32_t* tok, const std::int32_t* pos, std::int64_t N, int C);
void relu_kernel(float* h, const float* u, const float* dh, std::int64_t n);
void rmsnorm_kernel(double* y, double* rstd, const double* x, std::int64_t N, int C, double eps);
void embed_rmsnorm_kernel(double* e, double* y, double* rstd, const std::int32_t* tok, const std::int32_t* pos, const double* wte,
                          const double* wpe, std::int64_t N, int C, double eps);
void rmsnorm_backward_kernel(double* dx, const double* dy, const double* x, const double* rstd, std::int64_t N, int C);
void embed_rmsnorm_backward_kernel(double* dwte, double* dwpe, const double* dy, const double* x, const double* rstd,
                                   const std::int32_t* tok, const std::int32_t* pos, std::int64_t N, int C);
void relu_kernel(double* h, const double* u, const double* dh, std::int64_t n);

// Per-document layout of a packed batch.
struct DocSpan {
    std::int64_t row;      // first row of the document in the packed matrices
    int n;                 // positions trained on
    std::int64_t att_off;  // offset of its H (n, n) probability matrices in the attention cache
};

// Fused causal attention over whole documents (all heads per call, no gemm): the same math as attention_forward /
// attention_backward in model.cpp. Instead of the probabilities it keeps, per row, each head's max score and
// 1/Σexp (2C values) in `stats`, and backward recomputes P from them. Applies when attention_kernel_supports().
constexpr int kFusedMaxPositions = 128;
bool attention_kernel_supports(int C, int H, int max_positions, std::size_t elem_size);
void attention_kernel_forward(float* out, float* stats, const float* qkv, const DocSpan* docs, std::int64_t ndocs,
                              int C, int H);
void attention_kernel_forward(double* out, double* stats, const double* qkv, const DocSpan* docs,
                              std::int64_t ndocs, int C, int H);
void attention_kernel_backward(float* dqkv, const float* dout, const float* qkv, const float* stats,
                               const DocSpan* docs, std::int64_t ndocs, int C, int H);
void attention_kernel_backward(double* dqkv, const double* dout, const double* qkv, const double* stats,
                               const DocSpan* docs, std::int64_t ndocs, int C, int H);

}  // namespace blasgpt
