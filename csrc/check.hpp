// Argument checks of the core: a failed one throws std::invalid_argument (ValueError in Python) with a one-line
// message. A literal message costs nothing when ok; a built one is built even when ok (cold paths only). For the
// core's .cpp files only (bindings.cpp has its own fail(), which raises ValueError directly).
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
