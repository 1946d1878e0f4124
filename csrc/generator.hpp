// Generation: `num` samples of one prompt advance together, one batched forward of a single row each per token,
// with every layer's keys and values cached, while the context fits in block_size. Past it (when `slide` is set)
// the context is the last block_size tokens, recomputed in one batched forward per token (learned absolute
// positions shift under a sliding window, so cached keys cannot be reused). Each sample draws from its own
// splitmix64 stream seeded by (seed, sample index), so sample i does not depend on how many are drawn.
// Making a Generator and next() hold the model's mutex (the locking rule is in runtime.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "gpt.hpp"
#include "runtime.hpp"

namespace blasgpt {

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
    // per layer (num, block_size, C), not zeroed: a sample's rows are written before they are read, so memory is
    // touched only as samples reach it and setting up many samples is quick
    std::vector<std::unique_ptr<T[]>> kcache_, vcache_;
    Workspace<T> ws_;
    std::vector<T> logits_;                  // (num, V) of the latest step
    std::vector<T> scores_;                  // one row of attention scores
    bool stale_ = false;                     // logits_ predate the newest tokens
};

}  // namespace blasgpt
