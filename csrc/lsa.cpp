// lsa._C: the compiled ops of lsa.
//
// Every op registers its schema with TORCH_LIBRARY_FRAGMENT(lsa, m) in its own
// folder (csrc/<op>/<op>.cpp) and its kernels with TORCH_LIBRARY_IMPL(lsa, CPU|CUDA, m);
// this file defines the library itself and the Python module that loading
// lsa._C needs, with two introspection helpers used by `python -m lsa.info`.
#include <Python.h>
#include <torch/library.h>

namespace lsa {

bool with_cuda() {
#ifdef LSA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int64_t cuda_version() {
#ifdef LSA_WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

}  // namespace lsa

TORCH_LIBRARY(lsa, m) {
  m.def("_with_cuda() -> bool", &lsa::with_cuda);
  m.def("_cuda_version() -> int", &lsa::cuda_version);
}

// An empty module: importing lsa._C runs the static registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
