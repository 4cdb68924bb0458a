// Causal, dilated, channel-wise temporal convolution + fire (sliding PSN, MFPSN), its backward,
// and the per-channel statistics of its charge (MFPSN's batch-norm threshold).
//
// Layout: x [T, B, C, S] contiguous, N = B*C*S columns (b, c, s); one thread per column walks
// over time. history [L, B, C, S] holds the L = (k-1)*d inputs before x[0] (null: zeros).
// H[t] = Σ_i w_i · x[t − (k−1−i)·d], summed oldest tap first with every product and sum rounded
// on its own, exactly as the reference sums it.
//
// Two families of kernels, chosen by the template argument K:
// * K in {4, 8, 16} serves k <= K. A thread walks its column one dilation class t ≡ r (mod d)
//   after the other, so that every input is read from memory once and then held in a window of
//   K registers; the taps sit in registers too (for K = 16 in shared memory, read back at every
//   use, to stay within 64 registers). Window slots that k does not use are never applied.
//   The backward walks backwards in time and keeps g = dLoss/dH of the last K steps in a
//   shared-memory ring, so grad_x, the weight and bias gradients and the recomputed charge come
//   out of one pass over grad_s and x.
// * K = 0 serves any k: every output re-reads its k inputs (L1); the backward writes g to a
//   global fp32 scratch and reads it back.
// The forward numbers its threads by the column's offset (1-D grid over N), so a warp reads 32
// consecutive elements whatever S is. The backward and the statistics reduce per channel, so they
// use 2-D blocks: threadIdx.x picks a channel (c = blockIdx.y * blockDim.x + threadIdx.x),
// threadIdx.y a column r = (b, s) of it (r = blockIdx.x * blockDim.y + threadIdx.y), and the
// per-channel sums are trees over threadIdx.y (psn_block_sums). Every kernel is limited to 64
// registers (__launch_bounds__(256, 4)): 50% occupancy or more at any block size.
#include "psn_common.cuh"

#define PSN_MODE_FIRE 0
#define PSN_MODE_STATS 1
#define PSN_BOUNDS __launch_bounds__(256, 4)

typedef long long psn_index;

// Input at time p of the column at col: x for p >= 0, the history for -L <= p < 0, zero before
// (or without a history). The load is unconditional (from x[0] when there is nothing to read),
// so the compiler may issue it early.
template <typename scalar_t>
__device__ __forceinline__ float psn_input(const scalar_t* x, const scalar_t* hist, int p, int L,
                                           psn_index stride, psn_index col) {
    bool in_hist = p < 0 && p >= -L && hist != nullptr;
    const scalar_t* src = x + col;
    if (p >= 0)
        src = x + (psn_index)p * stride + col;
    else if (in_hist)
        src = hist + (psn_index)(p + L) * stride + col;
    float v = psn_load(src);
    return (p >= 0 || in_hist) ? v : 0.0f;
}

// Charge H[t] of one column read from memory, any k: float taps, or power-of-two taps applied by
// psn_apply_tap.
template <typename scalar_t, bool POW2>
__device__ __forceinline__ float psn_charge_at(const scalar_t* x, const scalar_t* hist,
                                               const float* w, int t, int k, int d,
                                               psn_index stride, psn_index col) {
    int L = (k - 1) * d;
    float h = -0.0f;  // -0 + a == a for every a: the first term is taken exactly
    for (int i = 0; i < k; ++i) {
        float v = psn_input(x, hist, t - (k - 1 - i) * d, L, stride, col);
        h = h + (POW2 ? psn_apply_tap(v, psn_pow2_code(w[i])) : v * w[i]);
    }
    return h;
}

// ------------------------------------------------------------------ forward taps (K > 0)
// Window slot s holds the input s·d steps back, multiplied by tap i = k−1−s; slot s is live when
// s < k, and live slots are summed from the highest (the oldest input) down. The taps sit in
// registers for K <= 8; for K = 16 in a row of this thread's own in shared memory (ROW floats,
// read 4 at a time: 16-byte loads, no bank conflicts), which keeps the kernel within 64
// registers.
//
// Power-of-two taps (POW2) are stored as add = (e << 23) + (sign << 31). Added to the bit
// pattern of an input whose exponent field lies in [lo, lo + span] it gives the exact product,
// a normal number, for every tap of the channel. A window holding any other input (zero,
// subnormal, inf, NaN, or one whose product would leave the normal range), and every window of
// a channel with a zero tap, is summed by psn_charge_at (psn_apply_tap) instead. Both give the
// IEEE products x * w bit for bit.
template <int K, bool POW2>
struct psn_fwd_taps {
    static constexpr bool in_registers = K <= 8;
    static constexpr int ROW = K + 4;
    float tap[in_registers ? K : 1];  // float taps, or the bits of add
    float* row;
    unsigned int lo, span, live_bits;
    int k;

