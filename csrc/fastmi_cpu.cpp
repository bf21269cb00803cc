// fastmi_cpu: the one native CPU library of fastmi, every op's kernels and bindings in
// one Python module (fastmi/runtime/cpu_extension.py lists its sources and builds it).
// Each op adds its entry points with its own bind function; the library-wide test and
// benchmark hooks come from csrc/common/cpu/hooks.cpp.
//
//   bind_cpu_hooks   csrc/common/cpu/hooks.cpp
//   bind_infogan     csrc/infogan/cpu/binding.cpp          (kernels: csrc/infogan/cpu/kernels.cpp)
//   bind_critic      csrc/critic/cpu/critic_binding.cpp   (kernels: csrc/critic/cpu/critic_*.cpp)

#include <pybind11/pybind11.h>

namespace fastmi {
void bind_cpu_hooks(pybind11::module_& m);
namespace infogan {
void bind_infogan(pybind11::module_& m);
}  // namespace infogan
namespace critic {
void bind_critic(pybind11::module_& m);
}  // namespace critic
}  // namespace fastmi

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastmi fused CPU kernels (csrc/fastmi_cpu.cpp)";
  fastmi::bind_cpu_hooks(m);
  fastmi::infogan::bind_infogan(m);
  fastmi::critic::bind_critic(m);
}
