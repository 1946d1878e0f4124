// The layers of blasgpt's GPT as paired forward/backward free functions (layers.cpp states each formula).
//
// Notation (docs/MATH.md): a packed batch has N rows (token positions of all its documents, concatenated),
// C = n_embd, H = n_head, hd = C / H, V = vocab size. Activations are row-major (N, width) matrices; a linear
// layer with weight W (out, in) computes Y = X Wᵀ. Argument order, as in llm.c: outputs, caches, inputs,
// parameters, sizes. Backward functions receive the forward's inputs and caches, and write the d-prefixed
// gradients. Instantiated for float and double.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gemm.hpp"
#include "kernels.hpp"

namespace blasgpt {

template <class T>  // the embedding and the first rmsnorm in one pass: e = wte[tok] + wpe[pos], y = rmsnorm(e)
void embed_forward(T* e, T* y, T* rstd, const int32_t* tok, const int32_t* pos, const T* wte, const T* wpe, int64_t N,
                   int C);
template <class T>  // back through that rmsnorm (dy) to dwte[tok] += de, dwpe[pos] += de
void embed_backward(T* dwte, T* dwpe, const T* dy, const T* e, const T* rstd, const int32_t* tok, const int32_t* pos,
                    int64_t N, int C);

template <class T>
void rmsnorm_forward(T* y, T* rstd, const T* x, int64_t N, int C);
template <class T>  // accumulates: dx += ∂loss/∂x
void rmsnorm_backward(T* dx, const T* dy, const T* x, const T* rstd, int64_t N, int C);

template <class T>  // y = beta * y + x Wᵀ  (beta = 1 adds a residual already stored in y)
void linear_forward(const Gemm& mm, T* y, const T* x, const T* w, int64_t N, int in, int out, T beta);
template <class T>  // dw = dw_beta * dw + dyᵀ x (dw_beta 1: accumulate); dx = dx_beta * dx + dy W
void linear_backward(const Gemm& mm, T* dx, T* dw, const T* dy, const T* x, const T* w, int64_t N, int in, int out,
                     T dx_beta, T dw_beta = T(0));

template <class T>  // in place allowed (h == u)
void relu_forward(T* h, const T* u, int64_t n);
template <class T>  // in place allowed (du == dh); u may be the forward's output h ([u > 0] = [h > 0])
void relu_backward(T* du, const T* dh, const T* u, int64_t n);

// Causal self-attention over whole documents. Documents of up to kCachedPositions positions cache their
// probabilities (H n² values); longer ones are done in tiles of kAttnTile query rows that keep only each row's max
// score and 1/Σexp per head (2H values), and backward recomputes P tile by tile, so attention memory stays linear
// in positions at any block_size.
constexpr int kCachedPositions = 128;
constexpr int kAttnTile = 64;
// The cached path's products skip the blocks of P above the diagonal, at this block size (layers.cpp).
constexpr int kCausalBlock = 32;

// Attention cache a document of n positions needs: P, or the per-row statistics of the tiled path.
inline int64_t attention_cache(int n, int H) { return n <= kCachedPositions ? int64_t(H) * n * n : int64_t(2) * H * n; }

// Scratch of one thread's attention: an (n, n) matrix (cached) or two (tile, n) matrices (tiled).
inline int64_t attention_scratch(int block) {
    const int64_t c = std::min(block, kCachedPositions);
    return std::max(c * c, block > kCachedPositions ? int64_t(2) * kAttnTile * block : 0);
}

template <class T>  // qkv (N, 3C) rows [q | k | v]; out (N, C); att: probabilities or per-row stats (see above)
void attention_forward(const Gemm& mm, T* out, T* att, T* scratch, const T* qkv, const std::vector<DocSpan>& docs,
                       int C, int H);
template <class T>  // dqkv overwritten; out is the forward's output; scratch as attention_scratch() says
void attention_backward(const Gemm& mm, T* dqkv, T* scratch, const T* dout, const T* out, const T* qkv, const T* att,
                        const std::vector<DocSpan>& docs, int C, int H);

// Row p of causal attention for one new position p: q (C) against cached keys and values kc, vc (p + 1, C) of
// positions 0..p; out (C); scores: scratch of p + 1 values. Generation's KV-cached step (no backward).
template <class T>
void attention_row_forward(T* out, T* scores, const T* q, const T* kc, const T* vc, int64_t p, int C, int H);

// Inverted dropout in training (docs/TRAINING_OPTIONS.md): each activation at a dropout site is zeroed with
// probability p and the rest scaled by 1/(1 − p). The mask is a pure function of (seed, step, site, sequence index
// in the step's batch, position, column): a counter-based hash, no stream state, so it does not depend on threads,
// on how the batch is split, or on what ran before (resume is exact).
struct DropoutConfig {
    double p = 0;  // 0: off
    uint64_t seed = 0;

    void validate() const;  // throws std::invalid_argument unless 0 <= p < 1
};

// One workspace's dropout: p, the hash key of (seed, step), and the step-batch index of each planned document.
struct DropoutPlan {
    double p = 0;
    uint64_t key = 0;
    std::vector<int64_t> seq;
    bool on() const { return p > 0; }
};
uint64_t dropout_key(uint64_t seed, int64_t step);  // DropoutPlan::key

// Dropout sites: 0 the embedding's output x₀; 1 + 2l layer l's attention projection o·Woᵀ; 2 + 2l its MLP output
// h·W2ᵀ (both before the residual add).
template <class T>  // y = x ⊙ m / (1 − p) over the planned rows (may alias)
void dropout_forward(T* y, const T* x, const DropoutPlan& plan, const std::vector<DocSpan>& docs, int site, int C);
template <class T>  // dx = dy ⊙ m / (1 − p), the same mask (may alias)
void dropout_backward(T* dx, const T* dy, const DropoutPlan& plan, const std::vector<DocSpan>& docs, int site, int C);

template <class T>  // probs (N, V) from logits (may alias); returns sum_r weight_r * -log p_r[target_r]
double softmax_xent_forward(T* probs, const T* logits, const int32_t* target, const T* weight, int64_t N, int V);
template <class T>  // dlogits = weight * (probs - onehot(target)); may alias probs
void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* target, const T* weight, int64_t N, int V);

struct AdamConfig {
    double beta1 = 0.85;
    double beta2 = 0.99;
    double eps = 1e-8;
    double weight_decay = 0;  // AdamW's decoupled decay λ on the table's decay rows: p ← p − lr·λ·p (0: off)
    double grad_clip = 0;     // G > 0: g ← g·min(1, G / ‖g‖₂) over the whole reduced gradient first (0: off)

    void validate() const;  // throws std::invalid_argument naming the bad field
};

template <class T>  // bias-corrected Adam on one flat buffer; t = 1, 2, ...
void adam_update(T* p, T* m, T* v, const T* g, int64_t n, double lr, const AdamConfig& a, int64_t t);
template <class T>  // AdamW's decay of one flat range p[0, n): p ← p·(1 − lr·λ), lr_wd = lr·λ
void weight_decay_update(T* p, int64_t n, double lr_wd);
template <class T>  // Σ g² of g[0, n), summed in double (the global norm for clipping)
double sum_of_squares(const T* g, int64_t n);

}  // namespace blasgpt
