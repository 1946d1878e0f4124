// The only file that knows about Python: check arguments, release the GIL, call plain C++ (which does its own
// locking: runtime.hpp states the rule).
// std::invalid_argument thrown by the core becomes ValueError (pybind11's standard translation).
// Every call that computes holds a FloatMode<T> (fpenv.hpp) while it runs: float32 flushes subnormals, and the
// caller's floating-point control word is back when the call returns.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bpe.hpp"
#include "fpenv.hpp"
#include "gemm.hpp"
#include "generator.hpp"
#include "gpt.hpp"
#include "kernels.hpp"
#include "layers.hpp"
#include "runtime.hpp"

namespace py = pybind11;
using namespace blasgpt;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

// The dtype object of element type E, made once (kept for the life of the process: it must outlive module teardown).
template <class E>
PyObject* dtype_ptr() {
    static PyObject* const d = py::dtype::of<E>().release().ptr();
    return d;
}

// An ndim-dimensional, C-contiguous, aligned array of exactly element type E, or a ValueError that says which
// requirement failed (no silent conversion: a copy would hide a caller's dtype mistake and cost time on every step).
// Runs on every call: the checks read numpy's struct directly; messages are built only on failure.
template <class E>
py::array_t<E> array_arg(const py::handle& obj, const char* name, int ndim) {
    const auto& api = py::detail::npy_api::get();
    PyObject* want = dtype_ptr<E>();
    const auto want_name = [&] { return py::str(py::handle(want)).cast<std::string>(); };
    if (!api.PyArray_Check_(obj.ptr()))
        fail(std::string(name) + " must be a numpy array of " + want_name() + ", got " + Py_TYPE(obj.ptr())->tp_name);
    const auto* a = py::detail::array_proxy(obj.ptr());
    // equivalent, not identical: numpy.longlong is int64 on this platform, as numpy itself says
    if (a->descr != want && !api.PyArray_EquivTypes_(a->descr, want))
        fail(std::string(name) + " must have dtype " + want_name() + ", got " +
             py::str(py::handle(a->descr)).cast<std::string>());
    if (a->nd != ndim)
        fail(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
             py::str(obj.attr("shape")).cast<std::string>());
    if (!(a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
        fail(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (!(a->flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        fail(std::string(name) + " must be aligned to its element size (copy it: numpy.array(x))");
    return py::reinterpret_borrow<py::array_t<E>>(obj);
}

template <class E>
py::array_t<E> vector_arg(const py::handle& obj, const char* name) {
    return array_arg<E>(obj, name, 1);
}

// A Python int that fits int64, or a ValueError (pybind11 would say "incompatible function arguments").
int64_t int64_arg(const py::object& obj, const char* name) {
    if (!py::isinstance<py::int_>(obj) || py::isinstance<py::bool_>(obj))
        fail(std::string(name) + " must be an integer");
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
    if (overflow != 0) fail(std::string(name) + " is out of range for a 64-bit integer");
    return int64_t(v);
}

struct BatchArgs {
    py::array_t<int32_t> tokens;
    std::optional<py::array_t<int64_t>> offsets;
    std::optional<py::array_t<int64_t>> doc_ids;
    bool windows;

    // Documents: tokens + offsets (+ doc_ids). Windows: tokens + starts (offsets must be None).
    BatchArgs(const py::handle& t, const py::handle& o, const py::handle& ids, bool windows = false)
        : tokens(vector_arg<int32_t>(t, "tokens")), windows(windows) {
        if (windows) {
            if (!o.is_none()) fail("a batch of windows takes no offsets (pass offsets=None)");
        } else {
            offsets = vector_arg<int64_t>(o, "offsets");
        }
        if (!ids.is_none()) doc_ids = vector_arg<int64_t>(ids, windows ? "starts" : "doc_ids");
        else if (windows) fail("a batch of windows needs their start offsets");
    }

    BatchView view() const {
        BatchView v;
        v.tokens = tokens.data();
        v.num_tokens = tokens.size();
        v.windows = windows;
        if (offsets) {
            v.offsets = offsets->data();
            v.num_offsets = offsets->size();
        }
        if (doc_ids) {
            v.doc_ids = doc_ids->data();
            v.batch_size = doc_ids->size();
        } else {
            v.batch_size = v.num_offsets - 1;
        }
        return v;
    }
};

constexpr int64_t kMaxTimedElements = int64_t(1) << 28;  // per operand of a timed product (1 GiB of float32)

// One product size for the timing functions: in [1, 65536].
int dim_arg(int64_t v, const char* name) {
    if (v < 1 || v > (1 << 16)) fail(std::string(name) + " must be between 1 and 65536, got " + std::to_string(v));
    return int(v);
}

GemmShape shape_arg(int elem, bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
    const GemmShape s{elem, ta, tb, dim_arg(m, "m"), dim_arg(n, "n"), dim_arg(k, "k")};
    if (int64_t(s.m) * s.k > kMaxTimedElements || int64_t(s.k) * s.n > kMaxTimedElements ||
        int64_t(s.m) * s.n > kMaxTimedElements)
        fail("a timed product's operands must each hold at most 2^28 elements");
    return s;
}

int elem_arg(const std::string& dtype) {
    if (dtype != "float32" && dtype != "float64") fail("dtype must be 'float32' or 'float64', got '" + dtype + "'");
    return dtype == "float32" ? int(sizeof(float)) : int(sizeof(double));
}

double seconds_arg(double seconds) {
    if (!(seconds >= 0 && seconds <= 60)) fail("seconds must be in [0, 60]");
    return seconds;
}

// f() in the floating-point mode the model computes elements of `elem` bytes in (timings as a training step sees).
template <class F>
auto in_float_mode(int elem, F f) {
    if (elem == int(sizeof(float))) {
        const FloatMode<float> mode;
        return f();
    }
    const FloatMode<double> mode;
    return f();
}

// A gemm plan from Python: (ta, tb, m, n, k, blas) per product shape, for elements of `elem` bytes.
std::vector<GemmChoice> plan_arg(const py::handle& choices, int elem) {
    std::vector<GemmChoice> out;
    for (const py::handle& item : py::iter(choices)) {
        const auto t = py::cast<std::tuple<bool, bool, int64_t, int64_t, int64_t, bool>>(item);
        out.push_back({shape_arg(elem, std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t),
                                 std::get<4>(t)),
                       std::get<5>(t)});
    }
    return out;
}

py::list plan_list(const GemmPlan& plan) {
    py::list out;
    for (const GemmChoice& c : plan.choices())
        out.append(py::make_tuple(c.shape.ta, c.shape.tb, c.shape.m, c.shape.n, c.shape.k, c.blas));
    return out;
}

// A numpy view of one of the model's buffers; `owner` (the Python model object) stays alive while the view does.
template <class T>
py::array_t<T> buffer_view(py::object owner, T* data, int64_t n) {
    return py::array_t<T>({n}, {int64_t(sizeof(T))}, data, owner);
}

// A generator and the Python model it samples from, which it keeps alive. (Not py::keep_alive: pybind11 3.1 runs
// that hook even when the call's arguments fail to convert, and crashes on the placeholder result.)
template <class T>
struct BoundGenerator {
    py::object owner;
    std::unique_ptr<Generator<T>> gen;
};

template <class T>
void bind_model(py::module_& m, const char* name) {
    using M = Model<T>;
    py::class_<M>(m, name, "The C++ model state: params, grads, Adam m/v in one contiguous buffer each.")
        .def(py::init([](int vocab_size, int n_embd, int n_head, int n_layer, int block_size,
                         const std::string& backend, int threads, bool tie_embeddings) {
                 Config cfg{vocab_size, n_embd, n_head, n_layer, block_size, tie_embeddings};
                 cfg.validate();
                 return std::make_unique<M>(cfg, backend_from_name(backend), threads);
             }),
             py::arg("vocab_size"), py::arg("n_embd"), py::arg("n_head"), py::arg("n_layer"), py::arg("block_size"),
             py::arg("backend") = "native", py::arg("threads") = 1, py::arg("tie_embeddings") = false)
        .def_property_readonly("num_params", &M::size)
        .def_property("step", &M::step, py::cpp_function(&M::set_step, py::call_guard<py::gil_scoped_release>()),
                      "Number of Adam updates applied so far.")
        .def_property(
            "backend", [](const M& self) { return std::string(backend_name(self.backend())); },
            py::cpp_function([](M& self, const std::string& b) { self.set_backend(backend_from_name(b)); },
                             py::call_guard<py::gil_scoped_release>()))
        .def_property_readonly(
            "gemm_plan",
            [](M& self) {
                const GemmPlan plan = [&] {
                    py::gil_scoped_release nogil;
                    return self.gemm_plan();
                }();
                return py::make_tuple(plan_list(plan), plan.fused_attention());
            },
            "The auto backend's plan: ([(ta, tb, m, n, k, blas), ...], fused attention).")
        .def(
            "set_gemm_plan",
            [](M& self, const py::object& choices, bool fused_attention) {
                GemmPlan plan(plan_arg(choices, int(sizeof(T))), fused_attention);
                py::gil_scoped_release nogil;
                self.set_gemm_plan(std::move(plan));
            },
            py::arg("choices"), py::arg("fused_attention"),
            "Set the auto backend's plan: OpenBLAS (blas true) or native per (ta, tb, m, n, k) product shape; shapes "
            "near none of them follow the native backend's rule.")
        .def_property(
            "threads", &M::threads,
            [](M& self, int n) {
                py::gil_scoped_release nogil;
                self.set_threads(n);
            },
            "Worker threads a batch is split across (deterministic reduction order).")
        .def(
            "param_table",
            [](const M& self) {
                py::list out;
                for (const auto& p : self.table())
                    out.append(py::make_tuple(p.name, py::make_tuple(p.rows, p.cols), p.offset));
                return out;
            },
            "List of (name, (rows, cols), offset) in buffer order.")
        .def(
            "decayed_params",
            [](const M& self) {
                py::list out;
                for (const auto& p : self.table())
                    if (p.decay) out.append(p.name);
                return out;
            },
            "Names of the parameters AdamW's weight decay applies to (the table's decay flag), in buffer order.")
        .def("params", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.params(), s.size()); })
        .def("grads", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.grads(), s.size()); })
        .def("adam_m", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.adam_m(), s.size()); })
        .def("adam_v", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.adam_v(), s.size()); })
        .def(
            "forward_backward",
            [](M& self, const py::handle& tokens, const py::handle& offsets, const py::handle& doc_ids,
               const py::object& mean_over, bool windows, bool accumulate, double dropout, uint64_t dropout_seed,
               const py::object& share_start) {
                const BatchArgs args(tokens, offsets, doc_ids, windows);
                BatchView view = args.view();
                view.mean_over = int64_arg(mean_over, "mean_over");
                view.share_start = int64_arg(share_start, "share_start");
                const DropoutConfig drop{dropout, dropout_seed};
                py::gil_scoped_release nogil;
                const FloatMode<T> mode;
                return self.forward_backward(view, accumulate, drop);
            },
            py::arg("tokens"), py::arg("offsets"), py::arg("doc_ids") = py::none(), py::arg("mean_over") = 0,
            py::arg("windows") = false, py::arg("accumulate") = false, py::arg("dropout") = 0.0,
            py::arg("dropout_seed") = 0, py::arg("share_start") = 0,
            "Loss and gradients of the batch; mean_over > 0 averages over that many documents instead of the "
            "batch's own count (a share of a larger batch). windows=True: doc_ids are window start offsets into "
            "tokens (text mode) and offsets is None. accumulate=True adds the gradient to the grads buffer instead "
            "of overwriting it (micro-batches of one step, each with mean_over = the step's documents). dropout p "
            "in [0, 1): training dropout, masks keyed by (dropout_seed, step, site, share_start + sequence index, "
            "position, column).")
        .def(
            "train_step",
            [](M& self, const py::handle& tokens, const py::handle& offsets, double lr, const py::handle& doc_ids,
               bool windows, double beta1, double beta2, double eps, double weight_decay, double grad_clip,
               double dropout, uint64_t dropout_seed) {
                const BatchArgs args(tokens, offsets, doc_ids, windows);
                const AdamConfig adam{beta1, beta2, eps, weight_decay, grad_clip};
                const DropoutConfig drop{dropout, dropout_seed};
                py::gil_scoped_release nogil;
                const FloatMode<T> mode;
                return self.train_step(args.view(), lr, adam, drop);
            },
            // windows before the Adam constants: Model.train_step passes all it needs by position (keywords cost
            // pybind11 about 0.7 us per call)
            py::arg("tokens"), py::arg("offsets"), py::arg("lr"), py::arg("doc_ids") = py::none(),
            py::arg("windows") = false, py::arg("beta1") = 0.85, py::arg("beta2") = 0.99, py::arg("eps") = 1e-8,
            py::arg("weight_decay") = 0.0, py::arg("grad_clip") = 0.0, py::arg("dropout") = 0.0,
            py::arg("dropout_seed") = 0)
        .def(
            "train_steps",
            [](M& self, const py::handle& tokens, const py::handle& offsets, const py::handle& doc_ids,
               const py::handle& lrs, double beta1, double beta2, double eps, bool windows, double weight_decay,
               double grad_clip, double dropout, uint64_t dropout_seed) {
                const auto ids = array_arg<int64_t>(doc_ids, windows ? "starts" : "doc_ids", 2);
                const BatchArgs args(tokens, offsets, windows ? py::handle(ids.attr("ravel")()) : py::none(), windows);
                const auto lr = vector_arg<double>(lrs, "lrs");
                const int64_t steps = ids.shape(0), batch = ids.shape(1);
                if (lr.size() != steps)
                    fail("lrs must hold one learning rate per step: doc_ids has " + std::to_string(steps) +
                         " rows, lrs has " + std::to_string(lr.size()));
                py::array_t<double> losses(steps);
                const AdamConfig adam{beta1, beta2, eps, weight_decay, grad_clip};
                const DropoutConfig drop{dropout, dropout_seed};
                int64_t done;
                {
                    py::gil_scoped_release nogil;
                    const FloatMode<T> mode;
                    done = self.train_steps(args.view(), ids.data(), steps, batch, lr.data(), losses.mutable_data(),
                                            adam, drop);
                }
                if (done == steps) return losses;
                py::array_t<double> head(done);  // stopped early: only the losses of the steps taken
                std::copy_n(losses.data(), done, head.mutable_data());
                return head;
            },
            py::arg("tokens"), py::arg("offsets"), py::arg("doc_ids"), py::arg("lrs"), py::arg("beta1") = 0.85,
            py::arg("beta2") = 0.99, py::arg("eps") = 1e-8, py::arg("windows") = false, py::arg("weight_decay") = 0.0,
            py::arg("grad_clip") = 0.0, py::arg("dropout") = 0.0, py::arg("dropout_seed") = 0,
            "Many train steps in one call: row s of doc_ids (steps, batch) is step s's documents, lrs[s] its "
            "learning rate. Returns the losses; stops after the first non-finite one (which is not applied).")
        .def(
            "apply_adam",
            [](M& self, double lr, double beta1, double beta2, double eps, double weight_decay, double grad_clip) {
                const AdamConfig adam{beta1, beta2, eps, weight_decay, grad_clip};
                py::gil_scoped_release nogil;
                const FloatMode<T> mode;
                self.apply_adam(lr, adam);
            },
            py::arg("lr"), py::arg("beta1") = 0.85, py::arg("beta2") = 0.99, py::arg("eps") = 1e-8,
            py::arg("weight_decay") = 0.0, py::arg("grad_clip") = 0.0,
            "One Adam step (step count + 1) from the gradients currently in the grads buffer; weight_decay > 0 makes "
            "it AdamW (decoupled decay of the rows decayed_params() names); grad_clip > 0 first scales the whole "
            "gradient to norm at most grad_clip (a non-finite norm: nothing applied). 0 turns either off.")
        .def_property_readonly("grad_norm", &M::grad_norm,
                               "The whole gradient's L2 norm before clipping, at the latest update that clipped "
                               "(NaN before any).")
        .def(
            "loss",
            [](M& self, const py::handle& tokens, const py::handle& offsets, const py::handle& doc_ids,
               bool windows) {
                const BatchArgs args(tokens, offsets, doc_ids, windows);
                py::gil_scoped_release nogil;
                const FloatMode<T> mode;
                return self.loss(args.view());
            },
            py::arg("tokens"), py::arg("offsets"), py::arg("doc_ids") = py::none(), py::arg("windows") = false)
        .def(
            "logits",
            [](M& self, const py::handle& tokens) {
                const auto t = vector_arg<int32_t>(tokens, "tokens");
                const int64_t n = t.size(), V = self.config().vocab_size;
                py::array_t<T> out({n, V});
                T* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    const FloatMode<T> mode;
                    self.logits(dst, t.data(), n);
                }
                return out;
            },
            py::arg("tokens"))
        .def(
            "generator",
            [](py::object owner, const py::handle& prompt, int64_t num, uint64_t seed, double temperature, int top_k,
               int stop_token, int ban_token, bool slide) {
                M& self = owner.cast<M&>();
                const auto p = vector_arg<int32_t>(prompt, "prompt");
                const SampleConfig sc{temperature, top_k, stop_token, ban_token, slide};
                auto bound = std::make_unique<BoundGenerator<T>>();
                bound->owner = owner;
                py::gil_scoped_release nogil;
                const FloatMode<T> mode;
                bound->gen = std::make_unique<Generator<T>>(self, p.data(), p.size(), num, seed, sc);
                return bound;
            },
            py::arg("prompt"), py::arg("num"), py::arg("seed"), py::arg("temperature"),
            py::arg("top_k") = 0, py::arg("stop_token") = -1, py::arg("ban_token") = -1, py::arg("slide") = false,
            "A KV-cached sampler of `num` continuations of `prompt` (token ids); see Generator.next.");
}

