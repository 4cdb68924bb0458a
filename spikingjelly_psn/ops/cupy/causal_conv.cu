// Causal, dilated, channel-wise temporal convolution + fire (sliding PSN, MFPSN), its backward,
// and the per-channel statistics of its charge (MFPSN's batch-norm threshold).
//
// Layout: x [T, B, C, S] contiguous, N = B*C*S columns (b, c, s), one thread per column looping
// over time. The forward numbers the threads by the column's offset (1-D grid over N), so a
// warp reads 32 consecutive elements whatever S is. The backward and the statistics reduce per
// channel, so they use 2-D blocks: threadIdx.x picks a channel (c = blockIdx.y * blockDim.x +
// threadIdx.x), threadIdx.y a column r = (b, s) of it (r = blockIdx.x * blockDim.y + threadIdx.y),
// and the per-channel sums are trees over threadIdx.y. blockDim.x = 1 (one channel per block,
// threads along (b, s): coalesced for S >= 32 or so) or, when S is tiny ([T, N, C] inputs, S = 1),
// up to 32 channels side by side so that a warp reads consecutive channels. history [L, B, C, S]
// holds the L = (k-1)*d inputs before x[0] (a null pointer means zeros). Taps are summed oldest
// first, each product and sum rounded on its own, as the reference does.
#include "psn_common.cuh"

#define PSN_MODE_FIRE 0
#define PSN_MODE_STATS 1

// Input at padded time p (history first, then x) of one column.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ float psn_conv_input(const scalar_t* x, const scalar_t* hist, int p,
                                                int L, index_t stride, index_t col) {
    if (p >= L) return psn_load(x + (index_t)(p - L) * stride + col);
    if (hist != nullptr) return psn_load(hist + (index_t)p * stride + col);
    return 0.0f;
}

// One tap times one input: exponent arithmetic for a power-of-two tap (code != nullptr, the
// same for the whole launch), else a float multiply.
__device__ __forceinline__ float psn_tap(float v, const float* w, const int* code, int i) {
    if (code != nullptr) return psn_apply_tap(v, code[i]);
    return v * w[i];
}

// Charge H[t] of one column, in fp32.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ float psn_conv_charge(const scalar_t* x, const scalar_t* hist,
                                                 const float* w, const int* code, int t, int k,
                                                 int d, int L, index_t stride, index_t col) {
    float h = 0.0f;
    for (int i = 0; i < k; ++i) {
        float term = psn_tap(psn_conv_input(x, hist, t + i * d, L, stride, col), w, code, i);
        h = (i == 0) ? term : h + term;
    }
    return h;
}

// Forward of one column: spikes Θ(H[t] + bias) for every t.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ void psn_conv_fire_column(const scalar_t* x, const scalar_t* hist,
                                                     scalar_t* out, const float* w,
                                                     const int* code, float bias, int n_t,
                                                     int k, int d, index_t stride, index_t col) {
    int L = (k - 1) * d;
    for (int t = 0; t < n_t; ++t) {
        float v = psn_conv_charge(x, hist, w, code, t, k, d, L, stride, col) + bias;
        psn_store(out + (index_t)t * stride + col, v >= 0.0f ? 1.0f : 0.0f);
    }
}

// Backward, phase 1 of one column: g[t] = dLoss/dH[t] into g[t * g_stride], returns Σ_t g[t].
// MODE_FIRE: g = grad_s * surrogate'(H + c0); MODE_STATS: g = c1 + c2 * (H - c0), the gradient
// through the mean (c1 = grad_mean / n) and biased variance (c2 = 2 grad_var / n, c0 = mean).
template <typename scalar_t, int SG, int MODE, typename index_t>
__device__ __forceinline__ float psn_conv_grad_charge_column(
    const scalar_t* grad_s, const scalar_t* x, const scalar_t* hist, const float* w,
    const int* code, float c0, float c1, float c2, int sg, float p0, float p1, float p2, float* g,
    index_t g_stride, int n_t, int k, int d, index_t stride, index_t col) {
    int L = (k - 1) * d;
    float sum = 0.0f;
    for (int t = 0; t < n_t; ++t) {
        float h = psn_conv_charge(x, hist, w, code, t, k, d, L, stride, col);
        float gt;
        if (MODE == PSN_MODE_FIRE) {
            gt = psn_load(grad_s + (index_t)t * stride + col) *
                 psn_surrogate_grad<SG>(h + c0, sg, p0, p1, p2);
        } else {
            gt = c1 + c2 * (h - c0);
        }
        g[(index_t)t * g_stride] = gt;
        sum += gt;
    }
    return sum;
}

