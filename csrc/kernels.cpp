// The native kernels: register-blocked gemm for the small matrices this model makes, the fused attention, the
// row-wise passes and the Adam update over the one parameter buffer: every entry of kernel_list.hpp, as a template
// over the element type. This file is compiled once per instruction set (BLASGPT_ISA = base | avx2 | avx512, each
// with its own compiler flags, see blasgpt_kernel() in CMakeLists.txt); each build exports one symbol, its
// kernel_set(), and dispatch.cpp picks the best one the CPU supports at run time, so one wheel runs on any x86-64
// and uses AVX-512 where it exists.
//
// gemm: every product is reduced to C (m, n) = alpha · A (m, k) · B (k, n) + beta · C where A is read element by
// element through strides (so A or Aᵀ costs the same) and B goes by column panels of NR (packed and zero padded
// when transposed or partial, else read in place): the MR×NR accumulator tile lives in vector registers for the
// whole k loop.
//
// attention: one call per document does every head, with no gemm calls: vectors run along the embedding, whole heads
// to a vector, and the scores of a block of head-width keys are packed into one vector, so exp runs once per score.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <cstddef>
#include <cstdint>

#include "gemm.hpp"
#include "kernels.hpp"

#ifndef BLASGPT_ISA
#error "compile with -DBLASGPT_ISA=<name> -DBLASGPT_VEC_BYTES=<vector register width>"
#endif
#define BLASGPT_CAT2(a, b) a##b
#define BLASGPT_CAT(a, b) BLASGPT_CAT2(a, b)
#define BLASGPT_KERNEL_NS BLASGPT_CAT(kernels_, BLASGPT_ISA)

namespace blasgpt {
namespace BLASGPT_KERNEL_NS {

namespace {

// A vector register of T (GCC/Clang vector extension: arithmetic with a scalar broadcasts it).
typedef float VecF __attribute__((vector_size(BLASGPT_VEC_BYTES)));
typedef double VecD __attribute__((vector_size(BLASGPT_VEC_BYTES)));
template <class T>
struct VecOf;
template <>
struct VecOf<float> {
    using type = VecF;
};
template <>
struct VecOf<double> {
    using type = VecD;
};
template <class T>
using Vec = typename VecOf<T>::type;

// Register tile of C: ROWS rows of NV vectors. NV = 1 when C is at most one vector wide (n = 16 at d16 in float32),
// so narrow products waste no lanes; then twice the rows share each loaded B vector.
template <class T>
constexpr int lanes() { return BLASGPT_VEC_BYTES / int(sizeof(T)); }
template <int NV>
constexpr int max_rows() { return (BLASGPT_VEC_BYTES >= 32 ? 6 : 4) * (NV == 1 ? 2 : 1); }
// AVX-512 has 32 vector registers: a tile of 12 rows of two vectors (24 accumulators, 2 of B) fits, so a product of
// up to 12 rows of C is one pass over each B panel instead of a 6-row tile and the rest. (One-vector tiles already
// have 12 rows; AVX2 and SSE have 16 registers: max_rows is their limit.)
template <int NV>
constexpr int small_rows() { return BLASGPT_VEC_BYTES >= 64 && NV == 2 ? 12 : max_rows<NV>(); }
// Products of at most this many rows take small_rows tiles (microgpt's documents have <= 16 positions). Measured
// (float64, AVX-512 Zen 4, microgpt's 15 products at 8 rows: summed native / OpenBLAS time per call, interleaved):
// 0.99-1.03 with the tall tile, 1.01-1.02 with 6-row tiles; a dW product (16-64 rows, k = 8) is faster in 6-row
// tiles (48x16x8: 1.07 against 1.17), so taller products keep them.
constexpr int kSmallRows = 16;

template <class T>
inline Vec<T> load(const T* p) {
    Vec<T> v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

template <class T>
inline void store(T* p, Vec<T> v) {
    __builtin_memcpy(p, &v, sizeof(v));
}

template <class T>
inline Vec<T> splat(T x) {
    return Vec<T>{} + x;
}

// Butterfly step: lane l gets x[l] + x[l ^ STEP]. The shuffle mask is a compile-time constant.
template <class T, int STEP>
inline Vec<T> butterfly(Vec<T> x) {
    if constexpr (STEP >= lanes<T>()) {
        return x;
    } else {
#if defined(__GNUC__) && !defined(__clang__)
        using I = typename std::conditional<sizeof(T) == 4, std::int32_t, std::int64_t>::type;
        typedef I Mask __attribute__((vector_size(BLASGPT_VEC_BYTES)));
        Mask m{};
        for (int l = 0; l < lanes<T>(); ++l) m[l] = I(l ^ STEP);
        return x + __builtin_shuffle(x, m);
#else
        Vec<T> y = x;
        for (int l = 0; l < lanes<T>(); ++l) y[l] = x[l] + x[l ^ STEP];
        return y;
#endif
    }
}

// Sums within aligned groups of `width` lanes (a power of two <= L), the result replicated across each group.
template <class T>
inline Vec<T> group_sum(Vec<T> x, int width) {
    if (width > 1) x = butterfly<T, 1>(x);
    if (width > 2) x = butterfly<T, 2>(x);
    if (width > 4) x = butterfly<T, 4>(x);
    if (width > 8) x = butterfly<T, 8>(x);
    if (width > 16) x = butterfly<T, 16>(x);
    if (width > 32) x = butterfly<T, 32>(x);
    return x;
}

template <class T>
inline T hsum(Vec<T> v) {
    return group_sum<T>(v, lanes<T>())[0];
}

// exp on a vector: x = k·ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series (to r^7 in float, r^13 in double:
// truncation below half an ulp), times 2^k built in the exponent bits. Arguments are clamped to the normal range,
// so exp of a very negative number gives ~1e-38 (float) / ~1e-308 (double) instead of a denormal or 0.
template <class T>
inline Vec<T> vexp(Vec<T> x) {
    constexpr bool f32 = sizeof(T) == 4;
    using I = typename std::conditional<f32, std::int32_t, std::int64_t>::type;
    typedef I VecI __attribute__((vector_size(BLASGPT_VEC_BYTES)));
    const T hi = f32 ? T(88.0) : T(709.0), lo = f32 ? T(-87.0) : T(-708.0);
    const T magic = f32 ? T(12582912.0) : T(6755399441055744.0);  // 1.5 · 2^(mantissa bits): rounds to integers
    const T log2e = T(1.4426950408889634), ln2_hi = f32 ? T(0.693359375) : T(6.93147180369123816490e-01),
            ln2_lo = f32 ? T(-2.12194440e-4) : T(1.90821492927058770002e-10);
    constexpr int terms = f32 ? 7 : 13;
    x = x < lo ? splat(lo) : x;
    x = x > hi ? splat(hi) : x;
    const Vec<T> t = x * log2e + magic;
    const Vec<T> k = t - magic;
    const Vec<T> r = (x - k * ln2_hi) - k * ln2_lo;
    // 1/k!, k = 0..13 (float uses the first 8)
    constexpr T coef[14] = {T(1.0), T(1.0), T(1.0 / 2), T(1.0 / 6), T(1.0 / 24), T(1.0 / 120), T(1.0 / 720),
                            T(1.0 / 5040), T(1.0 / 40320), T(1.0 / 362880), T(1.0 / 3628800), T(1.0 / 39916800),
                            T(1.0 / 479001600), T(1.0 / 6227020800)};
    Vec<T> p = splat(coef[terms]);
#pragma GCC unroll 16
    for (int i = terms - 1; i >= 0; --i) p = p * r + coef[i];
    const VecI ki = (VecI)t - (VecI)splat(magic);
    const VecI bits = (ki + I(f32 ? 127 : 1023)) << I(f32 ? 23 : 52);
    return p * (Vec<T>)bits;
}

// The first cnt lanes (0 < cnt <= L) of v to p, nothing past them; and the load of as many (the rest zero)
template <class T>
inline void store_first(T* p, Vec<T> v, int cnt) {
#if BLASGPT_VEC_BYTES == 64 && defined(__AVX512F__)
    if constexpr (sizeof(T) == 8)
        _mm512_mask_storeu_pd(p, __mmask8((1u << cnt) - 1), (__m512d)v);
    else
        _mm512_mask_storeu_ps(p, __mmask16((1u << cnt) - 1), (__m512)v);
#else
    for (int l = 0; l < cnt; ++l) p[l] = v[l];
#endif
}

template <class T>
inline Vec<T> load_first(const T* p, int cnt) {
#if BLASGPT_VEC_BYTES == 64 && defined(__AVX512F__)
    if constexpr (sizeof(T) == 8)
        return (Vec<T>)_mm512_maskz_loadu_pd(__mmask8((1u << cnt) - 1), p);
    else
        return (Vec<T>)_mm512_maskz_loadu_ps(__mmask16((1u << cnt) - 1), p);
#else
    Vec<T> v{};
    for (int l = 0; l < cnt; ++l) v[l] = p[l];
    return v;
#endif
}

// acc (ROWS, NV·L) = A (ROWS, k) · panel (k, NV·L) in registers (panel row p at panel + p·sb); then
// C[:, :nr] = alpha · acc + beta · C
template <class T, int NV, int ROWS>
inline void micro(int k, const T* a, std::ptrdiff_t sai, std::ptrdiff_t sap, const T* panel, std::ptrdiff_t sb, T* c,
                  int ldc, int nr, T alpha, T beta) {
    constexpr int L = lanes<T>(), NR = NV * L;
    Vec<T> acc[ROWS][NV];
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = Vec<T>{};
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i)  // C's tile is read at the end: ask for it now (C may be far bigger than L2)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) __builtin_prefetch(c + std::ptrdiff_t(i) * ldc + v * L, 1);
    for (int p = 0; p < k; ++p) {
        Vec<T> b[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) b[v] = load(panel + p * sb + v * L);
#pragma GCC unroll 32
        for (int i = 0; i < ROWS; ++i) {
            const T av = a[i * sai + p * sap];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] += av * b[v];
        }
    }
    // The model's products have alpha = 1 and beta = 0 (overwrite) or 1 (add): there 1·acc is acc and c + 1·acc
    // is c + acc, so the multiplications are skipped (same values); otherwise C = alpha·acc + beta·C as written. A
    // partial panel (nr < NR) stores only its first nr columns.
    const bool plain = alpha == T(1) && (beta == T(0) || beta == T(1));
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; ++i) {
        T* ci = c + std::ptrdiff_t(i) * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
            const int cnt = std::min(L, nr - v * L);
            if (cnt <= 0) break;
            const Vec<T> old = beta == T(0) ? Vec<T>{} : cnt == L ? load(ci + v * L) : load_first(ci + v * L, cnt);
            Vec<T> r;
            if (plain) {
                r = beta == T(0) ? acc[i][v] : old + acc[i][v];
            } else {
                r = alpha * acc[i][v];
                if (beta != T(0)) r += beta * old;
            }
            if (cnt == L)
                store(ci + v * L, r);
            else
                store_first(ci + v * L, r, cnt);
        }
    }
}

