// blasgpt's GPT (microgpt's model): its configuration and THE parameter table that slices the one contiguous
// buffer, the per-thread workspace of activations, and the forward, loss and backward passes composed from the
// layers (layers.hpp).
//
// Notation (docs/MATH.md): a packed batch has N rows (token positions of all its documents, concatenated),
// C = n_embd, H = n_head, hd = C / H, F = 4C (MLP width), V = vocab size, L = n_layer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "kernels.hpp"
#include "layers.hpp"

namespace blasgpt {

struct Config {
    int vocab_size = 27;
    int n_embd = 16;
    int n_head = 4;
    int n_layer = 1;
    int block_size = 16;
    bool tie_embeddings = false;  // lm_head is wte (no lm_head row in the table): logits = x · wteᵀ

    void validate() const;  // throws std::invalid_argument naming the bad field
    int head_dim() const { return n_embd / n_head; }
};

// One row of THE parameter table: every buffer (params, grads, Adam m and v) is sliced by it.
struct ParamInfo {
    std::string name;  // microgpt's names: wte, wpe, lm_head, layer{i}.attn_wq, ...
    int64_t rows;
    int64_t cols;
    int64_t offset;  // in elements, into the one contiguous buffer
    bool decay;      // AdamW's weight decay applies (matrices that multiply activations; not wte/wpe, see
                     // docs/TRAINING_OPTIONS.md)
};

std::vector<ParamInfo> param_table(const Config& cfg);
int64_t num_params(const Config& cfg);

// One thread's share of a step: the plan of its rows, the activations backward needs, scratch, and (for threads
// other than the first) its partial gradient. Grown only when a batch needs more rows than any before it, so a
// steady-state step allocates nothing.
template <class T>
struct Workspace {
    struct Layer {                 // what backward needs from each layer's forward, (rows, width)
        std::vector<T> a, ra;      // rmsnorm before attention (N, C), its 1/rms (N)
        std::vector<T> qkv;        // (N, 3C)
        std::vector<T> att;        // softmax probabilities, per document H (n, n)
        std::vector<T> o;          // attention output before Wo (N, C)
        std::vector<T> xmid;       // residual stream after attention (N, C)
        std::vector<T> b, rb;      // rmsnorm before MLP (N, C), (N)
        std::vector<T> h;          // MLP output after ReLU (N, F); relu's backward needs only [h > 0] = [u > 0]
    };

    int64_t N = 0, capacity = 0;     // rows planned, rows allocated
    std::vector<DocSpan> docs;
    int max_n = 0;                   // longest document planned (decides whether fused attention applies)
    std::vector<int32_t> tok_in, tok_tgt, pos;
    std::vector<T> weight;           // per-row loss weight 1 / (B * n_doc)
    std::vector<T> e, r0;            // embedding sum (N, C), its 1/rms (N)
    std::vector<std::vector<T>> x;   // residual stream entering layer l; x[L] = final (N, C)
    std::vector<Layer> layers;
    std::vector<T> logits;           // (N, V), then probabilities, then dlogits
    std::vector<T> dx, dtmp, dqkv, datt, dh;  // backward scratch
    std::vector<T> grads;            // partial gradient of this thread (unused by thread 0)
    DropoutPlan drop;                // off except in training with dropout

    void reserve(const Config& cfg, int64_t rows);
};

// Elements of T a workspace of `rows` positions allocates (activations and scratch), and its int32 entries; what
// Workspace::reserve allocates, for estimating a model's memory before building it.
struct WorkspaceSize {
    int64_t values = 0;
    int64_t ints = 0;
};
WorkspaceSize workspace_size(const Config& cfg, int64_t rows);

// Lay out `count` documents, document i of n_of(i) positions, one after another in a workspace (rows, attention
// cache offsets) and reserve room for them; returns the rows used. The caller then fills tok_in, pos (and for a
// loss tok_tgt, weight) of each row.
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

template <class T>  // logits (N, V) of the planned rows
void model_forward(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                   Workspace<T>& ws);
template <class T>  // probabilities in ws.logits; returns sum_r weight_r * -log p_r[target_r]
double model_loss(const Config& cfg, Workspace<T>& ws);
template <class T>  // from probabilities in ws.logits: every gradient, overwritten into grads (accumulate: added)
void model_backward(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                    T* grads, Workspace<T>& ws, bool accumulate = false);

// Generation's cached step: ws is planned with one row per sample, row r holding the newest token of sample
// samples[r] at position p. Every layer writes that row's key and value into the sample's cache (kcache[l] and
// vcache[l] hold (samples, block_size, C)) and attends over its cached positions 0..p (attention_row_forward);
// scores: scratch of p + 1 values. Logits (rows, V) as model_forward.
template <class T>
void model_forward_cached(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                          Workspace<T>& ws, const std::vector<std::unique_ptr<T[]>>& kcache,
                          const std::vector<std::unique_ptr<T[]>>& vcache, const std::vector<int64_t>& samples,
                          int64_t p, T* scores);

}  // namespace blasgpt
