// The model, written as its derivation: each forward function states its formula, each backward the gradient of
// that formula. Shapes are given per buffer as (rows, cols); every matrix product goes through Gemm.
#include "model.hpp"

#include "threadpool.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

namespace blasgpt {

namespace {

constexpr double kRmsEps = 1e-5;  // rmsnorm: y = x / sqrt(mean(x²) + eps)
constexpr int kMlpMult = 4;       // MLP hidden width F = 4C
constexpr int64_t kParallelMinParams = 1 << 14;  // below this, slicing the gradient sum / Adam costs more than it saves
constexpr int kMaxDim = 1 << 16;  // sanity bound on every size (keeps all products inside int64 and gemm's int)

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Argument checks. A literal message costs nothing when ok; a built one is built even when ok (cold paths only).
void require(bool ok, const char* msg) {
    if (!ok) fail(msg);
}
void require(bool ok, const std::string& msg) {
    if (!ok) fail(msg);
}

// Index of each layer's first parameter in the table: wte, wpe, lm_head, then 6 per layer.
constexpr int kGlobalParams = 3;
constexpr int kParamsPerLayer = 6;
enum LayerParam { kWq = 0, kWk, kWv, kWo, kFc1, kFc2 };

}  // namespace

void Config::validate() const {
    require(vocab_size >= 2 && vocab_size <= (1 << 24),
            "vocab_size must be between 2 and 16777216 (got " + std::to_string(vocab_size) + ")");
    require(n_embd >= 1 && n_embd <= kMaxDim, "n_embd must be between 1 and 65536 (got " + std::to_string(n_embd) + ")");
    require(n_head >= 1 && n_head <= n_embd,
            "n_head must be between 1 and n_embd (got " + std::to_string(n_head) + ")");
    require(n_embd % n_head == 0, "n_head (" + std::to_string(n_head) + ") must divide n_embd (" +
                                      std::to_string(n_embd) + ")");
    require(n_layer >= 1 && n_layer <= 1024, "n_layer must be between 1 and 1024 (got " + std::to_string(n_layer) + ")");
    require(block_size >= 1 && block_size <= kMaxDim,
            "block_size must be between 1 and 65536 (got " + std::to_string(block_size) + ")");
}

std::vector<ParamInfo> param_table(const Config& cfg) {
    cfg.validate();
    const int64_t C = cfg.n_embd, V = cfg.vocab_size, F = kMlpMult * C;
    std::vector<ParamInfo> t;
    int64_t off = 0;
    auto add = [&](std::string name, int64_t rows, int64_t cols) {
        t.push_back({std::move(name), rows, cols, off});
        off += rows * cols;
    };
    add("wte", V, C);
    add("wpe", cfg.block_size, C);
    add("lm_head", V, C);
    for (int l = 0; l < cfg.n_layer; ++l) {
        const std::string p = "layer" + std::to_string(l) + ".";
        add(p + "attn_wq", C, C);  // wq, wk, wv are adjacent: together one (3C, C) matrix, one gemm
        add(p + "attn_wk", C, C);
        add(p + "attn_wv", C, C);
        add(p + "attn_wo", C, C);
        add(p + "mlp_fc1", F, C);
        add(p + "mlp_fc2", C, F);
    }
    return t;
}

int64_t num_params(const Config& cfg) {
    const auto t = param_table(cfg);
    return t.back().offset + t.back().rows * t.back().cols;
}

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
// backward: dW = dYᵀ X  (out, in) ;  dX = dx_beta·dX + dY W  (N, in)

template <class T>
void linear_forward(const Gemm& mm, T* y, const T* x, const T* w, int64_t N, int in, int out, T beta) {
    mm(Op::N, Op::T, int(N), out, in, T(1), x, in, w, in, beta, y, out);
}

template <class T>
void linear_backward(const Gemm& mm, T* dx, T* dw, const T* dy, const T* x, const T* w, int64_t N, int in, int out,
                     T dx_beta) {
    mm(Op::T, Op::N, out, in, int(N), T(1), dy, out, x, in, T(0), dw, in);
    mm(Op::N, Op::N, int(N), in, out, T(1), dy, out, w, in, dx_beta, dx, in);
}

// ---------------------------------------------------------------------------------------------------------------
// relu: h = max(u, 0);  backward: du = dh·[u > 0]   (zero at u = 0, as microgpt)

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

namespace {

// Attention cache a document of n positions needs: P, or the per-row statistics of the tiled path.
int64_t attention_cache(int n, int H) { return n <= kCachedPositions ? int64_t(H) * n * n : int64_t(2) * H * n; }

// Scratch of one thread's attention: an (n, n) matrix (cached) or two (tile, n) matrices (tiled).
int64_t attention_scratch(int block) {
    const int64_t c = std::min(block, kCachedPositions);
    return std::max(c * c, block > kCachedPositions ? int64_t(2) * kAttnTile * block : 0);
}

}  // namespace

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
                mm(Op::N, Op::T, n, n, hd, scale, q, ld, k, ld, T(0), p, n);
                causal_softmax_kernel<T>(p, n, 0, n, nullptr, nullptr, 0);
                mm(Op::N, Op::N, n, hd, n, T(1), p, n, v, ld, T(0), o, C);
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
                mm(Op::N, Op::T, n, n, hd, T(1), dO, C, v, ld, T(0), ds, n);
                mm(Op::T, Op::N, n, hd, n, T(1), p, n, dO, C, T(0), dv, ld);
                causal_softmax_backward_kernel<T>(ds, p, nullptr, n, 0, n, nullptr, nullptr, 0, nullptr);
                mm(Op::N, Op::N, n, hd, n, scale, ds, n, k, ld, T(0), dq, ld);
                mm(Op::T, Op::N, n, hd, n, scale, ds, n, q, ld, T(0), dk, ld);
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
// Adam (bias-corrected), elementwise over the one buffer:
//   m = β1 m + (1 − β1) g ;  v = β2 v + (1 − β2) g² ;  p −= lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε)

template <class T>
void adam_update(T* p, T* m, T* v, const T* g, int64_t n, double lr, const AdamConfig& a, int64_t t) {
    const AdamStep s{lr, a.beta1, a.beta2, a.eps, 1 - std::pow(a.beta1, double(t)), 1 - std::pow(a.beta2, double(t))};
    adam_kernel<T>(p, m, v, g, n, s);  // vectorized for this CPU (kernels.cpp)
}

template void adam_update<float>(float*, float*, float*, const float*, int64_t, double, const AdamConfig&, int64_t);
template void adam_update<double>(double*, double*, double*, const double*, int64_t, double, const AdamConfig&,
                                  int64_t);

// ---------------------------------------------------------------------------------------------------------------
// The model's forward and backward over a planned workspace: the functions above, composed.

// Attention cache per row: cached probabilities (Σ_doc H n² <= H · min(block, kCachedPositions) · N), the tiled
// path's 2H statistics, or the fused kernel's 2C.
namespace {
int64_t attention_cache_per_row(const Config& cfg) {
    const int64_t C = cfg.n_embd, H = cfg.n_head;
    return std::max({H * std::min(cfg.block_size, kCachedPositions), 2 * C, 2 * H});
}
}  // namespace

WorkspaceSize workspace_size(const Config& cfg, int64_t rows) {
    const int64_t C = cfg.n_embd, F = kMlpMult * C, V = cfg.vocab_size, L = cfg.n_layer;
    const int64_t per_layer = 8 * C + 2 * F + 2 + attention_cache_per_row(cfg);  // a ra qkv att o xmid b rb u h
    const int64_t per_row = 1 + C + 1 + (L + 1) * C + L * per_layer + V + 5 * C + F;  // weight e r0 x .. dx dtmp dqkv dh
    return {per_row * rows + attention_scratch(cfg.block_size), 3 * rows};
}

template <class T>
void Workspace<T>::reserve(const Config& cfg, int64_t rows) {  // the buffers workspace_size() counts
    if (rows <= capacity) return;
    const int64_t C = cfg.n_embd, F = kMlpMult * C, V = cfg.vocab_size;
    tok_in.resize(rows);
    tok_tgt.resize(rows);
    pos.resize(rows);
    weight.resize(rows);
    e.resize(rows * C);
    r0.resize(rows);
    x.resize(cfg.n_layer + 1);
    for (auto& xl : x) xl.resize(rows * C);
    layers.resize(cfg.n_layer);
    for (auto& c : layers) {
        c.a.resize(rows * C);
        c.ra.resize(rows);
        c.qkv.resize(rows * 3 * C);
        c.att.resize(attention_cache_per_row(cfg) * rows);
        c.o.resize(rows * C);
        c.xmid.resize(rows * C);
        c.b.resize(rows * C);
        c.rb.resize(rows);
        c.u.resize(rows * F);
        c.h.resize(rows * F);
    }
    logits.resize(rows * V);
    dx.resize(rows * C);
    dtmp.resize(rows * C);
    dqkv.resize(rows * 3 * C);
    dh.resize(rows * F);
    datt.resize(attention_scratch(cfg.block_size));
    capacity = rows;
}

// Lay out documents of the given lengths one after another in a workspace (rows, attention cache offsets) and
// reserve room for them; returns the rows used.
template <class T, class Lengths>
int64_t plan_docs(Workspace<T>& ws, const Config& cfg, size_t count, Lengths n_of) {
    int64_t r = 0, att = 0;
    ws.docs.clear();
    ws.max_n = 0;
    for (size_t i = 0; i < count; ++i) {
        const int n = n_of(i);
        ws.max_n = std::max(ws.max_n, n);
        ws.docs.push_back({r, n, att});
        r += n;
        att += attention_cache(n, cfg.n_head);
    }
    ws.reserve(cfg, r);
    ws.N = r;
    return r;
}

// The native backend runs attention as one fused kernel per document (kernels.cpp) when the shapes suit its vectors;
// the BLAS backend, and shapes the kernel does not take, use the gemm-based functions above.
template <class T>
bool fused_attention(const Gemm& mm, const Config& cfg, const Workspace<T>& ws) {
    return mm.backend == Backend::Native && attention_supports_kernel<T>(cfg.n_embd, cfg.n_head, ws.max_n);
}

// The forward pass over ws.N planned rows, with attend(layer, cache) filling cache.o from cache.qkv: whole
// documents in training and evaluation, one cached row per sample in generation.
template <class T, class Attend>
void forward_with(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                  Workspace<T>& ws, Attend attend) {
    const int C = cfg.n_embd, F = kMlpMult * C, V = cfg.vocab_size;
    const int64_t N = ws.N;
    auto w = [&](int idx) { return params + table[idx].offset; };

    embed_forward(ws.e.data(), ws.x[0].data(), ws.r0.data(), ws.tok_in.data(), ws.pos.data(), w(0), w(1), N, C);
    for (int l = 0; l < cfg.n_layer; ++l) {
        auto& c = ws.layers[l];
        const int base = kGlobalParams + kParamsPerLayer * l;
        const T* x = ws.x[l].data();
        // x = x + Wo · attention(rmsnorm(x))
        rmsnorm_forward(c.a.data(), c.ra.data(), x, N, C);
        linear_forward(mm, c.qkv.data(), c.a.data(), w(base + kWq), N, C, 3 * C, T(0));
        attend(l, c);
        std::copy_n(x, N * C, c.xmid.data());
        linear_forward(mm, c.xmid.data(), c.o.data(), w(base + kWo), N, C, C, T(1));
        // x = x + W2 · relu(W1 · rmsnorm(x))
        rmsnorm_forward(c.b.data(), c.rb.data(), c.xmid.data(), N, C);
        linear_forward(mm, c.u.data(), c.b.data(), w(base + kFc1), N, C, F, T(0));
        relu_forward(c.h.data(), c.u.data(), N * F);
        std::copy_n(c.xmid.data(), N * C, ws.x[l + 1].data());
        linear_forward(mm, ws.x[l + 1].data(), c.h.data(), w(base + kFc2), N, F, C, T(1));
    }
    linear_forward(mm, ws.logits.data(), ws.x[cfg.n_layer].data(), w(2), N, C, V, T(0));
}

template <class T>
void model_forward(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                   Workspace<T>& ws) {
    const int C = cfg.n_embd, H = cfg.n_head;
    const bool fused = fused_attention(mm, cfg, ws);
    forward_with(mm, cfg, table, params, ws, [&](int, typename Workspace<T>::Layer& c) {
        if (fused)
            attention_forward_kernel<T>(c.o.data(), c.att.data(), c.qkv.data(), ws.docs.data(), int64_t(ws.docs.size()),
                                     C, H);
        else
            attention_forward(mm, c.o.data(), c.att.data(), ws.datt.data(), c.qkv.data(), ws.docs, C, H);
    });
}

template <class T>
double model_loss(const Config& cfg, Workspace<T>& ws) {
    return softmax_xent_forward(ws.logits.data(), ws.logits.data(), ws.tok_tgt.data(), ws.weight.data(), ws.N,
                                cfg.vocab_size);
}

template <class T>
void model_backward(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                    T* grads, Workspace<T>& ws) {
    const int C = cfg.n_embd, F = kMlpMult * C, V = cfg.vocab_size, H = cfg.n_head;
    const int64_t N = ws.N;
    auto w = [&](int idx) { return params + table[idx].offset; };
    auto g = [&](int idx) { return grads + table[idx].offset; };
    T* dx = ws.dx.data();     // ∂loss/∂(residual stream), walked backwards through the layers
    T* tmp = ws.dtmp.data();  // (N, C) scratch: db, dO, da in turn

    softmax_xent_backward(ws.logits.data(), ws.logits.data(), ws.tok_tgt.data(), ws.weight.data(), N, V);
    linear_backward(mm, dx, g(2), ws.logits.data(), ws.x[cfg.n_layer].data(), w(2), N, C, V, T(0));
    for (int l = cfg.n_layer - 1; l >= 0; --l) {
        auto& c = ws.layers[l];
        const int base = kGlobalParams + kParamsPerLayer * l;
        // MLP branch; the residual passes dx through unchanged and the branch adds to it
        linear_backward(mm, ws.dh.data(), g(base + kFc2), dx, c.h.data(), w(base + kFc2), N, F, C, T(0));
        relu_backward(ws.dh.data(), ws.dh.data(), c.u.data(), N * F);
        linear_backward(mm, tmp, g(base + kFc1), ws.dh.data(), c.b.data(), w(base + kFc1), N, C, F, T(0));
        rmsnorm_backward(dx, tmp, c.xmid.data(), c.rb.data(), N, C);
        // attention branch
        linear_backward(mm, tmp, g(base + kWo), dx, c.o.data(), w(base + kWo), N, C, C, T(0));
        if (fused_attention(mm, cfg, ws))
            attention_backward_kernel<T>(ws.dqkv.data(), tmp, c.qkv.data(), c.att.data(), ws.docs.data(),
                                      int64_t(ws.docs.size()), C, H);
        else
            attention_backward(mm, ws.dqkv.data(), ws.datt.data(), tmp, c.o.data(), c.qkv.data(), c.att.data(), ws.docs,
                               C, H);
        linear_backward(mm, tmp, g(base + kWq), ws.dqkv.data(), c.a.data(), w(base + kWq), N, C, 3 * C, T(0));
        rmsnorm_backward(dx, tmp, ws.x[l].data(), c.ra.data(), N, C);
    }
    std::fill_n(g(0), table[0].rows * C, T(0));
    std::fill_n(g(1), table[1].rows * C, T(0));
    embed_backward(g(0), g(1), dx, ws.e.data(), ws.r0.data(), ws.tok_in.data(), ws.pos.data(), N, C);
}

// ---------------------------------------------------------------------------------------------------------------
// Model

template <class T>
Model<T>::Model(const Config& cfg, Backend backend, int threads) : cfg_(cfg), table_(param_table(cfg)) {
    mm_.backend = backend;
    const int64_t n = num_params(cfg_);
    params_.assign(n, T(0));
    grads_.assign(n, T(0));
    m_.assign(n, T(0));
    v_.assign(n, T(0));
    set_threads(threads);
}

template <class T>
Model<T>::~Model() = default;

template <class T>
int Model<T>::threads() const {
    return pool_ ? pool_->size() : 1;
}

template <class T>
void Model<T>::set_threads(int threads) {
    require(threads >= 1 && threads <= 256, "threads must be between 1 and 256 (got " + std::to_string(threads) + ")");
    if (pool_ && pool_->size() == threads) return;
    pool_.reset();
    pool_ = std::make_unique<ThreadPool>(threads);
    ws_.resize(threads);
    for (int t = 1; t < threads; ++t) ws_[t].grads.assign(params_.size(), T(0));
    group_loss_.assign(threads, 0.0);
}

template <class T>
void Model<T>::set_step(int64_t s) {
    require(s >= 0, "step must be >= 0 (got " + std::to_string(s) + ")");
    step_ = s;
}

template <class T>
int64_t Model<T>::validate(const BatchView& b) {
    require(b.batch_size >= 1, "the batch is empty: it needs at least one document");
    require(b.tokens != nullptr, "tokens are required");
    if (b.windows) {
        require(b.doc_ids != nullptr, "a batch of windows needs their start offsets");
    } else {
        require(b.num_offsets >= 2, "offsets must hold at least 2 entries (documents + 1)");
        require(b.offsets != nullptr, "offsets are required");
    }
    const int64_t num_docs = b.num_offsets - 1;
    const int V = cfg_.vocab_size;
    refs_.resize(b.batch_size);
    int64_t rows = 0;
    // hot loop: the messages are built only on failure
    for (int64_t i = 0; i < b.batch_size; ++i) {
        int64_t lo, hi;
        if (b.windows) {
            lo = b.doc_ids[i];
            if (lo < 0 || lo > b.num_tokens - 2)
                fail("window start " + std::to_string(lo) + " is out of range [0, " +
                     std::to_string(b.num_tokens - 1) + "): a window needs at least 2 tokens");
            hi = std::min(b.num_tokens, lo + cfg_.block_size + 1);
        } else {
            const int64_t d = b.doc_ids ? b.doc_ids[i] : i;
            if (d < 0 || d >= num_docs)
                fail("document index " + std::to_string(d) + " is out of range [0, " + std::to_string(num_docs) +
                     ")");
            lo = b.offsets[d];
            hi = b.offsets[d + 1];
            if (lo < 0 || lo > hi || hi > b.num_tokens)
                fail("offsets must be non-decreasing and within the tokens array (document " + std::to_string(d) +
                     " spans [" + std::to_string(lo) + ", " + std::to_string(hi) + "), tokens has " +
                     std::to_string(b.num_tokens) + ")");
            if (hi - lo < 2)
                fail("document " + std::to_string(d) + " has " + std::to_string(hi - lo) +
                     " tokens; each needs at least 2 ([BOS] + text + [BOS])");
        }
        const int n = int(std::min<int64_t>(cfg_.block_size, hi - lo - 1));
        for (int64_t j = lo; j <= lo + n; ++j) {
            if (b.tokens[j] < 0 || b.tokens[j] >= V)
                fail("token id " + std::to_string(b.tokens[j]) + " at position " + std::to_string(j) +
                     " is out of range [0, " + std::to_string(V) + ")");
        }
        refs_[i] = {lo, n};
        rows += n;
    }
    require(rows <= (int64_t(1) << 30), "batch too large: more than 2^30 token positions");
    require(b.mean_over == 0 || b.mean_over >= b.batch_size, "mean_over must be 0 or at least the batch size");
    tokens_ = b.tokens;
    inv_batch_ = T(1) / T(b.mean_over ? b.mean_over : b.batch_size);
    return rows;
}

template <class T>
int Model<T>::split(int64_t rows) {
    const int groups = int(std::min<int64_t>(threads(), int64_t(refs_.size())));
    // contiguous groups of documents, cut once the running row count passes g/groups of the total (or when only
    // one document per remaining group is left)
    group_begin_.assign(groups + 1, 0);
    int64_t seen = 0;
    int g = 1;
    for (size_t i = 0; i < refs_.size() && g < groups; ++i) {
        seen += refs_[i].n;
        const size_t left = refs_.size() - (i + 1);
        if (seen * groups >= rows * g || left == size_t(groups - g)) group_begin_[g++] = i + 1;
    }
    group_begin_[groups] = refs_.size();
    for (g = 0; g < groups; ++g) {
        Workspace<T>& ws = ws_[g];
        const size_t first = group_begin_[g];
        plan_docs(ws, cfg_, group_begin_[g + 1] - first, [&](size_t i) { return refs_[first + i].n; });
        for (size_t i = group_begin_[g], k = 0; i < group_begin_[g + 1]; ++i, ++k) {
            const int32_t* tok = tokens_ + refs_[i].start;
            const DocSpan& s = ws.docs[k];
            const T wgt = inv_batch_ / T(s.n);  // loss = mean over docs of mean over positions
            for (int p = 0; p < s.n; ++p) {
                ws.tok_in[s.row + p] = tok[p];
                ws.tok_tgt[s.row + p] = tok[p + 1];
                ws.pos[s.row + p] = p;
                ws.weight[s.row + p] = wgt;
            }
        }
    }
    return groups;
}

template <class T>
double Model<T>::run(bool with_grads, const AdamConfig* adam, double lr) {
    const int groups = int(group_begin_.size()) - 1;
    pool_->run(groups, [&](int g) {
        Workspace<T>& ws = ws_[g];
        model_forward(mm_, cfg_, table_, params_.data(), ws);
        group_loss_[g] = model_loss(cfg_, ws);
        if (with_grads) model_backward(mm_, cfg_, table_, params_.data(), g == 0 ? grads_.data() : ws.grads.data(), ws);
    });
    double loss = group_loss_[0];
    for (int g = 1; g < groups; ++g) loss += group_loss_[g];
    if (!with_grads) return loss;
    const bool update = adam != nullptr && std::isfinite(loss);  // a non-finite loss is reported, never applied
    reduce_and_update(groups, update ? adam : nullptr, lr);
    return loss;
}

// Sum the partial gradients (in group order, so the result does not depend on scheduling) and, with adam, take one
// Adam step; each thread works on its own slice of the buffer.
template <class T>
void Model<T>::reduce_and_update(int groups, const AdamConfig* adam, double lr) {
    if (adam) ++step_;
    const int64_t n = size();
    const int slices = n >= kParallelMinParams ? threads() : 1;
    pool_->run(slices, [&](int t) {
        const int64_t lo = n * t / slices, hi = n * (t + 1) / slices;
        T* dst = grads_.data();
        for (int g = 1; g < groups; ++g) {
            const T* part = ws_[g].grads.data();
            for (int64_t i = lo; i < hi; ++i) dst[i] += part[i];
        }
        if (adam)
            adam_update(params_.data() + lo, m_.data() + lo, v_.data() + lo, grads_.data() + lo, hi - lo, lr, *adam,
                        step_);
    });
}

template <class T>
void Model<T>::apply_adam(double lr, const AdamConfig& adam) {
    if (!(std::isfinite(lr) && lr >= 0)) fail("lr must be a finite number >= 0 (got " + std::to_string(lr) + ")");
    reduce_and_update(1, &adam, lr);
}

template <class T>
double Model<T>::forward_backward(const BatchView& batch) {
    split(validate(batch));
    return run(true, nullptr, 0);
}

template <class T>
double Model<T>::train_step(const BatchView& batch, double lr, const AdamConfig& adam) {
    if (!(std::isfinite(lr) && lr >= 0)) fail("lr must be a finite number >= 0 (got " + std::to_string(lr) + ")");
    split(validate(batch));
    return run(true, &adam, lr);
}

template <class T>
int64_t Model<T>::train_steps(const BatchView& corpus, const int64_t* doc_ids, int64_t steps, int64_t batch_size,
                              const double* lrs, double* losses, const AdamConfig& adam) {
    require(steps >= 0, "steps must be >= 0");
    require(batch_size >= 1, "the batch is empty: it needs at least one document");
    for (int64_t s = 0; s < steps; ++s)
        if (!(std::isfinite(lrs[s]) && lrs[s] >= 0))
            fail("lr must be a finite number >= 0 (got " + std::to_string(lrs[s]) + " at step " + std::to_string(s) +
                 ")");
    BatchView b = corpus;
    b.batch_size = batch_size;
    for (int64_t s = 0; s < steps; ++s) {  // check every step's documents first: a bad one applies nothing
        b.doc_ids = doc_ids + s * batch_size;
        validate(b);
    }
    for (int64_t s = 0; s < steps; ++s) {
        b.doc_ids = doc_ids + s * batch_size;
        losses[s] = train_step(b, lrs[s], adam);
        if (!std::isfinite(losses[s])) return s + 1;
    }
    return steps;
}

template <class T>
double Model<T>::loss(const BatchView& batch) {
    split(validate(batch));
    return run(false, nullptr, 0);
}

template <class T>
void Model<T>::logits(T* out, const int32_t* tokens, int64_t n) {
    require(n >= 1 && n <= cfg_.block_size, "a sequence needs between 1 and block_size (" +
                                                std::to_string(cfg_.block_size) + ") tokens, got " +
                                                std::to_string(n));
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
            fail("token id " + std::to_string(tokens[i]) + " is out of range [0, " + std::to_string(cfg_.vocab_size) +
                 ")");
    Workspace<T>& ws = ws_[0];
    plan_docs(ws, cfg_, 1, [&](size_t) { return int(n); });
    for (int64_t i = 0; i < n; ++i) {
        ws.tok_in[i] = tokens[i];
        ws.pos[i] = int32_t(i);
    }
    model_forward(mm_, cfg_, table_, params_.data(), ws);
    std::copy_n(ws.logits.data(), n * cfg_.vocab_size, out);
}

// ---------------------------------------------------------------------------------------------------------------
// Generation (see model.hpp). Per token, a cached step for sample s at position p = len − 1 runs the model on the
// one row of its newest token and, in every layer, writes k_p, v_p to the cache and attends with
//   s_j = q·k_j / sqrt(hd) (j <= p) ;  o = Σ_j softmax(s)_j v_j          (per head)
// which is row p of the full causal attention: the same numbers the whole-window forward computes.

namespace {

uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double uniform01(uint64_t& state) { return double(splitmix64(state) >> 11) * 0x1.0p-53; }  // [0, 1)

}  // namespace

template <class T>
Generator<T>::Generator(Model<T>& model, const int32_t* prompt, int64_t prompt_len, int64_t num, uint64_t seed,
                        const SampleConfig& sc)
    : model_(model), cfg_(model.config()), sc_(sc), num_(num), len_(prompt_len) {
    const int V = cfg_.vocab_size, block = cfg_.block_size;
    require(num >= 1 && num <= (1 << 16), "num must be between 1 and 65536 (got " + std::to_string(num) + ")");
    require(prompt_len >= 1, "generation needs a context of at least one token");
    require(sc.slide || prompt_len <= block, "a context of " + std::to_string(prompt_len) +
                                                 " tokens does not fit block_size (" + std::to_string(block) + ")");
    require(std::isfinite(sc.temperature) && sc.temperature > 0,
            "temperature must be a finite number > 0 (got " + std::to_string(sc.temperature) + ")");
    require(sc.top_k >= 0 && sc.top_k <= V, "top_k must be between 0 (all) and the vocabulary size " +
                                                std::to_string(V) + " (got " + std::to_string(sc.top_k) + ")");
    require(sc.stop_token >= -1 && sc.stop_token < V && sc.ban_token >= -1 && sc.ban_token < V,
            "stop_token and ban_token must be -1 or token ids");
    require(!(sc.ban_token >= 0 && V == 1), "cannot ban the only token");
    for (int64_t i = 0; i < prompt_len; ++i)
        if (prompt[i] < 0 || prompt[i] >= V)
            fail("token id " + std::to_string(prompt[i]) + " is out of range [0, " + std::to_string(V) + ")");
    ctx_.assign(num, std::vector<int32_t>(prompt, prompt + prompt_len));
    rng_.resize(num);
    for (int64_t i = 0; i < num; ++i) {
        uint64_t st = seed;
        rng_[i] = splitmix64(st) ^ (0xD1B54A32D192ED03ull * uint64_t(i + 1));
    }
    live_.assign(num, 1);
    kcache_.assign(cfg_.n_layer, std::vector<T>(size_t(num) * block * cfg_.n_embd));
    vcache_.assign(cfg_.n_layer, std::vector<T>(size_t(num) * block * cfg_.n_embd));
    logits_.assign(size_t(num) * V, T(0));
    scores_.resize(block);
    prefill();
}

template <class T>
void Generator<T>::prefill() {  // the prompt is the same for every sample: one forward, its caches copied
    if (len_ > cfg_.block_size) {
        rows_.assign(1, 0);
        recompute();
        for (int64_t s = 1; s < num_; ++s)
            std::copy_n(logits_.data(), cfg_.vocab_size, logits_.data() + s * cfg_.vocab_size);
        return;
    }
    const int n = int(len_), C = cfg_.n_embd, V = cfg_.vocab_size;
    plan_docs(ws_, cfg_, 1, [&](size_t) { return n; });
    for (int i = 0; i < n; ++i) {
        ws_.tok_in[i] = ctx_[0][i];
        ws_.pos[i] = i;
    }
    model_forward(model_.gemm(), cfg_, model_.table(), model_.params(), ws_);
    const int64_t per_sample = int64_t(cfg_.block_size) * C;
    for (int l = 0; l < cfg_.n_layer; ++l) {
        const T* qkv = ws_.layers[l].qkv.data();
        for (int i = 0; i < n; ++i) {
            std::copy_n(qkv + int64_t(i) * 3 * C + C, C, kcache_[l].data() + int64_t(i) * C);
            std::copy_n(qkv + int64_t(i) * 3 * C + 2 * C, C, vcache_[l].data() + int64_t(i) * C);
        }
        for (int64_t s = 1; s < num_; ++s) {
            std::copy_n(kcache_[l].data(), int64_t(n) * C, kcache_[l].data() + s * per_sample);
            std::copy_n(vcache_[l].data(), int64_t(n) * C, vcache_[l].data() + s * per_sample);
        }
    }
    for (int64_t s = 0; s < num_; ++s) std::copy_n(ws_.logits.data() + int64_t(n - 1) * V, V, logits_.data() + s * V);
}

template <class T>
void Generator<T>::decode() {
    const int C = cfg_.n_embd, H = cfg_.n_head, hd = C / H, V = cfg_.vocab_size;
    const int64_t m = int64_t(rows_.size()), p = len_ - 1, per_sample = int64_t(cfg_.block_size) * C;
    const T scale = T(1) / std::sqrt(T(hd));
    plan_docs(ws_, cfg_, size_t(m), [](size_t) { return 1; });
    for (int64_t r = 0; r < m; ++r) {
        ws_.tok_in[r] = ctx_[rows_[r]].back();
        ws_.pos[r] = int32_t(p);
    }
    Gemm rows_gemm;  // OpenBLAS: products of a few rows are matrix-vector work, where it is ~10x the native kernels
    rows_gemm.backend = Backend::Blas;
    forward_with(rows_gemm, cfg_, model_.table(), model_.params(), ws_,
                 [&](int l, typename Workspace<T>::Layer& c) {
                     for (int64_t r = 0; r < m; ++r) {
                         const T* q = c.qkv.data() + r * 3 * C;
                         T* kc = kcache_[l].data() + rows_[r] * per_sample;
                         T* vc = vcache_[l].data() + rows_[r] * per_sample;
                         std::copy_n(q + C, C, kc + p * C);
                         std::copy_n(q + 2 * C, C, vc + p * C);
                         T* o = c.o.data() + r * C;
                         for (int h = 0; h < H; ++h) {
                             const int off = h * hd;
                             T mx = T(-1e30);
                             for (int64_t j = 0; j <= p; ++j) {
                                 T dot = 0;
                                 for (int e = 0; e < hd; ++e) dot += q[off + e] * kc[j * C + off + e];
                                 scores_[j] = dot * scale;
                                 mx = std::max(mx, scores_[j]);
                             }
                             T sum = 0;
                             for (int64_t j = 0; j <= p; ++j) sum += (scores_[j] = std::exp(scores_[j] - mx));
                             const T inv = T(1) / sum;
                             std::fill_n(o + off, hd, T(0));
                             for (int64_t j = 0; j <= p; ++j) {
                                 const T w = scores_[j] * inv;
                                 for (int e = 0; e < hd; ++e) o[off + e] += w * vc[j * C + off + e];
                             }
                         }
                     }
                 });
    for (int64_t r = 0; r < m; ++r) std::copy_n(ws_.logits.data() + r * V, V, logits_.data() + rows_[r] * V);
}

template <class T>
void Generator<T>::recompute() {
    const int block = cfg_.block_size, V = cfg_.vocab_size;
    const int n = int(std::min<int64_t>(len_, block));
    plan_docs(ws_, cfg_, rows_.size(), [&](size_t) { return n; });
    for (size_t r = 0; r < rows_.size(); ++r) {
        const int32_t* last = ctx_[rows_[r]].data() + (len_ - n);
        for (int i = 0; i < n; ++i) {
            ws_.tok_in[r * n + i] = last[i];
            ws_.pos[r * n + i] = i;
        }
    }
    model_forward(model_.gemm(), cfg_, model_.table(), model_.params(), ws_);
    for (size_t r = 0; r < rows_.size(); ++r)
        std::copy_n(ws_.logits.data() + (int64_t(r) * n + n - 1) * V, V, logits_.data() + rows_[r] * V);
}

template <class T>
int32_t Generator<T>::draw(const T* logits, int64_t sample) {
    const int V = cfg_.vocab_size;
    const int ban = sc_.ban_token;
    if (sc_.top_k == 1) {  // greedy: the first maximal logit (numpy.argmax), temperature irrelevant
        int best = ban == 0 ? 1 : 0;
        for (int j = best + 1; j < V; ++j)
            if (j != ban && logits[j] > logits[best]) best = j;
        return best;
    }
    thread_local std::vector<double> z;
    z.resize(V);
    const double ninf = -std::numeric_limits<double>::infinity();
    double top = ninf;  // shift by the largest allowed logit before dividing: (l - top) / temperature <= 0 cannot
    for (int j = 0; j < V; ++j)  // overflow at a tiny temperature (l / t could: inf - inf = nan, a wrong draw)
        if (j != ban) top = std::max(top, double(logits[j]));
    for (int j = 0; j < V; ++j) z[j] = j == ban ? ninf : (double(logits[j]) - top) / sc_.temperature;
    const int allowed = V - (ban >= 0 ? 1 : 0);
    if (sc_.top_k > 1 && sc_.top_k < allowed) {  // keep the top_k likeliest (and any tied with the k-th)
        thread_local std::vector<double> sorted;
        sorted.assign(z.begin(), z.end());
        std::nth_element(sorted.begin(), sorted.begin() + (sc_.top_k - 1), sorted.end(), std::greater<double>());
        const double cut = sorted[sc_.top_k - 1];
        for (int j = 0; j < V; ++j)
            if (z[j] < cut) z[j] = ninf;
    }
    const double mx = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += (z[j] = z[j] == ninf ? 0.0 : std::exp(z[j] - mx));
    const double u = uniform01(rng_[sample]) * sum;
    double acc = 0;
    int last = 0;
    for (int j = 0; j < V; ++j) {
        if (z[j] == 0) continue;
        acc += z[j];
        last = j;
        if (u < acc) return j;
    }
    return last;  // rounding left u at the very top: the last token with weight
}

template <class T>
int64_t Generator<T>::next(int32_t* out, int64_t count) {
    require(count >= 0, "count must be >= 0");
    std::lock_guard<std::mutex> lock(model_.mutex());
    const int V = cfg_.vocab_size, block = cfg_.block_size;
    std::fill_n(out, num_ * count, -1);
    for (int64_t c = 0; c < count; ++c) {
        rows_.clear();
        for (int64_t s = 0; s < num_; ++s)
            if (live_[s]) rows_.push_back(s);
        if (rows_.empty()) return c;
        if (stale_) {  // the logits of the tokens drawn last
            if (len_ <= block)
                decode();
            else
                recompute();
            stale_ = false;
        }
        for (int64_t s : rows_) {
            const int32_t tok = draw(logits_.data() + s * V, s);
            out[s * count + c] = tok;
            ctx_[s].push_back(tok);
            if (tok == sc_.stop_token) live_[s] = 0;
        }
        ++len_;
        stale_ = true;
        if (!sc_.slide && len_ > block) std::fill(live_.begin(), live_.end(), 0);  // lines mode: the block is full
    }
    return count;
}

template class Generator<float>;
template class Generator<double>;

template struct Workspace<float>;
template struct Workspace<double>;
template class Model<float>;
template class Model<double>;

}  // namespace blasgpt