// micro<T, NV, rows> for a run-time row count 1 <= rows <= R (the leftover rows below a full tile)
template <class T, int NV, int R>
inline void micro_rows(int rows, int k, const T* a, std::ptrdiff_t sai, std::ptrdiff_t sap, const T* panel,
                       std::ptrdiff_t sb, T* c, int ldc, int nr, T alpha, T beta) {
    if constexpr (R > 0) {
        if (rows == R) {
            micro<T, NV, R>(k, a, sai, sap, panel, sb, c, ldc, nr, alpha, beta);
        } else {
            micro_rows<T, NV, R - 1>(rows, k, a, sai, sap, panel, sb, c, ldc, nr, alpha, beta);
        }
    }
}

#if defined(__GNUC__) && !defined(__clang__)
// One stage of an in-register transpose: rows i and i + D (i & D == 0) trade their lane blocks of D, so that after
// the stages D = 1, 2, ..., L/2 row q holds column q.
template <class T, int D>
inline void transpose_stage(Vec<T>* r) {
    if constexpr (D < lanes<T>()) {
        constexpr int L = lanes<T>();
        using I = typename std::conditional<sizeof(T) == 4, std::int32_t, std::int64_t>::type;
        typedef I Mask __attribute__((vector_size(BLASGPT_VEC_BYTES)));
        Mask lo{}, hi{};  // indices into the pair [r_i | r_(i+D)]
        for (int l = 0; l < L; ++l) {
            lo[l] = I((l & D) ? L + l - D : l);
            hi[l] = I((l & D) ? L + l : l + D);
        }
        for (int i = 0; i < L; ++i)
            if (!(i & D)) {
                const Vec<T> a = r[i], b = r[i + D];
                r[i] = __builtin_shuffle(a, b, lo);
                r[i + D] = __builtin_shuffle(a, b, hi);
            }
        transpose_stage<T, 2 * D>(r);
    }
}

// dst[q·dld + i] = src[i·ld + q] for an L×L block (L = lanes of T)
template <class T>
inline void transpose_block(const T* src, std::ptrdiff_t ld, T* dst, std::ptrdiff_t dld) {
    constexpr int L = lanes<T>();
    Vec<T> r[L];
    for (int i = 0; i < L; ++i) r[i] = load(src + i * ld);
    transpose_stage<T, 1>(r);
    for (int q = 0; q < L; ++q) store(dst + q * dld, r[q]);
}
#endif

