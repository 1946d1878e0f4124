// The Model runtime (runtime.hpp): batch validation, the split across threads, the gradient reduction and Adam,
// and the one mutex every entry point holds.
#include "runtime.hpp"

#include "internal.hpp"
#include "kernels.hpp"
#include "threadpool.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace blasgpt {

namespace {
constexpr int64_t kParallelMinParams = 1 << 14;  // below this, slicing the gradient sum / Adam costs more than it saves
}  // namespace

template <class T>
Model<T>::Model(const Config& cfg, Backend backend, int threads)
    : cfg_(cfg), table_(param_table(cfg)), grad_norm_(std::numeric_limits<double>::quiet_NaN()) {
    native_isa();  // choose the native kernels now: a $BLASGPT_ISA that cannot be honoured is refused here
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
    std::lock_guard<std::mutex> lock(mutex_);
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
    std::lock_guard<std::mutex> lock(mutex_);
    step_ = s;
}

template <class T>
void Model<T>::set_backend(Backend b) {
    std::lock_guard<std::mutex> lock(mutex_);
    mm_.backend = b;
}

template <class T>
GemmPlan Model<T>::gemm_plan() {
    std::lock_guard<std::mutex> lock(mutex_);
    return mm_.plan;
}

template <class T>
void Model<T>::set_gemm_plan(GemmPlan plan) {
    std::lock_guard<std::mutex> lock(mutex_);
    mm_.plan = std::move(plan);
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
    require(b.share_start >= 0, "share_start must be >= 0");
    tokens_ = b.tokens;
    share_start_ = b.share_start;
    inv_batch_ = T(1) / T(b.mean_over ? b.mean_over : b.batch_size);
    return rows;
}

template <class T>
int Model<T>::split(int64_t rows, const DropoutConfig& drop) {
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
        ws.drop.p = drop.p;  // loss() and evaluation plan p = 0: no dropout
        if (drop.p > 0) {
            ws.drop.key = dropout_key(drop.seed, step_);
            ws.drop.seq.resize(group_begin_[g + 1] - first);
            for (size_t k = 0; k < ws.drop.seq.size(); ++k) ws.drop.seq[k] = share_start_ + int64_t(first + k);
        }
    }
    return groups;
}

template <class T>
double Model<T>::run(bool with_grads, const AdamConfig* adam, double lr, bool accumulate) {
    const int groups = int(group_begin_.size()) - 1;
    pool_->run(groups, [&](int g) {
        Workspace<T>& ws = ws_[g];
        model_forward(mm_, cfg_, table_, params_.data(), ws);
        group_loss_[g] = model_loss(cfg_, ws);
        // group 0 writes (or, accumulating, adds) into grads; the others' partials are added by the reduction
        if (with_grads)
            model_backward(mm_, cfg_, table_, params_.data(), g == 0 ? grads_.data() : ws.grads.data(), ws,
                           g == 0 && accumulate);
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
    if (adam && adam->grad_clip > 0) return reduce_clip_update(groups, *adam, lr);
    if (adam) ++step_;
    const int64_t n = size();
    const int slices = n >= kParallelMinParams ? threads() : 1;
    pool_->run(slices, [&](int t) {
        const int64_t lo = n * t / slices, hi = n * (t + 1) / slices;
        add_partials(groups, lo, hi);
        if (adam) update_slice(*adam, lr, lo, hi);
    });
}

// The same with clipping: the norm needs the whole reduced gradient, so a first pass sums the partials and each
// slice's Σ g² (added in slice order: deterministic), the second scales, decays and steps. A non-finite norm
// (overflow) is recorded and not applied.
template <class T>
void Model<T>::reduce_clip_update(int groups, const AdamConfig& adam, double lr) {
    const int64_t n = size();
    const int slices = n >= kParallelMinParams ? threads() : 1;
    slice_sq_.assign(slices, 0.0);
    pool_->run(slices, [&](int t) {
        const int64_t lo = n * t / slices, hi = n * (t + 1) / slices;
        add_partials(groups, lo, hi);
        slice_sq_[t] = sum_of_squares(grads_.data() + lo, hi - lo);
    });
    double sq = 0;
    for (double s : slice_sq_) sq += s;
    grad_norm_ = std::sqrt(sq);
    if (!std::isfinite(grad_norm_)) return;
    const T scale = T(grad_norm_ > adam.grad_clip ? adam.grad_clip / grad_norm_ : 1.0);
    ++step_;
    pool_->run(slices, [&](int t) {
        const int64_t lo = n * t / slices, hi = n * (t + 1) / slices;
        if (scale != T(1))
            for (int64_t i = lo; i < hi; ++i) grads_[i] *= scale;
        update_slice(adam, lr, lo, hi);
    });
}

template <class T>
void Model<T>::add_partials(int groups, int64_t lo, int64_t hi) {
    T* dst = grads_.data();
    for (int g = 1; g < groups; ++g) {
        const T* part = ws_[g].grads.data();
        for (int64_t i = lo; i < hi; ++i) dst[i] += part[i];
    }
}

// AdamW's decay on the table's decay rows within [lo, hi), then Adam on all of it.
template <class T>
void Model<T>::update_slice(const AdamConfig& adam, double lr, int64_t lo, int64_t hi) {
    if (adam.weight_decay > 0)
        for (const ParamInfo& row : table_) {
            if (!row.decay) continue;
            const int64_t a = std::max(lo, row.offset), b = std::min(hi, row.offset + row.rows * row.cols);
            if (a < b) weight_decay_update(params_.data() + a, b - a, lr * adam.weight_decay);
        }
    adam_update(params_.data() + lo, m_.data() + lo, v_.data() + lo, grads_.data() + lo, hi - lo, lr, adam, step_);
}

template <class T>
void Model<T>::apply_adam(double lr, const AdamConfig& adam) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!(std::isfinite(lr) && lr >= 0)) fail("lr must be a finite number >= 0 (got " + std::to_string(lr) + ")");
    adam.validate();
    reduce_and_update(1, &adam, lr);
}

