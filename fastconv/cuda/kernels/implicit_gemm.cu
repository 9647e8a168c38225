// Implicit GEMM: every convolution direction is one matrix product per group,
//     C (M x Ncol) = A (M x K) . B (K x Ncol),
// whose operands are read straight out of the convolution's arrays, im2col done on the fly
// while a tile is loaded into shared memory: no columns in global memory.
//
//   direction        M    Ncol          K              A (m, k)          B (k, col)
//   forward          Og   N*Ho*Wo       Cg*kh*kw       w[m, k]           x under tap k of output col
//   backward-data    Cg   N*H*W         Og*kh*kw       w[oc, m, tap]     gy at the output that tap
//                                                                        (oc, a, e) of input col
//                                                                        reads from, or no term
//   backward-weight  Og   Cg*kh*kw      N*Ho*Wo        gy[m at k]        x under tap col at k
//
// Block tiling: a block of (BM/TM)*(BN/TN) threads computes a BM x BN tile of C. It walks K
// in steps of BK: the threads copy a BK x BM slice of A and a BK x BN slice of B into shared
// memory (each thread a strided share of the elements, consecutive threads on consecutive
// addresses of the source, so reads of x, gy and w coalesce), wait at a barrier, then each thread does BK rank-1
// updates of its TM x TN accumulators, which stay in registers (TM, TN are compile-time
// constants). Thread (ty, tx) owns rows ty + i*(BM/TM) and columns tx + j*(BN/TN): strided,
// so the threads of a warp read consecutive shared-memory words (no bank conflicts) and
// write consecutive outputs.
//
// Every output element is summed over k in increasing order by one thread: bitwise
// repeatable. Backward-weight has a long K (N*Ho*Wo) and few output tiles, so its K is split
// into `slices` ranges, each block writes its partial tile to a workspace, and
// implicit_gemm_slice_sum adds the slices in order (an ordered second pass, no atomics).

struct FcConv {  // the geometry every conv kernel takes, in conv_geometry's order
    int n, c, h, wd, o, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, groups;
};

// x[img, channel, r, q] with zero padding; the row and column may be out of range.
template <typename T, typename I>
__device__ __forceinline__ T fc_input(const T* x, const FcConv& g, I img, int channel, int r,
                                      int q) {
    if (r < 0 || r >= g.h || q < 0 || q >= g.wd) return (T)0;
    return x[((img * g.c + channel) * g.h + r) * (I)g.wd + q];
}

// Operand loaders of the three directions: element (m, k) of A and (k, col) of B for group
// `grp`; the caller keeps m, k and col in range. `b` stores the element in v and returns
// whether the pair (k, col) has a product at all. Only backward-data has pairs without one: a
// tap (oc, a, e) through which no output reads input col (its output row or column would be
// out of range or between strides). Those must add nothing, not w * 0: PyTorch's col2im never
// forms them, and with an Inf weight 0 * Inf would be NaN. The padding zeros of the forward
// and backward-weight columns do meet their weights, as in PyTorch.
template <int MODE>
struct FcOperands;

template <>
struct FcOperands<0> {  // forward: A = w, B = columns of x
    template <typename T, typename I>
    __device__ static T a(const T* w, const T*, const FcConv& g, int grp, int m, I k) {
        const int og = g.o / g.groups, cg = g.c / g.groups;
        return w[((I)grp * og + m) * ((I)cg * g.kh * g.kw) + k];
    }
    template <typename T, typename I>
    __device__ static bool b(const T*, const T* x, const FcConv& g, int grp, I k, I col, T& v) {
        const int taps = g.kh * g.kw, cg = g.c / g.groups;
        const int ci = (int)(k / taps), a = (int)(k % taps) / g.kw, e = (int)(k % g.kw);
        const int j = (int)(col % g.wo), i = (int)(col / g.wo % g.ho);
        v = fc_input<T, I>(x, g, col / ((I)g.ho * g.wo), grp * cg + ci,
                           i * g.sh - g.pt + a * g.dh, j * g.sw - g.pl + e * g.dw);
        return true;
    }
};

