// The layers, written as their derivation: each forward function states its formula, each backward the gradient
// of that formula. Shapes are given per buffer as (rows, cols); every matrix product goes through Gemm, every
// row-wise pass through a vectorized kernel (kernel_list.hpp).
#include "layers.hpp"

#include "internal.hpp"

#include <cmath>

namespace blasgpt {

namespace {
constexpr double kRmsEps = 1e-5;  // rmsnorm: y = x / sqrt(mean(x²) + eps)
}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// embedding and the first rmsnorm (below), one pass:  e_r = wte[tok_r] + wpe[pos_r],  y = rmsnorm(e)    e, y (N, C)
// backward:  de = rmsnorm backward of dy ;  dwte[tok_r] += de_r ;  dwpe[pos_r] += de_r   (callers zero dwte, dwpe)

template <class T>
void embed_forward(T* e, T* y, T* rstd, const int32_t* tok, const int32_t* pos, const T* wte, const T* wpe, int64_t N,
                   int C) {
    embed_rmsnorm_kernel<T>(e, y, rstd, tok, pos, wte, wpe, N, C, T(kRmsEps));
}

template <class T>
void embed_backward(T* dwte, T* dwpe, const T* dy, const T* e, const T* rstd, const int32_t* tok, const int32_t* pos,
                    int64_t N, int C) {
    embed_rmsnorm_backward_kernel<T>(dwte, dwpe, dy, e, rstd, tok, pos, N, C);
}

// ---------------------------------------------------------------------------------------------------------------
// rmsnorm, row-wise:  r = (mean_c x_c² + eps)^(-1/2),  y = r·x                      y (N, C), rstd = r (N)
// backward:  ∂r/∂x_c = -r³ x_c / C, so  dx = r·dy − (r³ / C)·x·Σ_c(dy_c x_c)         (vector kernels, kernels.cpp)

template <class T>
void rmsnorm_forward(T* y, T* rstd, const T* x, int64_t N, int C) {
    rmsnorm_kernel<T>(y, rstd, x, N, C, T(kRmsEps));
}

template <class T>
void rmsnorm_backward(T* dx, const T* dy, const T* x, const T* rstd, int64_t N, int C) {
    rmsnorm_backward_kernel<T>(dx, dy, x, rstd, N, C);  // dx += ...
}

// ---------------------------------------------------------------------------------------------------------------
// linear:   Y = beta·Y + X Wᵀ          X (N, in), W (out, in), Y (N, out)
// backward: dW = dw_beta·dW + dYᵀ X  (out, in) ;  dX = dx_beta·dX + dY W  (N, in)
// (dw_beta = 1 adds this batch's dW to one already there: gradient accumulation over micro-batches)

template <class T>
void linear_forward(const Gemm& mm, T* y, const T* x, const T* w, int64_t N, int in, int out, T beta) {
    mm(Op::N, Op::T, int(N), out, in, T(1), x, in, w, in, beta, y, out);
}

template <class T>
void linear_backward(const Gemm& mm, T* dx, T* dw, const T* dy, const T* x, const T* w, int64_t N, int in, int out,
                     T dx_beta, T dw_beta) {
    mm(Op::T, Op::N, out, in, int(N), T(1), dy, out, x, in, dw_beta, dw, in);
    mm(Op::N, Op::N, int(N), in, out, T(1), dy, out, w, in, dx_beta, dx, in);
}

// ---------------------------------------------------------------------------------------------------------------
// relu: h = max(u, 0);  backward: du = dh·[u > 0]   (zero at u = 0, as microgpt)
// [u > 0] = [h > 0] (h = u where u > 0, else 0; also for a NaN u, whose h is 0), so the model computes u in h's
// buffer, applies relu in place and keeps only h; backward takes h for u.

template <class T>
void relu_forward(T* h, const T* u, int64_t n) {
    relu_kernel<T>(h, u, nullptr, n);
}

template <class T>
void relu_backward(T* du, const T* dh, const T* u, int64_t n) {
    relu_kernel<T>(du, u, dh, n);
}

// ---------------------------------------------------------------------------------------------------------------
// causal self-attention, per document and head h (columns h·hd .. h·hd+hd of q, k, v):
//   S = Q Kᵀ / sqrt(hd) with S_ij = −inf for j > i ;  P = softmax_rows(S) ;  O = P V        S, P (n, n)
// backward:
//   dV = Pᵀ dO ;  dP = dO Vᵀ ;  dS = P ⊙ (dP − rowsum(dP ⊙ P)) ;  dQ = dS K / sqrt(hd) ;  dK = dSᵀ Q / sqrt(hd)
// Documents of n <= kCachedPositions keep P (H n² values). Longer ones run in tiles of kAttnTile query rows i0..i1
// against keys 0..i1 (the causal part only) and keep, per row and head, m = max_j S_ij and r = 1/Σ_j exp(S_ij − m)
// (2H values); backward recomputes each tile's P_ij = exp(S_ij − m_i)·r_i and uses rowsum(dP ⊙ P)_i = dO_i · O_i,
// so memory is linear in n (flash attention's bookkeeping, with gemm tiles).
// The cached path skips the blocks above the diagonal: query rows in blocks b of kCausalBlock (rows i0..i1) take
// S_b = Q_b K_{0:i1}ᵀ, O_b = P_b V_{0:i1}, dP_b = dO_b V_{0:i1}ᵀ, dQ_b = dS_b K_{0:i1}; keys in blocks of the same
// size (keys j0..j1) take dV_{j0:j1} = P_{j0:n, j0:j1}ᵀ dO_{j0:n}, dK likewise from dS and Q. Every term left out
// is a product with a zero of P or dS (j > i), so with the native kernels (one running sum per element, in order)
// every value is bit for bit the full-square result; OpenBLAS may sum a shorter product in another order (last
// bits, both precisions, documents longer than one block only).

template <class T>
void attention_forward(const Gemm& mm, T* out, T* att, T* scratch, const T* qkv, const std::vector<DocSpan>& docs,
                       int C, int H) {
    const int hd = C / H, ld = 3 * C;
    const T scale = T(1) / std::sqrt(T(hd));
    for (const DocSpan& d : docs) {
        const int n = d.n;
        for (int h = 0; h < H; ++h) {
            const T* q = qkv + d.row * ld + h * hd;
            const T* k = q + C;
            const T* v = q + 2 * C;
            T* o = out + d.row * C + h * hd;
            if (n <= kCachedPositions) {
                T* p = att + d.att_off + int64_t(h) * n * n;
                for (int i0 = 0; i0 < n; i0 += kCausalBlock) {
                    const int i1 = std::min(n, i0 + kCausalBlock), rows = i1 - i0;
                    T* pb = p + int64_t(i0) * n;
                    mm(Op::N, Op::T, rows, i1, hd, scale, q + int64_t(i0) * ld, ld, k, ld, T(0), pb, n);
                    causal_softmax_kernel<T>(pb, rows, i0, n, nullptr, nullptr, 0);
                    mm(Op::N, Op::N, rows, hd, i1, T(1), pb, n, v, ld, T(0), o + int64_t(i0) * C, C);
                }
                continue;
            }
            T* stats = att + d.att_off;  // row i: [m_0 .. m_{H-1}, r_0 .. r_{H-1}]
            for (int i0 = 0; i0 < n; i0 += kAttnTile) {
                const int i1 = std::min(n, i0 + kAttnTile), rows = i1 - i0;
                T* p = scratch;  // (rows, i1)
                mm(Op::N, Op::T, rows, i1, hd, scale, q + int64_t(i0) * ld, ld, k, ld, T(0), p, i1);
                T* st = stats + int64_t(i0) * 2 * H + h;
                causal_softmax_kernel<T>(p, rows, i0, i1, st, st + H, 2 * H);
                mm(Op::N, Op::N, rows, hd, i1, T(1), p, i1, v, ld, T(0), o + int64_t(i0) * C, C);
            }
        }
    }
}

template <class T>
void attention_backward(const Gemm& mm, T* dqkv, T* scratch, const T* dout, const T* out, const T* qkv, const T* att,
                        const std::vector<DocSpan>& docs, int C, int H) {
    const int hd = C / H, ld = 3 * C;
    const T scale = T(1) / std::sqrt(T(hd));
    for (const DocSpan& d : docs) {
        const int n = d.n;
        for (int h = 0; h < H; ++h) {
            const T* q = qkv + d.row * ld + h * hd;
            const T* k = q + C;
            const T* v = q + 2 * C;
            T* dq = dqkv + d.row * ld + h * hd;
            T* dk = dq + C;
            T* dv = dq + 2 * C;
            const T* dO = dout + d.row * C + h * hd;
            if (n <= kCachedPositions) {
                const T* p = att + d.att_off + int64_t(h) * n * n;
                T* ds = scratch;  // dP, then dS in place
                for (int i0 = 0; i0 < n; i0 += kCausalBlock) {
                    const int i1 = std::min(n, i0 + kCausalBlock), rows = i1 - i0;
                    T* db = ds + int64_t(i0) * n;
                    mm(Op::N, Op::T, rows, i1, hd, T(1), dO + int64_t(i0) * C, C, v, ld, T(0), db, n);
                    causal_softmax_backward_kernel<T>(db, p + int64_t(i0) * n, nullptr, rows, i0, n, nullptr, nullptr,
                                                      0, nullptr);
                    mm(Op::N, Op::N, rows, hd, i1, scale, db, n, k, ld, T(0), dq + int64_t(i0) * ld, ld);
                }
                for (int j0 = 0; j0 < n; j0 += kCausalBlock) {
                    const int cols = std::min(n, j0 + kCausalBlock) - j0;
                    const int64_t at = int64_t(j0) * n + j0;
                    mm(Op::T, Op::N, cols, hd, n - j0, T(1), p + at, n, dO + int64_t(j0) * C, C, T(0),
                       dv + int64_t(j0) * ld, ld);
                    mm(Op::T, Op::N, cols, hd, n - j0, scale, ds + at, n, q + int64_t(j0) * ld, ld, T(0),
                       dk + int64_t(j0) * ld, ld);
                }
                continue;
            }
            const T* stats = att + d.att_off;
            const T* o = out + d.row * C + h * hd;
            for (int j = 0; j < n; ++j) {  // dK, dV accumulate over the tiles of rows that attend to j
                std::fill_n(dk + int64_t(j) * ld, hd, T(0));
                std::fill_n(dv + int64_t(j) * ld, hd, T(0));
            }
            for (int i0 = 0; i0 < n; i0 += kAttnTile) {
                const int i1 = std::min(n, i0 + kAttnTile), rows = i1 - i0;
                T* p = scratch;                               // (rows, i1): P recomputed
                T* ds = scratch + int64_t(kAttnTile) * i1;    // (rows, i1): dP, then dS in place
                mm(Op::N, Op::T, rows, i1, hd, scale, q + int64_t(i0) * ld, ld, k, ld, T(0), p, i1);
                mm(Op::N, Op::T, rows, i1, hd, T(1), dO + int64_t(i0) * C, C, v, ld, T(0), ds, i1);
                T dot[kAttnTile];  // rowsum(dP ⊙ P)_i = dO_i · O_i
                for (int i = i0; i < i1; ++i) {
                    T acc = 0;
                    for (int c = 0; c < hd; ++c) acc += dO[int64_t(i) * C + c] * o[int64_t(i) * C + c];
                    dot[i - i0] = acc;
                }
                const T* st = stats + int64_t(i0) * 2 * H + h;
                causal_softmax_backward_kernel<T>(ds, p, p, rows, i0, i1, st, st + H, 2 * H, dot);
                mm(Op::N, Op::N, rows, hd, i1, scale, ds, i1, k, ld, T(0), dq + int64_t(i0) * ld, ld);
                mm(Op::T, Op::N, i1, hd, rows, scale, ds, i1, q + int64_t(i0) * ld, ld, T(1), dk, ld);
                mm(Op::T, Op::N, i1, hd, rows, T(1), p, i1, dO + int64_t(i0) * C, C, T(1), dv, ld);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// One row of the same attention, for generation's KV-cached step: the newest position p of a sequence whose keys
// and values 0..p are cached (kc, vc rows of C), per head
//   s_j = q·k_j / sqrt(hd) (j <= p) ;  o = Σ_j softmax(s)_j v_j
// which is row p of the whole-document forward above: the same numbers.

template <class T>
void attention_row_forward(T* out, T* scores, const T* q, const T* kc, const T* vc, int64_t p, int C, int H) {
    const int hd = C / H;
    const T scale = T(1) / std::sqrt(T(hd));
    for (int h = 0; h < H; ++h) {
        const int off = h * hd;
        T mx = T(-1e30);
        for (int64_t j = 0; j <= p; ++j) {
            T dot = 0;
            for (int e = 0; e < hd; ++e) dot += q[off + e] * kc[j * C + off + e];
            scores[j] = dot * scale;
            mx = std::max(mx, scores[j]);
        }
        T sum = 0;
        for (int64_t j = 0; j <= p; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
        const T inv = T(1) / sum;
        std::fill_n(out + off, hd, T(0));
        for (int64_t j = 0; j <= p; ++j) {
            const T w = scores[j] * inv;
            for (int e = 0; e < hd; ++e) out[off + e] += w * vc[j * C + off + e];
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy, row-wise with weight w_r = 1 / (B · n_doc):
//   p = softmax(z) ;  loss = Σ_r w_r · (−log p_r[t_r])
// backward: dz_r = w_r · (p_r − onehot(t_r))

template <class T>
double softmax_xent_forward(T* probs, const T* logits, const int32_t* target, const T* weight, int64_t N, int V) {
    return softmax_xent_kernel<T>(probs, logits, target, weight, N, V);  // vectorized exp (kernels.cpp)
}

template <class T>
void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* target, const T* weight, int64_t N, int V) {
    for (int64_t r = 0; r < N; ++r) {
        const T w = weight[r];
        const T* p = probs + r * V;
        T* d = dlogits + r * V;
        for (int j = 0; j < V; ++j) d[j] = w * p[j];
        d[target[r]] -= w;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// dropout (inverted), elementwise over the rows of the planned documents, at site s:
//   y_rc = x_rc · m_rc / (1 − p) ,   m_rc = [u_rc ≥ p] ,  u_rc = uniform [0, 1) from hash(seed, step, s, seq, pos, c)
// backward (y is linear in x with the same mask):  dx_rc = dy_rc · m_rc / (1 − p)
// The hash chains splitmix64's finalizer, h(a, b) = fmix64((a ^ b) + γ): key = h(h(0, seed), step) (the plan's),
// then h(h(h(key, s), seq), pos) per row and h(row, c) per element; u = (h >> 11) · 2⁻⁵³. So the mask is a function
// of those coordinates alone (tests/test_training_options.py recomputes it in numpy).

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t fmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
uint64_t hash2(uint64_t a, uint64_t b) { return fmix64((a ^ b) + kGolden); }

template <class T>
void apply_dropout_mask(T* y, const T* x, const DropoutPlan& plan, const std::vector<DocSpan>& docs, int site, int C) {
    // keep iff u >= p, with u = (h >> 11)·2⁻⁵³: iff (h >> 11) >= ceil(p·2⁵³) (exact: p·2⁵³ is a double below 2⁵³)
    const uint64_t cut = uint64_t(std::ceil(plan.p * 0x1p53));
    const T scale = T(1 / (1 - plan.p));
    const uint64_t site_key = hash2(plan.key, uint64_t(site));
    for (size_t d = 0; d < docs.size(); ++d) {
        const uint64_t seq_key = hash2(site_key, uint64_t(plan.seq[d]));
        for (int pos = 0; pos < docs[d].n; ++pos) {
            const uint64_t row_key = hash2(seq_key, uint64_t(pos));
            const int64_t r = docs[d].row + pos;
            const T* xr = x + r * C;
            T* yr = y + r * C;
            for (int c = 0; c < C; ++c) yr[c] = (hash2(row_key, uint64_t(c)) >> 11) >= cut ? xr[c] * scale : T(0);
        }
    }
}

}  // namespace

uint64_t dropout_key(uint64_t seed, int64_t step) { return hash2(hash2(0, seed), uint64_t(step)); }

template <class T>
void dropout_forward(T* y, const T* x, const DropoutPlan& plan, const std::vector<DocSpan>& docs, int site, int C) {
    apply_dropout_mask(y, x, plan, docs, site, C);
}

template <class T>
void dropout_backward(T* dx, const T* dy, const DropoutPlan& plan, const std::vector<DocSpan>& docs, int site, int C) {
    apply_dropout_mask(dx, dy, plan, docs, site, C);
}

void DropoutConfig::validate() const {
    if (!(std::isfinite(p) && p >= 0 && p < 1))  // (every step checks: the message is built only on failure)
        fail("dropout must be a number in [0, 1) (got " + std::to_string(p) + ")");
}

// ---------------------------------------------------------------------------------------------------------------
// Adam (bias-corrected), elementwise over the one buffer:
//   m = β1 m + (1 − β1) g ;  v = β2 v + (1 − β2) g² ;  p −= lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)

template <class T>
void adam_update(T* p, T* m, T* v, const T* g, int64_t n, double lr, const AdamConfig& a, int64_t t) {
    const AdamStep s{lr, a.beta1, a.beta2, a.eps, 1 - std::pow(a.beta1, double(t)), 1 - std::pow(a.beta2, double(t))};
    adam_kernel<T>(p, m, v, g, n, s);  // vectorized for this CPU (kernels.cpp)
}

// AdamW (decoupled weight decay, PyTorch's order), before the Adam step of the same update, on the decay rows only
// (the runtime passes their ranges):
//   p ← p − lr·λ·p = p·(1 − lr·λ)    (the moments never see λ: it is not added to the gradient)
// The decay is not part of the loss, so it has no backward; its effect is p_t = (1 − lr·λ)·p_{t−1} − lr·adam_t.

template <class T>
void weight_decay_update(T* p, int64_t n, double lr_wd) {
    const T keep = T(1 - lr_wd);
    for (int64_t i = 0; i < n; ++i) p[i] *= keep;
}

void AdamConfig::validate() const {
    // every step checks: the messages are built only on failure
    if (!(std::isfinite(weight_decay) && weight_decay >= 0))
        fail("weight_decay must be a finite number >= 0 (got " + std::to_string(weight_decay) + ")");
    if (!(std::isfinite(grad_clip) && grad_clip >= 0))
        fail("grad_clip must be a finite number > 0, or 0 for off (got " + std::to_string(grad_clip) + ")");
}

// Global-norm gradient clipping, on the whole gradient after every partial sum (threads, processes) is in it:
//   ‖g‖ = sqrt(Σ_i g_i²) ;  g ← g · min(1, G / ‖g‖)
// It rescales the gradient the optimiser sees; the loss is unchanged, so there is no backward. (PyTorch's
// clip_grad_norm_ divides by ‖g‖ + 1e-6 instead; here G / ‖g‖ exactly.) Σ g² of one slice, in double:
template <class T>
double sum_of_squares(const T* g, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(g[i]) * double(g[i]);
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Every function above, for float and double.
BLASGPT_INSTANTIATE(embed_forward)
BLASGPT_INSTANTIATE(embed_backward)
BLASGPT_INSTANTIATE(rmsnorm_forward)
BLASGPT_INSTANTIATE(rmsnorm_backward)
BLASGPT_INSTANTIATE(linear_forward)
BLASGPT_INSTANTIATE(linear_backward)
BLASGPT_INSTANTIATE(relu_forward)
BLASGPT_INSTANTIATE(relu_backward)
BLASGPT_INSTANTIATE(attention_forward)
BLASGPT_INSTANTIATE(attention_backward)
BLASGPT_INSTANTIATE(attention_row_forward)
BLASGPT_INSTANTIATE(softmax_xent_forward)
BLASGPT_INSTANTIATE(dropout_forward)
BLASGPT_INSTANTIATE(dropout_backward)
BLASGPT_INSTANTIATE(softmax_xent_backward)
BLASGPT_INSTANTIATE(adam_update)
BLASGPT_INSTANTIATE(weight_decay_update)
BLASGPT_INSTANTIATE(sum_of_squares)

}  // namespace blasgpt
