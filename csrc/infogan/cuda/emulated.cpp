// The CUDA kernels of launch.cu (and the .cuh files it includes) compiled as plain C++ for
// the CPU emulation in csrc/common/cuda/emulation.h (built with -DFASTMI_CUDA_EMULATION by
// fastmi.infogan.cuda.emulation_extension, together with binding.cpp): the same source, run
// on CPU tensors, so that CI checks the kernels' indexing, reductions and layouts against
// the float64 reference without a GPU. device.cuh holds everything the two builds do differently.
#if !defined(FASTMI_CUDA_EMULATION)
#error "emulated.cpp is the CPU emulation build of launch.cu: compile it with -DFASTMI_CUDA_EMULATION"
#endif
#include "launch.cu"
