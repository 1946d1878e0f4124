#include "bpe.hpp"

#include <functional>
#include <queue>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace blasgpt {

namespace {

enum ByteClass : unsigned char { kSpace, kLetter, kDigit, kOther };

ByteClass byte_class(unsigned char c) {
    if (c == ' ' || (c >= '\t' && c <= '\r')) return kSpace;
    if (c >= 0x80 || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return kLetter;
    if (c >= '0' && c <= '9') return kDigit;
    return kOther;
}

// Pre-tokens remembered per encode call (text is Zipfian: most words repeat), up to this many distinct ones.
constexpr std::size_t kMaxCached = std::size_t(1) << 20;

}  // namespace

std::size_t pretoken_end(const unsigned char* s, std::size_t n, std::size_t i) {
    std::size_t j = i;
    if (s[j] == ' ' && j + 1 < n && byte_class(s[j + 1]) != kSpace) ++j;  // ` ?X+`: the space joins the run
    const ByteClass k = byte_class(s[j]);
    if (k != kSpace) {
        while (j < n && byte_class(s[j]) == k) ++j;
        return j;
    }
    while (j < n && byte_class(s[j]) == kSpace) ++j;
    // `S+(?!\S)`: all of a run that ends the text; before a non-space, all but the last character (if that leaves
    // one); else `S+`: the single whitespace character
    if (j == n || j - i == 1) return j;
    return j - 1;
}

BpeEncoder::BpeEncoder(const int32_t* merges, int64_t count) : num_merges_(count) {
    if (count < 0) throw std::invalid_argument("the number of merges must be >= 0");
    rank_.reserve(std::size_t(count));
    for (int64_t i = 0; i < count; ++i) {
        const int32_t left = merges[2 * i], right = merges[2 * i + 1];
        if (left < 0 || right < 0 || left >= 256 + i || right >= 256 + i)
            throw std::invalid_argument("merge " + std::to_string(i) + " is (" + std::to_string(left) + ", " +
                                        std::to_string(right) + "): ids must be in [0, " + std::to_string(256 + i) +
                                        ") (bytes and earlier merges)");
        const uint64_t key = uint64_t(uint32_t(left)) << 32 | uint32_t(right);
        if (!rank_.emplace(key, int32_t(i)).second)
            throw std::invalid_argument("merge " + std::to_string(i) + " repeats the pair (" + std::to_string(left) +
                                        ", " + std::to_string(right) + ")");
    }
}

int32_t BpeEncoder::rank(int32_t left, int32_t right) const {
    const auto it = rank_.find(uint64_t(uint32_t(left)) << 32 | uint32_t(right));
    return it == rank_.end() ? -1 : it->second;
}

void BpeEncoder::encode_word(const unsigned char* w, std::size_t n, std::vector<int32_t>& out) const {
    // symbols as a doubly linked list over positions 0..n-1 (a merged symbol keeps its left position); a min-heap
    // of (merge index, position) holds candidate pairs, checked when popped (a merge nearby may have changed them)
    const int32_t len = int32_t(n);
    std::vector<int32_t> id(w, w + n), next(n), prev(n);
    for (int32_t p = 0; p < len; ++p) {
        next[p] = p + 1 < len ? p + 1 : -1;
        prev[p] = p - 1;
    }
    using Candidate = std::pair<int32_t, int32_t>;  // (merge index, left position)
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    const auto push = [&](int32_t p) {
        if (p < 0 || next[p] < 0) return;
        const int32_t r = rank(id[p], id[next[p]]);
        if (r >= 0) heap.emplace(r, p);
    };
    for (int32_t p = 0; p + 1 < len; ++p) push(p);
    while (!heap.empty()) {
        const auto [r, p] = heap.top();
        heap.pop();
        // stale if p was absorbed by its left neighbour (id -1) or its pair is no longer merge r
        if (id[p] < 0 || next[p] < 0 || rank(id[p], id[next[p]]) != r) continue;
        const int32_t q = next[p];
        id[p] = 256 + r;
        id[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        push(prev[p]);
        push(p);
    }
    for (int32_t p = 0; p >= 0; p = next[p]) out.push_back(id[p]);
}

void BpeEncoder::encode(const unsigned char* s, std::size_t n, std::vector<int32_t>& out) const {
    // cached ids of each distinct pre-token: (start, length) in `ids`, keyed by a view of the text
    std::unordered_map<std::string_view, std::pair<std::size_t, std::size_t>> cache;
    std::vector<int32_t> ids;
    const char* text = reinterpret_cast<const char*>(s);
    for (std::size_t i = 0; i < n;) {
        const std::size_t end = pretoken_end(s, n, i);
        const std::string_view word(text + i, end - i);
        if (word.size() == 1) {
            out.push_back(s[i]);
        } else if (const auto hit = cache.find(word); hit != cache.end()) {
            out.insert(out.end(), ids.begin() + hit->second.first,
                       ids.begin() + hit->second.first + hit->second.second);
        } else {
            const std::size_t at = out.size();
            encode_word(s + i, word.size(), out);
            if (cache.size() < kMaxCached) {
                cache.emplace(word, std::make_pair(ids.size(), out.size() - at));
                ids.insert(ids.end(), out.begin() + at, out.end());
            }
        }
        i = end;
    }
}

}  // namespace blasgpt