// panel[p·NR + j] = op(B)[p, jb + j] for j < nb, zero up to NR (Bᵀ: row by row of B, so its reads are contiguous)
template <class T>
void pack(Op tb, int k, int jb, int nb, const T* b, int ldb, T* panel, int NR) {
    if (tb == Op::N) {
        for (int p = 0; p < k; ++p) {
            T* row = panel + std::ptrdiff_t(p) * NR;
            const T* src = b + std::ptrdiff_t(p) * ldb + jb;
            for (int j = 0; j < nb; ++j) row[j] = src[j];
            for (int j = nb; j < NR; ++j) row[j] = T(0);
        }
        return;
    }
    // Bᵀ: blocks of L columns × L positions transposed in registers (the forward products Y = X·Wᵀ pack every
    // weight matrix each step: element by element that was a tenth of microgpt's float64 step), the rest one by one
    int jv = 0, kv = 0;
#if defined(__GNUC__) && !defined(__clang__)
    constexpr int L = lanes<T>();
    jv = nb / L * L;
    kv = k / L * L;
    for (int j0 = 0; j0 < jv; j0 += L)
        for (int p0 = 0; p0 < kv; p0 += L)
            transpose_block<T>(b + std::ptrdiff_t(jb + j0) * ldb + p0, ldb, panel + std::ptrdiff_t(p0) * NR + j0, NR);
#endif
    for (int j = 0; j < NR; ++j) {
        T* col = panel + j;
        if (j < nb) {
            const T* src = b + std::ptrdiff_t(jb + j) * ldb;
            for (int p = j < jv ? kv : 0; p < k; ++p) col[std::ptrdiff_t(p) * NR] = src[p];
        } else {
            for (int p = 0; p < k; ++p) col[std::ptrdiff_t(p) * NR] = T(0);
        }
    }
}

// Per-thread scratch of a kernel (vector-aligned), grown to the largest size seen: no allocation in a steady state.
template <class T, int SLOT>
T* scratch(std::size_t n) {
    thread_local std::vector<Vec<T>> buf;
    const std::size_t vecs = (n + lanes<T>() - 1) / lanes<T>();
    if (buf.size() < vecs) buf.resize(vecs);
    return reinterpret_cast<T*>(buf.data());
}

// Aᵀ (sai = 1, sap = lda) packed into panels of MR rows of op(A), each stored p-major (its MR values of column p
// together, zero past row m): the tile then reads A sequentially instead of one MR-value piece per row of A, each
// on its own cache line.
template <class T, int MR>
void pack_at(int m, int k, const T* a, int lda, T* dst) {
    const int panels = (m + MR - 1) / MR;
    for (int p = 0; p < k; ++p) {
        const T* src = a + std::ptrdiff_t(p) * lda;
        for (int q = 0; q < panels; ++q) {
            T* d = dst + (std::ptrdiff_t(q) * k + p) * MR;
            const int i0 = q * MR, rows = std::min(MR, m - i0);
            for (int r = 0; r < rows; ++r) d[r] = src[i0 + r];
            for (int r = rows; r < MR; ++r) d[r] = T(0);
        }
    }
}

// One column panel of NR at a time: a whole panel of an untransposed B is read where it lies (row p at b + p·ldb),
// anything else (Bᵀ, or the last partial panel) is packed first.
template <class T, int NV, int MR>
void gemm_tiles(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                int ldc, T* panel) {
    constexpr int NR = NV * lanes<T>();
    const std::ptrdiff_t sai = ta == Op::N ? lda : 1, sap = ta == Op::N ? 1 : lda;
    for (int jb = 0; jb < n; jb += NR) {
        const int nr = std::min(NR, n - jb);
        const T* pb = b + jb;
        std::ptrdiff_t sb = ldb;
        if (tb == Op::T || nr < NR) {
            pack(tb, k, jb, nr, b, ldb, panel, NR);
            pb = panel;
            sb = NR;
        }
        int i = 0;
        for (; i + MR <= m; i += MR)
            micro<T, NV, MR>(k, a + i * sai, sai, sap, pb, sb, c + std::ptrdiff_t(i) * ldc + jb, ldc, nr, alpha, beta);
        if (i < m)
            micro_rows<T, NV, MR - 1>(m - i, k, a + i * sai, sai, sap, pb, sb, c + std::ptrdiff_t(i) * ldc + jb, ldc,
                                      nr, alpha, beta);
    }
}

inline int round_up(int n, int L) { return (n + L - 1) / L * L; }

// The dW = dYᵀ X products (Aᵀ, k = the batch's rows) of large batches, blocked as GotoBLAS does: k in blocks of KC,
// rows of C in blocks of MC. Each (MC, KC) block of op(A) is packed into panels of MR rows (pack_at), each KC × NR
// panel of B next to it (pack), small enough to stay in L1 while the MC / MR tiles of the block pass over it; C
// takes the first k block with beta and adds the others. Unblocked, such a product reads a 6-value piece of a new
// cache line of A and a new row of B per k step. Measured (float32, AVX-512 Zen 4, one core, thread CPU time, best
// of 5, time relative to OpenBLAS's in the same run): k = 2048 (d384 T256 B8) 384x384x2048 1.03x (unblocked
// 1.28x), 384x1536x2048 1.00x (3.6x); at k = 768 (d128 T64 B12) blocking did not beat the unblocked kernel beyond
// the machine's noise (0.94-1.10x against 0.88-1.5x), so it starts at k = 1024. N·N and N·T products (B read in
// place) lose with the same blocking and stay unblocked. Each element of C sums its k block in the unblocked order
// and adds the blocks in order: only products with k > KC change their rounding (microgpt's have k <= 64).
constexpr int kBlockK = 128;      // KC: a KC × NR panel of B is 16 KiB (AVX-512, either type), L1 holds it
constexpr int kBlockMTiles = 64;  // MC = 64 · MR rows: the packed block of A, 192 KiB (float32), stays in L2
constexpr int kBlockMinK = 1024;  // blocked from k = 1024 rows when B spans several panels

template <class T>
bool blocked_gemm(Op ta, Op tb, int n, int k) {
    return ta == Op::T && tb == Op::N && k >= kBlockMinK && n > 2 * lanes<T>();
}

// C (m, n) = alpha · Aᵀ B + beta · C with A (k, m), B (k, n)
template <class T>
void gemm_blocked_tn(int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c, int ldc) {
    constexpr int NV = 2, MR = max_rows<NV>(), NR = NV * lanes<T>(), KC = kBlockK, MC = kBlockMTiles * MR;
    T* apack = scratch<T, 3>(std::size_t(MC) * KC);
    T* bpack = scratch<T, 4>(std::size_t(KC) * NR);
    for (int p0 = 0; p0 < k; p0 += KC) {
        const int kc = std::min(KC, k - p0);
        const T bb = p0 == 0 ? beta : T(1);
        for (int i0 = 0; i0 < m; i0 += MC) {
            const int mc = std::min(MC, m - i0);
            pack_at<T, MR>(mc, kc, a + std::ptrdiff_t(p0) * lda + i0, lda, apack);
            for (int jb = 0; jb < n; jb += NR) {
                const int nr = std::min(NR, n - jb);
                pack(Op::N, kc, jb, nr, b + std::ptrdiff_t(p0) * ldb, ldb, bpack, NR);
                T* cb = c + std::ptrdiff_t(i0) * ldc + jb;
                int i = 0;
                for (; i + MR <= mc; i += MR)
                    micro<T, NV, MR>(kc, apack + std::ptrdiff_t(i) * kc, 1, MR, bpack, NR, cb + std::ptrdiff_t(i) * ldc,
                                     ldc, nr, alpha, bb);
                if (i < mc)
                    micro_rows<T, NV, MR - 1>(mc - i, kc, apack + std::ptrdiff_t(i) * kc, 1, MR, bpack, NR,
                                              cb + std::ptrdiff_t(i) * ldc, ldc, nr, alpha, bb);
            }
        }
    }
}