    __device__ __forceinline__ bool live(int s) const { return s < k; }

    // row: this thread's ROW floats of shared memory (used for K > 8).
    __device__ __forceinline__ void load(const float* weight_c, int k_, float* row_) {
        k = k_;
        row = row_;
        int emin = 1 << 20, emax = -(1 << 20);
        bool zero = false;
        live_bits = 0u;
#pragma unroll
        for (int s = 0; s < K; ++s) {
            float v = live(s) ? weight_c[k - 1 - s] : 0.0f;
            live_bits |= live(s) ? 1u << s : 0u;
            if (POW2) {
                int code = psn_pow2_code(v);
                int e = code >> 2;
                v = psn_bits_to_float(((unsigned int)e << 23) + ((unsigned int)(code & 1) << 31));
                if (live(s)) {
                    zero = zero || (code & 2) == 0;
                    emin = e < emin ? e : emin;
                    emax = e > emax ? e : emax;
                }
            }
            if constexpr (in_registers)
                tap[s] = v;
            else
                row[s] = v;
        }
        int lo_i = 1 - emin > 1 ? 1 - emin : 1;
        int hi_i = 254 - emax < 254 ? 254 - emax : 254;
        bool none = zero || lo_i > hi_i;
        lo = none ? 256u : (unsigned int)lo_i;  // 256: no exponent field qualifies
        span = none ? 0u : (unsigned int)(hi_i - lo_i);
    }

    // 1 when a window holding input x must be summed by psn_charge_at.
    __device__ __forceinline__ unsigned int slow(float x) const {
        return (((psn_float_to_bits(x) >> 23) & 0xffu) - lo) > span ? 1u : 0u;
    }

    __device__ __forceinline__ float term(float x, float t) const {
        return POW2 ? psn_bits_to_float(psn_float_to_bits(x) + psn_float_to_bits(t)) : x * t;
    }

    // H = Σ over live slots, oldest first (power-of-two taps: the fast path).
    __device__ __forceinline__ float charge(const float (&xw)[K]) const {
        float h = -0.0f;
        if constexpr (in_registers) {
#pragma unroll
            for (int s = K - 1; s >= 0; --s)
                if (live(s)) h = h + term(xw[s], tap[s]);
        } else {
#pragma unroll
            for (int q = K / 4 - 1; q >= 0; --q) {
                float4 t4 = reinterpret_cast<const float4*>(row)[q];
                float t[4] = {t4.x, t4.y, t4.z, t4.w};
#pragma unroll
                for (int e = 3; e >= 0; --e)
                    if (live(4 * q + e)) h = h + term(xw[4 * q + e], t[e]);
            }
        }
        return h;
    }
};

// Shared memory of a forward-walking kernel with window K: the tap rows (K > 8) of nt threads.
template <int K>
__device__ __forceinline__ float* psn_fwd_row(float* smem, unsigned int tid) {
    return smem + tid * psn_fwd_taps<K, false>::ROW;
}

