// Device code shared by every PSN kernel: storage types, fp16/bf16 conversions, exponent
// arithmetic for power-of-two taps, surrogate derivatives and a block reduction.
//
// Everything here is plain C++ arithmetic on floats and integers, so the same text compiles
// with NVRTC for the GPU and with a host C++ compiler (plus a small compatibility header) for
// the CPU tests. The only device-only lines are the fp16/bf16 conversions, which use the
// hardware's exact conversion instructions on the GPU and the integer code below on the CPU
// (both round to nearest even; the CPU tests check the integer code against PyTorch).
// Build with the launcher's options (_compile.OPTIONS): no contraction to FMA (every product and
// sum rounded on its own, as the PyTorch reference rounds it) and no flush of subnormals to zero.
#pragma once

// Dynamic shared memory, 16-byte aligned (some kernels read it 4 floats at a time).
#ifndef PSN_SHARED_FLOATS
#define PSN_SHARED_FLOATS(name) extern __shared__ __align__(16) float name[]
#endif

// ---------------------------------------------------------------- storage types
// fp16 and bf16 are stored as raw 16-bit patterns and converted with integer arithmetic
// (round to nearest even), which needs no CUDA header and behaves the same on every compiler.
struct psn_half {
    unsigned short bits;
};
struct psn_bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float psn_bits_to_float(unsigned int u) { return __uint_as_float(u); }
__device__ __forceinline__ unsigned int psn_float_to_bits(float f) { return __float_as_uint(f); }

__device__ __forceinline__ float psn_half_to_float(unsigned short h) {
    unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    unsigned int ex = (h >> 10) & 0x1fu;
    unsigned int man = h & 0x3ffu;
    if (ex == 0x1fu) return psn_bits_to_float(sign | 0x7f800000u | (man << 13));
    if (ex == 0u) {
        if (man == 0u) return psn_bits_to_float(sign);
        int sh = __clz((int)man) - 21;  // moves the leading one of the subnormal to bit 10
        man = (man << sh) & 0x3ffu;
        return psn_bits_to_float(sign | ((unsigned int)(113 - sh) << 23) | (man << 13));
    }
    return psn_bits_to_float(sign | ((ex + 112u) << 23) | (man << 13));
}

__device__ __forceinline__ unsigned short psn_float_to_half(float f) {
    unsigned int u = psn_float_to_bits(f);
    unsigned int sign = (u >> 16) & 0x8000u;
    unsigned int a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to infinity
    if (a >= 0x38800000u) {                                       // normal half
        unsigned int odd = (a >> 13) & 1u;
        a += 0xc8000fffu + odd;
        return (unsigned short)(sign | (a >> 13));
    }
    if (a <= 0x33000000u) return (unsigned short)sign;  // at most half the smallest subnormal
    int e = (int)(a >> 23);
    unsigned int m = (a & 0x7fffffu) | 0x800000u;
    int sh = 126 - e;  // 14..24: value / 2^-24 = m / 2^sh
    unsigned int q = m >> sh;
    unsigned int rem = m & ((1u << sh) - 1u);
    unsigned int half_ulp = 1u << (sh - 1);
    if (rem > half_ulp || (rem == half_ulp && (q & 1u))) q += 1u;
    return (unsigned short)(sign | q);
}

__device__ __forceinline__ float psn_bf16_to_float(unsigned short h) {
    return psn_bits_to_float((unsigned int)h << 16);
}