template <class T>
void gemm(Op ta, Op tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
               int ldc, T* panel) {
    if (k == 0) {  // no products: C = beta · C (beta == 0 clears, as BLAS)
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
                T& cij = c[std::ptrdiff_t(i) * ldc + j];
                cij = beta == T(0) ? T(0) : beta * cij;
            }
        return;
    }
    constexpr int L = lanes<T>();
    if (blocked_gemm<T>(ta, tb, n, k)) return gemm_blocked_tn<T>(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    // one-vector panels waste fewer lanes (n = 48 at d16, 65 at vocab 65); a product of at most kSmallRows rows
    // (a short document's positions) takes the tallest two-vector tile the registers hold
    if (round_up(n, L) < round_up(n, 2 * L)) {
        gemm_tiles<T, 1, max_rows<1>()>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
    } else if (m <= kSmallRows) {
        gemm_tiles<T, 2, small_rows<2>()>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
    } else {
        gemm_tiles<T, 2, max_rows<2>()>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, panel);
    }
}


// ---------------------------------------------------------------------------------------------------------------
// Fused causal attention of one document, all heads at once, no gemm: per head (hd = C / H, rows i, j < n)
//   S_ij = q_i · k_j / sqrt(hd) (j <= i) ;  m_i = max_j S_ij ;  r_i = 1 / Σ_j exp(S_ij − m_i) ;
//   P_ij = exp(S_ij − m_i) · r_i ;  O_i = Σ_j P_ij v_j
//   dP_ij = dO_i · v_j ;  dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij') ;  dQ_i = Σ_j dS_ij k_j / sqrt(hd) ;
//   dK_j = Σ_i dS_ij q_i / sqrt(hd) ;  dV_j = Σ_i P_ij dO_i
// (attention_forward / attention_backward in layers.cpp compute the same with gemm products). A row of C values is
// C / L vectors, each holding L / hd whole heads, lane h·hd + c (hd divides L). Scores are packed: for a block of hd
// keys j0 .. j0 + hd − 1, one vector holds each of its heads' score against each of those keys, lane h·hd + t =
// S_i,j0+t of head h (packed_dots), so exp and the softmax run once per score (no lane wasted but the causal tail
// of a row's last block), and sums over keys broadcast each key's value across its head's lanes (head_broadcast).
// The order of every sum is fixed, whatever the vector width: a score is the pairwise sum of its hd rounded
// products ((p_0 + p_1) + (p_2 + p_3)) + ..., every other sum runs over keys (or, for dK and dV, queries) in
// increasing order, a product joining a sum as one multiply-add where the instruction set has it.
// Forward keeps, per row, each head's m and r (2C values, each replicated across its head's lanes) in `stats`;
// backward recomputes P from them (as flash attention does) rather than storing n² probabilities.

// Integer lanes as wide as T's, for shuffle indices.
template <class T>
struct MaskOf {
    using I = typename std::conditional<sizeof(T) == 4, std::int32_t, std::int64_t>::type;
    typedef I type __attribute__((vector_size(BLASGPT_VEC_BYTES)));
};
template <class T>
using Mask = typename MaskOf<T>::type;

// The index vector with lane l = f(l) (f a constexpr function of the lane), for shuffles fixed at compile time
template <class T, class F, std::size_t... l>
constexpr Mask<T> lanes_of(F f, std::index_sequence<l...>) {
    return Mask<T>{typename MaskOf<T>::I(f(int(l)))...};
}
template <class T, class F>
constexpr Mask<T> lanes_of(F f) {
    return lanes_of<T>(f, std::make_index_sequence<std::size_t(lanes<T>())>{});
}

// lane l = a[idx[l]] for idx[l] < L, else b[idx[l] − L]
template <class T>
inline Vec<T> permute2(Vec<T> a, Vec<T> b, Mask<T> idx) {
#if defined(__GNUC__) && !defined(__clang__)
    return __builtin_shuffle(a, b, idx);
#else
    Vec<T> y;
    for (int l = 0; l < lanes<T>(); ++l) y[l] = idx[l] < lanes<T>() ? a[idx[l]] : b[idx[l] - lanes<T>()];
    return y;
#endif
}

// lane l = x[idx[l]]
template <class T>
inline Vec<T> permute(Vec<T> x, Mask<T> idx) {
#if defined(__GNUC__) && !defined(__clang__)
    return __builtin_shuffle(x, idx);
#else
    Vec<T> y;
    for (int l = 0; l < lanes<T>(); ++l) y[l] = x[idx[l]];
    return y;
#endif
}

// every lane of head h gets lane h·hd + t of x (t < hd; a shuffle fixed at compile time where t is a constant)
template <class T, int HD>
inline Vec<T> head_broadcast(Vec<T> x, int t) {
    constexpr Mask<T> first = lanes_of<T>([](int l) { return l / HD * HD; });
    return permute<T>(x, first + t);
}

// the max of each head's hd lanes, in all of them (rounds exchanging lanes l and l ^ step, step = 1, 2, ... hd/2)
template <class T, int HD, int step = 1>
inline Vec<T> head_max(Vec<T> x) {
    if constexpr (step >= HD) {
        return x;
    } else {
        constexpr Mask<T> idx = lanes_of<T>([](int l) { return l ^ step; });
        const Vec<T> y = permute<T>(x, idx);
        return head_max<T, HD, 2 * step>(x > y ? x : y);
    }
}

// the position t of each lane within its head, as T
template <class T, int HD>
inline Vec<T> lane_in_head() {
    Vec<T> t{};
    for (int l = 0; l < lanes<T>(); ++l) t[l] = T(l % HD);
    return t;
}

// Within each head's hd lanes: the first hd/2 get a's adjacent pair sums (a_0 + a_1, a_2 + a_3, ...), the last
// hd/2 get b's.
template <class T, int HD>
inline Vec<T> pair_sums(Vec<T> a, Vec<T> b) {
    constexpr int L = lanes<T>();
    constexpr Mask<T> even = lanes_of<T>([](int l) {
        const int head = l / HD * HD, t = l % HD;
        return t < HD / 2 ? head + 2 * t : L + head + 2 * (t - HD / 2);
    });
    constexpr Mask<T> odd = even + 1;
    return permute2<T>(a, b, even) + permute2<T>(a, b, odd);
}