// U consecutive steps t_p = t0 + p·d (p < U) of a forward walk: loads x[t_p] into v[p], calls
// step(t_p, offset of x[t_p], H[t_p]) for each, then moves the window: prev[s] holds the input
// (s + 1)·d steps before the next step. Power-of-two taps: bit l of slow_mask marks a slow
// input l·d steps before the next step; a step whose window holds one is skipped and *skipped
// set, for psn_walk_forward to redo.
template <int U, typename scalar_t, int K, bool POW2, typename Step>
__device__ __forceinline__ void psn_fwd_steps(const scalar_t* x, const psn_fwd_taps<K, POW2>& taps,
                                              float (&prev)[K - 1], unsigned int& slow_mask,
                                              bool& skipped, int t0, int d, psn_index& off,
                                              psn_index jump, Step step) {
    float v[U];
#pragma unroll
    for (int p = 0; p < U; ++p) v[p] = psn_load(x + off + p * jump);
#pragma unroll
    for (int p = 0; p < U; ++p) {
        float xw[K];  // the window of step p: xw[l] = input l·d steps back (compile-time picks)
#pragma unroll
        for (int l = 0; l < K; ++l) xw[l] = l <= p ? v[p - l] : prev[l - p - 1];
        psn_index at = off + p * jump;
        if (!POW2) {
            step(t0 + p * d, at, taps.charge(xw));
            continue;
        }
        slow_mask = (slow_mask | taps.slow(v[p])) & taps.live_bits;
        if (slow_mask == 0u)
            step(t0 + p * d, at, taps.charge(xw));
        else
            skipped = true;
        slow_mask <<= 1;
    }
#pragma unroll
    for (int s = K - 2; s >= 0; --s) prev[s] = s < U ? v[U - 1 - s] : prev[s - U];
    off += U * jump;
}

// Calls step(t, off, h) with the charge H[t] of every t of the column (off: the offset of x[t]
// at this column), for r = 0..d−1 the steps t = r, r + d, ... (w: the channel's taps in memory).
// Each input of x is loaded once; the main loop runs U steps per iteration (U loads issued
// together, at most (K − U) / U register moves per step; U is what 64 registers allow). Power-of-two taps: when some window of the
// dilation class needed the general exponent arithmetic, the class is walked again afterwards
// and those steps are done from memory (rare; kept out of the unrolled code, whose registers
// it would otherwise need).
template <int U, typename scalar_t, int K, bool POW2, typename Step>
__device__ __forceinline__ void psn_walk_forward(const scalar_t* x, const scalar_t* hist,
                                                 const psn_fwd_taps<K, POW2>& taps, const float* w,
                                                 int n_t, int d, psn_index stride, psn_index col,
                                                 Step step) {
    int k = taps.k, L = (k - 1) * d;
    for (int r = 0; r < d && r < n_t; ++r) {
        float prev[K - 1];
        unsigned int slow_mask = 0u;
        bool skipped = false;
#pragma unroll
        for (int s = K - 2; s >= 0; --s) {
            prev[s] = taps.live(s + 1) ? psn_input(x, hist, r - (s + 1) * d, L, stride, col) : 0.0f;
            if (POW2) slow_mask = (slow_mask | taps.slow(prev[s])) << 1;
        }
        int count = (n_t - 1 - r) / d + 1;
        psn_index off = (psn_index)r * stride + col, jump = (psn_index)d * stride;
        int j = 0;
        for (; j + U <= count; j += U)
            psn_fwd_steps<U>(x, taps, prev, slow_mask, skipped, r + j * d, d, off, jump, step);
        for (; j < count; ++j)
            psn_fwd_steps<1>(x, taps, prev, slow_mask, skipped, r + j * d, d, off, jump, step);
        for (int t = r; POW2 && skipped && t < n_t; t += d) {
            unsigned int slow = 0u;
            for (int i = 0; i < k; ++i)
                slow |= taps.slow(psn_input(x, hist, t - (k - 1 - i) * d, L, stride, col));
            if (slow != 0u)
                step(t, (psn_index)t * stride + col,
                     psn_charge_at<scalar_t, true>(x, hist, w, t, k, d, stride, col));
        }
    }
}

// ------------------------------------------------------------------ kernels
// Common arguments: n_t steps, C channels, S positions per (b, c), N = B*C*S columns (forward),
// R = B*S columns per channel (backward, statistics), w_stride = k (per-channel weights) or 0
// (shared), b_stride = 1 or 0 likewise.

