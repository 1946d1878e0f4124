// Generation (generator.hpp). Per token, a cached step for sample s at position p = len − 1 runs the model on the
// one row of its newest token (model_forward_cached, gpt.hpp), whose attention is row p of the full causal attention
// (attention_row_forward, layers.cpp): the same numbers the whole-window forward computes.
#include "generator.hpp"

#include "internal.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace blasgpt {

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
    std::lock_guard<std::mutex> lock(model_.mutex_);
    ctx_.assign(num, std::vector<int32_t>(prompt, prompt + prompt_len));
    rng_.resize(num);
    for (int64_t i = 0; i < num; ++i) {
        uint64_t st = seed;
        rng_[i] = splitmix64(st) ^ (0xD1B54A32D192ED03ull * uint64_t(i + 1));
    }
    live_.assign(num, 1);
    for (int l = 0; l < cfg_.n_layer; ++l) {
        kcache_.emplace_back(new T[size_t(num) * block * cfg_.n_embd]);  // (default-initialised: not zeroed)
        vcache_.emplace_back(new T[size_t(num) * block * cfg_.n_embd]);
    }
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
    model_forward(model_.mm_, cfg_, model_.table(), model_.params(), ws_);
    const int64_t per_sample = int64_t(cfg_.block_size) * C;
    for (int l = 0; l < cfg_.n_layer; ++l) {
        const T* qkv = ws_.layers[l].qkv.data();
        for (int i = 0; i < n; ++i) {
            std::copy_n(qkv + int64_t(i) * 3 * C + C, C, kcache_[l].get() + int64_t(i) * C);
            std::copy_n(qkv + int64_t(i) * 3 * C + 2 * C, C, vcache_[l].get() + int64_t(i) * C);
        }
        for (int64_t s = 1; s < num_; ++s) {
            std::copy_n(kcache_[l].get(), int64_t(n) * C, kcache_[l].get() + s * per_sample);
            std::copy_n(vcache_[l].get(), int64_t(n) * C, vcache_[l].get() + s * per_sample);
        }
    }
    for (int64_t s = 0; s < num_; ++s) std::copy_n(ws_.logits.data() + int64_t(n - 1) * V, V, logits_.data() + s * V);
}

template <class T>
void Generator<T>::decode() {
    const int V = cfg_.vocab_size;
    const int64_t m = int64_t(rows_.size()), p = len_ - 1;
    plan_docs(ws_, cfg_, size_t(m), [](size_t) { return 1; });
    for (int64_t r = 0; r < m; ++r) {
        ws_.tok_in[r] = ctx_[rows_[r]].back();
        ws_.pos[r] = int32_t(p);
    }
    Gemm rows_gemm;  // OpenBLAS: products of a few rows are matrix-vector work, where it is ~10x the native kernels
    rows_gemm.backend = Backend::Blas;
    model_forward_cached(rows_gemm, cfg_, model_.table(), model_.params(), ws_, kcache_, vcache_, rows_, p,
                         scores_.data());
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
    model_forward(model_.mm_, cfg_, model_.table(), model_.params(), ws_);
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
    std::lock_guard<std::mutex> lock(model_.mutex_);
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

}  // namespace blasgpt
