// Compiles fastconv's CUDA kernels as plain C++ for the host, to run their index arithmetic
// on machines without a GPU (tests/cuda/test_host_emulation.py). One block of one thread:
// every grid-stride and block-stride loop then visits everything in order, and the block
// reductions degenerate to a plain sum. What this cannot check: anything that needs threads
// to run concurrently (the shared-memory tree with 256 threads) and the GPU's own numerics.
#pragma once
#include <cmath>
#include <cstring>
#include <algorithm>

#define FC_THREADS 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct fc_dim3 { unsigned int x, y, z; };
static const fc_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static const fc_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};

inline void __syncthreads() {}
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, sizeof f); return f; }
using std::isnan;
using std::max;
using std::min;