template <class T>
void bind_generator(py::module_& m, const char* name) {
    using G = BoundGenerator<T>;
    py::class_<G>(m, name, "num samples of one prompt, advanced together (KV cache; sliding window past the block).")
        .def_property_readonly(
            "length", [](const G& self) { return self.gen->length(); },
            "Tokens in each context so far, the prompt included.")
        .def(
            "next",
            [](G& bound, int64_t count) {
                Generator<T>& self = *bound.gen;
                if (count < 0 || count > (int64_t(1) << 24)) fail("count must be between 0 and 2**24");
                py::array_t<int32_t> out;
                int64_t done;
                {
                    std::vector<int32_t> buf;  // (num, count), filled without the GIL
                    buf.resize(size_t(self.num()) * count);
                    {
                        py::gil_scoped_release nogil;
                        const FloatMode<T> mode;
                        done = self.next(buf.data(), count);
                    }
                    out = py::array_t<int32_t>({self.num(), done});
                    for (int64_t s = 0; s < self.num(); ++s)
                        std::copy_n(buf.data() + s * count, done, out.mutable_data() + s * done);
                }
                return out;
            },
            py::arg("count"),
            "The next `count` tokens of every sample as an int32 array (num, k), k <= count (fewer once every "
            "sample has ended); -1 marks positions after a sample ended.");
}