template <class T>
double Model<T>::forward_backward(const BatchView& batch, bool accumulate, const DropoutConfig& drop) {
    std::lock_guard<std::mutex> lock(mutex_);
    drop.validate();
    split(validate(batch), drop);
    return run(true, nullptr, 0, accumulate);
}

template <class T>
double Model<T>::train_step(const BatchView& batch, double lr, const AdamConfig& adam, const DropoutConfig& drop) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!(std::isfinite(lr) && lr >= 0)) fail("lr must be a finite number >= 0 (got " + std::to_string(lr) + ")");
    adam.validate();
    drop.validate();
    split(validate(batch), drop);
    return run(true, &adam, lr);
}

template <class T>
int64_t Model<T>::train_steps(const BatchView& corpus, const int64_t* doc_ids, int64_t steps, int64_t batch_size,
                              const double* lrs, double* losses, const AdamConfig& adam, const DropoutConfig& drop) {
    std::lock_guard<std::mutex> lock(mutex_);
    require(steps >= 0, "steps must be >= 0");
    require(batch_size >= 1, "the batch is empty: it needs at least one document");
    adam.validate();
    drop.validate();
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
        split(validate(b), drop);
        losses[s] = run(true, &adam, lrs[s]);
        if (!std::isfinite(losses[s])) return s + 1;
    }
    return steps;
}

template <class T>
double Model<T>::loss(const BatchView& batch) {
    std::lock_guard<std::mutex> lock(mutex_);
    split(validate(batch));
    return run(false, nullptr, 0);
}

template <class T>
void Model<T>::logits(T* out, const int32_t* tokens, int64_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    require(n >= 1 && n <= cfg_.block_size, "a sequence needs between 1 and block_size (" +
                                                std::to_string(cfg_.block_size) + ") tokens, got " +
                                                std::to_string(n));
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
            fail("token id " + std::to_string(tokens[i]) + " is out of range [0, " + std::to_string(cfg_.vocab_size) +
                 ")");
    Workspace<T>& ws = ws_[0];
    plan_docs(ws, cfg_, 1, [&](size_t) { return int(n); });
    ws.drop.p = 0;  // inference: no dropout
    for (int64_t i = 0; i < n; ++i) {
        ws.tok_in[i] = tokens[i];
        ws.pos[i] = int32_t(i);
    }
    model_forward(mm_, cfg_, table_, params_.data(), ws);
    std::copy_n(ws.logits.data(), n * cfg_.vocab_size, out);
}

template class Model<float>;
template class Model<double>;

}  // namespace blasgpt