// x, as a value the compiler cannot see into: an operation using it is not fused with the one that made it (no
// multiply-add contraction of a product and a later sum)
template <class T>
inline Vec<T> opaque(Vec<T> x) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(x));
#elif defined(__aarch64__)
    __asm__("" : "+w"(x));
#else
    __asm__("" : "+m"(x));
#endif
    return x;
}

// Packed dot products of a with the rows r_t = rows + t·ld, t < cnt (1 <= cnt <= W <= hd, W a power of two):
//   lane h·hd + t = Σ_c a[h·hd + c] · r_t[h·hd + c]   (t < cnt; the other lanes hold junk; no row past cnt is read)
// The hd products of a lane are summed pairwise: each round of pair_sums halves the vectors and puts the products
// of r_t, then their pair sums, then sums of four ... in lanes h·hd + t; after log2(W) rounds one vector is left,
// which log2(hd / W) more rounds (with itself) finish.
template <class T, int HD, int W>
inline Vec<T> packed_dots(Vec<T> a, const T* rows, std::ptrdiff_t ld, int cnt) {
    Vec<T> x[W];
    for (int t = 0; t < W; ++t) x[t] = a * load(rows + std::min(t, cnt - 1) * ld);
    if constexpr (HD == 1) return opaque<T>(x[0]);  // a rounded product, like every score (hd >= 2: pair_sums)
    for (int w = W; w > 1; w /= 2)
        for (int u = 0; u < w / 2; ++u) x[u] = pair_sums<T, HD>(x[2 * u], x[2 * u + 1]);
    for (int w = W; w < HD; w *= 2) x[0] = pair_sums<T, HD>(x[0], x[0]);
    return x[0];
}

// f(std::integral_constant<int, W>{}) for W the least power of two >= cnt (1 <= cnt <= HD): packed_dots of a
// row's last, partial block of keys work on W rows, not hd.
template <int HD, int W = 1, class F>
inline void with_width(int cnt, F f) {
    if constexpr (W >= HD) {
        f(std::integral_constant<int, HD>{});
    } else {
        if (cnt <= W) return f(std::integral_constant<int, W>{});
        with_width<HD, 2 * W>(cnt, f);
    }
}

// f(t) for t = 0 .. cnt − 1 (cnt <= HD), for narrow heads unrolled with t a std::integral_constant, so that each
// key of a block has its shuffles fixed at compile time
constexpr int kUnrolledKeys = 8;
template <class F, int... t>
inline void for_keys(int cnt, F f, std::integer_sequence<int, t...>) {
    ((t < cnt ? f(std::integral_constant<int, t>{}) : void()), ...);
}
template <int HD, class F>
inline void for_keys(int cnt, F f) {
    if constexpr (HD <= kUnrolledKeys) {
        for_keys(cnt, f, std::make_integer_sequence<int, HD>{});
    } else {
        for (int t = 0; t < cnt; ++t) f(t);
    }
}

template <class T>
bool attention_supports(int C, int H, int n) {
    constexpr int L = lanes<T>();
    const int hd = C / H;
    return n <= kFusedMaxPositions && C % L == 0 && L % hd == 0;
}

// Forward of one document (n rows at qkv, out, stats), NC vectors of heads at a time (lanes c0 .. c0 + NC·L − 1 of
// each row; their chains are independent, so NC of them interleave): per row i, the packed scores of each block of
// hd keys and their max m_i, then e_ij = exp(S_ij − m_i) key by key into
//   r_i = 1 / Σ_j e_ij ;  O_i = r_i · Σ_j e_ij v_j
template <class T, int HD, int NC>
void attention_forward_doc(T* out, T* stats, const T* qkv, int n, int C) {
    constexpr int L = lanes<T>();
    const int ld = 3 * C;
    const T scale = T(1) / std::sqrt(T(HD));
    Vec<T>* S = reinterpret_cast<Vec<T>*>(scratch<T, 0>(std::size_t((n + HD - 1) / HD) * NC * L));  // a row's scores
    const Vec<T> tail = lane_in_head<T, HD>();
    for (int c0 = 0; c0 < C; c0 += NC * L) {
        for (int i = 0; i < n; ++i) {
            Vec<T> q[NC], mx[NC], sum[NC], o[NC];
            for (int c = 0; c < NC; ++c) {
                q[c] = load(qkv + std::ptrdiff_t(i) * ld + c0 + c * L) * scale;
                mx[c] = splat(T(-1e30));
                sum[c] = o[c] = Vec<T>{};
            }
            for (int j0 = 0; j0 <= i; j0 += HD) {
                const int cnt = std::min(HD, i + 1 - j0);
                const T* k = qkv + std::ptrdiff_t(j0) * ld + C + c0;
                Vec<T>* s = S + (j0 / HD) * NC;
                with_width<HD>(cnt, [&](auto W) {
                    for (int c = 0; c < NC; ++c) {
                        s[c] = packed_dots<T, HD, decltype(W)::value>(q[c], k + c * L, ld, cnt);
                        s[c] = tail < T(cnt) ? s[c] : splat(T(-1e30));  // keys past i: not attended
                        mx[c] = s[c] > mx[c] ? s[c] : mx[c];
                    }
                });
            }
            for (int c = 0; c < NC; ++c) mx[c] = head_max<T, HD>(mx[c]);
            for (int j0 = 0; j0 <= i; j0 += HD) {
                Vec<T> e[NC];
                for (int c = 0; c < NC; ++c) e[c] = vexp<T>(S[(j0 / HD) * NC + c] - mx[c]);
                for_keys<HD>(std::min(HD, i + 1 - j0), [&](auto t) {
                    const T* v = qkv + std::ptrdiff_t(j0 + t) * ld + 2 * C + c0;
                    for (int c = 0; c < NC; ++c) {
                        const Vec<T> et = head_broadcast<T, HD>(e[c], t);
                        sum[c] += et;
                        o[c] += et * load(v + c * L);
                    }
                });
            }
            T* st = stats + std::ptrdiff_t(i) * 2 * C + c0;
            for (int c = 0; c < NC; ++c) {
                const Vec<T> inv = T(1) / sum[c];
                store(out + std::ptrdiff_t(i) * C + c0 + c * L, o[c] * inv);
                store(st + c * L, mx[c]);
                store(st + C + c * L, inv);
            }
        }
    }
}

