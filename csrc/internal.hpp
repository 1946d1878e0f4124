// Helpers of the core's .cpp files only (bindings.cpp has its own fail(), which raises ValueError directly).
//
// Argument checks: a failed one throws std::invalid_argument (ValueError in Python) with a one-line message. A
// literal message costs nothing when ok; a built one is built even when ok (cold paths only).
#pragma once

#include <stdexcept>
#include <string>

namespace blasgpt {

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

inline void require(bool ok, const char* msg) {
    if (!ok) fail(msg);
}
inline void require(bool ok, const std::string& msg) {
    if (!ok) fail(msg);
}

}  // namespace blasgpt

// Explicit instantiation of a function template declared in a header, for both element types.
#define BLASGPT_INSTANTIATE(name)               \
    template decltype(name<float>) name<float>; \
    template decltype(name<double>) name<double>;
