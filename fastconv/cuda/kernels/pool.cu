// Pooling, forward and backward. Shapes: x, gx (P, H, W) with P = N*C planes; y, indices, gy
// (P, Ho, Wo). Window (i, j) covers rows i*sh - ph + a*dh (a < kh) and columns
// j*sw - pw + e*dw (e < kw); taps outside the input are padding and are skipped.
//
// The gradients are gathers, not scatters: one thread per input element sums the output
// gradients of the windows that use it, in (i, j) order, which needs no atomics and adds in
// the same order as the CPU kernels' scatter.

// The taps t of one window dimension whose position start + t*step lies in [0, size).
__device__ __forceinline__ void fc_taps(int start, int step, int size, int count, int* lo, int* hi) {
    *lo = start >= 0 ? 0 : (int)fc_ceildiv(-start, step);
    *hi = (int)min((long long)count, fc_floordiv(size - 1 - start, step) + 1);
    if (*hi < *lo) *hi = *lo;
}

// The windows i (clipped to [0, out)) whose extent [i*stride - pad, i*stride - pad + span)
// can contain position r; span is the window's reach, (k - 1)*dilation + 1.
__device__ __forceinline__ void fc_windows_containing(int r, int pad, int span, int stride,
                                                      int out, int* lo, int* hi) {
    *lo = (int)max(0LL, fc_ceildiv(r + pad - span + 1, stride));
    *hi = (int)min((long long)out - 1, fc_floordiv(r + pad, stride));
}

// x (P, H, W) -> y (P, Ho, Wo) and, if want_indices, the flat index into H*W of each maximum.
// PyTorch's scan: the first element inside the input starts the search; a later one replaces
// the best if it is larger or NaN (ties keep the first; NaN propagates).
template <typename T, typename I>
__global__ void max_pool_forward(const T* x, T* y, long long* indices, int want_indices, I planes,
                                 int h, int w, int ho, int wo, int kh, int kw, int sh, int sw,
                                 int ph, int pw, int dh, int dw) {
    const I total = planes * ho * wo;
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int j = (int)(idx % wo), i = (int)((idx / wo) % ho);
        const T* plane = x + (idx / ((I)ho * wo)) * ((I)h * w);
        const int r0 = i * sh - ph, q0 = j * sw - pw;
        int a_lo, a_hi, e_lo, e_hi;
        fc_taps(r0, dh, h, kh, &a_lo, &a_hi);
        fc_taps(q0, dw, w, kw, &e_lo, &e_hi);
        T best = -static_cast<T>(__int_as_float(0x7f800000));  // -infinity
        long long where = (long long)(r0 + a_lo * dh) * w + q0 + e_lo * dw;
        for (int a = a_lo; a < a_hi; ++a) {
            const int r = r0 + a * dh;
            for (int e = e_lo; e < e_hi; ++e) {
                const T v = plane[(I)r * w + q0 + e * dw];
                if (v > best || isnan(v)) {
                    best = v;
                    where = (long long)r * w + q0 + e * dw;
                }
            }
        }
        y[idx] = best;
        if (want_indices) indices[idx] = where;
    }
}

// gy, indices (P, Ho, Wo) -> gx (P, H, W): each input element sums the gradients of the windows
// that selected it. Windows that can contain row r: i*sh - ph + a*dh = r for some a < kh.
template <typename T, typename I>
__global__ void max_pool_backward(const T* gy, const long long* indices, T* gx, I planes,
                                  int h, int w, int ho, int wo, int kh, int kw, int sh, int sw,
                                  int ph, int pw, int dh, int dw) {
    const I total = planes * h * w;
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int q = (int)(idx % w), r = (int)((idx / w) % h);
        const I base = (idx / ((I)h * w)) * ((I)ho * wo);
        int i_lo, i_hi, j_lo, j_hi;
        fc_windows_containing(r, ph, (kh - 1) * dh + 1, sh, ho, &i_lo, &i_hi);
        fc_windows_containing(q, pw, (kw - 1) * dw + 1, sw, wo, &j_lo, &j_hi);
        const long long target = (long long)r * w + q;
        T acc = 0;
        for (int i = i_lo; i <= i_hi; ++i)
            for (int j = j_lo; j <= j_hi; ++j) {
                const I o = base + (I)i * wo + j;
                if (indices[o] == target) acc += gy[o];
            }
        gx[idx] = acc;
    }
}

// PyTorch's divisor of the window starting at (r0, q0): its size clipped to the padded input,
// or to the input itself without count_include_pad, or the override (when non-zero).
__device__ __forceinline__ int fc_divisor(int r0, int q0, int h, int w, int kh, int kw, int ph,
                                          int pw, int count_include_pad, int divisor_override) {
    if (divisor_override != 0) return divisor_override;
    const int r1 = min(r0 + kh, h + ph), q1 = min(q0 + kw, w + pw);
    if (count_include_pad) return (r1 - r0) * (q1 - q0);
    return (min(r1, h) - max(r0, 0)) * (min(q1, w) - max(q0, 0));
}

