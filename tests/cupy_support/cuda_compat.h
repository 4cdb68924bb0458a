// Lets the kernel sources compile as host C++ for the CPU tests: CUDA qualifiers become
// nothing, the built-in thread indices are globals that the harness sets, shared memory is a
// static array, and a block has one thread (so __syncthreads has nothing to wait for).
#pragma once
#include <math.h>

#include <cstring>

#define __device__
#define __global__
#define __forceinline__ inline

struct psn_dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
inline psn_dim3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0}, blockDim{1, 1, 1}, gridDim{1, 1, 1};

inline float psn_emu_smem[1 << 16];
#define PSN_SHARED_FLOATS(name) float* name = psn_emu_smem

inline void __syncthreads() {}
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned int)v); }
inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
