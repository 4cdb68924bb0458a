// Dense temporal mix + fire (PSN, masked PSN): H = W @ X + b with X = x [T_in, M].
// One thread per column m, looping over time; H stays in registers. The backward writes
// g = dLoss/dH [T_out, M] (fp32) for the weight gradient, which PyTorch reduces with one GEMM.
#include "psn_common.cuh"

typedef long long psn_index;

// Charge of output step t of one column, in fp32.
template <typename scalar_t>
__device__ __forceinline__ float psn_dense_charge(const scalar_t* x, const float* w, int t,
                                                  int t_in, psn_index M, psn_index m) {
    const float* wt = w + t * t_in;
    float h = 0.0f;
    for (int i = 0; i < t_in; ++i) h += wt[i] * psn_load(x + (psn_index)i * M + m);
    return h;
}

template <typename scalar_t>
__global__ void __launch_bounds__(256)
    psn_dense_fire_fwd(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                       const float* __restrict__ weight, const float* __restrict__ bias, int t_in,
                       int t_out, psn_index M) {
    psn_index m = (psn_index)blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= M) return;
    for (int t = 0; t < t_out; ++t) {
        float v = psn_dense_charge(x, weight, t, t_in, M, m) + bias[t];
        psn_store_spike(out + (psn_index)t * M + m, v >= 0.0f);
    }
}

// Backward of one column: g[t] = grad_s[t] · surrogate'(H[t] + b[t]) into g [T_out, M], then
// grad_x[i] = Σ_t W[t, i] · g[t].
template <typename scalar_t>
__global__ void __launch_bounds__(256)
    psn_dense_fire_bwd(const scalar_t* __restrict__ grad_s, const scalar_t* __restrict__ x,
                       const float* __restrict__ weight, const float* __restrict__ bias, int sg,
                       float p0, float p1, float p2, float* __restrict__ g,
                       scalar_t* __restrict__ grad_x, int t_in, int t_out, psn_index M) {
    psn_index m = (psn_index)blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= M) return;
    for (int t = 0; t < t_out; ++t) {
        float h = psn_dense_charge(x, weight, t, t_in, M, m) + bias[t];
        g[(psn_index)t * M + m] =
            psn_load(grad_s + (psn_index)t * M + m) * psn_surrogate_eval(sg, h, p0, p1, p2);
    }
    for (int i = 0; i < t_in; ++i) {
        float acc = 0.0f;
        for (int t = 0; t < t_out; ++t) acc += weight[t * t_in + i] * g[(psn_index)t * M + m];
        psn_store(grad_x + (psn_index)i * M + m, acc);
    }
}
