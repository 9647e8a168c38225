// Convolution kernels. Shapes: x, gx (N, C, H, W); w, gw (O, Cg, kh, kw) with Cg = C/G and
// Og = O/G per group; y, gy (N, O, Ho, Wo). Output (i, j) reads input rows i*sh - pt + a*dh
// and columns j*sw - pl + e*dw; taps outside the input are zero padding and are skipped (only
// the top/left padding matters here: the bottom/right padding only sizes the output).
//
// Backward-data is a gather: one thread per input element sums w * gy over the outputs that
// read it (those with i*sh = r + pt - a*dh for a whole i in range). Backward-weight gives each
// weight element one block, which sums x * gy over N*Ho*Wo in a fixed order.

// The window dot product of output (i, j): sum over the taps inside the input of
// plane[r, q] * taps[a, e], with r = i*sh - pt + a*dh and q = j*sw - pl + e*dw.
template <typename T, typename I>
__device__ __forceinline__ T fc_window_dot(const T* plane, const T* taps, int i, int j, int h,
                                           int wd, int kh, int kw, int sh, int sw, int pt,
                                           int pl, int dh, int dw) {
    T acc = 0;
    for (int a = 0; a < kh; ++a) {
        const int r = i * sh - pt + a * dh;
        if (r < 0 || r >= h) continue;
        for (int e = 0; e < kw; ++e) {
            const int q = j * sw - pl + e * dw;
            if (q >= 0 && q < wd) acc += plane[(I)r * wd + q] * taps[a * kw + e];
        }
    }
    return acc;
}

// Its adjoint for input (r, q): the sum over the outputs (i, j) whose tap (a, e) reads (r, q),
// i.e. i*sh = r + pt - a*dh and j*sw = q + pl - e*dw for whole i, j, of
//   grad[i, j] * taps[a, e]                       (taps given: backward-data), or
//   grad[(a*kw + e)*tap_stride + i*wo + j]         (taps null: col2im, one plane per tap).
template <typename T, typename I>
__device__ __forceinline__ T fc_window_gather(const T* grad, const T* taps, I tap_stride, int r,
                                              int q, int ho, int wo, int kh, int kw, int sh,
                                              int sw, int pt, int pl, int dh, int dw) {
    T acc = 0;
    for (int a = 0; a < kh; ++a) {
        const int t = r + pt - a * dh;
        if (t < 0 || t % sh != 0 || t / sh >= ho) continue;
        for (int e = 0; e < kw; ++e) {
            const int u = q + pl - e * dw;
            if (u < 0 || u % sw != 0 || u / sw >= wo) continue;
            const T g = grad[(a * kw + e) * tap_stride + (I)(t / sh) * wo + u / sw];
            acc += taps ? g * taps[a * kw + e] : g;
        }
    }
    return acc;
}

// ---- direct: one thread per output element, every tap of its window ----------------------

// x (N, C, H, W), w (O, Cg, kh, kw), b (O) if has_bias -> y (N, O, Ho, Wo)
template <typename T, typename I>
__global__ void direct_forward(const T* x, const T* w, const T* b, int has_bias, T* y, int n,
                               int c, int h,
                               int wd, int o, int ho, int wo, int kh, int kw, int sh, int sw,
                               int pt, int pl, int dh, int dw, int groups) {
    const int cg = c / groups, og = o / groups;
    const I total = (I)n * o * ho * wo;
    for (I idx = blockIdx.x * (I)blockDim.x + threadIdx.x; idx < total;
         idx += (I)blockDim.x * gridDim.x) {
        const int j = (int)(idx % wo), i = (int)((idx / wo) % ho);
        const int oc = (int)((idx / ((I)ho * wo)) % o);
        const I nn = idx / ((I)o * ho * wo);
        const int g = oc / og;
        T acc = has_bias ? b[oc] : (T)0;
        for (int ci = 0; ci < cg; ++ci)
            acc += fc_window_dot<T, I>(x + (nn * c + (I)g * cg + ci) * ((I)h * wd),
                                       w + ((I)oc * cg + ci) * kh * kw, i, j, h, wd, kh, kw, sh,
                                       sw, pt, pl, dh, dw);
        y[idx] = acc;
    }
}