template <class T>
void adam_arrays(const py::array& p, const py::array& m, const py::array& v, const py::array& g, double lr,
                 int64_t t, const AdamConfig& a) {
    auto P = vector_arg<T>(p, "params"), M = vector_arg<T>(m, "m"), Vv = vector_arg<T>(v, "v");
    const auto G = vector_arg<T>(g, "grads");
    const int64_t n = P.size();
    if (M.size() != n || Vv.size() != n || G.size() != n) fail("params, m, v and grads must have the same length");
    if (!P.writeable() || !M.writeable() || !Vv.writeable()) fail("params, m and v must be writeable");
    if (t < 1) fail("step must be >= 1 (Adam's bias correction counts from 1)");
    if (!(std::isfinite(lr) && lr >= 0)) fail("lr must be a finite number >= 0");
    T* pp = P.mutable_data();
    T* mp = M.mutable_data();
    T* vp = Vv.mutable_data();
    const T* gp = G.data();
    py::gil_scoped_release nogil;
    const FloatMode<T> mode;
    adam_update(pp, mp, vp, gp, n, lr, a, t);
}

// The bytes of a Python bytes object, at most 2**31 - 1 of them (the encoder's positions are int32).
std::string_view bytes_arg(const py::handle& obj, const char* name) {
    if (!PyBytes_Check(obj.ptr())) fail(std::string(name) + " must be bytes, got " + Py_TYPE(obj.ptr())->tp_name);
    char* data = nullptr;
    Py_ssize_t n = 0;
    PyBytes_AsStringAndSize(obj.ptr(), &data, &n);
    if (n > Py_ssize_t(INT32_MAX)) fail(std::string(name) + " is too long to encode at once (2**31 bytes or more)");
    return {data, std::size_t(n)};
}

