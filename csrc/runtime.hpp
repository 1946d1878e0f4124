// The Model runtime: owns params, grads, Adam state, one workspace per thread and the thread team, and runs
// validated batches through the GPT (gpt.hpp). With threads > 1 a batch's documents are split into contiguous
// groups of about equal positions; group t's gradient is computed by thread t and the partials are summed in
// thread order, so results do not depend on scheduling.
//
// Locking, all of it here and in Generator (generator.hpp): every member of Model and Generator that runs the
// model or changes its state (forward_backward, train_step, train_steps, apply_adam, loss, logits, set_step,
// set_backend, set_threads, making a Generator and Generator::next) holds the model's mutex for its whole call, so
// calls on one model from several threads run one at a time. Callers (bindings.cpp) take no lock; they release the
// GIL around these calls. Not locked: the getters, and the raw buffers behind params() / grads() / adam_m() /
// adam_v(), whose writers must not run a step at the same time.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "gemm.hpp"
#include "gpt.hpp"
#include "layers.hpp"

namespace blasgpt {

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
    int64_t share_start = 0;  // index of this batch's first sequence in the step's whole batch (dropout masks are
                              // keyed by a sequence's index in the whole batch, so no split changes them)
};

class ThreadPool;
template <class T>
class Generator;

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
    void set_backend(Backend b);
    // The auto backend's choices per product shape (gemm_plan.hpp); the other backends ignore them.
    GemmPlan gemm_plan();
    void set_gemm_plan(GemmPlan plan);
    int threads() const;
    void set_threads(int threads);

    // Mean over documents of each document's mean next-token loss. Grads are overwritten (accumulate: added to,
    // so micro-batches with mean_over = the whole batch's count sum to its gradient), Adam untouched.
    double forward_backward(const BatchView& batch, bool accumulate = false, const DropoutConfig& drop = {});
    // forward_backward, then one Adam step with learning rate lr. Returns the loss before the update; a loss that
    // is not finite leaves the parameters, Adam state and step untouched.
    double train_step(const BatchView& batch, double lr, const AdamConfig& adam, const DropoutConfig& drop = {});
    // `steps` train_steps in one call: step s uses documents doc_ids[s*B .. s*B+B) of the corpus and lr lrs[s];
    // losses[s] receives its loss. Stops after the first non-finite loss (not applied). Returns steps recorded.
    int64_t train_steps(const BatchView& corpus, const int64_t* doc_ids, int64_t steps, int64_t batch_size,
                        const double* lrs, double* losses, const AdamConfig& adam, const DropoutConfig& drop = {});
    // One Adam step from the gradients now in grads() (e.g. after summing them across processes). With
    // adam.grad_clip, a gradient whose norm is not finite is not applied (the step count stays).
    void apply_adam(double lr, const AdamConfig& adam);
    // ‖g‖₂ of the whole gradient before clipping, at the latest update that clipped (NaN before any).
    double grad_norm() const { return grad_norm_; }
    // Loss only: no gradients, no Adam (held-out evaluation).
    double loss(const BatchView& batch);
    // Logits (n, V) for one sequence of n <= block_size tokens at positions 0..n-1.
    void logits(T* out, const int32_t* tokens, int64_t n);

   private:
    friend class Generator<T>;  // runs the model's forward under mutex_

    // Where one document of a validated batch starts in the token array, and how many positions it trains on.
    struct DocRef {
        int64_t start;
        int n;
    };

    int64_t validate(const BatchView& batch);  // fills refs_; returns total positions
    int split(int64_t rows, const DropoutConfig& drop = {});  // assigns refs_ to workspaces; returns the groups
    // forward (+ backward, + Adam when adam is given) over the split batch; returns the loss
    double run(bool with_grads, const AdamConfig* adam, double lr, bool accumulate = false);
    void reduce_and_update(int groups, const AdamConfig* adam, double lr);
    void reduce_clip_update(int groups, const AdamConfig& adam, double lr);  // reduce_and_update with grad_clip
    void add_partials(int groups, int64_t lo, int64_t hi);  // grads[lo, hi) += the other threads' partials
    void update_slice(const AdamConfig& adam, double lr, int64_t lo, int64_t hi);  // decay + Adam on [lo, hi)

    Config cfg_;
    std::vector<ParamInfo> table_;
    Gemm mm_;
    std::vector<T> params_, grads_, m_, v_;
    int64_t step_ = 0;
    T inv_batch_ = 1;
    int64_t share_start_ = 0;
    std::vector<DocRef> refs_;
    const int32_t* tokens_ = nullptr;
    std::vector<size_t> group_begin_;  // refs_[group_begin_[t] .. group_begin_[t+1]) go to thread t
    std::vector<Workspace<T>> ws_;
    std::vector<double> group_loss_;
    std::vector<double> slice_sq_;  // Σ g² of each thread's slice of the reduced gradient (clipping)
    double grad_norm_;
    std::unique_ptr<ThreadPool> pool_;  // complete type in runtime.cpp only
    std::mutex mutex_;
};

}  // namespace blasgpt