// gy (N, O, Ho, Wo), w (O, Cg, kh, kw) -> gx (N, C, H, W)
template <typename T, typename I>
__global__ void direct_backward_data(const T* gy, const T* w, T* gx, int n, int c, int h,
                                     int wd, int o, int ho, int wo, int kh, int kw, int sh,
                                     int sw, int pt, int pl, int dh, int dw, int groups) {
    const int cg = c / groups, og = o / groups;
    const I total = (I)n * c * h * wd;
    for (I idx = blockIdx.x * (I)blockDim.x + threadIdx.x; idx < total;
         idx += (I)blockDim.x * gridDim.x) {
        const int q = (int)(idx % wd), r = (int)((idx / wd) % h);
        const int cc = (int)((idx / ((I)h * wd)) % c);
        const I nn = idx / ((I)c * h * wd);
        const int g = cc / cg, ci = cc % cg;
        T acc = 0;
        for (int oc = g * og; oc < (g + 1) * og; ++oc)
            acc += fc_window_gather<T, I>(gy + (nn * o + oc) * ((I)ho * wo),
                                          w + ((I)oc * cg + ci) * kh * kw, 0, r, q, ho, wo, kh,
                                          kw, sh, sw, pt, pl, dh, dw);
        gx[idx] = acc;
    }
}

// x (N, C, H, W), gy (N, O, Ho, Wo) -> gw (O, Cg, kh, kw): one block per weight element.
template <typename T, typename I>
__global__ void direct_backward_weight(const T* x, const T* gy, T* gw, int n, int c, int h,
                                       int wd, int o, int ho, int wo, int kh, int kw, int sh,
                                       int sw, int pt, int pl, int dh, int dw, int groups) {
    __shared__ double shared[FC_THREADS];
    const int cg = c / groups, og = o / groups;
    const I weights = (I)o * cg * kh * kw;
    for (I widx = blockIdx.x; widx < weights; widx += gridDim.x) {
        const int e = (int)(widx % kw), a = (int)((widx / kw) % kh);
        const int ci = (int)((widx / ((I)kh * kw)) % cg);
        const int oc = (int)(widx / ((I)cg * kh * kw));
        const int cc = (oc / og) * cg + ci;
        const I m = (I)n * ho * wo;
        double sum = 0;
        for (I k = threadIdx.x; k < m; k += FC_THREADS) {
            const int j = (int)(k % wo), i = (int)((k / wo) % ho);
            const I nn = k / ((I)ho * wo);
            const int r = i * sh - pt + a * dh, q = j * sw - pl + e * dw;
            if (r < 0 || r >= h || q < 0 || q >= wd) continue;
            sum += (double)x[(nn * c + cc) * ((I)h * wd) + (I)r * wd + q] *
                   (double)gy[(nn * o + oc) * ((I)ho * wo) + (I)i * wo + j];
        }
        sum = fc_block_sum(sum, shared);
        if (threadIdx.x == 0) gw[widx] = (T)sum;
    }
}

// ---- depthwise: groups == C, O = C*M (M filters per channel); no channel loop --------------

