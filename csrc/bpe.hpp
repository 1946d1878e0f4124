// Byte-level BPE encoding: UTF-8 bytes -> token ids, given the merges a trainer learned.
//
// Token ids: 0..255 are the bytes themselves; merge i (a pair of existing ids) makes token 256 + i. Text is first
// cut into pre-tokens (see pretoken_end); merges never cross a pre-token boundary. Inside a pre-token the pair with
// the lowest merge index is merged first, the leftmost of equal pairs first, until no adjacent pair has a merge:
// the rule Hugging Face's BPE model applies, so a trainer of that library and this encoder agree token for token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace blasgpt {

// End (exclusive) of the pre-token of s[0, n) that starts at i < n. Bytes fall in four classes: whitespace
// (\t \n \v \f \r and space), letters (A-Z, a-z and every byte >= 0x80, so a multi-byte UTF-8 character is never
// split), digits, and the rest (ASCII punctuation and control characters). A pre-token is a run of one class
// other than whitespace, optionally preceded by one space; or a whitespace run, less its last character when that
// is followed by a non-space (the space that then starts the next word). In regular-expression form:
//   ` ?L+| ?N+| ?P+|S+(?!\S)|S+` (leftmost alternative first, each greedy)
std::size_t pretoken_end(const unsigned char* s, std::size_t n, std::size_t i);

class BpeEncoder {
public:
    // merges: (count, 2) row-major ids; row i is (left, right), both < 256 + i. Throws std::invalid_argument on an
    // id out of range or a pair given twice.
    BpeEncoder(const int32_t* merges, int64_t count);

    int64_t vocab_size() const { return 256 + num_merges_; }  // without BOS

    // Appends the ids of the UTF-8 bytes s[0, n) to out. Thread-safe (no shared mutable state).
    void encode(const unsigned char* s, std::size_t n, std::vector<int32_t>& out) const;

private:
    // (left << 32 | right) -> merge index
    std::unordered_map<uint64_t, int32_t> rank_;
    int64_t num_merges_ = 0;

    int32_t rank(int32_t left, int32_t right) const;
    // Appends the ids of one pre-token w[0, n), n >= 1.
    void encode_word(const unsigned char* w, std::size_t n, std::vector<int32_t>& out) const;
};

}  // namespace blasgpt