template <>
struct FcOperands<1> {  // backward-data: A = w with (oc, tap) as k, B = gy gathered per input
    template <typename T, typename I>
    __device__ static T a(const T* w, const T*, const FcConv& g, int grp, int m, I k) {
        const int taps = g.kh * g.kw, og = g.o / g.groups, cg = g.c / g.groups;
        const int oc = grp * og + (int)(k / taps);
        return w[((I)oc * cg + m) * taps + k % taps];
    }
    template <typename T, typename I>
    __device__ static bool b(const T*, const T* gy, const FcConv& g, int grp, I k, I col, T& v) {
        const int taps = g.kh * g.kw, og = g.o / g.groups;
        const int oc = grp * og + (int)(k / taps), a = (int)(k % taps) / g.kw,
                  e = (int)(k % g.kw);
        const int q = (int)(col % g.wd), r = (int)(col / g.wd % g.h);
        const int t = r + g.pt - a * g.dh, u = q + g.pl - e * g.dw;  // i*sh and j*sw if read
        v = (T)0;
        if (t < 0 || u < 0 || t % g.sh != 0 || u % g.sw != 0) return false;
        const int i = t / g.sh, j = u / g.sw;
        if (i >= g.ho || j >= g.wo) return false;
        const I img = col / ((I)g.h * g.wd);
        v = gy[((img * g.o + oc) * g.ho + i) * (I)g.wo + j];
        return true;
    }
};

template <>
struct FcOperands<2> {  // backward-weight: A = gy with (img, i, j) as k, B = columns of x
    template <typename T, typename I>
    __device__ static T a(const T* gy, const T*, const FcConv& g, int grp, int m, I k) {
        const int og = g.o / g.groups;
        const I plane = (I)g.ho * g.wo;
        return gy[((k / plane) * g.o + grp * og + m) * plane + k % plane];
    }
    template <typename T, typename I>
    __device__ static bool b(const T*, const T* x, const FcConv& g, int grp, I k, I col, T& v) {
        const int taps = g.kh * g.kw, cg = g.c / g.groups;
        const int ci = (int)(col / taps), a = (int)(col % taps) / g.kw, e = (int)(col % g.kw);
        const int j = (int)(k % g.wo), i = (int)(k / g.wo % g.ho);
        v = fc_input<T, I>(x, g, k / ((I)g.ho * g.wo), grp * cg + ci,
                           i * g.sh - g.pt + a * g.dh, j * g.sw - g.pl + e * g.dw);
        return true;
    }
};

// The tile product of block (blockIdx.x: column tile, blockIdx.y: row tile, blockIdx.z:
// group * slices + slice) over k in [slice * k_per_slice, min(K, (slice+1) * k_per_slice)).
// Calls store(m, col, value) for each element of the tile inside M x Ncol.
template <int MODE, typename T, typename I, int BM, int BN, int BK, int TM, int TN,
          typename Store>
__device__ __forceinline__ void fc_tile_product(const T* a_src, const T* b_src, const FcConv& g,
                                                int m_rows, I n_cols, I k_len, int slices,
                                                I k_per_slice, Store store) {
    constexpr int THREADS_X = BN / TN, THREADS_Y = BM / TM, THREADS = THREADS_X * THREADS_Y;
    // Which index consecutive threads load: the one along which the source is contiguous (k
    // for A: w's taps, gy's pixels; for B, the output pixels, except in backward-weight where
    // they are k). The +1 column keeps k-fastest writes off a single shared-memory bank.
    constexpr bool B_K_FASTEST = MODE == 2;
    // Backward-data keeps beside its B tile which pairs have a product (see FcOperands); the
    // other directions need no mask and get a one-element placeholder.
    constexpr bool MASKED = MODE == 1;
    __shared__ T a_tile[BK][BM + 1];
    __shared__ T b_tile[BK][BN + 1];
    __shared__ bool b_has[MASKED ? BK : 1][MASKED ? BN + 1 : 1];
    const int tid = threadIdx.x, tx = tid % THREADS_X, ty = tid / THREADS_X;
    const int grp = blockIdx.z / slices, slice = blockIdx.z % slices;
    const int m0 = blockIdx.y * BM;
    const I n0 = (I)blockIdx.x * BN;
    const I k_begin = slice * k_per_slice;
    const I k_end = k_begin + k_per_slice < k_len ? k_begin + k_per_slice : k_len;

    T acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i][j] = 0;

    for (I k0 = k_begin; k0 < k_end; k0 += BK) {
        for (int e = tid; e < BK * BM; e += THREADS) {  // A slice: BK x BM, k fastest
            const int kk = e % BK, mm = e / BK;
            a_tile[kk][mm] = (m0 + mm < m_rows && k0 + kk < k_end)
                                 ? FcOperands<MODE>::a(a_src, b_src, g, grp, m0 + mm, k0 + kk)
                                 : (T)0;
        }
        for (int e = tid; e < BK * BN; e += THREADS) {  // B slice: BK x BN
            const int kk = B_K_FASTEST ? e % BK : e / BN, nn = B_K_FASTEST ? e / BK : e % BN;
            T v = 0;
            const bool has = n0 + nn < n_cols && k0 + kk < k_end &&
                             FcOperands<MODE>::b(a_src, b_src, g, grp, k0 + kk, n0 + nn, v);
            b_tile[kk][nn] = v;
            if (MASKED) b_has[MASKED ? kk : 0][MASKED ? nn : 0] = has;
        }
        __syncthreads();
        for (int kk = 0; kk < BK; ++kk) {  // BK rank-1 updates of the register tile
            T a[TM], b[TN];
            bool has[TN];
            for (int i = 0; i < TM; ++i) a[i] = a_tile[kk][ty + i * THREADS_Y];
            for (int j = 0; j < TN; ++j) b[j] = b_tile[kk][tx + j * THREADS_X];
            for (int j = 0; j < TN; ++j)
                has[j] = !MASKED || b_has[MASKED ? kk : 0][MASKED ? tx + j * THREADS_X : 0];
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j)
                    if (has[j]) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();  // the tiles are overwritten next step
    }
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty + i * THREADS_Y;
        for (int j = 0; j < TN; ++j) {
            const I col = n0 + tx + j * THREADS_X;
            if (m < m_rows && col < n_cols) store(grp, slice, m, col, acc[i][j]);
        }
    }
}

