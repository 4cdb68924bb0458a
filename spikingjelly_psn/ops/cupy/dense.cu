// Dense temporal mix + fire (PSN, masked PSN): H = W @ X + b with X = x [T_in, M].
// One thread per column m; H stays in registers. The backward writes g = dLoss/dH [T_out, M]
// (fp32) for the weight gradient, which PyTorch reduces with one GEMM.
//
// TI = 8, 16 or 32 serves T_in <= TI and T_out <= PSN_DENSE_MAX_OUT: the column is loaded once
// into TI registers (entries past T_in are zero) and W, zero-padded to [T_out, TI] rows, sits in
// shared memory, read 4 taps at a time by every thread of the block (a broadcast). TI = 0 serves
// any shape, reading x and W from memory for every term. Sums are fp32 FMAs in ascending input
// step (the reference's addmm sums in its BLAS's order: dense spikes agree except where the
// charge is within rounding of the threshold).
#include "psn_common.cuh"

#define PSN_DENSE_MAX_OUT 64

typedef long long psn_index;

// W [t_out, t_in] into shared rows of TI floats (zeros past t_in), by every thread of the block.
template <int TI>
__device__ __forceinline__ void psn_dense_stage_weights(float* rows, const float* weight,
                                                        int t_in, int t_out) {
    unsigned int nt = blockDim.x;
    for (unsigned int e = threadIdx.x; e < (unsigned int)(t_out * TI); e += nt) {
        int t = (int)(e / TI), i = (int)(e % TI);
        rows[e] = i < t_in ? weight[t * t_in + i] : 0.0f;
    }
    __syncthreads();
}

// Σ_i row[i] · xc[i] with the row read 4 at a time from shared memory.
template <int TI>
__device__ __forceinline__ float psn_dense_dot(const float* row, const float (&xc)[TI]) {
    float h = 0.0f;
#pragma unroll
    for (int q = 0; q < TI / 4; ++q) {
        float4 w4 = reinterpret_cast<const float4*>(row)[q];
        h = __fmaf_rn(w4.x, xc[4 * q], h);
        h = __fmaf_rn(w4.y, xc[4 * q + 1], h);
        h = __fmaf_rn(w4.z, xc[4 * q + 2], h);
        h = __fmaf_rn(w4.w, xc[4 * q + 3], h);
    }
    return h;
}

// Stages the weights in shared memory (the block's only barrier), then loads column m of x,
// steps 0..t_in-1, into registers (zeros past t_in). False for a thread past the last column.
template <typename scalar_t, int TI>
__device__ __forceinline__ bool psn_dense_stage(float* rows, float (&xc)[TI], const float* weight,
                                                const scalar_t* x, int t_in, int t_out,
                                                psn_index M, psn_index m) {
    psn_dense_stage_weights<TI>(rows, weight, t_in, t_out);
    if (m >= M) return false;
#pragma unroll
    for (int i = 0; i < TI; ++i) xc[i] = i < t_in ? psn_load(x + (psn_index)i * M + m) : 0.0f;
    return true;
}

// Charge of output step t of one column read from memory (TI = 0).
template <typename scalar_t>
__device__ __forceinline__ float psn_dense_charge(const scalar_t* x, const float* w, int t,
                                                  int t_in, psn_index M, psn_index m) {
    const float* wt = w + t * t_in;
    float h = 0.0f;
    for (int i = 0; i < t_in; ++i) h = __fmaf_rn(wt[i], psn_load(x + (psn_index)i * M + m), h);
    return h;
}

// Dynamic shared memory: TI > 0, T_out rows of TI floats.
template <typename scalar_t, int TI>
__global__ void __launch_bounds__(256, 4)
    psn_dense_fire_fwd(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                       const float* __restrict__ weight, const float* __restrict__ bias, int t_in,
                       int t_out, psn_index M) {
    psn_index m = (psn_index)blockIdx.x * blockDim.x + threadIdx.x;
    if constexpr (TI > 0) {
        PSN_SHARED_FLOATS(rows);
        float xc[TI];
        if (!psn_dense_stage<scalar_t, TI>(rows, xc, weight, x, t_in, t_out, M, m)) return;
#pragma unroll 1
        for (int t = 0; t < t_out; ++t) {
            float h = psn_dense_dot<TI>(rows + t * TI, xc) + bias[t];
            psn_store_spike(out + (psn_index)t * M + m, h >= 0.0f);
        }
    } else {
        if (m >= M) return;
        for (int t = 0; t < t_out; ++t) {
            float h = psn_dense_charge(x, weight, t, t_in, M, m) + bias[t];
            psn_store_spike(out + (psn_index)t * M + m, h >= 0.0f);
        }
    }
}

// Backward of one column: g[t] = grad_s[t] · surrogate'(H[t] + b[t]) into g [T_out, M], then
// grad_x[i] = Σ_t W[t, i] · g[t] (g read back: this thread's own writes). Dynamic shared memory:
// TI > 0, T_out rows of TI floats.
template <typename scalar_t, int TI>
__global__ void __launch_bounds__(256, 4)
    psn_dense_fire_bwd(const scalar_t* __restrict__ grad_s, const scalar_t* __restrict__ x,
                       const float* __restrict__ weight, const float* __restrict__ bias, int sg,
                       float p0, float p1, float p2, float* __restrict__ g,
                       scalar_t* __restrict__ grad_x, int t_in, int t_out, psn_index M) {
    psn_index m = (psn_index)blockIdx.x * blockDim.x + threadIdx.x;
    if constexpr (TI > 0) {
        PSN_SHARED_FLOATS(rows);
        float xc[TI];
        if (!psn_dense_stage<scalar_t, TI>(rows, xc, weight, x, t_in, t_out, M, m)) return;
        for (int t = 0; t < t_out; ++t) {
            float h = psn_dense_dot<TI>(rows + t * TI, xc) + bias[t];
            g[(psn_index)t * M + m] =
                psn_load(grad_s + (psn_index)t * M + m) * psn_surrogate_eval(sg, h, p0, p1, p2);
        }
    } else {
        if (m >= M) return;
        for (int t = 0; t < t_out; ++t) {
            float h = psn_dense_charge(x, weight, t, t_in, M, m) + bias[t];
            g[(psn_index)t * M + m] =
                psn_load(grad_s + (psn_index)t * M + m) * psn_surrogate_eval(sg, h, p0, p1, p2);
        }
    }
    for (int i = 0; i < t_in; ++i) {
        float acc = 0.0f;
        for (int t = 0; t < t_out; ++t)
            acc = __fmaf_rn(weight[t * t_in + i], g[(psn_index)t * M + m], acc);
        psn_store(grad_x + (psn_index)i * M + m, acc);
    }
}