__device__ __forceinline__ unsigned short psn_float_to_bf16(float f) {
    unsigned int u = psn_float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

__device__ __forceinline__ float psn_load(const float* p) { return *p; }
__device__ __forceinline__ void psn_store(float* p, float v) { *p = v; }
__device__ __forceinline__ float psn_load(const psn_bf16* p) { return psn_bf16_to_float(p->bits); }
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float psn_load(const psn_half* p) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits));
    return f;
}
__device__ __forceinline__ void psn_store(psn_half* p, float v) {
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(p->bits) : "f"(v));
}
#else
__device__ __forceinline__ float psn_load(const psn_half* p) { return psn_half_to_float(p->bits); }
__device__ __forceinline__ void psn_store(psn_half* p, float v) { p->bits = psn_float_to_half(v); }
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800  // cvt to bf16 needs sm_80
__device__ __forceinline__ void psn_store(psn_bf16* p, float v) {
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(p->bits) : "f"(v));
}
#else
__device__ __forceinline__ void psn_store(psn_bf16* p, float v) { p->bits = psn_float_to_bf16(v); }
#endif

// A spike (1) or none (0), stored without a conversion.
__device__ __forceinline__ void psn_store_spike(float* p, bool s) { *p = s ? 1.0f : 0.0f; }
__device__ __forceinline__ void psn_store_spike(psn_half* p, bool s) {
    p->bits = s ? (unsigned short)0x3c00u : (unsigned short)0u;
}
__device__ __forceinline__ void psn_store_spike(psn_bf16* p, bool s) {
    p->bits = s ? (unsigned short)0x3f80u : (unsigned short)0u;
}

// ---------------------------------------------------------------- exponent arithmetic
// x * 2^e by adding e to the exponent field: exact, and bit-identical to the IEEE product
// (round to nearest even) for zero, subnormal inputs and results, overflow, inf and NaN.
__device__ __forceinline__ float psn_ldexp(float x, int e) {
    unsigned int u = psn_float_to_bits(x);
    unsigned int sign = u & 0x80000000u;
    unsigned int mag = u & 0x7fffffffu;
    if (mag == 0u || mag >= 0x7f800000u) return x;  // zero, inf, NaN
    if (e > 300) e = 300;
    if (e < -300) e = -300;
    int ex = (int)(mag >> 23);
    unsigned int man = mag & 0x7fffffu;
    if (ex == 0) {  // subnormal input: normalise so that bit 23 is the leading one
        int sh = __clz((int)man) - 8;
        man <<= sh;
        ex = 1 - sh;
    } else {
        man |= 0x800000u;
    }
    int ne = ex + e;  // value = man * 2^(ne - 150), man in [2^23, 2^24)
    if (ne >= 255) return psn_bits_to_float(sign | 0x7f800000u);
    if (ne >= 1) return psn_bits_to_float(sign | ((unsigned int)ne << 23) | (man & 0x7fffffu));
    int rs = 1 - ne;  // subnormal result: man / 2^rs units of 2^-149
    if (rs > 24) return psn_bits_to_float(sign);
    unsigned int q = man >> rs;
    unsigned int rem = man & ((1u << rs) - 1u);
    unsigned int half_ulp = 1u << (rs - 1);
    if (rem > half_ulp || (rem == half_ulp && (q & 1u))) q += 1u;
    return psn_bits_to_float(sign | q);
}

// Exponent e of a power-of-two tap w = ±2^e from its magnitude bits (normal or subnormal; a
// mantissa, if any, is ignored).
__device__ __forceinline__ int psn_pow2_exponent(unsigned int mag) {
    int ex = (int)(mag >> 23);
    return ex != 0 ? ex - 127 : (31 - __clz((int)mag)) - 149;
}

// A power-of-two tap packed in an int: bit 0 sign, bit 1 "non-zero", bits 2.. the exponent.
__device__ __forceinline__ int psn_pow2_code(float w) {
    unsigned int u = psn_float_to_bits(w);
    unsigned int mag = u & 0x7fffffffu;
    int sign = (int)(u >> 31);
    if (mag == 0u) return sign;
    return psn_pow2_exponent(mag) * 4 + 2 + sign;
}

// x times the tap of ``code``: exponent arithmetic, bit-identical to x * (±2^e) (and to x * ±0).
__device__ __forceinline__ float psn_apply_tap(float x, int code) {
    bool negative = (code & 1) != 0;
    if ((code & 2) == 0) return x * (negative ? -0.0f : 0.0f);
    float r = psn_ldexp(x, code >> 2);
    return negative ? -r : r;
}