// Backward of one document, NC vectors of heads at a time: per row i, for each block of keys (packed)
//   P_ij = exp(S_ij − m_i) · r_i (m, r from stats) ;  dP_ij = dO_i · v_j ;  then key by key  d_i = Σ_j P_ij dP_ij
// and, with dS_ij = P_ij (dP_ij − d_i), key by key
//   dQ_i = Σ_j dS_ij k_j / sqrt(hd) ;  dK_j += dS_ij q_i / sqrt(hd) ;  dV_j += P_ij dO_i
// (dK, dV accumulating over the rows in order).
template <class T, int HD, int NC>
void attention_backward_doc(T* dqkv, const T* dout, const T* qkv, const T* stats, int n, int C) {
    constexpr int L = lanes<T>();
    const int ld = 3 * C, blocks = (n + HD - 1) / HD;
    const T scale = T(1) / std::sqrt(T(HD));
    Vec<T>* P = reinterpret_cast<Vec<T>*>(scratch<T, 1>(std::size_t(2 * blocks) * NC * L));  // a row's P, then dP
    Vec<T>* dP = P + blocks * NC;
    for (int j = 0; j < n; ++j)  // dK and dV accumulate over the rows that attend to j
        std::fill_n(dqkv + std::ptrdiff_t(j) * ld + C, 2 * C, T(0));
    for (int c0 = 0; c0 < C; c0 += NC * L) {
        for (int i = 0; i < n; ++i) {
            const T* st = stats + std::ptrdiff_t(i) * 2 * C + c0;
            Vec<T> q[NC], dO[NC], mx[NC], inv[NC], rowdot[NC], dq[NC];
            for (int c = 0; c < NC; ++c) {
                q[c] = load(qkv + std::ptrdiff_t(i) * ld + c0 + c * L) * scale;
                dO[c] = load(dout + std::ptrdiff_t(i) * C + c0 + c * L);
                mx[c] = load(st + c * L);
                inv[c] = load(st + C + c * L);
                rowdot[c] = dq[c] = Vec<T>{};
            }
            for (int j0 = 0; j0 <= i; j0 += HD) {
                const int cnt = std::min(HD, i + 1 - j0);
                const T* k = qkv + std::ptrdiff_t(j0) * ld + C + c0;
                Vec<T>* p = P + (j0 / HD) * NC;
                Vec<T>* dp = dP + (j0 / HD) * NC;
                with_width<HD>(cnt, [&](auto W) {
                    constexpr int w = decltype(W)::value;
                    for (int c = 0; c < NC; ++c) {
                        p[c] = vexp<T>(packed_dots<T, HD, w>(q[c], k + c * L, ld, cnt) - mx[c]) * inv[c];
                        dp[c] = packed_dots<T, HD, w>(dO[c], k + C + c * L, ld, cnt);
                    }
                });
                for_keys<HD>(cnt, [&](auto t) {
                    for (int c = 0; c < NC; ++c)
                        rowdot[c] += head_broadcast<T, HD>(p[c], t) * head_broadcast<T, HD>(dp[c], t);
                });
            }
            for (int j0 = 0; j0 <= i; j0 += HD) {
                const Vec<T>* p = P + (j0 / HD) * NC;
                Vec<T> ds[NC];
                for (int c = 0; c < NC; ++c) ds[c] = p[c] * (dP[(j0 / HD) * NC + c] - rowdot[c]);
                for_keys<HD>(std::min(HD, i + 1 - j0), [&](auto t) {
                    const std::ptrdiff_t j = j0 + t;
                    const T* k = qkv + j * ld + C + c0;
                    T* dk = dqkv + j * ld + C + c0;
                    T* dv = dk + C;
                    for (int c = 0; c < NC; ++c) {
                        const Vec<T> dst = head_broadcast<T, HD>(ds[c], t), pt = head_broadcast<T, HD>(p[c], t);
                        dq[c] += dst * load(k + c * L);
                        store(dk + c * L, load(dk + c * L) + dst * q[c]);  // q already carries the 1/sqrt(hd)
                        store(dv + c * L, load(dv + c * L) + pt * dO[c]);
                    }
                });
            }
            for (int c = 0; c < NC; ++c) store(dqkv + std::ptrdiff_t(i) * ld + c0 + c * L, dq[c] * scale);
        }
    }
}

// Row-wise softmax with cross-entropy: probs = softmax(logits); returns Σ_r weight_r · −log probs_r[target_r]
template <class T>
double softmax_xent(T* probs, const T* logits, const std::int32_t* target, const T* weight, std::int64_t N,
                         int V) {
    constexpr int L = lanes<T>();
    const int VP = round_up(V, L), nv = VP / L;
    T* row = scratch<T, 5>(std::size_t(VP));
    double loss = 0;
    for (std::int64_t r = 0; r < N; ++r) {
        const T* z = logits + r * V;
        T mx = z[0];
        for (int j = 1; j < V; ++j) mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < VP; ++j) row[j] = j < V ? z[j] - mx : T(-1e30);
        Vec<T> sumv = Vec<T>{};
        for (int v = 0; v < nv; ++v) {
            Vec<T> e = vexp<T>(load(row + v * L));
            e = load(row + v * L) > T(-1e29) ? e : Vec<T>{};  // padding lanes contribute nothing
            store(row + v * L, e);
            sumv += e;
        }
        const T inv = T(1) / hsum<T>(sumv);
        T* p = probs + r * V;
        for (int j = 0; j < V; ++j) p[j] = row[j] * inv;
        if (target) loss += double(weight[r]) * -std::log(double(p[target[r]]));
    }
    return loss;
}

// Causal softmax over score rows of attention's gemm path (row stride `width`): row r is query position first + r
// and keeps keys j <= first + r:  p_j = exp(s_j − m)·inv, m = max_j s_j, inv = 1 / Σ_j exp(s_j − m); p_j = 0 for the
// later keys up to first + rows (the block's products read no further; beyond that, up to width, the row may be
// left as it was). Each row's m and inv go to mx[r·st], inv[r·st] when mx is given.
template <class T>
inline Vec<T> lane_index() {
    Vec<T> v{};
    for (int l = 0; l < lanes<T>(); ++l) v[l] = T(l);
    return v;
}

// lanes j0 + l < cnt of a vector loaded from p + j0 (the rest zero), without touching memory past cnt
template <class T>
inline Vec<T> load_part(const T* p, int j0, int cnt) {
    if (j0 + lanes<T>() <= cnt) return load(p + j0);
    Vec<T> v{};
    for (int l = 0; j0 + l < cnt; ++l) v[l] = p[j0 + l];
    return v;
}

template <class T>
inline void store_part(T* p, int j0, int cnt, Vec<T> v) {
    if (j0 + lanes<T>() <= cnt) return store(p + j0, v);
    for (int l = 0; j0 + l < cnt; ++l) p[j0 + l] = v[l];
}

// The row passes below run on whole vectors wherever one fits in the row (j0 + L <= width: the lanes at and past
// cnt are in the row and are overwritten with zeros anyway), and only a row's last partial vector goes lane by
// lane. Lanes past cnt are masked to zero before they reach a sum or a store, so every kept value and every sum is
// the same as lane by lane, in the same order.
template <class T>
inline Vec<T> load_row_vec(const T* p, int j0, int width) {
    return j0 + lanes<T>() <= width ? load(p + j0) : load_part(p, j0, width);
}

