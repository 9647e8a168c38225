// Convolution kernels. Shapes: x, gx (N, C, H, W); w, gw (O, Cg, kh, kw) with Cg = C/G and
// Og = O/G per group; y, gy (N, O, Ho, Wo). Output (i, j) reads input rows i*sh - pt + a*dh
// and columns j*sw - pl + e*dw; a tap outside the input reads a zero of the padding, which
// meets its weight as in PyTorch (0 * Inf = NaN). Only the top/left padding matters here: the
// bottom/right padding only sizes the output.
//
// Backward-data is a gather: one thread per input element sums w * gy over the outputs that
// read it (those with i*sh = r + pt - a*dh for a whole i in range). A tap/pixel pair with no
// such output adds no term at all, as in PyTorch's col2im (not a product with zero).
// Backward-weight gives each filter slice (oc, ci) a block, which sums x * gy over N*Ho*Wo in
// a fixed order for up to FC_WEIGHT_TAPS taps at once.

// The window dot product of output (i, j): sum over its taps of plane[r, q] * taps[a, e],
// with r = i*sh - pt + a*dh and q = j*sw - pl + e*dw, a tap in the padding reading a zero.
// The padding's zeros meet the weights, as in PyTorch: an Inf weight there gives 0 * Inf = NaN
// (skipping those taps gave a finite value where the CPU backend and PyTorch give NaN).
template <typename T, typename I>
__device__ __forceinline__ T fc_window_dot(const T* plane, const T* taps, int i, int j, int h,
                                           int wd, int kh, int kw, int sh, int sw, int pt,
                                           int pl, int dh, int dw) {
    T acc = 0;
    for (int a = 0; a < kh; ++a) {
        const int r = i * sh - pt + a * dh;
        const bool row_inside = r >= 0 && r < h;
        for (int e = 0; e < kw; ++e) {
            const int q = j * sw - pl + e * dw;
            const T v = (row_inside && q >= 0 && q < wd) ? plane[(I)r * wd + q] : (T)0;
            acc += v * taps[a * kw + e];
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

// ---- direct: shared-memory tiles of the input (forward) or of gy (backward-data) ----------
//
// A block of TH*TW threads owns a TH x TW tile of output pixels (forward; of input pixels for
// backward-data) of one image, for CB channels of one group; each thread computes CB channels
// of one pixel. For each channel it reduces over, the block first copies the patch of the
// source plane the tile reads into shared memory (each source element once, coalesced along
// rows), waits, and then every thread runs its taps out of shared memory, with the filter taps
// read by all threads at once (one broadcast load). A patch larger than FC_PATCH elements
// (huge kernels or dilations) is read from global memory instead, by the same loops. Blocks
// walk the tiles with a grid-stride loop. Each output sums its channels, then taps, in order.

#ifndef FC_PATCH
#define FC_PATCH 4096  // shared-memory patch: 16 KiB of float, 32 KiB of double
#endif

// The tile a block works on: image, group, first channel of its block of CB, first row and
// column of its TH x TW pixel tile.
struct FcTile {
    long long img;
    int grp, ch0, row0, col0;
};
template <typename I>
__device__ __forceinline__ FcTile fc_tile(I tile, int rows, int cols, int th, int tw,
                                          int channel_blocks, int cb, int groups) {
    const int tiles_w = (cols + tw - 1) / tw, tiles_h = (rows + th - 1) / th;
    FcTile t;
    t.col0 = (int)(tile % tiles_w) * tw;
    t.row0 = (int)(tile / tiles_w % tiles_h) * th;
    t.ch0 = (int)(tile / ((I)tiles_w * tiles_h) % channel_blocks) * cb;
    t.grp = (int)(tile / ((I)tiles_w * tiles_h * channel_blocks) % groups);
    t.img = tile / ((I)tiles_w * tiles_h * channel_blocks * groups);
    return t;
}

// Copies rows [r0, r0 + ph) and columns [q0, q0 + pw) of plane (h x wd) into patch, zero
// outside the plane; then a barrier. The corner in 64 bits: a tile's first row times a stride
// can pass 2**31 even when its patch is small.
template <typename T, typename I>
__device__ __forceinline__ void fc_load_patch(T* patch, const T* plane, long long r0,
                                              long long q0, int ph, int pw, int h, int wd) {
    for (int e = threadIdx.x; e < ph * pw; e += blockDim.x) {
        const long long r = r0 + e / pw, q = q0 + e % pw;
        patch[e] = (r >= 0 && r < h && q >= 0 && q < wd) ? plane[(I)r * wd + q] : (T)0;
    }
    __syncthreads();
}

// x (N, C, H, W), w (O, Cg, kh, kw), b (O) if has_bias -> y (N, O, Ho, Wo).
// Tiles: N * G * ceil(Og/CB) * ceil(Ho/TH) * ceil(Wo/TW).
template <typename T, typename I, int TH, int TW, int CB>
__global__ void direct_forward(const T* x, const T* w, const T* b, int has_bias, T* y, int n,
                               int c, int h, int wd, int o, int ho, int wo, int kh, int kw,
                               int sh, int sw, int pt, int pl, int dh, int dw, int groups) {
    __shared__ T patch[FC_PATCH];
    const int cg = c / groups, og = o / groups, taps = kh * kw;
    const int ty = threadIdx.x / TW, tx = threadIdx.x % TW;
    // the input patch under a tile: rows from row0*sh - pt, (TH-1)*sh + (kh-1)*dh + 1 of them.
    // In 64 bits: strides and dilations go up to 2**31 - 1, and the patch is then not shared;
    // when it is, every offset into it is below FC_PATCH.
    const long long ph = (TH - 1) * (long long)sh + (kh - 1) * (long long)dh + 1;
    const long long pw = (TW - 1) * (long long)sw + (kw - 1) * (long long)dw + 1;
    const bool shared = ph <= FC_PATCH && pw <= FC_PATCH && ph * pw <= FC_PATCH;
    const int channel_blocks = (og + CB - 1) / CB;
    const I tiles = (I)n * groups * channel_blocks * ((ho + TH - 1) / TH) * ((wo + TW - 1) / TW);
    for (I tile = blockIdx.x; tile < tiles; tile = fc_next(tile, gridDim.x, tiles)) {
        const FcTile t = fc_tile<I>(tile, ho, wo, TH, TW, channel_blocks, CB, groups);
        const int i = t.row0 + ty, j = t.col0 + tx, oc0 = t.grp * og + t.ch0;
        // the patch's corner in x
        const long long r0 = (long long)t.row0 * sh - pt, q0 = (long long)t.col0 * sw - pl;
        const int channels = og - t.ch0 < CB ? og - t.ch0 : CB;
        T acc[CB];
        for (int k = 0; k < CB; ++k) acc[k] = (has_bias && k < channels) ? b[oc0 + k] : (T)0;
        for (int ci = 0; ci < cg; ++ci) {
            const T* plane = x + ((I)t.img * c + t.grp * cg + ci) * ((I)h * wd);
            if (shared) fc_load_patch<T, I>(patch, plane, r0, q0, (int)ph, (int)pw, h, wd);
            const T* taps_of = w + ((I)oc0 * cg + ci) * taps;  // + k*cg*taps for channel k
            for (int a = 0; a < kh; ++a) {
                for (int e = 0; e < kw; ++e) {
                    T v;
                    if (shared) {  // the tap's place in the patch, every term below FC_PATCH
                        v = patch[(ty * sh + a * dh) * (int)pw + tx * sw + e * dw];
                    } else {
                        const long long r = r0 + (long long)ty * sh + (long long)a * dh;
                        const long long q = q0 + (long long)tx * sw + (long long)e * dw;
                        v = (r >= 0 && r < h && q >= 0 && q < wd) ? plane[(I)r * wd + q] : (T)0;
                    }
                    for (int k = 0; k < CB; ++k)
                        if (k < channels) acc[k] += v * taps_of[(I)k * cg * taps + a * kw + e];
                }
            }
            if (shared) __syncthreads();  // the patch is overwritten next channel
        }
        if (i < ho && j < wo)
            for (int k = 0; k < channels; ++k)
                y[(((I)t.img * o + oc0 + k) * ho + i) * (I)wo + j] = acc[k];
    }
}

// gy (N, O, Ho, Wo), w (O, Cg, kh, kw) -> gx (N, C, H, W): input pixel (r, q) gathers
// w[oc, ci, a, e] * gy[oc, i, j] over the outputs with i*sh = r + pt - a*dh, j*sw = q + pl - e*dw.
// Tiles: N * G * ceil(Cg/CB) * ceil(H/TH) * ceil(W/TW).
template <typename T, typename I, int TH, int TW, int CB>
__global__ void direct_backward_data(const T* gy, const T* w, T* gx, int n, int c, int h,
                                     int wd, int o, int ho, int wo, int kh, int kw, int sh,
                                     int sw, int pt, int pl, int dh, int dw, int groups) {
    __shared__ T patch[FC_PATCH];
    const int cg = c / groups, og = o / groups, taps = kh * kw;
    const int ty = threadIdx.x / TW, tx = threadIdx.x % TW;
    const int channel_blocks = (cg + CB - 1) / CB;
    const I tiles = (I)n * groups * channel_blocks * ((h + TH - 1) / TH) * ((wd + TW - 1) / TW);
    for (I tile = blockIdx.x; tile < tiles; tile = fc_next(tile, gridDim.x, tiles)) {
        const FcTile t = fc_tile<I>(tile, h, wd, TH, TW, channel_blocks, CB, groups);
        const int r = t.row0 + ty, q = t.col0 + tx, ci0 = t.ch0;
        // the gy patch the tile reads: output rows i0 .. i1 (ceil/floor of the extreme taps)
        // in 64 bits, as in direct_forward: dilations and strides go up to 2**31 - 1
        const long long i0 = fc_ceildiv((long long)t.row0 + pt - (kh - 1) * (long long)dh, sh);
        const long long i1 = fc_floordiv((long long)t.row0 + TH - 1 + pt, sh);
        const long long j0 = fc_ceildiv((long long)t.col0 + pl - (kw - 1) * (long long)dw, sw);
        const long long j1 = fc_floordiv((long long)t.col0 + TW - 1 + pl, sw);
        const long long ph = i1 - i0 + 1, pw = j1 - j0 + 1;
        const bool shared = ph > 0 && pw > 0 && ph <= FC_PATCH && pw <= FC_PATCH &&
                            ph * pw <= FC_PATCH;
        const int channels = cg - ci0 < CB ? cg - ci0 : CB;
        T acc[CB];
        for (int k = 0; k < CB; ++k) acc[k] = 0;
        for (int oc = t.grp * og; oc < (t.grp + 1) * og; ++oc) {
            const T* plane = gy + ((I)t.img * o + oc) * ((I)ho * wo);
            if (shared) fc_load_patch<T, I>(patch, plane, i0, j0, (int)ph, (int)pw, ho, wo);
            const T* taps_of = w + ((I)oc * cg + ci0) * taps;  // + k*taps for channel k
            // Only the taps through which some output reads (r, q) add a term: one that would
            // read from outside gy has no product at all, not a product with zero (an Inf
            // weight there would make 0 * Inf = NaN where PyTorch and the CPU have no term).
            for (int a = 0; a < kh; ++a) {
                // = i*sh for the output row i that reads r
                const long long u = (long long)r + pt - (long long)a * dh;
                if (u % sh != 0) continue;
                const long long i = u / sh;
                if (i < 0 || i >= ho) continue;
                for (int e = 0; e < kw; ++e) {
                    const long long v = (long long)q + pl - (long long)e * dw;
                    if (v % sw != 0) continue;
                    const long long j = v / sw;
                    if (j < 0 || j >= wo) continue;
                    const T g = shared ? patch[(int)((i - i0) * pw + (j - j0))]
                                       : plane[(I)i * wo + (I)j];
                    for (int k = 0; k < CB; ++k)
                        if (k < channels) acc[k] += g * taps_of[(I)k * taps + a * kw + e];
                }
            }
            if (shared) __syncthreads();  // the patch is overwritten next output channel
        }
        if (r < h && q < wd)
            for (int k = 0; k < channels; ++k)
                gx[(((I)t.img * c + t.grp * cg + ci0 + k) * h + r) * (I)wd + q] = acc[k];
    }
}

// x (N, C, H, W), gy (N, O, Ho, Wo) -> gw (O, Cg, kh, kw). One block per filter slice (oc, ci)
// and chunk of FC_WEIGHT_TAPS of its taps (a 3x3 filter in one chunk): each thread walks a
// share of the N*Ho*Wo outputs and, per output, loads gy and works out where it is once, then
// adds x * gy for every tap of the chunk into its own double accumulators (registers: the tap
// loop has a compile-time bound). A fixed tree per tap sums the threads. One block per weight
// element, as this kernel was first written, redid that load and the index divisions for
// every tap and re-read gy kh*kw times. Taps that read the padding add no term.
#ifndef FC_WEIGHT_TAPS
#define FC_WEIGHT_TAPS 9
#endif
template <typename T, typename I>
__global__ void direct_backward_weight(const T* x, const T* gy, T* gw, int n, int c, int h,
                                       int wd, int o, int ho, int wo, int kh, int kw, int sh,
                                       int sw, int pt, int pl, int dh, int dw, int groups) {
    __shared__ double shared[FC_THREADS];
    const int cg = c / groups, og = o / groups, taps = kh * kw;
    const int chunks = (taps + FC_WEIGHT_TAPS - 1) / FC_WEIGHT_TAPS;
    const I work = (I)o * cg * chunks, m = (I)n * ho * wo, plane = (I)ho * wo;
    for (I item = blockIdx.x; item < work; item = fc_next(item, gridDim.x, work)) {
        const I slice = item / chunks;  // oc * cg + ci
        const int t0 = (int)(item % chunks) * FC_WEIGHT_TAPS;
        const int count = taps - t0 < FC_WEIGHT_TAPS ? taps - t0 : FC_WEIGHT_TAPS;
        const int oc = (int)(slice / cg), cc = (oc / og) * cg + (int)(slice % cg);
        // tap t of the chunk reads row i*sh + row_of[t] and column j*sw + col_of[t]
        int row_of[FC_WEIGHT_TAPS], col_of[FC_WEIGHT_TAPS];
        double sum[FC_WEIGHT_TAPS];
#pragma unroll
        for (int t = 0; t < FC_WEIGHT_TAPS; ++t) {
            const int tap = t0 + (t < count ? t : 0);
            row_of[t] = tap / kw * dh - pt;
            col_of[t] = tap % kw * dw - pl;
            sum[t] = 0;
        }
        for (I k = threadIdx.x; k < m; k = fc_next(k, FC_THREADS, m)) {
            const int j = (int)(k % wo), i = (int)(k / wo % ho);
            const I img = k / plane;
            const double g = (double)gy[(img * o + oc) * plane + (I)i * wo + j];
            const T* xp = x + (img * c + cc) * ((I)h * wd);
#pragma unroll
            for (int t = 0; t < FC_WEIGHT_TAPS; ++t) {
                const int r = i * sh + row_of[t], q = j * sw + col_of[t];
                if (t < count && r >= 0 && r < h && q >= 0 && q < wd)
                    sum[t] += (double)xp[(I)r * wd + q] * g;
            }
        }
#pragma unroll
        for (int t = 0; t < FC_WEIGHT_TAPS; ++t) {
            const double total = fc_block_sum(sum[t], shared);  // every thread takes part
            if (threadIdx.x == 0 && t < count) gw[slice * taps + t0 + t] = (T)total;
        }
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
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
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
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
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
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
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
    for (long long k = fc_first_item(); k < total; k += fc_grid_stride()) {
        const I idx = (I)k;
        const int q = (int)(idx % wd), r = (int)((idx / wd) % h);
        const I plane = idx / ((I)h * wd);  // image in chunk * C + channel
        const T acc = fc_window_gather<T, I>(dcols + plane * ((I)kh * kw * ho * wo), (const T*)0,
                                             (I)ho * wo, r, q, ho, wo, kh, kw, sh, sw, pt, pl,
                                             dh, dw);
        gx[(I)n0 * c * h * wd + idx] = acc;
    }
}