// Backward, phase 2 of one column: grad_x[u] = Σ_i w[i] · g[u + L − i·d] (transposed conv).
template <typename scalar_t, typename index_t>
__device__ __forceinline__ void psn_conv_grad_input_column(const float* g, index_t g_stride,
                                                           scalar_t* grad_x, const float* w,
                                                           const int* code, int n_t, int k,
                                                           int d, index_t stride, index_t col) {
    int L = (k - 1) * d;
    for (int u = 0; u < n_t; ++u) {
        float acc = 0.0f;
        for (int i = 0; i < k; ++i) {
            int t = u + L - i * d;
            if (t >= 0 && t < n_t) acc += psn_tap(g[(index_t)t * g_stride], w, code, i);
        }
        psn_store(grad_x + (index_t)u * stride + col, acc);
    }
}

// Backward, phase 3 of one column: this thread's partial Σ_t g[t] · input[t + i·d] of tap i.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ float psn_conv_grad_tap_column(const float* g, index_t g_stride,
                                                          const scalar_t* x,
                                                          const scalar_t* hist, int i, int n_t,
                                                          int k, int d, index_t stride,
                                                          index_t col) {
    int L = (k - 1) * d;
    float acc = 0.0f;
    for (int t = 0; t < n_t; ++t)
        acc += g[(index_t)t * g_stride] * psn_conv_input(x, hist, t + i * d, L, stride, col);
    return acc;
}

// Statistics of one column: Welford mean and M2 of its n_t charges (float weights).
template <typename scalar_t, typename index_t>
__device__ __forceinline__ void psn_conv_stats_column(const scalar_t* x, const scalar_t* hist,
                                                      const float* w, int n_t, int k, int d,
                                                      index_t stride, index_t col, float* mean,
                                                      float* m2) {
    int L = (k - 1) * d;
    float m = 0.0f, s = 0.0f;
    for (int t = 0; t < n_t; ++t) {
        float h = psn_conv_charge(x, hist, w, nullptr, t, k, d, L, stride, col);
        float delta = h - m;
        m += delta / (float)(t + 1);
        s += delta * (h - m);
    }
    *mean = m;
    *m2 = s;
}

// Chan's combination of two (count, mean, M2) triples into the first.
__device__ __forceinline__ void psn_welford_merge(float* n, float* m, float* m2, float nb, float mb,
                                                  float m2b) {
    float na = *n, total = na + nb;
    if (nb == 0.0f) return;
    float delta = mb - *m;
    float frac = nb / total;
    *m += delta * frac;
    *m2 += m2b + delta * delta * na * frac;
    *n = total;
}

// ------------------------------------------------------------------------------ kernels
// Common arguments: n_t steps, C channels, S positions per (b, c), R = B*S columns per channel,
// w_stride = k (per-channel weights) or 0 (shared), b_stride = 1 or 0 likewise.
// Offsets are index_t: int when every offset (n_t + L + 1) * N fits, else long long.

template <typename scalar_t, typename index_t>
__global__ void psn_conv_fire_fwd(const scalar_t* __restrict__ x, const scalar_t* __restrict__ hist,
                                  scalar_t* __restrict__ out, const float* __restrict__ weight,
                                  const int* __restrict__ code, const float* __restrict__ bias,
                                  int n_t, int C, index_t S, index_t N, int k, int d, int w_stride,
                                  int b_stride) {
    index_t col = (index_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N) return;  // no barrier in this kernel
    int c = (int)((col / S) % C);
    const int* q = code != nullptr ? code + (index_t)c * w_stride : nullptr;
    psn_conv_fire_column(x, hist, out, weight + (index_t)c * w_stride, q, bias[c * b_stride], n_t,
                         k, d, N, col);
}