template <typename T, typename I>
__global__ void depthwise_forward(const T* x, const T* w, const T* b, int has_bias, T* y, int n,
                                  int c, int h,
                                  int wd, int o, int ho, int wo, int kh, int kw, int sh, int sw,
                                  int pt, int pl, int dh, int dw) {
    const int mult = o / c;
    const I total = (I)n * o * ho * wo;
    for (I idx = blockIdx.x * (I)blockDim.x + threadIdx.x; idx < total;
         idx += (I)blockDim.x * gridDim.x) {
        const int j = (int)(idx % wo), i = (int)((idx / wo) % ho);
        const int oc = (int)((idx / ((I)ho * wo)) % o);
        const I nn = idx / ((I)o * ho * wo);
        const T acc = fc_window_dot<T, I>(x + (nn * c + oc / mult) * ((I)h * wd),
                                          w + (I)oc * kh * kw, i, j, h, wd, kh, kw, sh, sw, pt,
                                          pl, dh, dw);
        y[idx] = has_bias ? b[oc] + acc : acc;
    }
}

template <typename T, typename I>
__global__ void depthwise_backward_data(const T* gy, const T* w, T* gx, int n, int c, int h,
                                        int wd, int o, int ho, int wo, int kh, int kw, int sh,
                                        int sw, int pt, int pl, int dh, int dw) {
    const int mult = o / c;
    const I total = (I)n * c * h * wd;
    for (I idx = blockIdx.x * (I)blockDim.x + threadIdx.x; idx < total;
         idx += (I)blockDim.x * gridDim.x) {
        const int q = (int)(idx % wd), r = (int)((idx / wd) % h);
        const int cc = (int)((idx / ((I)h * wd)) % c);
        const I nn = idx / ((I)c * h * wd);
        T acc = 0;
        for (int oc = cc * mult; oc < (cc + 1) * mult; ++oc)
            acc += fc_window_gather<T, I>(gy + (nn * o + oc) * ((I)ho * wo), w + (I)oc * kh * kw,
                                          0, r, q, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw);
        gx[idx] = acc;
    }
}

// ---- im2col: columns for a chunk of images, then cuBLAS (cupy.matmul) does the products ----

// x (N, C, H, W), images n0 .. n0+nb-1 -> cols (nb, C, kh, kw, Ho, Wo), zero for padding taps.
template <typename T, typename I>
__global__ void im2col(const T* x, T* cols, int n0, int nb, int c, int h, int wd, int ho, int wo,
                       int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw) {
    const I total = (I)nb * c * kh * kw * ho * wo;
    for (I idx = blockIdx.x * (I)blockDim.x + threadIdx.x; idx < total;
         idx += (I)blockDim.x * gridDim.x) {
        const int j = (int)(idx % wo), i = (int)((idx / wo) % ho);
        const I tap = idx / ((I)ho * wo);  // (nb, C, kh, kw) flattened
        const int e = (int)(tap % kw), a = (int)((tap / kw) % kh);
        const I plane = (I)n0 * c + tap / ((I)kh * kw);  // image * C + channel
        const int r = i * sh - pt + a * dh, q = j * sw - pl + e * dw;
        cols[idx] = (r >= 0 && r < h && q >= 0 && q < wd) ? x[plane * ((I)h * wd) + (I)r * wd + q]
                                                          : (T)0;
    }
}

// dcols (nb, C, kh, kw, Ho, Wo) -> gx for images n0 .. n0+nb-1: each input element gathers
// the column entries that were copied from it.
template <typename T, typename I>
__global__ void col2im(const T* dcols, T* gx, int n0, int nb, int c, int h, int wd, int ho,
                       int wo, int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw) {
    const I total = (I)nb * c * h * wd;
    for (I idx = blockIdx.x * (I)blockDim.x + threadIdx.x; idx < total;
         idx += (I)blockDim.x * gridDim.x) {
        const int q = (int)(idx % wd), r = (int)((idx / wd) % h);
        const I plane = idx / ((I)h * wd);  // image in chunk * C + channel
        const T acc = fc_window_gather<T, I>(dcols + plane * ((I)kh * kw * ho * wo), (const T*)0,
                                             (I)ho * wo, r, q, ho, wo, kh, kw, sh, sw, pt, pl,
                                             dh, dw);
        gx[(I)n0 * c * h * wd + idx] = acc;
    }
}
