# Sourced by .ci/sanitize and .ci/fuzz: a fresh venv holding blasgpt built with sanitizers.
#
#   so=$(sanitized_venv DIR CXX "CXXFLAGS" [pip requirement ...])
#
# makes DIR/venv, installs the project (plus the given requirements) into it with the extension compiled by CXX with
# CXXFLAGS (CMake also passes them to the link), built in DIR/build, and prints the path of the built _core module
# after checking that it really is instrumented (it calls into the ASan and UBSan runtimes). RelWithDebInfo keeps
# pybind11 from stripping the module or adding LTO, and gives sanitizer reports file:line.

sanitized_venv() {
    local dir=$1 cxx=$2 flags=$3
    shift 3
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "$@" . \
        -Ccmake.build-type=RelWithDebInfo \
        -Ccmake.define.CMAKE_CXX_COMPILER="$cxx" \
        -Ccmake.define.CMAKE_CXX_FLAGS="$flags" \
        -Cbuild-dir="$dir/build" >&2
    local so
    so=$(ls "$dir"/venv/lib/python3*/site-packages/blasgpt/_core*.so)
    local symbols
    symbols=$(nm -D "$so")
    if ! grep -q '__asan_report_store' <<<"$symbols" || ! grep -q '__ubsan_handle_' <<<"$symbols"; then
        echo "sanitized_venv: $so is not instrumented with ASan + UBSan (flags: $flags)" >&2
        return 1
    fi
    echo "$so"
}