// x (P, H, W) -> y (P, Ho, Wo): window sums (in double) over the divisor.
template <typename T, typename I>
__global__ void avg_pool_forward(const T* x, T* y, I planes, int h, int w, int ho, int wo,
                                 int kh, int kw, int sh, int sw, int ph, int pw,
                                 int count_include_pad, int divisor_override) {
    const I total = planes * ho * wo;
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int j = (int)(idx % wo), i = (int)((idx / wo) % ho);
        const T* plane = x + (idx / ((I)ho * wo)) * ((I)h * w);
        const int r0 = i * sh - ph, q0 = j * sw - pw;
        double sum = 0;
        for (int r = max(r0, 0); r < min(r0 + kh, h); ++r)
            for (int q = max(q0, 0); q < min(q0 + kw, w); ++q) sum += plane[(I)r * w + q];
        y[idx] = (T)(sum / fc_divisor(r0, q0, h, w, kh, kw, ph, pw, count_include_pad,
                                      divisor_override));
    }
}

// gy (P, Ho, Wo) -> gx (P, H, W): each input element sums gy / divisor over the windows that
// contain it: i*sh - ph <= r < i*sh - ph + kh.
template <typename T, typename I>
__global__ void avg_pool_backward(const T* gy, T* gx, I planes, int h, int w, int ho, int wo,
                                  int kh, int kw, int sh, int sw, int ph, int pw,
                                  int count_include_pad, int divisor_override) {
    const I total = planes * h * w;
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int q = (int)(idx % w), r = (int)((idx / w) % h);
        const T* g = gy + (idx / ((I)h * w)) * ((I)ho * wo);
        int i_lo, i_hi, j_lo, j_hi;
        fc_windows_containing(r, ph, kh, sh, ho, &i_lo, &i_hi);
        fc_windows_containing(q, pw, kw, sw, wo, &j_lo, &j_hi);
        T acc = 0;
        for (int i = i_lo; i <= i_hi; ++i)
            for (int j = j_lo; j <= j_hi; ++j)
                acc += g[(I)i * wo + j] / (T)fc_divisor(i * sh - ph, j * sw - pw, h, w, kh, kw,
                                                        ph, pw, count_include_pad,
                                                        divisor_override);
        gx[idx] = acc;
    }
}

// Adaptive window i of a dimension: [floor(i*size/out), ceil((i+1)*size/out)).
__device__ __forceinline__ int fc_window_start(int i, int size, int out) {
    return (int)(((long long)i * size) / out);
}
__device__ __forceinline__ int fc_window_end(int i, int size, int out) {
    return (int)((((long long)i + 1) * size + out - 1) / out);
}

template <typename T, typename I>
__global__ void adaptive_avg_pool_forward(const T* x, T* y, I planes, int h, int w, int ho,
                                          int wo) {
    const I total = planes * ho * wo;
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int j = (int)(idx % wo), i = (int)((idx / wo) % ho);
        const T* plane = x + (idx / ((I)ho * wo)) * ((I)h * w);
        const int r0 = fc_window_start(i, h, ho), r1 = fc_window_end(i, h, ho);
        const int q0 = fc_window_start(j, w, wo), q1 = fc_window_end(j, w, wo);
        double sum = 0;
        for (int r = r0; r < r1; ++r)
            for (int q = q0; q < q1; ++q) sum += plane[(I)r * w + q];
        y[idx] = (T)(sum / ((r1 - r0) * (q1 - q0)));
    }
}

// gy (P, Ho, Wo) -> gx (P, H, W): gy / window size summed over the windows containing the
// element (found among the few windows around r*Ho/H, then checked exactly).
template <typename T, typename I>
__global__ void adaptive_avg_pool_backward(const T* gy, T* gx, I planes, int h, int w, int ho,
                                           int wo) {
    const I total = planes * h * w;
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int q = (int)(idx % w), r = (int)((idx / w) % h);
        const T* g = gy + (idx / ((I)h * w)) * ((I)ho * wo);
        const int i_lo = max(0, (int)(((long long)r * ho) / h) - 1);
        const int i_hi = min(ho - 1, (int)((((long long)r + 1) * ho) / h) + 1);
        const int j_lo = max(0, (int)(((long long)q * wo) / w) - 1);
        const int j_hi = min(wo - 1, (int)((((long long)q + 1) * wo) / w) + 1);
        T acc = 0;
        for (int i = i_lo; i <= i_hi; ++i) {
            const int r0 = fc_window_start(i, h, ho), r1 = fc_window_end(i, h, ho);
            if (r < r0 || r >= r1) continue;
            for (int j = j_lo; j <= j_hi; ++j) {
                const int q0 = fc_window_start(j, w, wo), q1 = fc_window_end(j, w, wo);
                if (q < q0 || q >= q1) continue;
                acc += g[(I)i * wo + j] / (T)((r1 - r0) * (q1 - q0));
            }
        }
        gx[idx] = acc;
    }
}