template <class T>
inline void store_row_vec(T* p, int j0, int width, Vec<T> v) {
    if (j0 + lanes<T>() <= width) return store(p + j0, v);
    store_part(p, j0, width, v);
}

template <class T>
void causal_softmax(T* s, int rows, int first, int width, T* mx, T* inv, std::ptrdiff_t st) {
    constexpr int L = lanes<T>();
    const Vec<T> idx = lane_index<T>();
    const int last = first + rows;  // zeros up to the keys of the last row: no row reads further
    for (int r = 0; r < rows; ++r) {
        T* p = s + std::ptrdiff_t(r) * width;
        const int cnt = first + r + 1, end = std::min(width, round_up(cnt, L));  // vectors cover [0, end)
        Vec<T> mv = splat(p[0]);  // m = max_j s_j over the kept keys
        for (int j0 = 0; j0 < cnt; j0 += L) {
            const Vec<T> x = load_row_vec(p, j0, width);
            const Vec<T> keep = idx + T(j0) < T(cnt) ? x : mv;
            mv = keep > mv ? keep : mv;
        }
        T m = mv[0];
        for (int l = 1; l < L; ++l) m = mv[l] > m ? mv[l] : m;
        Vec<T> sum{};
        for (int j0 = 0; j0 < cnt; j0 += L) {
            Vec<T> e = vexp<T>(load_row_vec(p, j0, width) - m);
            e = idx + T(j0) < T(cnt) ? e : Vec<T>{};
            sum += e;
            store_row_vec(p, j0, width, e);
        }
        const T iv = T(1) / hsum<T>(sum);
        for (int j0 = 0; j0 < cnt; j0 += L) store_row_vec(p, j0, width, load_row_vec(p, j0, width) * iv);
        std::fill(p + end, p + std::max(end, last), T(0));
        if (mx) {
            mx[r * st] = m;
            inv[r * st] = iv;
        }
    }
}

// Its backward, dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place of dP (row stride width, zero past each row's keys up to
// first + rows, as above), with
// P either given in p (mx == nullptr; the dot is computed) or recomputed from the scores in p into pout (which may
// be p) as exp(s_j − mx_r)·inv_r, with the dot given (dot_r = dO_r · O_r, the same sum).
template <class T>
void causal_softmax_backward(T* ds, const T* p, T* pout, int rows, int first, int width, const T* mx, const T* inv,
                             std::ptrdiff_t st, const T* dot) {
    constexpr int L = lanes<T>();
    const Vec<T> idx = lane_index<T>();
    const int last = first + rows;
    for (int r = 0; r < rows; ++r) {
        const T* pr = p + std::ptrdiff_t(r) * width;
        T* dr = ds + std::ptrdiff_t(r) * width;
        const int cnt = first + r + 1, end = std::min(width, round_up(cnt, L));
        T d;
        if (mx) {  // P_j = exp(s_j − m)·inv, recomputed
            T* po = pout + std::ptrdiff_t(r) * width;
            const T m = mx[r * st], iv = inv[r * st];
            for (int j0 = 0; j0 < cnt; j0 += L) {
                Vec<T> e = vexp<T>(load_row_vec(pr, j0, width) - m) * iv;
                store_row_vec(po, j0, width, idx + T(j0) < T(cnt) ? e : Vec<T>{});
            }
            std::fill(po + end, po + std::max(end, last), T(0));
            pr = po;
            d = dot[r];
        } else {  // d = Σ_j dP_j P_j
            Vec<T> acc{};
            for (int j0 = 0; j0 < cnt; j0 += L) {
                const auto keep = idx + T(j0) < T(cnt);  // the operands are masked, not the product, so the
                const Vec<T> a = load_row_vec(dr, j0, width), b = load_row_vec(pr, j0, width);  // multiply-add
                acc += (keep ? a : Vec<T>{}) * (keep ? b : Vec<T>{});                           // stays fused
            }
            d = hsum<T>(acc);
        }
        for (int j0 = 0; j0 < cnt; j0 += L) {  // dS_j = P_j (dP_j − d), zero past the kept keys
            const Vec<T> x = load_row_vec(pr, j0, width) * (load_row_vec(dr, j0, width) - d);
            store_row_vec(dr, j0, width, idx + T(j0) < T(cnt) ? x : Vec<T>{});
        }
        std::fill(dr + end, dr + std::max(end, last), T(0));
    }
}

// Row-wise elementwise passes of the model (layers.cpp states the formulas), vector by vector along each row.
// rmsnorm: r = 1 / sqrt(mean_c x_c² + eps), y = r·x; with tok (the first norm), x is the embedding
// e = wte[tok] + wpe[pos], written to e on the way.
template <class T>
void rmsnorm_impl(T* y, T* rstd, const T* x, std::int64_t N, int C, T eps, T* e, const std::int32_t* tok,
                  const std::int32_t* pos, const T* wte, const T* wpe) {
    constexpr int L = lanes<T>();
    for (std::int64_t i = 0; i < N; ++i) {
        const T* xi = x + i * C;
        if (tok) {  // e_i = wte[tok_i] + wpe[pos_i]
            const T* a = wte + std::int64_t(tok[i]) * C;
            const T* b = wpe + std::int64_t(pos[i]) * C;
            for (int j0 = 0; j0 < C; j0 += L) store_part(e + i * C, j0, C, load_part(a, j0, C) + load_part(b, j0, C));
            xi = e + i * C;
        }
        Vec<T> ss{};
        for (int j0 = 0; j0 < C; j0 += L) {
            const Vec<T> v = load_part(xi, j0, C);
            ss += v * v;
        }
        const T r = T(1) / std::sqrt(hsum<T>(ss) / T(C) + eps);
        rstd[i] = r;
        for (int j0 = 0; j0 < C; j0 += L) store_part(y + i * C, j0, C, load_part(xi, j0, C) * r);
    }
}

// rmsnorm backward, dx += r·dy − (r³ / C)·x·Σ_c(dy_c x_c); with tok (the first norm) dx is not stored but added
// to the embedding's gradient rows instead: dwte[tok_i] += dx_i, dwpe[pos_i] += dx_i.
template <class T>
void rmsnorm_backward_impl(T* dx, const T* dy, const T* x, const T* rstd, std::int64_t N, int C,
                           const std::int32_t* tok, const std::int32_t* pos, T* dwte, T* dwpe) {
    constexpr int L = lanes<T>();
    for (std::int64_t i = 0; i < N; ++i) {
        const T* xi = x + i * C;
        const T* gi = dy + i * C;
        Vec<T> dot{};
        for (int j0 = 0; j0 < C; j0 += L) dot += load_part(gi, j0, C) * load_part(xi, j0, C);
        const T r = rstd[i];
        const T k = r * r * r / T(C) * hsum<T>(dot);
        if (tok) {
            T* a = dwte + std::int64_t(tok[i]) * C;
            T* b = dwpe + std::int64_t(pos[i]) * C;
            for (int j0 = 0; j0 < C; j0 += L) {
                const Vec<T> d = r * load_part(gi, j0, C) - k * load_part(xi, j0, C);
                store_part(a, j0, C, load_part(a, j0, C) + d);
                store_part(b, j0, C, load_part(b, j0, C) + d);
            }
            continue;
        }
        T* di = dx + i * C;
        for (int j0 = 0; j0 < C; j0 += L)
            store_part(di, j0, C, load_part(di, j0, C) + (r * load_part(gi, j0, C) - k * load_part(xi, j0, C)));
    }
}

