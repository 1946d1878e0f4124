// blasgpt's model: microgpt's GPT as paired forward/backward free functions over one contiguous parameter buffer.
//
// Notation (see docs/MATH.md): a packed batch has N rows (token positions of all its documents,
// concatenated), C = n_embd, H = n_head, hd = C / H, F = 4C (MLP width), V = vocab size, L = n_layer. Activations
// are row-major (N, width) matrices; a linear layer with weight W (out, in) computes Y = X Wᵀ.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "kernels.hpp"

namespace blasgpt {

struct Config {
    int vocab_size = 27;
    int n_embd = 16;
    int n_head = 4;
    int n_layer = 1;
    int block_size = 16;

    void validate() const;  // throws std::invalid_argument naming the bad field
    int head_dim() const { return n_embd / n_head; }
};

// One row of THE parameter table: every buffer (params, grads, Adam m and v) is sliced by it.
struct ParamInfo {
    std::string name;  // microgpt's names: wte, wpe, lm_head, layer{i}.attn_wq, ...
    int64_t rows;
    int64_t cols;
    int64_t offset;  // in elements, into the one contiguous buffer
};

std::vector<ParamInfo> param_table(const Config& cfg);
int64_t num_params(const Config& cfg);

// A batch borrowed from the caller, in one of two layouts over one token array:
// - documents (lines mode): document b is tokens[offsets[d] : offsets[d+1]] with d = doc_ids ? doc_ids[b] : b;
//   each is [BOS, c1, ..., BOS] (at least 2 tokens);
// - windows (text mode, `windows` set): window b is tokens[s : min(s + block_size + 1, num_tokens)] with
//   s = doc_ids[b] a start offset into the token stream (offsets unused), so a batch of windows of one long text
//   needs no copy of it.
// Either way a sequence of len tokens trains on its first n = min(block_size, len - 1) positions.
struct BatchView {
    const int32_t* tokens = nullptr;
    int64_t num_tokens = 0;
    const int64_t* offsets = nullptr;
    int64_t num_offsets = 0;  // number of documents in the corpus + 1
    const int64_t* doc_ids = nullptr;  // gather indices, or window starts (nullptr: documents 0..B-1)
    bool windows = false;              // doc_ids are start offsets of block_size + 1 token windows
    int64_t batch_size = 0;
    int64_t mean_over = 0;  // documents the loss is averaged over (0: batch_size; more when this is a share of a
                            // larger batch split across processes, so the partial sums add up to the whole mean)
};

struct AdamConfig {
    double beta1 = 0.85;
    double beta2 = 0.99;
    double eps = 1e-8;
};

// ---------------------------------------------------------------------------------------------------------------
// The layers as forward/backward pairs. Argument order, as in llm.c: outputs, caches, inputs, parameters, sizes.
// Backward functions receive the forward's inputs and caches, and write the d-prefixed gradients.

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
template <class T>  // dw = dyᵀ x (overwrites); dx = dx_beta * dx + dy W
void linear_backward(const Gemm& mm, T* dx, T* dw, const T* dy, const T* x, const T* w, int64_t N, int in, int out,
                     T dx_beta);

template <class T>
void relu_forward(T* h, const T* u, int64_t n);
template <class T>  // in place allowed (du == dh)
void relu_backward(T* du, const T* dh, const T* u, int64_t n);

// Documents of up to kCachedPositions positions cache their probabilities (H n² values); longer ones are done in
// tiles of kAttnTile query rows that keep only each row's max score and 1/Σexp per head (2H values), and backward
// recomputes P tile by tile, so attention memory stays linear in positions at any block_size.
constexpr int kCachedPositions = 128;
constexpr int kAttnTile = 64;
template <class T>  // qkv (N, 3C) rows [q | k | v]; out (N, C); att: probabilities or per-row stats (see above)
void attention_forward(const Gemm& mm, T* out, T* att, T* scratch, const T* qkv, const std::vector<DocSpan>& docs,
                       int C, int H);
template <class T>  // dqkv overwritten; out is the forward's output; scratch as attention_scratch() says
void attention_backward(const Gemm& mm, T* dqkv, T* scratch, const T* dout, const T* out, const T* qkv, const T* att,
                        const std::vector<DocSpan>& docs, int C, int H);

template <class T>  // probs (N, V) from logits (may alias); returns sum_r weight_r * -log p_r[target_r]
double softmax_xent_forward(T* probs, const T* logits, const int32_t* target, const T* weight, int64_t N, int V);
template <class T>  // dlogits = weight * (probs - onehot(target)); may alias probs
void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* target, const T* weight, int64_t N, int V);