// ---------------------------------------------------------------- surrogate derivatives
// The ids match spikingjelly_psn/ops/surrogates.py; p0..p2 are the constants it derives
// from the SpikingJelly surrogate's parameters.
#define PSN_SG_ATAN 0
#define PSN_SG_SIGMOID 1
#define PSN_SG_PIECEWISE_QUADRATIC 2
#define PSN_SG_PIECEWISE_EXP 3
#define PSN_SG_SOFT_SIGN 4
#define PSN_SG_SUPER_SPIKE 5
#define PSN_SG_NONZERO_SIGN_LOG_ABS 6
#define PSN_SG_ERF 7
#define PSN_SG_PIECEWISE_LEAKY_RELU 8
#define PSN_SG_SQUAREWAVE_FOURIER_SERIES 9
#define PSN_SG_S2NN 10
#define PSN_SG_Q_PSEUDO_SPIKE 11
#define PSN_SG_LEAKY_K_RELU 12
#define PSN_SG_FAKE_NUMERICAL_GRADIENT 13
#define PSN_SG_LOG_TAILED_RELU 14
#define PSN_SG_RECT 15
#define PSN_SG_DETERMINISTIC_PASS 16
#define PSN_SG_COUNT 17

// 1 / (1 + e^-v). The quotient is __fdividef (within 2 ulp, and no slow-path call, which would
// make the unrolled backward kernels spill); it gives 0 where the exact quotient is below 2^-126.
// Surrogate derivatives only feed gradients, which match the reference to a tolerance.
__device__ __forceinline__ float psn_sigmoid(float v) { return __fdividef(1.0f, 1.0f + expf(-v)); }

// Derivative of ATan (sg == PSN_SG_ATAN) or Sigmoid (any other sg): the two surrogates that
// kernels unrolling their time loop evaluate inline, without calls.
__device__ __forceinline__ float psn_surrogate_common(int sg, float x, float p0, float p1) {
    if (sg == PSN_SG_ATAN) {  // p0 = pi*alpha/2, p1 = alpha/2
        float v = p0 * x;
        return __fdividef(p1, 1.0f + v * v);
    }
    float s = psn_sigmoid(x * p0);  // p0 = alpha
    return (1.0f - s) * s * p0;
}

