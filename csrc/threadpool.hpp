// A fixed team of worker threads for data-parallel steps: run(n, fn) calls fn(0..n-1) concurrently, fn(0) on the
// calling thread, and returns when all are done (rethrowing the first exception). No allocation per run.
//
// Between runs a worker spins briefly (a training step comes every few hundred microseconds, and waking a sleeping
// thread costs tens of them), then sleeps on a condition variable, so an idle team costs nothing.
//
// A worker runs its task in the calling thread's floating-point mode (fpenv.hpp: float32 work flushes subnormals)
// and gets its own back afterwards.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "fpenv.hpp"

namespace blasgpt {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

class ThreadPool {
   public:
    explicit ThreadPool(int threads) {
        for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { loop(t); });
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_.store(true);
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return int(workers_.size()) + 1; }

    // fn(t) for t in [0, n), n <= size(); fn(0) runs here.
    void run(int n, const std::function<void(int)>& fn) {
        if (n <= 1) {
            fn(0);
            return;
        }
        job_ = &fn;
        fp_ = fp_control();
        active_ = n;
        error_ = nullptr;
        pending_.store(n - 1, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(m_);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        std::exception_ptr mine;
        try {
            fn(0);
        } catch (...) {
            mine = std::current_exception();
        }
        for (int spin = 0; spin < kSpin && pending_.load(std::memory_order_acquire) != 0; ++spin) cpu_relax();
        if (pending_.load(std::memory_order_acquire) != 0) {
            std::unique_lock<std::mutex> lock(m_);
            done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
        }
        job_ = nullptr;
        if (mine) std::rethrow_exception(mine);
        if (error_) std::rethrow_exception(error_);
    }

   private:
    static constexpr int kSpin = 1 << 14;  // about 100-200 µs of pause instructions

    void loop(int t) {
        unsigned seen = 0;
        for (;;) {
            for (int spin = 0; spin < kSpin && generation_.load(std::memory_order_acquire) == seen && !stop_.load();
                 ++spin)
                cpu_relax();
            if (generation_.load(std::memory_order_acquire) == seen && !stop_.load()) {
                std::unique_lock<std::mutex> lock(m_);
                wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
            }
            if (stop_.load()) return;
            seen = generation_.load(std::memory_order_acquire);
            if (t >= active_) continue;
            try {
                const FpScope mode(fp_);
                (*job_)(t);
            } catch (...) {
                std::lock_guard<std::mutex> lock(m_);
                if (!error_) error_ = std::current_exception();
            }
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(m_);  // pairs with the caller's predicate check
                done_.notify_one();
            }
        }
    }

    std::vector<std::thread> workers_;
    std::mutex m_;
    std::condition_variable wake_, done_;
    const std::function<void(int)>* job_ = nullptr;  // written before generation_ is bumped (release)
    std::uint64_t fp_ = 0;                           // the caller's floating-point control word, likewise
    int active_ = 0;
    std::exception_ptr error_;
    std::atomic<unsigned> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> stop_{false};
};

}  // namespace blasgpt