template <class T>  // bias-corrected Adam on one flat buffer; t = 1, 2, ...
void adam_update(T* p, T* m, T* v, const T* g, int64_t n, double lr, const AdamConfig& a, int64_t t);

// ---------------------------------------------------------------------------------------------------------------
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
        std::vector<T> u, h;       // MLP pre/post ReLU (N, F)
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

    void reserve(const Config& cfg, int64_t rows);
};

// Elements of T a workspace of `rows` positions allocates (activations and scratch), and its int32 entries; what
// Workspace::reserve allocates, for estimating a model's memory before building it.
struct WorkspaceSize {
    int64_t values = 0;
    int64_t ints = 0;
};
WorkspaceSize workspace_size(const Config& cfg, int64_t rows);

// Where one document of a validated batch starts in the token array, and how many positions it trains on.
struct DocRef {
    int64_t start;
    int n;
};

template <class T>  // logits (N, V) of the planned rows
void model_forward(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                   Workspace<T>& ws);
template <class T>  // probabilities in ws.logits; returns sum_r weight_r * -log p_r[target_r]
double model_loss(const Config& cfg, Workspace<T>& ws);
template <class T>  // from probabilities in ws.logits: every gradient, overwritten into grads
void model_backward(const Gemm& mm, const Config& cfg, const std::vector<ParamInfo>& table, const T* params,
                    T* grads, Workspace<T>& ws);

class ThreadPool;
template <class T>
class Model;

// ---------------------------------------------------------------------------------------------------------------
// Generation: `num` samples of one prompt advance together, one batched forward of a single row each per token,
// with every layer's keys and values cached, while the context fits in block_size. Past it (when `slide` is set)
// the context is the last block_size tokens, recomputed in one batched forward per token (learned absolute
// positions shift under a sliding window, so cached keys cannot be reused). Each sample draws from its own
// splitmix64 stream seeded by (seed, sample index), so sample i does not depend on how many are drawn.
struct SampleConfig {
    double temperature = 1.0;
    int top_k = 0;        // 0: all tokens; 1: greedy (the first maximal logit, as numpy.argmax)
    int stop_token = -1;  // a sample ends after drawing it (lines mode: BOS); -1: never
    int ban_token = -1;   // never drawn (text mode: BOS, which no window contains); -1: none
    bool slide = false;   // past block_size: slide the window (text mode) instead of ending (lines mode)
};

template <class T>
class Generator {
   public:
    Generator(Model<T>& model, const int32_t* prompt, int64_t prompt_len, int64_t num, uint64_t seed,
              const SampleConfig& sc);
    // Up to `count` more tokens of every sample into out (num, count), -1 where a sample has ended. Returns how
    // many columns hold a token of some sample (< count once every sample has ended).
    int64_t next(int32_t* out, int64_t count);
    int64_t length() const { return len_; }  // tokens in each context so far (prompt included)
    int64_t num() const { return num_; }

   private:
    void prefill();                 // forward of the prompt, filling the caches; logits of its last row
    void decode();                  // one cached row per live sample at position len_ - 1
    void recompute();               // the last block_size tokens of each live sample, no cache
    int32_t draw(const T* logits, int64_t sample);

