// CPU entry points over the kernel sources (compiled with cuda_compat.h): every kernel runs over
// its whole grid with the block shape it is given (one thread per block makes each block's
// partial sums one column's; real launch shapes run every thread of a block, see cuda_compat.h),
// plus the scalar device functions.
#include "cuda_compat.h"

#include "causal_conv.cu"
#include "dense.cu"

namespace {

void set_launch(unsigned int gx, unsigned int gy, unsigned int bx, unsigned int by) {
    gridDim = psn_dim3{gx, gy, 1};
    blockDim = psn_dim3{bx, by, 1};
    threadIdx = psn_dim3{0, 0, 0};
}

// Every block of the current grid, one after the other, each with all its threads.
void run_grid(const std::function<void()>& body) {
    for (unsigned int y = 0; y < gridDim.y; ++y)
        for (unsigned int x = 0; x < gridDim.x; ++x) {
            blockIdx = psn_dim3{x, y, 0};
            psn_emu_run_block(body);
        }
}

unsigned int cdiv(long long a, long long b) { return (unsigned int)((a + b - 1) / b); }

template <typename scalar_t, int K, bool POW2>
void conv_fwd(const void* x, const void* hist, void* out, const float* w, const float* bias,
              int n_t, int B, int C, int S, int k, int d, int w_stride, int b_stride, int block) {
    long long N = (long long)B * C * S;
    set_launch(cdiv(N, block), 1, (unsigned int)block, 1);
    run_grid([&] {
        psn_conv_fire_fwd<scalar_t, K, POW2>((const scalar_t*)x, (const scalar_t*)hist,
                                             (scalar_t*)out, w, bias, n_t, C, S, N, k, d,
                                             w_stride, b_stride);
    });
}

template <typename scalar_t, int MODE, int K>
void conv_bwd(const void* grad_s, const void* x, const void* hist, void* grad_x, const float* w,
              const float* c0, const float* c1, const float* c2, int sg, float p0, float p1,
              float p2, float* gwb, float* partial, float* scratch, int n_t, int B, int C, int S,
              int k, int d, int w_stride, int b_stride, int tx, int ty) {
    long long R = (long long)B * S;
    set_launch(cdiv(R, ty), cdiv(C, tx), (unsigned int)tx, (unsigned int)ty);
    run_grid([&] {
        psn_conv_bwd<scalar_t, MODE, K>((const scalar_t*)grad_s, (const scalar_t*)x,
                                        (const scalar_t*)hist, (scalar_t*)grad_x, w, c0, c1, c2,
                                        sg, p0, p1, p2, gwb, partial, scratch, n_t, C, S, R, k, d,
                                        w_stride, b_stride);
    });
}

template <typename scalar_t, int K>
void conv_stats(const void* x, const void* hist, const float* w, float* partial, int n_t, int B,
                int C, int S, int k, int d, int w_stride, int tx, int ty) {
    long long R = (long long)B * S;
    set_launch(cdiv(R, ty), cdiv(C, tx), (unsigned int)tx, (unsigned int)ty);
    run_grid([&] {
        psn_conv_stats_fwd<scalar_t, K>((const scalar_t*)x, (const scalar_t*)hist, w, partial,
                                        n_t, C, S, R, k, d, w_stride);
    });
}

template <typename scalar_t, int TI>
void dense_fwd(const void* x, void* out, const float* w, const float* bias, int t_in, int t_out,
               long long M, int block) {
    set_launch(cdiv(M, block), 1, (unsigned int)block, 1);
    run_grid([&] {
        psn_dense_fire_fwd<scalar_t, TI>((const scalar_t*)x, (scalar_t*)out, w, bias, t_in, t_out,
                                         M);
    });
}

template <typename scalar_t, int TI>
void dense_bwd(const void* grad_s, const void* x, const float* w, const float* bias, int sg,
               float p0, float p1, float p2, float* g, void* grad_x, int t_in, int t_out,
               long long M, int block) {
    set_launch(cdiv(M, block), 1, (unsigned int)block, 1);
    run_grid([&] {
        psn_dense_fire_bwd<scalar_t, TI>((const scalar_t*)grad_s, (const scalar_t*)x, w, bias, sg,
                                         p0, p1, p2, g, (scalar_t*)grad_x, t_in, t_out, M);
    });
}

// Runs CALL(scalar) for dtype 0 = fp32, 1 = fp16, 2 = bf16.
#define PSN_DTYPE(dtype, CALL)                \
    do {                                      \
        if ((dtype) == 0) CALL(float);        \
        if ((dtype) == 1) CALL(psn_half);     \
        if ((dtype) == 2) CALL(psn_bf16);     \
    } while (0)

// Runs CALL(scalar, K) for a window size 0 (generic), 4, 8 or 16.
#define PSN_WINDOW(dtype, window, CALL)                     \
    do {                                                    \
        if ((window) == 0) PSN_DTYPE(dtype, CALL##_0);      \
        if ((window) == 4) PSN_DTYPE(dtype, CALL##_4);      \
        if ((window) == 8) PSN_DTYPE(dtype, CALL##_8);      \
        if ((window) == 16) PSN_DTYPE(dtype, CALL##_16);    \
    } while (0)

// Runs CALL(scalar, TI) for a dense window 0 (generic), 8, 16 or 32.
#define PSN_DENSE_WINDOW(dtype, window, CALL)               \
    do {                                                    \
        if ((window) == 0) PSN_DTYPE(dtype, CALL##_0);      \
        if ((window) == 8) PSN_DTYPE(dtype, CALL##_8);      \
        if ((window) == 16) PSN_DTYPE(dtype, CALL##_16);    \
        if ((window) == 32) PSN_DTYPE(dtype, CALL##_32);    \
    } while (0)

}  // namespace

extern "C" {

// Order in which the threads of a block take their turns between barriers (0 ascending, 1
// descending), and the number of barriers some thread of a block never reached.
void emu_set_descending(int descending) { psn_emu.descending = descending != 0; }
long long emu_barrier_errors() { return psn_emu.errors; }

float emu_ldexp(float x, int e) { return psn_ldexp(x, e); }
float emu_apply_tap(float x, int code) { return psn_apply_tap(x, code); }
int emu_pow2_code(float w) { return psn_pow2_code(w); }

void emu_to_half(const float* in, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_float_to_half(in[i]);
}
void emu_from_half(const unsigned short* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_half_to_float(in[i]);
}
void emu_to_bf16(const float* in, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_float_to_bf16(in[i]);
}
void emu_from_bf16(const unsigned short* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_bf16_to_float(in[i]);
}

// Surrogate derivative as the kernels evaluate it: psn_surrogate_eval (every id) or, with
// common != 0, psn_surrogate_common (ATan and Sigmoid, what the register-window backward uses).
void emu_surrogate(int sg, int common, const float* x, float* out, long long n, float p0, float p1,
                   float p2) {
    for (long long i = 0; i < n; ++i)
        out[i] = common ? psn_surrogate_common(sg, x[i], p0, p1)
                        : psn_surrogate_eval(sg, x[i], p0, p1, p2);
}

void emu_conv_fwd(int dtype, int window, int pow2, const void* x, const void* hist, void* out,
                  const float* w, const float* bias, int n_t, int B, int C, int S, int k, int d,
                  int w_stride, int b_stride, int block) {
#define PSN_ARGS x, hist, out, w, bias, n_t, B, C, S, k, d, w_stride, b_stride, block
#define PSN_FWD(S_, K_)                                \
    do {                                               \
        if (pow2)                                      \
            conv_fwd<S_, K_, true>(PSN_ARGS);          \
        else                                           \
            conv_fwd<S_, K_, false>(PSN_ARGS);         \
    } while (0)
#define PSN_FWD_0(S_) PSN_FWD(S_, 0)
#define PSN_FWD_4(S_) PSN_FWD(S_, 4)
#define PSN_FWD_8(S_) PSN_FWD(S_, 8)
#define PSN_FWD_16(S_) PSN_FWD(S_, 16)
    PSN_WINDOW(dtype, window, PSN_FWD);
#undef PSN_ARGS
}

void emu_conv_bwd(int dtype, int window, int mode, const void* grad_s, const void* x,
                  const void* hist, void* grad_x, const float* w, const float* c0,
                  const float* c1, const float* c2, int sg, float p0, float p1, float p2,
                  float* gwb, float* partial, float* scratch, int n_t, int B, int C, int S, int k,
                  int d, int w_stride, int b_stride, int tx, int ty) {
#define PSN_ARGS                                                                               \
    grad_s, x, hist, grad_x, w, c0, c1, c2, sg, p0, p1, p2, gwb, partial, scratch, n_t, B, C, S, \
        k, d, w_stride, b_stride, tx, ty
#define PSN_BWD(S_, K_)                                        \
    do {                                                       \
        if (mode == PSN_MODE_STATS)                            \
            conv_bwd<S_, PSN_MODE_STATS, K_>(PSN_ARGS);        \
        else                                                   \
            conv_bwd<S_, PSN_MODE_FIRE, K_>(PSN_ARGS);         \
    } while (0)
#define PSN_BWD_0(S_) PSN_BWD(S_, 0)
#define PSN_BWD_4(S_) PSN_BWD(S_, 4)
#define PSN_BWD_8(S_) PSN_BWD(S_, 8)
#define PSN_BWD_16(S_) PSN_BWD(S_, 16)
    PSN_WINDOW(dtype, window, PSN_BWD);
#undef PSN_ARGS
}

void emu_conv_stats(int dtype, int window, const void* x, const void* hist, const float* w,
                    float* partial, int n_t, int B, int C, int S, int k, int d, int w_stride,
                    int tx, int ty) {
#define PSN_STATS(S_, K_) \
    conv_stats<S_, K_>(x, hist, w, partial, n_t, B, C, S, k, d, w_stride, tx, ty)
#define PSN_STATS_0(S_) PSN_STATS(S_, 0)
#define PSN_STATS_4(S_) PSN_STATS(S_, 4)
#define PSN_STATS_8(S_) PSN_STATS(S_, 8)
#define PSN_STATS_16(S_) PSN_STATS(S_, 16)
    PSN_WINDOW(dtype, window, PSN_STATS);
}

void emu_dense_fwd(int dtype, int window, const void* x, void* out, const float* w,
                   const float* bias, int t_in, int t_out, long long M, int block) {
#define PSN_DENSE_FWD(S_, TI_) dense_fwd<S_, TI_>(x, out, w, bias, t_in, t_out, M, block)
#define PSN_DENSE_FWD_0(S_) PSN_DENSE_FWD(S_, 0)
#define PSN_DENSE_FWD_8(S_) PSN_DENSE_FWD(S_, 8)
#define PSN_DENSE_FWD_16(S_) PSN_DENSE_FWD(S_, 16)
#define PSN_DENSE_FWD_32(S_) PSN_DENSE_FWD(S_, 32)
    PSN_DENSE_WINDOW(dtype, window, PSN_DENSE_FWD);
}

void emu_dense_bwd(int dtype, int window, const void* grad_s, const void* x, const float* w,
                   const float* bias, int sg, float p0, float p1, float p2, float* g, void* grad_x,
                   int t_in, int t_out, long long M, int block) {
#define PSN_DENSE_BWD(S_, TI_) \
    dense_bwd<S_, TI_>(grad_s, x, w, bias, sg, p0, p1, p2, g, grad_x, t_in, t_out, M, block)
#define PSN_DENSE_BWD_0(S_) PSN_DENSE_BWD(S_, 0)
#define PSN_DENSE_BWD_8(S_) PSN_DENSE_BWD(S_, 8)
#define PSN_DENSE_BWD_16(S_) PSN_DENSE_BWD(S_, 16)
#define PSN_DENSE_BWD_32(S_) PSN_DENSE_BWD(S_, 32)
    PSN_DENSE_WINDOW(dtype, window, PSN_DENSE_BWD);
}
}
