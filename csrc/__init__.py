"""C++ and CUDA sources of fastmi, compiled with ninja on first use."""