// Backward of the fire op (MODE_FIRE) or of the statistics (MODE_STATS): writes grad_x and the
// per-channel sums of the weight and bias gradients, either atomically into gwb [C, k+1]
// (partial == nullptr) or, deterministically, as one row per block row into partial
// [C, gridDim.x, k+1]. g lives in dynamic shared memory ([n_t, threads] floats, then threads
// for the reduction), or in scratch [n_t, B*C*S] when that is too large (shared memory then
// holds the reduction row only). No thread returns early: every one reaches every barrier.
template <typename scalar_t, int SG, int MODE, typename index_t>
__global__ void psn_conv_bwd(const scalar_t* __restrict__ grad_s, const scalar_t* __restrict__ x,
                             const scalar_t* __restrict__ hist, scalar_t* __restrict__ grad_x,
                             const float* __restrict__ weight, const int* __restrict__ code,
                             const float* __restrict__ c0, const float* __restrict__ c1,
                             const float* __restrict__ c2, int sg, float p0, float p1, float p2,
                             float* __restrict__ gwb, float* __restrict__ partial,
                             float* __restrict__ scratch, int n_t, int C, index_t S, index_t R,
                             int k, int d, int w_stride, int b_stride) {
    PSN_SHARED_FLOATS(smem);
    index_t r = (index_t)blockIdx.x * blockDim.y + threadIdx.y;
    int c_raw = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    bool active = r < R && c_raw < C;
    int c = active ? c_raw : 0;  // inactive threads keep in-range pointers and touch nothing
    index_t stride = R * C;
    index_t b = active ? r / S : 0;
    index_t col = (b * C + c) * S + (active ? r - b * S : 0);
    unsigned int tid = psn_tid();
    float* g;
    index_t g_stride;
    float* red;
    if (scratch != nullptr) {
        g = scratch + col;
        g_stride = stride;
        red = smem;
    } else {  // g of this thread only: no other thread reads it, no barrier needed
        g = smem + tid;
        g_stride = psn_nthreads();
        red = smem + (index_t)n_t * psn_nthreads();
    }
    const float* w = weight + (index_t)c * w_stride;
    const int* q = code != nullptr ? code + (index_t)c * w_stride : nullptr;
    float gsum = 0.0f;
    if (active) {
        float a1 = MODE == PSN_MODE_STATS ? c1[c] : 0.0f;
        float a2 = MODE == PSN_MODE_STATS ? c2[c] : 0.0f;
        float a0 = MODE == PSN_MODE_STATS ? c0[c] : c0[c * b_stride];
        gsum = psn_conv_grad_charge_column<scalar_t, SG, MODE>(
            grad_s, x, hist, w, q, a0, a1, a2, sg, p0, p1, p2, g, g_stride, n_t, k, d, stride, col);
        psn_conv_grad_input_column(g, g_stride, grad_x, w, q, n_t, k, d, stride, col);
    }
    for (int i = 0; i <= k; ++i) {
        float v = 0.0f;
        if (active)
            v = i < k ? psn_conv_grad_tap_column(g, g_stride, x, hist, i, n_t, k, d, stride, col)
                      : gsum;
        v = psn_block_sum(v, red);
        if (threadIdx.y == 0 && c_raw < C) {
            if (partial != nullptr)
                partial[((index_t)c_raw * gridDim.x + blockIdx.x) * (k + 1) + i] = v;
            else
                atomicAdd(gwb + (index_t)c_raw * (k + 1) + i, v);
        }
    }
}

// Per-channel statistics of the charge: one (count, mean, M2) row per block row into
// partial [C, gridDim.x, 3]; dynamic shared memory holds 3 * threads floats. The merge is a
// tree over threadIdx.y like psn_block_sum (any blockDim.y).
template <typename scalar_t, typename index_t>
__global__ void psn_conv_stats_fwd(const scalar_t* __restrict__ x, const scalar_t* __restrict__ hist,
                                   const float* __restrict__ weight, float* __restrict__ partial,
                                   int n_t, int C, index_t S, index_t R, int k, int d,
                                   int w_stride) {
    PSN_SHARED_FLOATS(smem);
    unsigned int nt = psn_nthreads();
    float* sn = smem;
    float* sm = smem + nt;
    float* s2 = smem + 2 * nt;
    unsigned int tx = threadIdx.x, ty = threadIdx.y, nx = blockDim.x, ny = blockDim.y;
    unsigned int tid = psn_tid();
    index_t r = (index_t)blockIdx.x * blockDim.y + threadIdx.y;
    int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    if (r < R && c < C) {
        index_t b = r / S;
        index_t col = (b * C + c) * S + (r - b * S);
        psn_conv_stats_column(x, hist, weight + (index_t)c * w_stride, n_t, k, d, R * C, col, &m,
                              &m2);
        n = (float)n_t;
    }
    sn[tid] = n;
    sm[tid] = m;
    s2[tid] = m2;
    __syncthreads();
    for (unsigned int s = psn_tree_span(ny) / 2; s > 0; s >>= 1) {
        if (ty < s && ty + s < ny) {
            unsigned int o = (ty + s) * nx + tx;
            psn_welford_merge(sn + tid, sm + tid, s2 + tid, sn[o], sm[o], s2[o]);
        }
        __syncthreads();
    }
    if (ty == 0 && c < C) {
        float* out = partial + ((index_t)c * gridDim.x + blockIdx.x) * 3;
        out[0] = sn[tx];
        out[1] = sm[tx];
        out[2] = s2[tx];
    }
}