py::array_t<int32_t> int32_array(const std::vector<int32_t>& v) {
    py::array_t<int32_t> a(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
}

void bind_bpe(py::module_& m) {
    const auto u8 = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
    py::class_<BpeEncoder>(m, "BpeEncoder", "Byte-level BPE encoding with a fixed list of merges (see bpe.hpp).")
        .def(py::init([](const py::handle& merges) {
                 const auto a = array_arg<int32_t>(merges, "merges", 2);
                 if (a.shape(1) != 2) fail("merges must have shape (count, 2)");
                 return BpeEncoder(a.data(), a.shape(0));
             }),
             py::arg("merges"))
        .def_property_readonly("vocab_size", &BpeEncoder::vocab_size, "256 bytes + the merges (BOS not counted)")
        .def(
            "encode",
            [u8](const BpeEncoder& self, const py::bytes& text) {
                const std::string_view s = bytes_arg(text, "text");
                std::vector<int32_t> out;
                {
                    py::gil_scoped_release nogil;
                    out.reserve(s.size() / 2);
                    self.encode(u8(s), s.size(), out);
                }
                return int32_array(out);
            },
            py::arg("text"), "int32 ids of UTF-8 bytes.")
        .def(
            "encode_documents",
            [u8](const BpeEncoder& self, const std::vector<py::bytes>& docs, int32_t bos) {
                std::vector<std::string_view> views;
                for (const auto& d : docs) views.push_back(bytes_arg(d, "document"));
                std::vector<int32_t> out;
                std::vector<int64_t> starts;
                {
                    py::gil_scoped_release nogil;
                    for (const auto s : views) {
                        starts.push_back(int64_t(out.size()));
                        out.push_back(bos);
                        self.encode(u8(s), s.size(), out);
                        out.push_back(bos);
                    }
                    starts.push_back(int64_t(out.size()));
                }
                py::array_t<int64_t> offsets(static_cast<py::ssize_t>(starts.size()));
                std::copy(starts.begin(), starts.end(), offsets.mutable_data());
                return py::make_tuple(int32_array(out), offsets);
            },
            py::arg("docs"), py::arg("bos"),
            "Documents (UTF-8 bytes each) packed as [BOS] ids [BOS]: int32 tokens and int64 offsets (num_docs + 1).")
        .def_static(
            "pretokens",
            [u8](const py::bytes& text) {
                const std::string_view s = bytes_arg(text, "text");
                py::list parts;
                for (std::size_t i = 0; i < s.size();) {
                    const std::size_t end = pretoken_end(u8(s), s.size(), i);
                    parts.append(py::bytes(s.data() + i, end - i));
                    i = end;
                }
                return parts;
            },
            py::arg("text"), "The pre-tokens of UTF-8 bytes, as the encoder cuts them (for tests).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "blasgpt's compiled core: explicit-backprop GPT over BLAS (private; use the blasgpt package).";
    blas_init();
    bind_generator<float>(m, "GeneratorF32");
    bind_generator<double>(m, "GeneratorF64");
    bind_model<float>(m, "ModelF32");
    bind_model<double>(m, "ModelF64");
    bind_bpe(m);
    m.def(
        "check_batch",
        [](const py::handle& tokens, const py::handle& offsets, const py::handle& doc_ids, bool windows) {
            const BatchArgs checked(tokens, offsets, doc_ids, windows);
            if (checked.offsets && checked.offsets->size() < 1) fail("offsets must hold at least one entry");
        },
        py::arg("tokens"), py::arg("offsets"), py::arg("doc_ids") = py::none(), py::arg("windows") = false,
        "The checks every batch argument gets (dtype, 1-D, C-contiguous, aligned; offsets not empty): ValueError "
        "naming the first problem. blasgpt.Batch runs them when it is made (one call: cheaper than Python checks).");
    m.def(
        "pack_documents",
        [](const py::bytes& ids, int bos) {
            char* data = nullptr;
            Py_ssize_t n = 0;
            PyBytes_AsStringAndSize(ids.ptr(), &data, &n);
            py::array_t<int32_t> tokens(n);
            int32_t* t = tokens.mutable_data();
            std::vector<int64_t> starts;
            bool inside = false;
            for (Py_ssize_t i = 0; i < n; ++i) {
                t[i] = static_cast<unsigned char>(data[i]);
                if (t[i] == bos) {
                    if (!inside) starts.push_back(i);
                    inside = !inside;
                }
            }
            starts.push_back(n);
            py::array_t<int64_t> offsets(static_cast<py::ssize_t>(starts.size()));
            std::copy(starts.begin(), starts.end(), offsets.mutable_data());
            return py::make_tuple(tokens, offsets);
        },
        py::arg("ids"), py::arg("bos"),
        "Token ids given one per byte, documents back to back as [BOS] text [BOS], as int32 tokens and the int64 "
        "offsets of the documents (each starts at every other BOS; the last offset is the length): one call where "
        "numpy would take four (Tokenizer.batch may run once per training step).");
    m.def("_fp_control", [] { return fp_control(); },
          "This thread's floating-point control word (x86 MXCSR, AArch64 FPCR, 0 elsewhere); for tests: every call "
          "into the core must leave it as it found it.");
    m.def(
        "_set_fp_control",
        [](std::uint64_t word) {
#if defined(BLASGPT_FP_X86)
            if (word > 0xFFFF) fail("an MXCSR value has 16 bits (the others are reserved)");
#endif
            set_fp_control(word);
        },
        py::arg("word"), "Set this thread's floating-point control word (tests only; see _fp_control).");
    m.def("blas_info", &blas_info, "OpenBLAS build configuration and the CPU kernel it selected.");
    m.def("native_isa", &native_isa, "Instruction set of the native gemm kernels chosen for this CPU.");
    m.def(
        "peak_gflops",
        [](const std::string& dtype, double seconds) {
            if (dtype != "float32" && dtype != "float64") fail("dtype must be 'float32' or 'float64', got '" + dtype + "'");
            if (!(seconds > 0 && seconds < 60)) fail("seconds must be in (0, 60)");
            py::gil_scoped_release nogil;
            return peak_gflops(dtype == "float32", seconds);
        },
        py::arg("dtype"), py::arg("seconds") = 0.2,
        "Measured FMA peak of one core (GFLOP/s) with the native kernels' vectors.");
    m.def(
        "time_gemm",
        [](const std::string& dtype, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double seconds) {
            const GemmShape s = shape_arg(elem_arg(dtype), ta, tb, m, n, k);
            seconds = seconds_arg(seconds);
            py::gil_scoped_release nogil;
            const GemmTiming t = in_float_mode(s.elem, [&] { return time_gemm(s, seconds); });
            return std::make_pair(t.native, t.blas);
        },
        py::arg("dtype"), py::arg("ta"), py::arg("tb"), py::arg("m"), py::arg("n"), py::arg("k"),
        py::arg("seconds") = 0.01,
        "(native, OpenBLAS) thread CPU seconds per call of C (m,n) = op(A) op(B): the fastest of rounds taken in "
        "turns for about `seconds` (at least one call each).");
    m.def(
        "time_attention",
        [](const std::string& dtype, int64_t C, int64_t H, int64_t n, int64_t docs, const py::object& choices,
           double seconds) {
            const int elem = elem_arg(dtype);
            if (C < 1 || C > (1 << 16) || H < 1 || C % H != 0) fail("C must be in [1, 65536] and a multiple of H");
            if (n < 1 || n > kCachedPositions) fail("n must be between 1 and " + std::to_string(kCachedPositions));
            if (docs < 1 || docs * n * 3 * C > kMaxTimedElements || docs * H * n * n > kMaxTimedElements)
                fail("docs must be >= 1 and the timed attention at most 2^28 elements per buffer");
            GemmPlan plan(plan_arg(choices, elem), false);
            seconds = seconds_arg(seconds);
            py::gil_scoped_release nogil;
            const AttentionTiming t = in_float_mode(
                elem, [&] { return time_attention(elem, int(C), int(H), int(n), int(docs), plan, seconds); });
            return std::make_pair(t.fused, t.gemm);
        },
        py::arg("dtype"), py::arg("C"), py::arg("H"), py::arg("n"), py::arg("docs"), py::arg("choices"),
        py::arg("seconds") = 0.01,
        "(fused kernel, gemm path) thread CPU seconds of attention forward + backward over `docs` documents of n "
        "positions, the gemm path's products placed by `choices` as in set_gemm_plan; fused is 0 where the kernel "
        "does not apply.");
    m.def(
        "adam_update",
        [](const py::array& p, const py::array& mo, const py::array& v, const py::array& g, double lr, int64_t step,
           double beta1, double beta2, double eps) {
            const AdamConfig a{beta1, beta2, eps};
            if (p.dtype().is(py::dtype::of<float>())) {
                adam_arrays<float>(p, mo, v, g, lr, step, a);
            } else {
                adam_arrays<double>(p, mo, v, g, lr, step, a);
            }
        },
        py::arg("params"), py::arg("m"), py::arg("v"), py::arg("grads"), py::arg("lr"), py::arg("step"),
        py::arg("beta1") = 0.85, py::arg("beta2") = 0.99, py::arg("eps") = 1e-8,
        "The model's Adam update (vectorized kernel) on any float32/float64 buffers, in place.");
    m.def(
        "param_table",
        [](int vocab_size, int n_embd, int n_head, int n_layer, int block_size, bool tie_embeddings) {
            py::list out;
            for (const auto& p : param_table(Config{vocab_size, n_embd, n_head, n_layer, block_size, tie_embeddings}))
                out.append(py::make_tuple(p.name, py::make_tuple(p.rows, p.cols), p.offset));
            return out;
        },
        py::arg("vocab_size"), py::arg("n_embd"), py::arg("n_head"), py::arg("n_layer"), py::arg("block_size"),
        py::arg("tie_embeddings") = false,
        "The parameter table (name, (rows, cols), offset) of a config, without allocating a model.");
    m.def(
        "workspace_size",
        [](int vocab_size, int n_embd, int n_head, int n_layer, int block_size, int64_t rows, bool tie_embeddings) {
            const Config cfg{vocab_size, n_embd, n_head, n_layer, block_size, tie_embeddings};
            cfg.validate();
            if (rows < 0) fail("rows must be >= 0");
            const WorkspaceSize w = workspace_size(cfg, rows);
            return py::make_tuple(w.values, w.ints);
        },
        py::arg("vocab_size"), py::arg("n_embd"), py::arg("n_head"), py::arg("n_layer"), py::arg("block_size"),
        py::arg("rows"), py::arg("tie_embeddings") = false,
        "(float values, int32 values) one thread's activation workspace allocates for `rows` token positions.");
    m.def(
        "num_params",
        [](int vocab_size, int n_embd, int n_head, int n_layer, int block_size, bool tie_embeddings) {
            return num_params(Config{vocab_size, n_embd, n_head, n_layer, block_size, tie_embeddings});
        },
        py::arg("vocab_size"), py::arg("n_embd"), py::arg("n_head"), py::arg("n_layer"), py::arg("block_size"),
        py::arg("tie_embeddings") = false);
}
