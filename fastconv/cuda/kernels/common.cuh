// Shared by every fastconv CUDA kernel; the loader puts it in front of each source file.
//
// Every kernel is a template over T (float or double: the array dtype) and I (int or long long:
// the index type, 64-bit only when some array of the call has 2**31 elements or more, chosen
// per call by the Python side). Kernels walk their outputs with grid-stride loops, one thread
// per output element, and each thread computes its element alone in a fixed order: no atomics,
// so every result is bitwise repeatable. Reductions over many elements (weight, bias and
// batch-norm sums) use one block per result and a fixed-shape tree in shared memory.

#ifndef FC_THREADS
#define FC_THREADS 256  // threads per block of every launch (the Python side uses the same)
#endif

// Grid-stride loops count in 64 bits, whatever the index type I, and hand the body its index as
// I: `for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) { const I idx = (I)k;`.
// gridDim is unsigned, so (I)blockDim.x * gridDim.x is a 32-bit unsigned product when I is int,
// and a 32-bit counter overflows once it passes 2**31 - 1 - stride (1.6e9 elements at
// MAX_BLOCKS * 256 threads): either way the index went negative while still below the total.
__device__ __forceinline__ long long fc_first_item() {
    return blockIdx.x * (long long)blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long fc_grid_stride() {
    return (long long)blockDim.x * gridDim.x;
}

// The next index of a block- or thread-stride loop over [0, total) (`k = fc_next(k, gridDim.x,
// total)`): k + step, or total once that reaches it. The sum is formed in 64 bits, so a 32-bit
// counter never wraps when total lies within one step of 2**31 - 1.
template <typename I>
__device__ __forceinline__ I fc_next(I k, long long step, I total) {
    const long long next = (long long)k + step;
    return next < (long long)total ? (I)next : total;
}

// Floor and ceiling of a / b for b > 0, also for negative a (C++ '/' truncates toward zero).
__device__ __forceinline__ long long fc_floordiv(long long a, long long b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}
__device__ __forceinline__ long long fc_ceildiv(long long a, long long b) {
    return fc_floordiv(a + b - 1, b);
}

// Tree sum of one double per thread of the block, in a fixed order; thread 0 gets the total.
__device__ __forceinline__ double fc_block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int half = FC_THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();  // the buffer may be reused right after
    return total;
}