template <typename scalar_t, int K, bool POW2>
__global__ void PSN_BOUNDS psn_conv_fire_fwd(const scalar_t* __restrict__ x,
                                             const scalar_t* __restrict__ hist,
                                             scalar_t* __restrict__ out,
                                             const float* __restrict__ weight,
                                             const float* __restrict__ bias, int n_t, int C,
                                             psn_index S, psn_index N, int k, int d, int w_stride,
                                             int b_stride) {
    psn_index col = (psn_index)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N) return;  // no barrier in this kernel
    int c = (int)((col / S) % C);
    const float* w = weight + (psn_index)c * w_stride;
    float b = bias[c * b_stride];
    if constexpr (K > 0) {
        PSN_SHARED_FLOATS(smem);  // K > 8: the tap rows (psn_fwd_row)
        psn_fwd_taps<K, POW2> taps;
        taps.load(w, k, psn_fwd_row<K>(smem, threadIdx.x));
        constexpr int U = POW2 ? (K == 16 ? 2 : 4) : (K == 4 && sizeof(scalar_t) == 2 ? 16 : 8);
        psn_walk_forward<U>(x, hist, taps, w, n_t, d, N, col, [&](int, psn_index off, float h) {
            psn_store_spike(out + off, h + b >= 0.0f);
        });
    } else {
        for (int t = 0; t < n_t; ++t) {
            float h = psn_charge_at<scalar_t, POW2>(x, hist, w, t, k, d, N, col);
            psn_store_spike(out + (psn_index)t * N + col, h + b >= 0.0f);
        }
    }
}

// dLoss/dH[t] from the charge: MODE_FIRE g = grad_s · surrogate'(H + c0); MODE_STATS
// g = c1 + c2 · (H − c0), the gradient through the mean (c1 = grad_mean / n) and the biased
// variance (c2 = 2 grad_var / n, c0 = mean). COMMON: only ATan or Sigmoid (inline, no call).
template <typename scalar_t, int MODE, bool COMMON>
__device__ __forceinline__ float psn_grad_charge(const scalar_t* grad_s, float h, float c0,
                                                 float c1, float c2, int sg, float p0, float p1,
                                                 float p2) {
    if (MODE == PSN_MODE_STATS) return c1 + c2 * (h - c0);
    float sgrad = COMMON ? psn_surrogate_common(sg, h + c0, p0, p1)
                         : psn_surrogate_eval(sg, h + c0, p0, p1, p2);
    return psn_load(grad_s) * sgrad;
}

// The backward's taps: slot s of the window ↔ tap i = K−1−s, live when s >= K−k. Held in
// registers for K <= 8; for K = 16 read from the channel's row in shared memory at every use.
template <int K>
struct psn_bwd_taps {
    static constexpr bool in_registers = K <= 8;
    float w[in_registers ? K : 1];
    const float* row;  // shared memory, tap i at row[i]
    int k;

    __device__ __forceinline__ bool live(int s) const { return s >= K - k; }
    __device__ __forceinline__ float operator()(int s) const {
        if constexpr (in_registers)
            return w[s];
        else
            return row[K - 1 - s];
    }
};

// U consecutive steps of a backward walk, j = j0 + U−1−p for p < U (t_p = r + j·d, descending),
// with ring slots m0 + U−1−p (m0 = j0 mod K, a multiple of U). Window slot s holds the input at
// t_0 − (s − (K−k))·d (the oldest at s = K−1); the U inputs that enter, n[i] = x[t_0 − (k+i)·d],
// are loaded first. Per step: the charge, g, g into the ring (twice, K apart), grad_x[t_p] from
// the ring, the tap sums ts[s] (tap K−1−s) and Σ g.
template <int U, typename scalar_t, int MODE, int K>
__device__ __forceinline__ void psn_bwd_steps(const scalar_t* grad_s, const scalar_t* x,
                                              const scalar_t* hist, scalar_t* grad_x,
                                              const psn_bwd_taps<K>& tap, float c0, float c1,
                                              float c2, int sg, float p0, float p1, float p2,
                                              float* ring, unsigned int nt, int m0, int t0, int d,
                                              int L, psn_index stride, psn_index col,
                                              float (&xw)[K], float (&ts)[K], float* gsum) {
    int k = tap.k, lo = K - k;
    float n[U];
#pragma unroll
    for (int i = 0; i < U; ++i) n[i] = psn_input(x, hist, t0 - (k + i) * d, L, stride, col);
#pragma unroll
    for (int p = 0; p < U; ++p) {
        int t = t0 - p * d, m = m0 + U - 1 - p;
        float w_[K];  // the window of step p (compile-time picks)
#pragma unroll
        for (int s = 0; s < K; ++s) w_[s] = s + p < K ? xw[s + p] : n[s + p - K];
        psn_index off = (psn_index)t * stride + col;
        float h = -0.0f;
#pragma unroll
        for (int s = K - 1; s >= 0; --s)
            if (tap.live(s)) h = h + w_[s] * tap(s);
        float g = psn_grad_charge<scalar_t, MODE, true>(grad_s + off, h, c0, c1, c2, sg, p0, p1,
                                                        p2);
        ring[m * nt] = g;
        ring[(m + K) * nt] = g;
        const float* gl = ring + (m - lo) * (int)nt;  // gl[s * nt] = g[t + (s − lo)·d]
        float acc = 0.0f;
#pragma unroll
        for (int s = K - 1; s >= 0; --s)
            if (tap.live(s)) acc += tap(s) * gl[s * nt];
        psn_store(grad_x + off, acc);
#pragma unroll
        for (int s = 0; s < K; ++s)
            if (tap.live(s)) ts[s] = __fmaf_rn(g, w_[s], ts[s]);
        *gsum += g;
    }
#pragma unroll
    for (int s = 0; s < K; ++s) xw[s] = s + U < K ? xw[s + U] : n[s + U - K];
}

