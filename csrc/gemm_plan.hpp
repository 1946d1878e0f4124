// The "auto" gemm backend's choices: for each matrix-product shape a model runs, whether OpenBLAS or the native
// kernels did it faster on this machine. python/blasgpt/calibrate.py times the shapes (time_gemm, time_attention
// below), caches the result per CPU and library version, and fills a model's plan from it.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace blasgpt {

// A product C (m,n) = op(A) (m,k) op(B) (k,n) of elements of `elem` bytes; ta/tb: the operand is transposed.
struct GemmShape {
    int elem = 0;
    bool ta = false, tb = false;
    int m = 0, n = 0, k = 0;
};

struct GemmChoice {
    GemmShape shape;
    bool blas = false;  // OpenBLAS (true) or the native kernels
};

class GemmPlan {
   public:
    // Products of a shape within this factor of a planned one in each of m, n, k take the nearest plan's choice.
    static constexpr double kNearFactor = 4.0;

    GemmPlan() = default;
    GemmPlan(std::vector<GemmChoice> choices, bool fused_attention)
        : choices_(std::move(choices)), fused_attention_(fused_attention) {}
    // Copies take the choices; their memo starts empty.
    GemmPlan(const GemmPlan& o) : choices_(o.choices_), fused_attention_(o.fused_attention_) {}
    GemmPlan& operator=(const GemmPlan& o);

    // 1: OpenBLAS, 0: native, -1: no planned shape near enough (the caller decides). The planned shape itself,
    // else the nearest one of the same element size and transposes (the least product of the per-size ratios).
    // Every product of a step asks (a dozen per layer), so answers are memoized per shape: the search divides
    // for every planned shape, which cost a tiny model's step more than some of its products.
    int lookup(const GemmShape& s) const;
    // Whether attention runs as the fused kernel (where it applies) rather than as gemm products.
    bool fused_attention() const { return fused_attention_; }
    const std::vector<GemmChoice>& choices() const { return choices_; }

   private:
    int search(const GemmShape& s) const;  // lookup without the memo

    std::vector<GemmChoice> choices_;
    bool fused_attention_ = true;
    // Shapes answered so far, by a hash of the shape into sets of kMemoWays slots, each slot one word holding a
    // shape and its answer (0: empty), so threads of one step read and fill it without a lock (a lost race only
    // repeats a search). Room for the shapes of many row counts (each batch of documents has its own).
    static constexpr int kMemoSlots = 1024, kMemoWays = 4;
    mutable std::array<std::atomic<std::uint64_t>, kMemoSlots> memo_{};
};

// Thread CPU seconds per call of one product, native kernels and OpenBLAS: calls in rounds with the two taking
// turns, the fastest round of each (on a shared machine the least disturbed), for about `seconds` in all but at
// least one round each. Operands hold small deterministic values.
struct GemmTiming {
    double native = 0, blas = 0;
};
GemmTiming time_gemm(const GemmShape& s, double seconds);

// Thread CPU seconds of one attention forward + backward over `docs` documents of n positions (model width C, H
// heads), the fused kernel against the gemm path with the given plan's products, the same way (turns, fastest
// round). fused is 0 when the fused kernel does not take these shapes.
struct AttentionTiming {
    double fused = 0, gemm = 0;
};
AttentionTiming time_attention(int elem, int C, int H, int n, int docs, const GemmPlan& plan, double seconds);

}  // namespace blasgpt