// Derivative of surrogate sg at x for every surrogate but ATan and Sigmoid: one out-of-line
// copy, so that kernels that unroll their time loop inline only the two common ones.
__device__ __noinline__ float psn_surrogate_other(int sg, float x, float p0, float p1, float p2) {
    float ax = fabsf(x);
    if (sg == PSN_SG_PIECEWISE_QUADRATIC) {  // p0 = 1/alpha, p1 = alpha^2, p2 = alpha
        return ax > p0 ? 0.0f : -p1 * ax + p2;
    } else if (sg == PSN_SG_PIECEWISE_EXP) {  // p0 = alpha/2, p1 = alpha
        return p0 * expf(-p1 * ax);
    } else if (sg == PSN_SG_SOFT_SIGN) {  // p0 = 2*alpha, p1 = 1/alpha
        float v = p1 + ax;
        return 1.0f / (p0 * (v * v));
    } else if (sg == PSN_SG_SUPER_SPIKE) {  // p0 = alpha
        float v = ax + 1.0f;
        return p0 / (v * v);
    } else if (sg == PSN_SG_NONZERO_SIGN_LOG_ABS) {  // p0 = 1/alpha
        return 1.0f / (p0 + ax);
    } else if (sg == PSN_SG_ERF) {  // p0 = alpha, p1 = alpha/sqrt(pi)
        float v = x * p0;
        return expf(-(v * v)) * p1;
    } else if (sg == PSN_SG_PIECEWISE_LEAKY_RELU) {  // p0 = w, p1 = 1/(2w), p2 = c
        return ax < p0 ? p1 : p2;
    } else if (sg == PSN_SG_SQUAREWAVE_FOURIER_SERIES) {  // p0 = 2pi/T, p1 = 4/T, p2 = n
        int n = (int)p2;
        float s = 0.0f;
        for (int i = 1; i < n; ++i) s += cosf((2.0f * i - 1.0f) * p0 * x);
        return s * p1;
    } else if (sg == PSN_SG_S2NN) {  // p0 = alpha, p1 = beta
        if (x < 0.0f) {
            float s = psn_sigmoid(p0 * x);
            return p0 * s * (1.0f - s);
        }
        return p1 / (x + 1.0f);
    } else if (sg == PSN_SG_Q_PSEUDO_SPIKE) {  // p0 = 2/(alpha-1), p1 = -alpha
        return powf(1.0f + p0 * ax, p1);
    } else if (sg == PSN_SG_LEAKY_K_RELU) {  // p0 = leak, p1 = k
        return x >= 0.0f ? p1 : p0;
    } else if (sg == PSN_SG_FAKE_NUMERICAL_GRADIENT) {  // p0 = alpha
        float v = (x >= 0.0f ? 1.0f : -1.0f) / x;
        return v < p0 ? v : p0;
    } else if (sg == PSN_SG_LOG_TAILED_RELU) {  // p0 = alpha
        if (x > 1.0f) return 1.0f / x;
        return x <= 0.0f ? p0 : 1.0f;
    } else if (sg == PSN_SG_RECT) {  // p0 = 0.5/alpha, p1 = alpha
        return ax < p0 ? p1 : 0.0f;
    } else {  // PSN_SG_DETERMINISTIC_PASS
        return 1.0f;
    }
}

// Derivative of surrogate sg at x (sg is the same for the whole launch: a uniform branch).
__device__ __forceinline__ float psn_surrogate_eval(int sg, float x, float p0, float p1, float p2) {
    if (sg == PSN_SG_ATAN || sg == PSN_SG_SIGMOID) return psn_surrogate_common(sg, x, p0, p1);
    return psn_surrogate_other(sg, x, p0, p1, p2);
}

// ---------------------------------------------------------------- block reduction
// The conv kernels that reduce per channel use 2-D blocks: threadIdx.x picks a channel,
// threadIdx.y a column of it.

// Smallest power of two >= n (n >= 1): the span of the reduction tree.
__device__ __forceinline__ unsigned int psn_tree_span(unsigned int n) {
    unsigned int p = 1;
    while (p < n) p <<= 1;
    return p;
}

// Sums of v[0..N) over threadIdx.y (one set per threadIdx.x), every value in the same fixed
// tree order (deterministic), with all N sums moving up the tree together: one barrier per
// level. Any blockDim.y (at every level y is paired with y + s; a partner past the end counts
// as zero). red holds N * blockDim.x * blockDim.y floats. Every thread of the block must call
// it (it contains __syncthreads); the sums are returned in v on every thread. Slot
// (i, y, x) = red[(i * ny + y) * nx + x]: consecutive threads, consecutive words.
template <int N>
__device__ __forceinline__ void psn_block_sums(float (&v)[N], float* red) {
    unsigned int tx = threadIdx.x, ty = threadIdx.y, nx = blockDim.x, ny = blockDim.y;
    unsigned int plane = nx * ny, me = ty * nx + tx;
#pragma unroll
    for (int i = 0; i < N; ++i) red[i * plane + me] = v[i];
    __syncthreads();
    for (unsigned int s = psn_tree_span(ny) / 2; s > 0; s >>= 1) {
        if (ty < s && ty + s < ny) {
#pragma unroll
            for (int i = 0; i < N; ++i) red[i * plane + me] += red[i * plane + me + s * nx];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = red[i * plane + tx];
    __syncthreads();  // red is free again for the caller
}
