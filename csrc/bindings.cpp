// The only file that knows about Python: check arguments, release the GIL, call plain C++.
// std::invalid_argument thrown by the core becomes ValueError (pybind11's standard translation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include "gemm.hpp"
#include "model.hpp"

namespace py = pybind11;
using namespace blasgpt;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

// A 1-D, C-contiguous array of exactly element type E, or a ValueError that says which requirement failed.
template <class E>
py::array_t<E> vector_arg(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        fail(std::string(name) + " must be a numpy array of dtype " + py::str(py::dtype::of<E>()).cast<std::string>() +
             ", got " + py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    auto a = py::reinterpret_borrow<py::array>(obj);
    const std::string want = py::str(py::dtype::of<E>());
    if (!a.dtype().is(py::dtype::of<E>()))
        fail(std::string(name) + " must have dtype " + want + ", got " + py::str(a.dtype()).cast<std::string>());
    if (a.ndim() != 1) fail(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + " dimensions");
    if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    return py::reinterpret_borrow<py::array_t<E>>(a);
}

struct BatchArgs {
    py::array_t<int32_t> tokens;
    py::array_t<int64_t> offsets;
    std::optional<py::array_t<int64_t>> doc_ids;

    BatchArgs(const py::handle& t, const py::handle& o, const py::handle& ids)
        : tokens(vector_arg<int32_t>(t, "tokens")), offsets(vector_arg<int64_t>(o, "offsets")) {
        if (!ids.is_none()) doc_ids = vector_arg<int64_t>(ids, "doc_ids");
    }

    BatchView view() const {
        BatchView v;
        v.tokens = tokens.data();
        v.num_tokens = tokens.size();
        v.offsets = offsets.data();
        v.num_offsets = offsets.size();
        if (doc_ids) {
            v.doc_ids = doc_ids->data();
            v.batch_size = doc_ids->size();
        } else {
            v.batch_size = offsets.size() - 1;
        }
        return v;
    }
};

// A numpy view of one of the model's buffers; `owner` (the Python model object) stays alive while the view does.
template <class T>
py::array_t<T> buffer_view(py::object owner, T* data, int64_t n) {
    return py::array_t<T>({n}, {int64_t(sizeof(T))}, data, owner);
}

template <class T>
void bind_model(py::module_& m, const char* name) {
    using M = Model<T>;
    py::class_<M>(m, name, "The C++ model state: params, grads, Adam m/v in one contiguous buffer each.")
        .def(py::init([](int vocab_size, int n_embd, int n_head, int n_layer, int block_size,
                         const std::string& backend) {
                 Config cfg{vocab_size, n_embd, n_head, n_layer, block_size};
                 cfg.validate();
                 return new M(cfg, backend_from_name(backend));
             }),
             py::arg("vocab_size"), py::arg("n_embd"), py::arg("n_head"), py::arg("n_layer"), py::arg("block_size"),
             py::arg("backend") = "blas")
        .def_property_readonly("num_params", &M::size)
        .def_property("step", &M::step, &M::set_step, "Number of Adam updates applied so far.")
        .def_property(
            "backend", [](const M& self) { return std::string(backend_name(self.backend())); },
            [](M& self, const std::string& b) { self.set_backend(backend_from_name(b)); })
        .def(
            "param_table",
            [](const M& self) {
                py::list out;
                for (const auto& p : self.table())
                    out.append(py::make_tuple(p.name, py::make_tuple(p.rows, p.cols), p.offset));
                return out;
            },
            "List of (name, (rows, cols), offset) in buffer order.")
        .def("params", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.params(), s.size()); })
        .def("grads", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.grads(), s.size()); })
        .def("adam_m", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.adam_m(), s.size()); })
        .def("adam_v", [](py::object self) { M& s = self.cast<M&>(); return buffer_view(self, s.adam_v(), s.size()); })
        .def(
            "forward_backward",
            [](M& self, const py::handle& tokens, const py::handle& offsets, const py::handle& doc_ids) {
                const BatchArgs args(tokens, offsets, doc_ids);
                py::gil_scoped_release nogil;
                std::lock_guard<std::mutex> lock(self.mutex());
                return self.forward_backward(args.view());
            },
            py::arg("tokens"), py::arg("offsets"), py::arg("doc_ids") = py::none())
        .def(
            "train_step",
            [](M& self, const py::handle& tokens, const py::handle& offsets, double lr, const py::handle& doc_ids,
               double beta1, double beta2, double eps) {
                const BatchArgs args(tokens, offsets, doc_ids);
                const AdamConfig adam{beta1, beta2, eps};
                py::gil_scoped_release nogil;
                std::lock_guard<std::mutex> lock(self.mutex());
                return self.train_step(args.view(), lr, adam);
            },
            py::arg("tokens"), py::arg("offsets"), py::arg("lr"), py::arg("doc_ids") = py::none(),
            py::arg("beta1") = 0.85, py::arg("beta2") = 0.99, py::arg("eps") = 1e-8)
        .def(
            "loss",
            [](M& self, const py::handle& tokens, const py::handle& offsets, const py::handle& doc_ids) {
                const BatchArgs args(tokens, offsets, doc_ids);
                py::gil_scoped_release nogil;
                std::lock_guard<std::mutex> lock(self.mutex());
                return self.loss(args.view());
            },
            py::arg("tokens"), py::arg("offsets"), py::arg("doc_ids") = py::none())
        .def(
            "logits",
            [](M& self, const py::handle& tokens) {
                const auto t = vector_arg<int32_t>(tokens, "tokens");
                const int64_t n = t.size(), V = self.config().vocab_size;
                py::array_t<T> out({n, V});
                T* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    std::lock_guard<std::mutex> lock(self.mutex());
                    self.logits(dst, t.data(), n);
                }
                return out;
            },
            py::arg("tokens"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "blasgpt's compiled core: explicit-backprop GPT over BLAS (private; use the blasgpt package).";
    blas_init();
    bind_model<float>(m, "ModelF32");
    bind_model<double>(m, "ModelF64");
    m.def("blas_info", &blas_info, "OpenBLAS build configuration and the CPU kernel it selected.");
    m.def(
        "num_params",
        [](int vocab_size, int n_embd, int n_head, int n_layer, int block_size) {
            return num_params(Config{vocab_size, n_embd, n_head, n_layer, block_size});
        },
        py::arg("vocab_size"), py::arg("n_embd"), py::arg("n_head"), py::arg("n_layer"), py::arg("block_size"));
}