// Backward of one column for K > 0, walking each dilation class backwards in time, U = 4 or 8
// steps per iteration (what 64 registers allow). ring[m * nt] (m < 2K, nt threads apart) holds g of step j at m = j mod K
// and again at m + K, so g[t + l·d] for l < k sits at a fixed offset from the current slot.
// Adds the column's tap sums to ts[s] (tap K−1−s) and Σ g to *gsum.
template <typename scalar_t, int MODE, int K>
__device__ __forceinline__ void psn_conv_bwd_column(
    const scalar_t* grad_s, const scalar_t* x, const scalar_t* hist, scalar_t* grad_x,
    const psn_bwd_taps<K>& tap, float c0, float c1, float c2, int sg, float p0, float p1,
    float p2, float* ring, unsigned int nt, int n_t, int d, psn_index stride, psn_index col,
    float (&ts)[K], float* gsum) {
    constexpr int U = K == 16 && sizeof(scalar_t) == 2 ? 8 : 4;  // U divides K
    int k = tap.k, L = (k - 1) * d, lo = K - k;
    for (int r = 0; r < d && r < n_t; ++r) {
#pragma unroll
        for (int m = 0; m < 2 * K; ++m) ring[m * nt] = 0.0f;  // g after the last step: none
        int count = (n_t - 1 - r) / d + 1;
        int t_last = r + (count - 1) * d;
        float xw[K];
#pragma unroll
        for (int s = 0; s < K; ++s)
            xw[s] = tap.live(s) ? psn_input(x, hist, t_last - (s - lo) * d, L, stride, col) : 0.0f;
        int j = count - 1;
        for (; j >= 0 && (j + 1) % U != 0; --j)
            psn_bwd_steps<1, scalar_t, MODE, K>(grad_s, x, hist, grad_x, tap, c0, c1, c2, sg, p0,
                                                p1, p2, ring, nt, j % K, r + j * d, d, L, stride,
                                                col, xw, ts, gsum);
        for (; j >= 0; j -= U)
            psn_bwd_steps<U, scalar_t, MODE, K>(grad_s, x, hist, grad_x, tap, c0, c1, c2, sg, p0,
                                                p1, p2, ring, nt, (j - U + 1) % K, r + j * d, d, L,
                                                stride, col, xw, ts, gsum);
    }
}

