// The floating-point mode the core computes in, set for the length of one call and then restored exactly.
//
// float32 flushes subnormals: results below FLT_MIN become 0 and subnormal inputs read as 0 (x86: MXCSR FTZ,
// bit 15, and DAZ, bit 6; AArch64: FPCR FZ, bit 24). A subnormal operand or result costs some CPUs a microcode
// assist of ~100 cycles, and training makes many of them: the Adam moments of a parameter whose gradient is zero
// (an embedding row no batch uses) shrink by β1 = 0.85 per step and pass 1e-38 within a few hundred steps; IEEE
// rounding then keeps them subnormal for good (0.85 × 3 ulp rounds back to 3 ulp), so a float32 run grew 3-4x
// slower per step over 4000 steps on an Intel Xeon. Flushed, those moments become exactly 0 and stay 0, and the
// training result changes by nothing a float32 tolerance can see (tests/test_fpenv.py).
//
// float64 keeps IEEE gradual underflow (the flush bits cleared, even if the caller set them): it is microgpt's
// arithmetic, bit for bit (Python's floats never flush), including the moments that end up subnormal. Those appear
// only after ~4400 steps (β1^t from 1e-3 to 1e-308), and on an AMD EPYC (Zen 4) a names d64 batch-32 float64 run
// of 8000 steps, 8,576 subnormal moments at the end, kept its per-step time flat (README, How it is built).
//
// Every entry point that computes (csrc/bindings.cpp) holds a FloatMode for its element type, and ThreadPool::run
// hands the calling thread's control word to its workers for the task, so no thread computes in another mode and
// every thread's own control word is the same after a call as before it, exceptions included.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define BLASGPT_FP_X86 1
#elif defined(__aarch64__)
#define BLASGPT_FP_AARCH64 1
#endif

namespace blasgpt {

#if defined(BLASGPT_FP_X86)
constexpr std::uint64_t kFlushBits = (1u << 15) | (1u << 6);  // MXCSR FTZ | DAZ
#elif defined(BLASGPT_FP_AARCH64)
constexpr std::uint64_t kFlushBits = 1u << 24;  // FPCR FZ
#else
constexpr std::uint64_t kFlushBits = 0;  // no known control: IEEE everywhere
#endif

// This thread's floating-point control word (MXCSR on x86, FPCR on AArch64; 0 where there is none).
inline std::uint64_t fp_control() {
#if defined(BLASGPT_FP_X86)
    return _mm_getcsr();
#elif defined(BLASGPT_FP_AARCH64)
    std::uint64_t w;
    asm volatile("mrs %0, fpcr" : "=r"(w));
    return w;
#else
    return 0;
#endif
}

inline void set_fp_control(std::uint64_t w) {
#if defined(BLASGPT_FP_X86)
    _mm_setcsr(static_cast<unsigned>(w));
#elif defined(BLASGPT_FP_AARCH64)
    asm volatile("msr fpcr, %0" : : "r"(w) : "memory");
#else
    (void)w;
#endif
}

// Sets this thread's control word for the scope's lifetime and restores the previous one when it ends.
class FpScope {
   public:
    explicit FpScope(std::uint64_t word) : saved_(fp_control()) {
        if (word != saved_) set_fp_control(word);
    }
    ~FpScope() {
        if (fp_control() != saved_) set_fp_control(saved_);
    }
    FpScope(const FpScope&) = delete;
    FpScope& operator=(const FpScope&) = delete;

   private:
    std::uint64_t saved_;
};

// The control word to compute element type T in, from the current one (rounding and exception bits kept).
template <class T>
std::uint64_t fp_mode_for(std::uint64_t current) {
    return std::is_same<T, float>::value ? current | kFlushBits : current & ~kFlushBits;
}

// The mode element type T computes in (see the top of this file), until the scope ends.
template <class T>
class FloatMode : public FpScope {
   public:
    FloatMode() : FpScope(fp_mode_for<T>(fp_control())) {}
};

}  // namespace blasgpt
