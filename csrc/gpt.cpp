// The GPT composed from its layers: configuration checks, the parameter table, the workspace, and the forward,
// loss and backward passes over a planned workspace (gpt.hpp).
#include "gpt.hpp"

#include "internal.hpp"

#include <algorithm>
#include <string>

namespace blasgpt {

namespace {

constexpr int kMlpMult = 4;       // MLP hidden width F = 4C
constexpr int kMaxDim = 1 << 16;  // sanity bound on every size (keeps all products inside int64 and gemm's int)

// Rows of the table: wte, wpe, lm_head (absent with tied embeddings), then 6 per layer.
constexpr int kParamsPerLayer = 6;
enum LayerParam { kWq = 0, kWk, kWv, kWo, kFc1, kFc2 };
int head_index(const Config& cfg) { return cfg.tie_embeddings ? 0 : 2; }  // the output layer's weight (V, C)
int layer_base(const Config& cfg, int l) { return (cfg.tie_embeddings ? 2 : 3) + kParamsPerLayer * l; }

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
    auto add = [&](std::string name, int64_t rows, int64_t cols, bool decay = true) {
        t.push_back({std::move(name), rows, cols, off, decay});
        off += rows * cols;
    };
    // weight decay: not the embeddings (rmsnorm follows them, so their scale does not change the function), unless
    // wte is also the output layer
    add("wte", V, C, cfg.tie_embeddings);
    add("wpe", cfg.block_size, C, false);
    if (!cfg.tie_embeddings) add("lm_head", V, C);
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
// The workspace

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
    const int64_t per_layer = 8 * C + F + 2 + attention_cache_per_row(cfg);  // a ra qkv att o xmid b rb h
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

// ---------------------------------------------------------------------------------------------------------------
// The model's forward and backward over a planned workspace: the layers, composed.

namespace {

// The native backend runs attention as one fused kernel per document (kernels.cpp) when the shapes suit its vectors
// (the auto backend when its plan says so); the BLAS backend, and shapes the kernel does not take, use the gemm-based
// attention_forward / attention_backward (layers.cpp).
template <class T>
bool fused_attention(const Gemm& mm, const Config& cfg, const Workspace<T>& ws) {
    return mm.fused_attention() && attention_supports_kernel<T>(cfg.n_embd, cfg.n_head, ws.max_n);
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
    if (ws.drop.on()) dropout_forward(ws.x[0].data(), ws.x[0].data(), ws.drop, ws.docs, 0, C);
    // res += dropout(in · Wᵀ) at `site` (without dropout: one gemm that adds to the residual)
    auto residual_branch = [&](T* res, const T* in, const T* wt, int width, int site) {
        if (!ws.drop.on()) return linear_forward(mm, res, in, wt, N, width, C, T(1));
        T* y = ws.dtmp.data();  // backward scratch, free during the forward
        linear_forward(mm, y, in, wt, N, width, C, T(0));
        dropout_forward(y, y, ws.drop, ws.docs, site, C);
        for (int64_t i = 0; i < N * C; ++i) res[i] += y[i];
    };
    for (int l = 0; l < cfg.n_layer; ++l) {
        auto& c = ws.layers[l];
        const int base = layer_base(cfg, l);
        const T* x = ws.x[l].data();
        // x = x + Wo · attention(rmsnorm(x))
        rmsnorm_forward(c.a.data(), c.ra.data(), x, N, C);
        linear_forward(mm, c.qkv.data(), c.a.data(), w(base + kWq), N, C, 3 * C, T(0));
        attend(l, c);
        std::copy_n(x, N * C, c.xmid.data());
        residual_branch(c.xmid.data(), c.o.data(), w(base + kWo), C, 1 + 2 * l);
        // x = x + W2 · relu(W1 · rmsnorm(x))
        rmsnorm_forward(c.b.data(), c.rb.data(), c.xmid.data(), N, C);
        linear_forward(mm, c.h.data(), c.b.data(), w(base + kFc1), N, C, F, T(0));  // u, then h = relu(u) in place
        relu_forward(c.h.data(), c.h.data(), N * F);
        std::copy_n(c.xmid.data(), N * C, ws.x[l + 1].data());
        residual_branch(ws.x[l + 1].data(), c.h.data(), w(base + kFc2), F, 2 + 2 * l);
    }
    linear_forward(mm, ws.logits.data(), ws.x[cfg.n_layer].data(), w(head_index(cfg)), N, C, V, T(0));
}

}  // namespace

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
                    T* grads, Workspace<T>& ws, bool accumulate) {
    const int C = cfg.n_embd, F = kMlpMult * C, V = cfg.vocab_size, H = cfg.n_head;
    const int64_t N = ws.N;
    const T acc = accumulate ? T(1) : T(0);  // every dW: overwritten, or added to (gradient accumulation)
    auto w = [&](int idx) { return params + table[idx].offset; };
    auto g = [&](int idx) { return grads + table[idx].offset; };
    T* dx = ws.dx.data();     // ∂loss/∂(residual stream), walked backwards through the layers
    T* tmp = ws.dtmp.data();  // (N, C) scratch: db, dO, da in turn
    // a branch's output gradient: dx, or with dropout dx ⊙ m / (1 − p) in dqkv's first N·C (free until attention)
    auto branch_grad = [&](int site) -> const T* {
        if (!ws.drop.on()) return dx;
        dropout_backward(ws.dqkv.data(), dx, ws.drop, ws.docs, site, C);
        return ws.dqkv.data();
    };

    softmax_xent_backward(ws.logits.data(), ws.logits.data(), ws.tok_tgt.data(), ws.weight.data(), N, V);
    // tied: this writes d(wte) = dlogitsᵀ x, and the embedding backward below adds its rows to it
    const int head = head_index(cfg);
    linear_backward(mm, dx, g(head), ws.logits.data(), ws.x[cfg.n_layer].data(), w(head), N, C, V, T(0), acc);
    for (int l = cfg.n_layer - 1; l >= 0; --l) {
        auto& c = ws.layers[l];
        const int base = layer_base(cfg, l);
        // MLP branch; the residual passes dx through unchanged and the branch adds to it
        linear_backward(mm, ws.dh.data(), g(base + kFc2), branch_grad(2 + 2 * l), c.h.data(), w(base + kFc2), N, F, C,
                        T(0), acc);
        relu_backward(ws.dh.data(), ws.dh.data(), c.h.data(), N * F);  // [u > 0] = [h > 0]: h = u there, else 0
        linear_backward(mm, tmp, g(base + kFc1), ws.dh.data(), c.b.data(), w(base + kFc1), N, C, F, T(0), acc);
        rmsnorm_backward(dx, tmp, c.xmid.data(), c.rb.data(), N, C);
        // attention branch
        linear_backward(mm, tmp, g(base + kWo), branch_grad(1 + 2 * l), c.o.data(), w(base + kWo), N, C, C, T(0),
                        acc);
        if (fused_attention(mm, cfg, ws))
            attention_backward_kernel<T>(ws.dqkv.data(), tmp, c.qkv.data(), c.att.data(), ws.docs.data(),
                                      int64_t(ws.docs.size()), C, H);
        else
            attention_backward(mm, ws.dqkv.data(), ws.datt.data(), tmp, c.o.data(), c.qkv.data(), c.att.data(), ws.docs,
                               C, H);
        linear_backward(mm, tmp, g(base + kWq), ws.dqkv.data(), c.a.data(), w(base + kWq), N, C, 3 * C, T(0),
                        acc);
        rmsnorm_backward(dx, tmp, ws.x[l].data(), c.ra.data(), N, C);
    }
    if (!accumulate) {  // the embedding backward adds into its rows (tied: into the head's d(wte) already there)
        if (!cfg.tie_embeddings) std::fill_n(g(0), table[0].rows * C, T(0));
        std::fill_n(g(1), table[1].rows * C, T(0));
    }
    if (ws.drop.on()) dropout_backward(dx, dx, ws.drop, ws.docs, 0, C);
    embed_backward(g(0), g(1), dx, ws.e.data(), ws.r0.data(), ws.tok_in.data(), ws.pos.data(), N, C);
}

template <class T>
void model_forward_cached(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                          Workspace<T>& ws, const std::vector<std::unique_ptr<T[]>>& kcache,
                          const std::vector<std::unique_ptr<T[]>>& vcache, const std::vector<int64_t>& samples,
                          int64_t p, T* scores) {
    const int C = cfg.n_embd, H = cfg.n_head;
    const int64_t per_sample = int64_t(cfg.block_size) * C;
    forward_with(mm, cfg, table, params, ws, [&](int l, typename Workspace<T>::Layer& c) {
        for (size_t r = 0; r < samples.size(); ++r) {
            const T* q = c.qkv.data() + int64_t(r) * 3 * C;
            T* kc = kcache[l].get() + samples[r] * per_sample;
            T* vc = vcache[l].get() + samples[r] * per_sample;
            std::copy_n(q + C, C, kc + p * C);
            std::copy_n(q + 2 * C, C, vc + p * C);
            attention_row_forward(c.o.data() + int64_t(r) * C, scores, q, kc, vc, p, C, H);
        }
    });
}

// Every function above, for float and double.
template struct Workspace<float>;
template struct Workspace<double>;
BLASGPT_INSTANTIATE(model_forward)
BLASGPT_INSTANTIATE(model_loss)
BLASGPT_INSTANTIATE(model_backward)
BLASGPT_INSTANTIATE(model_forward_cached)

}  // namespace blasgpt