// Backward of the fire op (MODE_FIRE) or of the statistics (MODE_STATS): writes grad_x and the
// per-channel sums of the weight and bias gradients, either atomically into gwb [C, k+1]
// (partial == nullptr) or, deterministically, as one row per block row into partial
// [C, gridDim.x, k+1]. Dynamic shared memory (_host.conv_bwd_smem): K > 0, the g ring of 2K
// floats per thread (then the K+1 sums of the reduction) and, for K = 16, a row of K+1 floats
// (odd: no bank conflicts) with the taps of each channel of the block; K = 0, one float per
// thread, with g in scratch [n_t, B*C*S]. With MODE_FIRE, K > 0 serves the surrogates ATan and
// Sigmoid only (the launcher sends the others to K = 0). No thread returns early: every one
// reaches every barrier.
template <typename scalar_t, int MODE, int K>
__global__ void PSN_BOUNDS psn_conv_bwd(
    const scalar_t* __restrict__ grad_s, const scalar_t* __restrict__ x,
    const scalar_t* __restrict__ hist, scalar_t* __restrict__ grad_x,
    const float* __restrict__ weight, const float* __restrict__ c0, const float* __restrict__ c1,
    const float* __restrict__ c2, int sg, float p0, float p1, float p2, float* __restrict__ gwb,
    float* __restrict__ partial, float* __restrict__ scratch, int n_t, int C, psn_index S,
    psn_index R, int k, int d, int w_stride, int b_stride) {
    PSN_SHARED_FLOATS(smem);
    psn_index r = (psn_index)blockIdx.x * blockDim.y + threadIdx.y;
    int c_raw = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    bool active = r < R && c_raw < C;
    int c = active ? c_raw : 0;  // inactive threads keep in-range pointers and touch nothing
    psn_index stride = R * C;
    psn_index b = active ? r / S : 0;
    psn_index col = (b * C + c) * S + (active ? r - b * S : 0);
    unsigned int nt = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
    const float* w = weight + (psn_index)c * w_stride;
    float a0 = MODE == PSN_MODE_STATS ? c0[c] : c0[c * b_stride];
    float a1 = MODE == PSN_MODE_STATS ? c1[c] : 0.0f;
    float a2 = MODE == PSN_MODE_STATS ? c2[c] : 0.0f;
    auto emit = [&](int i, float v) {  // thread row 0 holds the block's sum of tap i (i = k: bias)
        if (threadIdx.y == 0 && c_raw < C) {
            if (partial != nullptr)
                partial[((psn_index)c_raw * gridDim.x + blockIdx.x) * (k + 1) + i] = v;
            else
                atomicAdd(gwb + (psn_index)c_raw * (k + 1) + i, v);
        }
    };
    if constexpr (K > 0) {
        psn_bwd_taps<K> tap;
        tap.k = k;
        if constexpr (psn_bwd_taps<K>::in_registers) {
#pragma unroll
            for (int s = 0; s < K; ++s) tap.w[s] = tap.live(s) ? w[K - 1 - s] : 0.0f;
        } else {
            float* row = smem + 2 * K * nt + threadIdx.x * (K + 1);  // written by thread row 0
            if (threadIdx.y == 0)
                for (int i = 0; i < K; ++i) row[i] = i < k ? w[i] : 0.0f;
            __syncthreads();
            tap.row = row;
        }
        float v[K + 1];
#pragma unroll
        for (int s = 0; s <= K; ++s) v[s] = 0.0f;
        if (active) {
            float ts[K];
#pragma unroll
            for (int s = 0; s < K; ++s) ts[s] = 0.0f;
            psn_conv_bwd_column<scalar_t, MODE, K>(grad_s, x, hist, grad_x, tap, a0, a1, a2, sg,
                                                  p0, p1, p2, smem + tid, nt, n_t, d, stride, col,
                                                  ts, &v[K]);
#pragma unroll
            for (int s = 0; s < K; ++s) v[s] = ts[K - 1 - s];  // tap i at v[i]
        }
        psn_block_sums(v, smem);  // slot (i, tid) of the reduction is this thread's ring slot i
#pragma unroll
        for (int i = 0; i < K; ++i)
            if (i < k) emit(i, v[i]);
        emit(k, v[K]);
        return;
    }
    // K = 0: g to the scratch, then grad_x, then one tap at a time.
    int L = (k - 1) * d;
    float* g = scratch + col;
    float gsum = 0.0f;
    if (active) {
        for (int t = 0; t < n_t; ++t) {
            float h = psn_charge_at<scalar_t, false>(x, hist, w, t, k, d, stride, col);
            float gt = psn_grad_charge<scalar_t, MODE, false>(grad_s + (psn_index)t * stride + col,
                                                              h, a0, a1, a2, sg, p0, p1, p2);
            g[(psn_index)t * stride] = gt;
            gsum += gt;
        }
        for (int u = 0; u < n_t; ++u) {
            float acc = 0.0f;
            for (int i = 0; i < k; ++i) {
                int t = u + L - i * d;  // g after the last step counts as zero
                acc += w[i] * (t < n_t ? g[(psn_index)t * stride] : 0.0f);
            }
            psn_store(grad_x + (psn_index)u * stride + col, acc);
        }
    }
    for (int i = 0; i <= k; ++i) {
        float v[1] = {gsum};
        if (i < k) {
            v[0] = 0.0f;
            for (int t = 0; active && t < n_t; ++t)
                v[0] = __fmaf_rn(g[(psn_index)t * stride],
                                 psn_input(x, hist, t - (k - 1 - i) * d, L, stride, col), v[0]);
        }
        psn_block_sums(v, smem);
        emit(i, v[0]);
    }
}

