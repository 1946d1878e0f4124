#include "gemm_plan.hpp"

#include "gemm.hpp"
#include "kernels.hpp"
#include "layers.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <vector>

namespace blasgpt {

GemmPlan& GemmPlan::operator=(const GemmPlan& o) {
    if (this != &o) {
        choices_ = o.choices_;
        fused_attention_ = o.fused_attention_;
        for (auto& slot : memo_) slot.store(0, std::memory_order_relaxed);
    }
    return *this;
}

namespace {
// A memo word: bit 63 set (nonzero), the answer + 1 in bits 61-62, then elem == 8, ta, tb, and m, n, k in 19 bits
// each; 0 for shapes with a size of 2^19 or more (not memoized: products that large do not notice a search).
constexpr int kDimBits = 19;
std::uint64_t memo_key(const GemmShape& s) {
    constexpr int64_t lim = int64_t(1) << kDimBits;
    if (s.m < 0 || s.n < 0 || s.k < 0 || s.m >= lim || s.n >= lim || s.k >= lim) return 0;
    return (std::uint64_t(1) << 63) | (std::uint64_t(s.elem == 8) << 60) | (std::uint64_t(s.ta) << 59) |
           (std::uint64_t(s.tb) << 58) | (std::uint64_t(s.m) << (2 * kDimBits)) | (std::uint64_t(s.n) << kDimBits) |
           std::uint64_t(s.k);
}
constexpr std::uint64_t kAnswerBits = std::uint64_t(3) << 61;
}  // namespace

int GemmPlan::lookup(const GemmShape& s) const {
    const std::uint64_t key = memo_key(s);
    if (key == 0) return search(s);
    // a set of kMemoWays slots per hash: a step's products and the next batch's (other row counts) rarely evict
    // each other
    const std::uint64_t h = key * 0x9E3779B97F4A7C15ull;
    std::atomic<std::uint64_t>* set = &memo_[(h >> 40) % (kMemoSlots / kMemoWays) * kMemoWays];
    int empty = -1;
    for (int w = 0; w < kMemoWays; ++w) {
        const std::uint64_t word = set[w].load(std::memory_order_relaxed);
        if ((word & ~kAnswerBits) == key) return int((word & kAnswerBits) >> 61) - 1;
        if (word == 0 && empty < 0) empty = w;
    }
    const int answer = search(s);
    set[empty >= 0 ? empty : int(h >> 62)].store(key | (std::uint64_t(answer + 1) << 61), std::memory_order_relaxed);
    return answer;
}

int GemmPlan::search(const GemmShape& s) const {
    // how far apart two sizes are: the ratio of the larger to the smaller
    const auto ratio = [](int a, int b) { return a > b ? double(a) / std::max(b, 1) : double(b) / std::max(a, 1); };
    const GemmChoice* best = nullptr;
    double best_dist = 0;
    for (const GemmChoice& c : choices_) {
        const GemmShape& p = c.shape;
        if (p.elem != s.elem || p.ta != s.ta || p.tb != s.tb) continue;
        if (p.m == s.m && p.n == s.n && p.k == s.k) return c.blas ? 1 : 0;
        const double rm = ratio(p.m, s.m), rn = ratio(p.n, s.n), rk = ratio(p.k, s.k);
        if (rm > kNearFactor || rn > kNearFactor || rk > kNearFactor) continue;
        const double dist = rm * rn * rk;
        if (!best || dist < best_dist) best = &c, best_dist = dist;
    }
    return best ? (best->blas ? 1 : 0) : -1;
}

namespace {

// CPU time of the calling thread: what a timed call cost, without the time other processes held the core.
double thread_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
#else
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
#endif
}

constexpr double kRoundSeconds = 30e-6;  // a round repeats a short call until it takes this long (clock resolution)
constexpr int kMaxRounds = 7;            // per contender: enough for a stable minimum

// Fastest time per call of each contender, run(i) running contender i once (i = 0, 1). The contenders take turns
// (round r starts with contender r % 2), each round `calls` calls long; rounds go on while the budget lasts, up to
// kMaxRounds each. The first call of each, which also says how many calls make a round, counts as a round.
template <class Run>
std::pair<double, double> race(Run run, double seconds) {
    double best[2], spent = 0;
    for (int i = 0; i < 2; ++i) {
        const double t0 = thread_seconds();
        run(i);
        best[i] = thread_seconds() - t0;
        spent += best[i];
    }
    const int calls = int(std::clamp(kRoundSeconds / std::max(std::min(best[0], best[1]), 1e-9), 1.0, 1e4));
    for (int r = 1; r < kMaxRounds && spent < seconds; ++r) {
        for (int j = 0; j < 2; ++j) {
            const int i = (r + j) % 2;
            const double t0 = thread_seconds();
            for (int c = 0; c < calls; ++c) run(i);
            const double dt = thread_seconds() - t0;
            best[i] = std::min(best[i], dt / calls);
            spent += dt;
        }
    }
    return {best[0], best[1]};
}

// Small values that neither overflow nor go subnormal through a few products.
template <class T>
std::vector<T> operand(std::size_t n, int seed) {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = T(int((i * 2654435761u + seed) % 17) - 8) / T(64);
    return v;
}

constexpr std::size_t kColdBytes = std::size_t(8) << 20;  // operand copies cycled through: more than an L2 holds

template <class T>
GemmTiming time_gemm_of(const GemmShape& s, double seconds) {
    // stored shapes: A (m,k), or (k,m) when transposed; B (k,n), or (n,k). In a training step a product's operands
    // were mostly written a while before (other layers' work in between): each call takes the next of several
    // copies, together larger than a core's L2, so no call finds its operands where the previous one left them.
    const int lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
    const std::size_t na = std::size_t(s.m) * s.k, nb = std::size_t(s.k) * s.n, nc = std::size_t(s.m) * s.n;
    const int copies = int(std::clamp(kColdBytes / ((na + nb + nc) * sizeof(T)), std::size_t(1), std::size_t(64)));
    const std::vector<T> a = operand<T>(na * copies, 1), b = operand<T>(nb * copies, 2);
    std::vector<T> c(nc * copies, T(0));
    const Op ta = s.ta ? Op::T : Op::N, tb = s.tb ? Op::T : Op::N;
    int next[2] = {0, 0};
    const auto [native, blas] = race(
        [&](int i) {
            const std::size_t j = std::size_t(next[i]++ % copies);
            gemm_on<T>(i == 1, ta, tb, s.m, s.n, s.k, T(1), a.data() + j * na, lda, b.data() + j * nb, ldb, T(0),
                       c.data() + j * nc, s.n);
        },
        seconds);
    return {native, blas};
}

template <class T>
AttentionTiming time_attention_of(int C, int H, int n, int ndocs, const GemmPlan& plan, double seconds) {
    const int64_t N = int64_t(n) * ndocs;
    std::vector<DocSpan> docs;
    for (int d = 0; d < ndocs; ++d) docs.push_back({int64_t(d) * n, n, int64_t(d) * H * n * n});
    const std::vector<T> qkv = operand<T>(N * 3 * C, 3), dout = operand<T>(N * C, 4);
    std::vector<T> out(N * C), dqkv(N * 3 * C), stats(N * 2 * C), att(int64_t(ndocs) * H * n * n), scratch(int64_t(n) * n);
    Gemm mm;
    mm.backend = Backend::Auto;
    mm.plan = plan;
    const bool fusable = attention_supports_kernel<T>(C, H, n);
    const auto [fused, gemm] = race(
        [&](int i) {
            if (i == 0 && fusable) {
                attention_forward_kernel<T>(out.data(), stats.data(), qkv.data(), docs.data(), ndocs, C, H);
                attention_backward_kernel<T>(dqkv.data(), dout.data(), qkv.data(), stats.data(), docs.data(), ndocs, C, H);
            } else if (i == 1) {
                attention_forward(mm, out.data(), att.data(), scratch.data(), qkv.data(), docs, C, H);
                attention_backward(mm, dqkv.data(), scratch.data(), dout.data(), out.data(), qkv.data(), att.data(),
                                   docs, C, H);
            }
        },
        fusable ? seconds : 0.0);
    return {fusable ? fused : 0.0, gemm};
}

}  // namespace

GemmTiming time_gemm(const GemmShape& s, double seconds) {
    return s.elem == int(sizeof(float)) ? time_gemm_of<float>(s, seconds) : time_gemm_of<double>(s, seconds);
}

AttentionTiming time_attention(int elem, int C, int H, int n, int docs, const GemmPlan& plan, double seconds) {
    return elem == int(sizeof(float)) ? time_attention_of<float>(C, H, n, docs, plan, seconds)
                                      : time_attention_of<double>(C, H, n, docs, plan, seconds);
}

}  // namespace blasgpt