// relu: h = max(u, 0); with dh: h = dh·[u > 0] (its backward, h may be dh)
template <class T>
void relu(T* h, const T* u, const T* dh, std::int64_t n) {
    constexpr int L = lanes<T>();
    std::int64_t i = 0;
    for (; i + L <= n; i += L) {
        const Vec<T> ui = load(u + i);
        store(h + i, ui > T(0) ? (dh ? load(dh + i) : ui) : Vec<T>{});
    }
    for (; i < n; ++i) h[i] = u[i] > T(0) ? (dh ? dh[i] : u[i]) : T(0);
}

// Adam, elementwise and branch-free so it vectorizes (division and sqrt included: built with -fno-math-errno)
template <class T>
void adam(T* __restrict p, T* __restrict m, T* __restrict v, const T* __restrict g, std::int64_t n,
               const AdamStep& s) {
    const T b1 = T(s.beta1), b2 = T(s.beta2), c1 = T(1 - s.beta1), c2 = T(1 - s.beta2);
    // the bias corrections as multiplications by 1/(1 − β^t): one division per element instead of three
    const T inv1 = T(1 / s.bias1), inv2 = T(1 / s.bias2), eps = T(s.eps), lr = T(s.lr);
    for (std::int64_t i = 0; i < n; ++i) {
        const T gi = g[i];
        const T mi = b1 * m[i] + c1 * gi;
        const T vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * inv1) / (std::sqrt(vi * inv2) + eps);
    }
}

// The entries of kernel_list.hpp not written above, as thin templates over the passes they share.
template <class T>
std::size_t panel_size(int k, int) {
    return std::size_t(k) * std::size_t(2 * lanes<T>());  // one panel of the wider tile shape
}

template <class T>
void rmsnorm(T* y, T* rstd, const T* x, std::int64_t N, int C, T eps) {
    rmsnorm_impl<T>(y, rstd, x, N, C, eps, nullptr, nullptr, nullptr, nullptr, nullptr);
}
template <class T>
void embed_rmsnorm(T* e, T* y, T* rstd, const std::int32_t* tok, const std::int32_t* pos, const T* wte, const T* wpe,
                   std::int64_t N, int C, T eps) {
    rmsnorm_impl<T>(y, rstd, e, N, C, eps, e, tok, pos, wte, wpe);
}
template <class T>
void rmsnorm_backward(T* dx, const T* dy, const T* x, const T* rstd, std::int64_t N, int C) {
    rmsnorm_backward_impl<T>(dx, dy, x, rstd, N, C, nullptr, nullptr, nullptr, nullptr);
}
template <class T>
void embed_rmsnorm_backward(T* dwte, T* dwpe, const T* dy, const T* x, const T* rstd, const std::int32_t* tok,
                            const std::int32_t* pos, std::int64_t N, int C) {
    rmsnorm_backward_impl<T>(nullptr, dy, x, rstd, N, C, tok, pos, dwte, dwpe);
}

// f(std::integral_constant<int, HD>{}, std::integral_constant<int, NC>{}) for the head width hd = HD, a power of two
// up to L (attention_supports), and NC = 4, 2 or 1, the most of those that divides the C / L vectors of a row
template <class T, int HD = 1, class F>
void with_head_shape(int C, int H, F f) {
    if constexpr (HD <= lanes<T>()) {
        if (C / H != HD) return with_head_shape<T, 2 * HD>(C, H, f);
        const int CV = C / lanes<T>();
        if (CV % 4 == 0) return f(std::integral_constant<int, HD>{}, std::integral_constant<int, 4>{});
        if (CV % 2 == 0) return f(std::integral_constant<int, HD>{}, std::integral_constant<int, 2>{});
        f(std::integral_constant<int, HD>{}, std::integral_constant<int, 1>{});
    }
}

template <class T>
void attention_forward(T* out, T* stats, const T* qkv, const DocSpan* docs, std::int64_t ndocs, int C, int H) {
    with_head_shape<T>(C, H, [&](auto hd, auto nc) {
        for (std::int64_t d = 0; d < ndocs; ++d)
            attention_forward_doc<T, decltype(hd)::value, decltype(nc)::value>(
                out + docs[d].row * C, stats + docs[d].row * 2 * C, qkv + docs[d].row * 3 * C, docs[d].n, C);
    });
}
template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* stats, const DocSpan* docs, std::int64_t ndocs,
                        int C, int H) {
    with_head_shape<T>(C, H, [&](auto hd, auto nc) {
        for (std::int64_t d = 0; d < ndocs; ++d)
            attention_backward_doc<T, decltype(hd)::value, decltype(nc)::value>(
                dqkv + docs[d].row * 3 * C, dout + docs[d].row * C, qkv + docs[d].row * 3 * C,
                stats + docs[d].row * 2 * C, docs[d].n, C);
    });
}

// The FMA peak of one core: A independent chains of acc = acc · x + y on full vectors (enough chains to cover the
// FMA latency on every port), `iters` times.
template <class T>
double fma_probe(std::int64_t iters, double* flops) {
    constexpr int A = 16;
    Vec<T> acc[A];
    for (int a = 0; a < A; ++a) acc[a] = splat(T(a + 1) * T(1e-3));
    const Vec<T> x = splat(T(0.9999999)), y = splat(T(1e-7));
    for (std::int64_t i = 0; i < iters; ++i)
        for (int a = 0; a < A; ++a) acc[a] = acc[a] * x + y;
    Vec<T> s = Vec<T>{};
    for (int a = 0; a < A; ++a) s += acc[a];
    *flops = 2.0 * A * lanes<T>() * double(iters);
    return hsum<T>(s);
}

// This instruction set's table: every entry of kernel_list.hpp, instantiated for T.
template <class T>
KernelTable<T> table() {
    return {
#define BLASGPT_KERNEL(name, ret, params, args) &name<T>,
#include "kernel_list.hpp"
#undef BLASGPT_KERNEL
    };
}

#define BLASGPT_STR2(x) #x
#define BLASGPT_STR(x) BLASGPT_STR2(x)

}  // namespace

const KernelSet& kernel_set() {
    static const KernelSet set{BLASGPT_STR(BLASGPT_ISA), table<float>(), table<double>()};
    return set;
}

}  // namespace BLASGPT_KERNEL_NS
}  // namespace blasgpt
