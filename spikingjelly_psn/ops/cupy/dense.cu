// Dense temporal mix + fire (PSN, masked PSN): H = W @ X + b with X = x [T_in, M].
// One thread per column m, looping over time; H stays in registers. The backward writes
// g = dLoss/dH [T_out, M] (fp32) for the weight gradient, which PyTorch reduces with one GEMM.
#include "psn_common.cuh"

// Charge of output step t of one column, in fp32.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ float psn_dense_charge(const scalar_t* x, const float* w, int t,
                                                  int t_in, index_t M, index_t m) {
    const float* wt = w + t * t_in;
    float h = 0.0f;
    for (int i = 0; i < t_in; ++i) h += wt[i] * psn_load(x + (index_t)i * M + m);
    return h;
}

// Forward of one column: spikes Θ(H[t] + b[t]).
template <typename scalar_t, typename index_t>
__device__ __forceinline__ void psn_dense_fire_column(const scalar_t* x, scalar_t* out,
                                                      const float* w, const float* bias,
                                                      int t_in, int t_out, index_t M, index_t m) {
    for (int t = 0; t < t_out; ++t) {
        float v = psn_dense_charge(x, w, t, t_in, M, m) + bias[t];
        psn_store(out + (index_t)t * M + m, v >= 0.0f ? 1.0f : 0.0f);
    }
}

// Backward of one column: g[t] = grad_s[t] · surrogate'(H[t] + b[t]) into g [T_out, M], then
// grad_x[i] = Σ_t W[t, i] · g[t].
template <typename scalar_t, int SG, typename index_t>
__device__ __forceinline__ void psn_dense_bwd_column(const scalar_t* grad_s, const scalar_t* x,
                                                     const float* w, const float* bias, int sg, float p0,
                                                     float p1, float p2, float* g,
                                                     scalar_t* grad_x, int t_in, int t_out,
                                                     index_t M, index_t m) {
    for (int t = 0; t < t_out; ++t) {
        float h = psn_dense_charge(x, w, t, t_in, M, m) + bias[t];
        g[(index_t)t * M + m] =
            psn_load(grad_s + (index_t)t * M + m) * psn_surrogate_grad<SG>(h, sg, p0, p1, p2);
    }
    for (int i = 0; i < t_in; ++i) {
        float acc = 0.0f;
        for (int t = 0; t < t_out; ++t) acc += w[t * t_in + i] * g[(index_t)t * M + m];
        psn_store(grad_x + (index_t)i * M + m, acc);
    }
}

template <typename scalar_t, typename index_t>
__global__ void psn_dense_fire_fwd(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                   const float* __restrict__ weight,
                                   const float* __restrict__ bias, int t_in, int t_out,
                                   index_t M) {
    index_t m = (index_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (m < M) psn_dense_fire_column(x, out, weight, bias, t_in, t_out, M, m);
}

template <typename scalar_t, int SG, typename index_t>
__global__ void psn_dense_fire_bwd(const scalar_t* __restrict__ grad_s,
                                   const scalar_t* __restrict__ x, const float* __restrict__ weight,
                                   const float* __restrict__ bias, int sg, float p0, float p1,
                                   float p2, float* __restrict__ g, scalar_t* __restrict__ grad_x, int t_in,
                                   int t_out, index_t M) {
    index_t m = (index_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (m < M)
        psn_dense_bwd_column<scalar_t, SG>(grad_s, x, weight, bias, sg, p0, p1, p2, g, grad_x, t_in,
                                           t_out, M, m);
}
