// Batch normalization over axis 1 of an (N, C, L) input. Statistics and gradient sums: one
// block per channel (block-strided over the channels), double accumulation, a fixed-order tree
// (fc_block_sum), two passes for the variance (mean first, then squared deviations: no
// cancellation). The elementwise passes: one thread per element, arithmetic in double, as the
// CPU kernels do.
//
//   forward:   y  = x * scale[c] + shift[c]
//   backward:  gx = k1[c] * gy + k2[c] * (x - mean[c]) + k3[c]
// (the per-channel vectors are computed on the Python side, fastconv/cuda/batchnorm.py)

// Element k of channel c's m = N*L values.
template <typename I>
__device__ __forceinline__ I fc_channel_element(I k, int c, int channels, I l) {
    return (k / l) * ((I)channels * l) + (I)c * l + k % l;
}

// x (N, C, L) -> mean[c], var[c] (biased), in double.
template <typename T, typename I>
__global__ void bn_mean_var(const T* x, double* mean, double* var, I n, int channels, I l) {
    __shared__ double shared[FC_THREADS];
    const I m = n * l;
    for (long long c_ = blockIdx.x; c_ < channels; c_ += gridDim.x) {
        const int c = (int)c_;
        double sum = 0;
        for (I k = threadIdx.x; k < m; k = fc_next(k, FC_THREADS, m))
            sum += x[fc_channel_element(k, c, channels, l)];
        const double mu = fc_block_sum(sum, shared) / m;
        double squares = 0;
        for (I k = threadIdx.x; k < m; k = fc_next(k, FC_THREADS, m)) {
            const double d = x[fc_channel_element(k, c, channels, l)] - mu;
            squares += d * d;
        }
        const double v = fc_block_sum(squares, shared) / m;
        if (threadIdx.x == 0) {
            mean[c] = mu;
            var[c] = v;
        }
    }
}

// y = x * scale[c] + shift[c], for every element of x (N, C, L).
template <typename T, typename I>
__global__ void bn_affine(const T* x, const double* scale, const double* shift, T* y, I total,
                          int channels, I l) {
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int c = (int)((idx / l) % channels);
        y[idx] = (T)(x[idx] * scale[c] + shift[c]);
    }
}

// Per channel: s1 = sum(gy), s2 = sum(gy * (x - mean)), in double.
template <typename T, typename I>
__global__ void bn_gradient_sums(const T* gy, const T* x, const double* mean, double* s1,
                                 double* s2, I n, int channels, I l) {
    __shared__ double shared[FC_THREADS];
    const I m = n * l;
    for (long long c_ = blockIdx.x; c_ < channels; c_ += gridDim.x) {
        const int c = (int)c_;
        const double mu = mean[c];
        double a = 0, b = 0;
        for (I k = threadIdx.x; k < m; k = fc_next(k, FC_THREADS, m)) {
            const I e = fc_channel_element(k, c, channels, l);
            const double g = gy[e];
            a += g;
            b += g * (x[e] - mu);
        }
        a = fc_block_sum(a, shared);
        b = fc_block_sum(b, shared);
        if (threadIdx.x == 0) {
            s1[c] = a;
            s2[c] = b;
        }
    }
}

// gx = k1[c] * gy + k2[c] * (x - mean[c]) + k3[c].
template <typename T, typename I>
__global__ void bn_input_gradient(const T* gy, const T* x, const double* mean, const double* k1,
                                  const double* k2, const double* k3, T* gx, I total,
                                  int channels, I l) {
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int c = (int)((idx / l) % channels);
        gx[idx] = (T)(k1[c] * gy[idx] + k2[c] * (x[idx] - mean[c]) + k3[c]);
    }
}

// a (N, K, L) -> out[k] = sum over N and L, double accumulation, one block per k (block-strided):
// the bias gradient of every convolution.
template <typename T, typename I>
__global__ void channel_sum(const T* a, T* out, I n, int channels, I l) {
    __shared__ double shared[FC_THREADS];
    for (long long c_ = blockIdx.x; c_ < channels; c_ += gridDim.x) {
        const int c = (int)c_;
        double sum = 0;
        for (I k = threadIdx.x; k < n * l; k = fc_next(k, FC_THREADS, n * l))
            sum += a[fc_channel_element(k, c, channels, l)];
        sum = fc_block_sum(sum, shared);
        if (threadIdx.x == 0) out[c] = (T)sum;
    }
}
