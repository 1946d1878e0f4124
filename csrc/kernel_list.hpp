// THE list of native kernels: adding one means a line here and its template in kernels.cpp, nothing else.
//
// Each entry is BLASGPT_KERNEL(name, return type, (parameters), (argument names)), written for element type T
// (float or double). The includer defines BLASGPT_KERNEL and includes this file (no include guard, on purpose):
// kernels.hpp generates from it the table type KernelTable<T> (one function pointer per entry) and the public
// dispatching functions name_kernel<T>(...); kernels.cpp, compiled once per instruction set, fills that ISA's
// table with its instances name<T>; dispatch.cpp picks the table of the widest ISA this CPU runs.
//
// Types used here: Op (gemm.hpp), AdamStep and DocSpan (kernels.hpp).

#ifndef BLASGPT_KERNEL
#error "define BLASGPT_KERNEL(name, ret, params, args) before including kernel_list.hpp"
#endif

// C (m, n) = alpha · op(A) op(B) + beta · C (row-major, strides lda/ldb/ldc), register-blocked for small matrices;
// panel: scratch of panel_size(k, n) elements for packing B. Reached through Gemm (gemm.hpp).
BLASGPT_KERNEL(gemm, void,
               (Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                int ldc, T* panel),
               (ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel))
BLASGPT_KERNEL(panel_size, std::size_t, (int k, int n), (k, n))

// Adam over a whole buffer, with the scalars of one step (AdamStep).
BLASGPT_KERNEL(adam, void, (T* p, T* m, T* v, const T* g, std::int64_t n, const AdamStep& s), (p, m, v, g, n, s))

// Row-wise softmax + cross-entropy: probs = softmax(logits) (may alias); returns Σ_r weight_r · −log probs_r[target_r]
// (target may be null: probabilities only).
BLASGPT_KERNEL(softmax_xent, double,
               (T* probs, const T* logits, const std::int32_t* target, const T* weight, std::int64_t N, int V),
               (probs, logits, target, weight, N, V))

// Causal softmax of `rows` score rows of attention's gemm path (row stride `width`), row r being query position
// first + r: p_j = exp(s_j − m)·inv over keys j <= first + r, zero after up to key first + rows (further keys of the
// row may be left as they were); m = max_j s_j and inv = 1 / Σ exp(s_j − m)
// are stored at mx[r·st], inv[r·st] when mx is not null. Vector exp, the same as the fused attention kernel's.
BLASGPT_KERNEL(causal_softmax, void, (T* s, int rows, int first, int width, T* mx, T* inv, std::ptrdiff_t st),
               (s, rows, first, width, mx, inv, st))
// Its backward in place of dP (same layout): dS = P ⊙ (dP − rowsum(dP ⊙ P)). With mx null, P is read from p and the
// row sums computed; otherwise p holds the scores, P = exp(s − mx_r)·inv_r is recomputed into pout (may be p) and
// dot_r is the row sum (dO_r · O_r).
BLASGPT_KERNEL(causal_softmax_backward, void,
               (T* ds, const T* p, T* pout, int rows, int first, int width, const T* mx, const T* inv,
                std::ptrdiff_t st, const T* dot),
               (ds, p, pout, rows, first, width, mx, inv, st, dot))

// The model's row-wise passes (layers.cpp gives the formulas). rmsnorm: y = r·x with r = 1 / sqrt(mean_c x_c² + eps)
// -> rstd; embed_rmsnorm does the first one on e = wte[tok] + wpe[pos], storing e. rmsnorm_backward:
// dx += r·dy − (r³ / C)·x·Σ_c(dy_c x_c); embed_rmsnorm_backward adds that dx to the rows dwte[tok], dwpe[pos]
// instead. relu: h = max(u, 0), or with dh its backward h = dh·[u > 0] (h may alias dh).
BLASGPT_KERNEL(rmsnorm, void, (T* y, T* rstd, const T* x, std::int64_t N, int C, T eps), (y, rstd, x, N, C, eps))
BLASGPT_KERNEL(embed_rmsnorm, void,
               (T* e, T* y, T* rstd, const std::int32_t* tok, const std::int32_t* pos, const T* wte, const T* wpe,
                std::int64_t N, int C, T eps),
               (e, y, rstd, tok, pos, wte, wpe, N, C, eps))
BLASGPT_KERNEL(rmsnorm_backward, void, (T* dx, const T* dy, const T* x, const T* rstd, std::int64_t N, int C),
               (dx, dy, x, rstd, N, C))
BLASGPT_KERNEL(embed_rmsnorm_backward, void,
               (T* dwte, T* dwpe, const T* dy, const T* x, const T* rstd, const std::int32_t* tok,
                const std::int32_t* pos, std::int64_t N, int C),
               (dwte, dwpe, dy, x, rstd, tok, pos, N, C))
BLASGPT_KERNEL(relu, void, (T* h, const T* u, const T* dh, std::int64_t n), (h, u, dh, n))

// Fused causal attention over whole documents (all heads per call, no gemm): the same math as attention_forward /
// attention_backward in layers.cpp. Instead of the probabilities it keeps, per row, each head's max score and
// 1/Σexp (2C values) in `stats`, and backward recomputes P from them. Applies when attention_supports() says so.
BLASGPT_KERNEL(attention_supports, bool, (int C, int H, int max_positions), (C, H, max_positions))
BLASGPT_KERNEL(attention_forward, void,
               (T* out, T* stats, const T* qkv, const DocSpan* docs, std::int64_t ndocs, int C, int H),
               (out, stats, qkv, docs, ndocs, C, H))
BLASGPT_KERNEL(attention_backward, void,
               (T* dqkv, const T* dout, const T* qkv, const T* stats, const DocSpan* docs, std::int64_t ndocs, int C,
                int H),
               (dqkv, dout, qkv, stats, docs, ndocs, C, H))

// `iters` rounds of independent FMA chains on full vectors of T; *flops receives the work done. Returns a value
// derived from the results (so nothing is optimized away). peak_gflops() times it.
BLASGPT_KERNEL(fma_probe, double, (std::int64_t iters, double* flops), (iters, flops))