// Chan's combination of two (count, mean, M2) triples into the first.
__device__ __forceinline__ void psn_stats_merge(float* n, float* m, float* m2, float nb, float mb,
                                                  float m2b) {
    float na = *n, total = na + nb;
    if (nb == 0.0f) return;
    float delta = mb - *m;
    float frac = nb / total;
    *m += delta * frac;
    *m2 += m2b + delta * delta * na * frac;
    *n = total;
}

// Per-channel statistics of the charge (float taps). Each column sums its n_t charges shifted by
// its first one, z = H − H_first (sums of z and z², no division per step), turns them into its
// (count, mean, M2), and the block merges those with Chan's formula in a tree over threadIdx.y
// (any blockDim.y): one row per block row into partial [C, gridDim.x, 3]. Dynamic shared memory
// holds 3 floats per thread, then (K > 8) the tap rows of psn_fwd_row.
template <typename scalar_t, int K>
__global__ void PSN_BOUNDS psn_conv_stats_fwd(const scalar_t* __restrict__ x,
                                              const scalar_t* __restrict__ hist,
                                              const float* __restrict__ weight,
                                              float* __restrict__ partial, int n_t, int C,
                                              psn_index S, psn_index R, int k, int d,
                                              int w_stride) {
    PSN_SHARED_FLOATS(smem);
    unsigned int tx = threadIdx.x, ty = threadIdx.y, nx = blockDim.x, ny = blockDim.y;
    unsigned int nt = nx * ny, tid = ty * nx + tx;
    float* sn = smem;
    float* sm = smem + nt;
    float* s2 = smem + 2 * nt;
    psn_index r = (psn_index)blockIdx.x * blockDim.y + threadIdx.y;
    int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    if (r < R && c < C) {
        psn_index b = r / S;
        psn_index col = (b * C + c) * S + (r - b * S);
        psn_index stride = R * C;
        const float* w = weight + (psn_index)c * w_stride;
        float shift = 0.0f, z1 = 0.0f, z2 = 0.0f;
        auto sums = [&](int t, psn_index, float h) {
            if (t == 0) shift = h;  // t = 0 comes first in every walk
            float z = h - shift;
            z1 += z;
            z2 = __fmaf_rn(z, z, z2);
        };
        if constexpr (K > 0) {
            psn_fwd_taps<K, false> taps;
            taps.load(w, k, psn_fwd_row<K>(smem + 3 * nt, tid));
            psn_walk_forward<8>(x, hist, taps, w, n_t, d, stride, col, sums);
        } else {
            for (int t = 0; t < n_t; ++t)
                sums(t, 0, psn_charge_at<scalar_t, false>(x, hist, w, t, k, d, stride, col));
        }
        n = (float)n_t;
        float mean_z = z1 / n;
        m = shift + mean_z;
        m2 = fmaxf(z2 - z1 * mean_z, 0.0f);
    }
    sn[tid] = n;
    sm[tid] = m;
    s2[tid] = m2;
    __syncthreads();
    for (unsigned int s = psn_tree_span(ny) / 2; s > 0; s >>= 1) {
        if (ty < s && ty + s < ny) {
            unsigned int o = (ty + s) * nx + tx;
            psn_stats_merge(sn + tid, sm + tid, s2 + tid, sn[o], sm[o], s2[o]);
        }
        __syncthreads();
    }
    if (ty == 0 && c < C) {
        float* out = partial + ((psn_index)c * gridDim.x + blockIdx.x) * 3;
        out[0] = sn[tx];
        out[1] = sm[tx];
        out[2] = s2[tx];
    }
}