#define FC_CONV_ARGS                                                                       \
    int n, int c, int h, int wd, int o, int ho, int wo, int kh, int kw, int sh, int sw, int pt, \
        int pl, int dh, int dw, int groups
#define FC_CONV {n, c, h, wd, o, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, groups}

// x (N, C, H, W), w (O, Cg, kh, kw), b (O) if has_bias -> y (N, O, Ho, Wo).
// Grid: (ceil(N*Ho*Wo / BN), ceil(Og / BM), groups).
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN>
__global__ void implicit_gemm_forward(const T* x, const T* w, const T* b, int has_bias, T* y,
                                      FC_CONV_ARGS) {
    const FcConv g = FC_CONV;
    const int og = o / groups;
    const I plane = (I)ho * wo;
    fc_tile_product<0, T, I, BM, BN, BK, TM, TN>(
        w, x, g, og, (I)n * plane, (I)(c / groups) * kh * kw, 1, (I)(c / groups) * kh * kw,
        [&](int grp, int, int m, I col, T v) {
            const int oc = grp * og + m;
            y[((col / plane) * o + oc) * plane + col % plane] = has_bias ? v + b[oc] : v;
        });
}

// gy (N, O, Ho, Wo), w (O, Cg, kh, kw) -> gx (N, C, H, W).
// Grid: (ceil(N*H*W / BN), ceil(Cg / BM), groups).
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN>
__global__ void implicit_gemm_backward_data(const T* gy, const T* w, T* gx, FC_CONV_ARGS) {
    const FcConv g = FC_CONV;
    const int cg = c / groups;
    const I plane = (I)h * wd;
    fc_tile_product<1, T, I, BM, BN, BK, TM, TN>(
        w, gy, g, cg, (I)n * plane, (I)(o / groups) * kh * kw, 1, (I)(o / groups) * kh * kw,
        [&](int grp, int, int m, I col, T v) {
            gx[((col / plane) * c + grp * cg + m) * plane + col % plane] = v;
        });
}

// x (N, C, H, W), gy (N, O, Ho, Wo) -> partial weight gradients
// out (slices, G, Og, Cg*kh*kw), the slice s summing k in [s*k_per_slice, (s+1)*k_per_slice)
// of k = (image, i, j); with one slice, out is gw itself.
// Grid: (ceil(Cg*kh*kw / BN), ceil(Og / BM), groups * slices).
template <typename T, typename I, int BM, int BN, int BK, int TM, int TN>
__global__ void implicit_gemm_backward_weight(const T* x, const T* gy, T* out, FC_CONV_ARGS,
                                              int slices, I k_per_slice) {
    const FcConv g = FC_CONV;
    const int og = o / groups;
    const I cols = (I)(c / groups) * kh * kw;
    fc_tile_product<2, T, I, BM, BN, BK, TM, TN>(
        gy, x, g, og, cols, (I)n * ho * wo, slices, k_per_slice,
        [&](int grp, int slice, int m, I col, T v) {
            out[(((I)slice * groups + grp) * og + m) * cols + col] = v;
        });
}

// gw[i] = sum over s of partial[s, i], s in increasing order: the ordered second pass.
template <typename T, typename I>
__global__ void implicit_gemm_slice_sum(const T* partial, T* gw, int slices, I size) {
    for (long long k = fc_first_item(); k < size; k += fc_grid_stride()) {
        const I idx = (I)k;
        T acc = partial[idx];
        for (int s = 1; s < slices; ++s) acc += partial[(I)s * size + idx];
        gw[idx] = acc;
    }
}