    Model<T>& model_;
    const Config cfg_;
    SampleConfig sc_;
    int64_t num_, len_;
    std::vector<std::vector<int32_t>> ctx_;  // every token of each sample
    std::vector<uint64_t> rng_;
    std::vector<char> live_;
    std::vector<int64_t> rows_;              // live samples, in order: the rows of the batched step
    std::vector<std::vector<T>> kcache_, vcache_;  // per layer (num, block_size, C)
    Workspace<T> ws_;
    std::vector<T> logits_;                  // (num, V) of the latest step
    std::vector<T> scores_;                  // one row of attention scores
    bool stale_ = false;                     // logits_ predate the newest tokens
};

// ---------------------------------------------------------------------------------------------------------------
// The whole model: owns params, grads, Adam state, one workspace per thread and the thread team. With threads > 1
// a batch's documents are split into contiguous groups of about equal positions; group t's gradient is computed
// by thread t and the partials are summed in thread order, so results do not depend on scheduling.

template <class T>
class Model {
   public:
    Model(const Config& cfg, Backend backend, int threads = 1);
    ~Model();

    const Config& config() const { return cfg_; }
    const std::vector<ParamInfo>& table() const { return table_; }
    int64_t size() const { return static_cast<int64_t>(params_.size()); }
    T* params() { return params_.data(); }
    T* grads() { return grads_.data(); }
    T* adam_m() { return m_.data(); }
    T* adam_v() { return v_.data(); }
    int64_t step() const { return step_; }
    void set_step(int64_t s);
    Backend backend() const { return mm_.backend; }
    void set_backend(Backend b) { mm_.backend = b; }
    int threads() const;
    void set_threads(int threads);

    // Mean over documents of each document's mean next-token loss. Grads are overwritten, Adam untouched.
    double forward_backward(const BatchView& batch);
    // forward_backward, then one Adam step with learning rate lr. Returns the loss before the update; a loss that
    // is not finite leaves the parameters, Adam state and step untouched.
    double train_step(const BatchView& batch, double lr, const AdamConfig& adam);
    // `steps` train_steps in one call: step s uses documents doc_ids[s*B .. s*B+B) of the corpus and lr lrs[s];
    // losses[s] receives its loss. Stops after the first non-finite loss (not applied). Returns steps recorded.
    int64_t train_steps(const BatchView& corpus, const int64_t* doc_ids, int64_t steps, int64_t batch_size,
                        const double* lrs, double* losses, const AdamConfig& adam);
    // One Adam step from the gradients now in grads() (e.g. after summing them across processes).
    void apply_adam(double lr, const AdamConfig& adam);
    // Loss only: no gradients, no Adam (held-out evaluation).
    double loss(const BatchView& batch);
    // Logits (n, V) for one sequence of n <= block_size tokens at positions 0..n-1.
    void logits(T* out, const int32_t* tokens, int64_t n);
    const Gemm& gemm() const { return mm_; }

    std::mutex& mutex() { return mutex_; }

   private:
    int64_t validate(const BatchView& batch);  // fills refs_; returns total positions
    int split(int64_t rows);                   // assigns refs_ to workspaces; returns the groups used
    // forward (+ backward, + Adam when adam is given) over the split batch; returns the loss
    double run(bool with_grads, const AdamConfig* adam, double lr);
    void reduce_and_update(int groups, const AdamConfig* adam, double lr);

    Config cfg_;
    std::vector<ParamInfo> table_;
    Gemm mm_;
    std::vector<T> params_, grads_, m_, v_;
    int64_t step_ = 0;
    T inv_batch_ = 1;
    std::vector<DocRef> refs_;
    const int32_t* tokens_ = nullptr;
    std::vector<size_t> group_begin_;  // refs_[group_begin_[t] .. group_begin_[t+1]) go to thread t
    std::vector<Workspace<T>> ws_;
    std::vector<double> group_loss_;
    std::unique_ptr<ThreadPool> pool_;  // complete type in model.cpp only
    std::mutex mutex_;
};

}  // namespace blasgpt
