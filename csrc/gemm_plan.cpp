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

int GemmPlan::lookup(const GemmShape& s) const {
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
