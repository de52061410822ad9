/* Selective scan for CPU (mamba's selective_scan_fn semantics): forward and backward, float32
   and float64. Loaded by ops/scan/native.py, which compiles this file on first use.

   Work item: VEC consecutive channels of one group of one batch element (VEC = 16 floats or 8
   doubles: one AVX-512 register, two AVX2 registers; GCC vector extensions keep one source
   for whatever -march=native offers). A group's channels share variable B and C, so those are
   broadcast scalars; lanes past the group's end compute on zeros and are never stored. The
   sequence is processed in chunks of `chunk` steps: u, delta, z (and the output) are transposed
   into [step][lane] buffers, then each state index n runs its recurrence over the chunk
   (x = exp(delta A) x + delta B u, one exp per step and state), four at a time so that four
   independent dependency chains overlap.

   The forward stores the state at the end of every chunk. The backward walks the chunks in
   reverse: it recomputes the chunk's states from the stored one before it (keeping them and
   their decay factors in scratch), then runs the adjoint recurrence h_l = dy_l C_l +
   a_{l+1} h_{l+1} backwards through the chunk. Nothing of size (batch, dim, L, N) is stored.

   Reductions: dA, fixed dB/dC, dD and d(delta_bias) are written per batch element (summed by
   the caller); variable dB/dC sum over a group's channels, which several threads may share:
   each thread owns the groups whose items all fall in its share and adds into those directly;
   the at most two groups it shares with neighbours go to two private slots, added in after a
   barrier. Results are deterministic for a given thread count.

   Threads: OpenMP, PyTorch's own (see dwconv_cpu.c). This file includes itself once per
   element type: the first pass below holds what both share. */

#ifndef REAL

#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One call, filled field by field by ops/scan/native.py (its ctypes mirror, `ScanArgs`,
   checks sizeof against scan_args_size()). Tensors are contiguous and of the compute type;
   NULL where absent or not wanted. */
typedef struct {
    int64_t batch, dim, length, dstate, groups;
    int64_t chunk; /* steps per chunk; states: (batch, dim, ceil(length / chunk), dstate) */
    int32_t variable_B, variable_C, softplus, threads;
    const void *u, *delta, *A, *B, *C, *D, *z, *delta_bias; /* inputs */
    void *out, *states;                                     /* forward outputs */
    const void *dout;                                       /* backward: also reads states */
    void *du, *ddelta, *dz;                                 /* (batch, dim, length) */
    void *dA, *dD, *ddelta_bias; /* per batch element: (batch, dim, dstate), (batch, dim) x 2 */
    void *dB, *dC; /* fixed: per batch element (batch, dim, dstate); variable: (batch, groups,
                      dstate, length), zeroed by the caller */
} scan_args;

int scan_args_size(void) { return (int)sizeof(scan_args); }

enum { SCAN_OK = 0, SCAN_NO_MEMORY = 1 };

#define LOG2E 1.44269504088896340736

/* State indices whose recurrences run side by side (independent dependency chains). */
#define NB 4

/* states(v, n0, nb, varB, varC, ...) over every state index, NB at a time and then one at a
   time, with nb, varB and varC constants: one specialised loop per combination. */
#define STATE_GROUPS(states, v, var_b, var_c, ...)                                             \
    do {                                                                                       \
        int64_t n0 = 0;                                                                        \
        for (; n0 + NB <= (v)->dstate; n0 += NB) states(v, n0, NB, var_b, var_c, __VA_ARGS__); \
        for (; n0 < (v)->dstate; ++n0) states(v, n0, 1, var_b, var_c, __VA_ARGS__);           \
    } while (0)
#define OVER_STATES(states, v, varB, varC, ...)                                                \
    do {                                                                                       \
        if ((varB) && (varC)) STATE_GROUPS(states, v, 1, 1, __VA_ARGS__);                      \
        else if (varB) STATE_GROUPS(states, v, 1, 0, __VA_ARGS__);                             \
        else if (varC) STATE_GROUPS(states, v, 0, 1, __VA_ARGS__);                             \
        else STATE_GROUPS(states, v, 0, 0, __VA_ARGS__);                                       \
    } while (0)

typedef float vec_f32 __attribute__((vector_size(64)));
typedef int32_t ivec_f32 __attribute__((vector_size(64)));
typedef double vec_f64 __attribute__((vector_size(64)));
typedef int64_t ivec_f64 __attribute__((vector_size(64)));

/* Clamps as single min / max instructions where AVX-512 has them (a compare and a blend each
   otherwise). NaN passes through (max / min return their second operand if either is NaN), so
   a NaN argument still makes a NaN result. */
static inline __attribute__((always_inline)) vec_f32 vclamp_f32(vec_f32 x, float lo, float hi) {
#ifdef __AVX512F__
    x = (vec_f32)_mm512_max_ps(_mm512_set1_ps(lo), (__m512)x);
    return (vec_f32)_mm512_min_ps(_mm512_set1_ps(hi), (__m512)x);
#else
    const vec_f32 l = (vec_f32){0} + lo, h = (vec_f32){0} + hi;
    x = (vec_f32)(((ivec_f32)l & (x < l)) | ((ivec_f32)x & ~(x < l)));
    return (vec_f32)(((ivec_f32)h & (x > h)) | ((ivec_f32)x & ~(x > h)));
#endif
}

/* 2^t = 2^k 2^f, k = round(t), |f| <= 1/2, 2^f by a degree-6 polynomial (relative error
   < 1e-7: least squares on [-1/2, 1/2], checked in float arithmetic); 2^k through the exponent
   bits. The scan calls it with t = delta' (A log2 e), A scaled once per item: an exp costs
   12 instructions instead of 15. Arguments are clamped to the normal range (2^-126 stands in
   for smaller results, 2^127 for larger ones). */
static inline __attribute__((always_inline)) vec_f32 vexp2_f32(vec_f32 t) {
    t = vclamp_f32(t, -126.0f, 127.0f);
#ifdef __AVX512F__
    const vec_f32 k = (vec_f32)_mm512_roundscale_ps(
        (__m512)t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const vec_f32 k = (t + magic) - magic;
#endif
    const vec_f32 f = t - k; /* exact */
    vec_f32 p = (vec_f32){0} + 1.5345811601014892e-4f;
    p = p * f + 1.3399931216465397e-3f;
    p = p * f + 9.618488958617567e-3f;
    p = p * f + 5.55032877697387e-2f;
    p = p * f + 2.4022646890620142e-1f;
    p = p * f + 6.931472057372626e-1f;
    p = p * f + 1.0000000005541694f;
#ifdef __AVX512F__ /* p 2^k in one instruction instead of four */
    return (vec_f32)_mm512_scalef_ps((__m512)p, (__m512)k);
#else
    ivec_f32 e = (__builtin_convertvector(k, ivec_f32) + 127) << 23;
    return p * (vec_f32)e;
#endif
}

static inline __attribute__((always_inline)) vec_f32 vexp_f32(vec_f32 x) {
    return vexp2_f32(x * 1.44269504088896341f);
}

/* double: Taylor series to r^13 (truncation < 1e-17 relative). */
static inline __attribute__((always_inline)) vec_f64 vexp_f64(vec_f64 x) {
    const vec_f64 lo = (vec_f64){0} - 708.39, hi = (vec_f64){0} + 709.0;
    x = (vec_f64)(((ivec_f64)lo & (x < lo)) | ((ivec_f64)x & ~(x < lo))); /* NaN stays */
    x = (vec_f64)(((ivec_f64)hi & (x > hi)) | ((ivec_f64)x & ~(x > hi)));
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    vec_f64 k = (x * 1.4426950408889634 + magic) - magic;
    vec_f64 r = x - k * 6.93145751953125e-1;
    r = r - k * 1.42860682030941723212e-6;
    vec_f64 p = (vec_f64){0} + 1.0 / 6227020800.0;
    static const double inverse_factorial[] = {
        1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
        1.0 / 5040.0,      1.0 / 720.0,      1.0 / 120.0,     1.0 / 24.0,     1.0 / 6.0,
        1.0 / 2.0,         1.0,              1.0};
    for (int i = 0; i < 13; ++i) p = p * r + inverse_factorial[i];
#ifdef __AVX512F__
    return (vec_f64)_mm512_scalef_pd((__m512d)p, (__m512d)k);
#else
    ivec_f64 e = (__builtin_convertvector(k, ivec_f64) + 1023) << 52;
    return p * (vec_f64)e;
#endif
}

static inline __attribute__((always_inline)) vec_f64 vexp2_f64(vec_f64 t) {
    return vexp_f64(t * 0.69314718055994530942);
}

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* 64-byte aligned (vector loads assume it); NULL and *failed set when it cannot be had. */
static void *scratch(size_t bytes, int *failed) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
#pragma omp atomic write
        *failed = 1;
    }
    return p;
}

/* Butterfly stages over VEC lanes (two input vectors a, b; indices >= VEC pick from b), for
   half width h: lo[p] = p & h ? b[p - h] : a[p], hi[p] = p & h ? b[p] : a[p + h]. Applied to
   rows i and i + h for every h they transpose a VEC x VEC block; lo + hi, halving the number of
   vectors each stage, sums each vector's lanes (16 vectors in 15 shuffle pairs and adds,
   instead of 16 reductions of 4 dependent steps each). */
#define LO16_8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define HI16_8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define LO16_4 {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}
#define HI16_4 {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}
#define LO16_2 {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}
#define HI16_2 {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}
#define LO16_1 {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}
#define HI16_1 {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}
#define LO8_4 {0, 1, 2, 3, 8, 9, 10, 11}
#define HI8_4 {4, 5, 6, 7, 12, 13, 14, 15}
#define LO8_2 {0, 1, 8, 9, 4, 5, 12, 13}
#define HI8_2 {2, 3, 10, 11, 6, 7, 14, 15}
#define LO8_1 {0, 8, 2, 10, 4, 12, 6, 14}
#define HI8_1 {1, 9, 3, 11, 5, 13, 7, 15}

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(name) CAT(name, SUFFIX)

#define REAL float
#define VEC 16
#define VEC_T vec_f32
#define IVEC_T ivec_f32
#define VEXP vexp_f32
#define VEXP2 vexp2_f32
#define LOG1P_TERMS 7 /* 2 atanh(s) to s^13: < 2e-8 relative */
#define SUFFIX _f32
#include __FILE__
#undef REAL
#undef VEC
#undef VEC_T
#undef IVEC_T
#undef VEXP
#undef VEXP2
#undef LOG1P_TERMS
#undef SUFFIX

#define REAL double
#define VEC 8
#define VEC_T vec_f64
#define IVEC_T ivec_f64
#define VEXP vexp_f64
#define VEXP2 vexp2_f64
#define LOG1P_TERMS 16 /* to s^31: < 1e-17 relative */
#define SUFFIX _f64
#include __FILE__

#else /* ---------------------------------------------------------------------------------- */
/* One element type: REAL, VEC lanes of VEC_T. */

/* Element by element: (VEC_T){0} + s would cost an add (0 + s is not s for s = -0) and a
   register broadcast instead of one broadcast load. */
static inline VEC_T NAME(splat)(REAL s) {
#if VEC == 16
    return (VEC_T){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#else
    return (VEC_T){s, s, s, s, s, s, s, s};
#endif
}

static inline VEC_T NAME(select)(IVEC_T mask, VEC_T a, VEC_T b) {
    return (VEC_T)((mask & (IVEC_T)a) | (~mask & (IVEC_T)b));
}

/* log1p(t) for t in [0, 1] as 2 atanh(s), s = t / (2 + t) <= 1/3 (no cancellation at t ~ 0). */
static inline VEC_T NAME(log1p01)(VEC_T t) {
    VEC_T s = t / (t + 2), s2 = s * s;
    VEC_T p = NAME(splat)((REAL)1 / (2 * LOG1P_TERMS - 1));
    for (int i = LOG1P_TERMS - 2; i >= 0; --i) p = p * s2 + (REAL)1 / (2 * i + 1);
    return 2 * s * p;
}

/* softplus as torch.nn.functional.softplus (threshold 20: the identity above it), and its
   derivative as torch's softplus_backward (1 above the threshold). */
static inline VEC_T NAME(softplus)(VEC_T x, VEC_T *derivative) {
    VEC_T t = VEXP(NAME(select)(x > 0, -x, x)); /* exp(-|x|) */
    VEC_T positive = NAME(select)(x > 0, x, (VEC_T){0});
    IVEC_T above = x > 20;
    if (derivative) {
        VEC_T sigmoid = NAME(select)(x >= 0, 1 / (1 + t), t / (1 + t));
        *derivative = NAME(select)(above, NAME(splat)(1), sigmoid);
    }
    return NAME(select)(above, x, positive + NAME(log1p01)(t));
}

static inline VEC_T NAME(sigmoid)(VEC_T x) { return 1 / (1 + VEXP(-x)); }

static inline REAL NAME(hsum)(VEC_T v) {
    REAL t[VEC];
    memcpy(t, &v, sizeof(v));
    for (int width = VEC / 2; width; width >>= 1)
        for (int i = 0; i < width; ++i) t[i] += t[i + width];
    return t[0];
}

static inline VEC_T NAME(loadu)(const REAL *p) {
    VEC_T v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void NAME(storeu)(REAL *p, VEC_T v) { memcpy(p, &v, sizeof(v)); }

#define STAGE(V, h)                                                                            \
    case h:                                                                                    \
        *lo = __builtin_shuffle(a, b, (IVEC_T)LO##V##_##h);                                    \
        *hi = __builtin_shuffle(a, b, (IVEC_T)HI##V##_##h);                                    \
        break;

static inline __attribute__((always_inline)) void NAME(butterfly)(VEC_T a, VEC_T b, int h,
                                                                  VEC_T *lo, VEC_T *hi) {
    switch (h) {
#if VEC == 16
        STAGE(16, 8)
        STAGE(16, 4)
        STAGE(16, 2)
        STAGE(16, 1)
#else
        STAGE(8, 4)
        STAGE(8, 2)
        STAGE(8, 1)
#endif
    }
}
#undef STAGE

/* r[i][p] <-> r[p][i] */
static inline __attribute__((always_inline)) void NAME(transpose)(VEC_T *r) {
#pragma GCC unroll 4
    for (int h = VEC / 2; h >= 1; h >>= 1)
#pragma GCC unroll 16
        for (int i = 0; i < VEC; ++i)
            if (!(i & h)) NAME(butterfly)(r[i], r[i + h], h, &r[i], &r[i + h]);
}

/* Lane i of the result: the sum of the lanes of v[i * stride] (times scale[i] if given). */
static inline __attribute__((always_inline)) VEC_T NAME(lane_sums)(const VEC_T *v,
                                                                  int64_t stride,
                                                                  const VEC_T *scale) {
#if VEC == 16
    static const int bit_reversed[VEC] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
#else
    static const int bit_reversed[VEC] = {0, 4, 2, 6, 1, 5, 3, 7};
#endif
    VEC_T w[VEC], lo, hi;
#pragma GCC unroll 16
    for (int j = 0; j < VEC; ++j)
        w[j] = v[bit_reversed[j] * stride] * (scale ? scale[bit_reversed[j]] : NAME(splat)(1));
#pragma GCC unroll 4
    for (int h = VEC / 2, count = VEC; h >= 1; h >>= 1, count >>= 1)
#pragma GCC unroll 8
        for (int j = 0; j < count / 2; ++j) {
            NAME(butterfly)(w[2 * j], w[2 * j + 1], h, &lo, &hi);
            w[j] = lo + hi;
        }
    return w[0];
}

/* dst[n * L + s] += the lanes of v[s * N + n] (times scale[s] if given) summed, for s < steps
   and n < N: one chunk's variable dB or dC contributions added to the group's. */
static void NAME(add_lane_sums)(REAL *dst, const VEC_T *v, const VEC_T *scale, int64_t N,
                                int64_t L, int64_t steps) {
    for (int64_t n = 0; n < N; ++n) {
        REAL *row = dst + n * L;
        int64_t s = 0;
        for (; s + VEC <= steps; s += VEC) {
            VEC_T sums = NAME(lane_sums)(v + s * N + n, N, scale ? scale + s : NULL);
            NAME(storeu)(row + s, NAME(loadu)(row + s) + sums);
        }
        for (; s < steps; ++s)
            row[s] += NAME(hsum)(v[s * N + n] * (scale ? scale[s] : NAME(splat)(1)));
    }
}

/* buf[s][k] = src[k * ld + s] for lanes k < lanes and steps s < steps; other lanes zero.
   VEC steps at a time through a block transpose (a scalar loop would be one strided store per
   element, as slow as the scan itself). */
static void NAME(load_transposed)(VEC_T *buf, const REAL *src, int64_t ld, int lanes,
                                  int64_t steps) {
    int64_t s = 0;
    for (; s + VEC <= steps; s += VEC) {
        VEC_T r[VEC];
        for (int k = 0; k < VEC; ++k)
            r[k] = k < lanes ? NAME(loadu)(src + k * ld + s) : (VEC_T){0};
        NAME(transpose)(r);
        memcpy(buf + s, r, sizeof(r));
    }
    REAL *b = (REAL *)buf;
    for (int k = 0; k < VEC; ++k)
        for (int64_t t = s; t < steps; ++t) b[t * VEC + k] = k < lanes ? src[k * ld + t] : 0;
}

static void NAME(store_transposed)(REAL *dst, const VEC_T *buf, int64_t ld, int lanes,
                                   int64_t steps) {
    int64_t s = 0;
    for (; s + VEC <= steps; s += VEC) {
        VEC_T r[VEC];
        memcpy(r, buf + s, sizeof(r));
        NAME(transpose)(r);
        for (int k = 0; k < lanes; ++k) NAME(storeu)(dst + k * ld + s, r[k]);
    }
    const REAL *b = (const REAL *)buf;
    for (int k = 0; k < lanes; ++k)
        for (int64_t t = s; t < steps; ++t) dst[k * ld + t] = b[t * VEC + k];
}

/* v[n][k] = src[k * ld + n] (per-channel rows of `count` values, e.g. A or a stored state) */
static void NAME(load_rows)(VEC_T *v, const REAL *src, int64_t ld, int lanes, int64_t count) {
    NAME(load_transposed)(v, src, ld, lanes, count);
}

static void NAME(store_rows)(REAL *dst, const VEC_T *v, int64_t ld, int lanes, int64_t count) {
    NAME(store_transposed)(dst, v, ld, lanes, count);
}

/* Where one item's data lives, for one chunk. */
typedef struct {
    const REAL *Bp, *Cp; /* variable: the group's (N, L) rows, offset to the chunk's start */
    const VEC_T *Bv, *Cv, *Av;
    const VEC_T *A2v; /* A log2 e: the exps' argument is delta' A2v */
    int64_t length, steps, dstate;
} NAME(chunk_view);

/* Forward recurrence of states n0 .. n0 + nb - 1 over one chunk (nb, varB and varC are
   constants after inlining: one specialised loop per combination). */
static inline __attribute__((always_inline)) void NAME(forward_states)(
    const NAME(chunk_view) * v, int64_t n0, int nb, int varB, int varC, const VEC_T *dl,
    const VEC_T *bu, VEC_T *y, VEC_T *x) {
    VEC_T xr[NB], ar[NB], br[NB], cr[NB];
    for (int j = 0; j < nb; ++j) {
        xr[j] = x[n0 + j], ar[j] = v->A2v[n0 + j];
        if (!varB) br[j] = v->Bv[n0 + j];
        if (!varC) cr[j] = v->Cv[n0 + j];
    }
    const REAL *Bp = varB ? v->Bp + n0 * v->length : NULL;
    const REAL *Cp = varC ? v->Cp + n0 * v->length : NULL;
    for (int64_t s = 0; s < v->steps; ++s) {
        VEC_T d = dl[s], b = bu[s], acc = y[s];
        for (int j = 0; j < nb; ++j) {
            VEC_T a = VEXP2(d * ar[j]);
            xr[j] = a * xr[j] + b * (varB ? NAME(splat)(Bp[j * v->length + s]) : br[j]);
            acc += xr[j] * (varC ? NAME(splat)(Cp[j * v->length + s]) : cr[j]);
        }
        y[s] = acc;
    }
    for (int j = 0; j < nb; ++j) x[n0 + j] = xr[j];
}

/* y[s] += sum_n x_s[n] C_s[n] over the chunk, x carried in and out. */
static void NAME(forward_chunk)(const NAME(chunk_view) * v, int varB, int varC,
                                const VEC_T *dl, const VEC_T *bu, VEC_T *y, VEC_T *x) {
    OVER_STATES(NAME(forward_states), v, varB, varC, dl, bu, y, x);
}

/* Prefetch `count` values of `rows` rows `ld` apart: the next chunk's. An item streams 16 rows
   each of u, delta, z and out (and N of B and C): more streams than the hardware prefetchers
   follow, so without this every chunk's first touch of a row waits for memory once the
   tensors outgrow the caches (3x slower at 192 x 16384). */
static void NAME(prefetch_rows)(const REAL *base, int64_t ld, int64_t rows, int64_t count,
                                int write) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < count; i += 64 / sizeof(REAL)) {
            if (write) __builtin_prefetch(base + r * ld + i, 1);
            else __builtin_prefetch(base + r * ld + i, 0);
        }
}

/* Prefetch chunk `next` (if it exists) of an item's rows of every (batch, dim, L) tensor it
   reads, of its group's variable B / C rows, and of `writes` (out, or a gradient). */
static void NAME(prefetch_chunk)(const scan_args *a, int64_t row, int lanes, int64_t pair,
                                 int64_t next, const void *extra, void *writes) {
    const int64_t L = a->length, N = a->dstate, T = a->chunk;
    if (next < 0 || next * T >= L) return;
    const int64_t l0 = next * T, count = L - l0 < T ? L - l0 : T;
    const void *reads[] = {a->u, a->delta, a->z, extra};
    for (int i = 0; i < 4; ++i)
        if (reads[i])
            NAME(prefetch_rows)((const REAL *)reads[i] + row * L + l0, L, lanes, count, 0);
    if (writes) NAME(prefetch_rows)((const REAL *)writes + row * L + l0, L, lanes, count, 1);
    const REAL *group_rows[] = {a->variable_B ? a->B : NULL, a->variable_C ? a->C : NULL};
    for (int i = 0; i < 2; ++i)
        if (group_rows[i]) NAME(prefetch_rows)(group_rows[i] + pair * N * L + l0, L, N, count, 0);
}

/* The per-chunk inputs of one item: dl = delta' (and its softplus derivative), uu = u,
   bu = delta' u; zz = z when given. */
typedef struct {
    VEC_T *dl, *dsoft, *uu, *bu, *zz;
} NAME(chunk_inputs);

static void NAME(load_chunk)(const scan_args *a, NAME(chunk_inputs) * in, int64_t row,
                             int lanes, int64_t l0, int64_t steps, const VEC_T *bias) {
    const int64_t L = a->length;
    NAME(load_transposed)(in->dl, (const REAL *)a->delta + row * L + l0, L, lanes, steps);
    NAME(load_transposed)(in->uu, (const REAL *)a->u + row * L + l0, L, lanes, steps);
    if (a->z) NAME(load_transposed)(in->zz, (const REAL *)a->z + row * L + l0, L, lanes, steps);
    for (int64_t s = 0; s < steps; ++s) {
        VEC_T d = in->dl[s];
        if (bias) d += *bias;
        if (a->softplus) d = NAME(softplus)(d, in->dsoft ? &in->dsoft[s] : NULL);
        in->dl[s] = d;
        in->bu[s] = d * in->uu[s];
    }
}

/* Item -> (batch element, group, first channel, lanes). */
typedef struct {
    int64_t b, pair, d0;
    int lanes;
} NAME(item);

static NAME(item) NAME(locate)(const scan_args *a, int64_t item) {
    const int64_t per_group = a->dim / a->groups, blocks = ceil_div(per_group, VEC);
    NAME(item) it;
    it.pair = item / blocks; /* b * groups + g */
    it.b = it.pair / a->groups;
    const int64_t g = it.pair % a->groups, j = item % blocks;
    it.d0 = g * per_group + j * VEC;
    it.lanes = (int)(per_group - j * VEC < VEC ? per_group - j * VEC : VEC);
    return it;
}

/* Per-lane values of a (dim,) vector (D, delta_bias) for one item; zero past the lanes. */
static VEC_T NAME(load_lanes)(const void *src, int64_t d0, int lanes) {
    VEC_T v = (VEC_T){0};
    if (src)
        for (int k = 0; k < lanes; ++k) v[k] = ((const REAL *)src)[d0 + k];
    return v;
}

int NAME(scan_forward)(const scan_args *a) {
    const int64_t L = a->length, N = a->dstate, T = a->chunk, chunks = ceil_div(L, T);
    const int64_t items = a->batch * a->groups * ceil_div(a->dim / a->groups, VEC);
    const int varB = a->variable_B, varC = a->variable_C;
    const REAL *A = a->A, *B = a->B, *C = a->C;
    int failed = 0;
#pragma omp parallel num_threads(a->threads)
    {
        VEC_T *buf = scratch(sizeof(VEC_T) * (5 * T + 4 * N), &failed);
        NAME(chunk_inputs) in = {0};
        VEC_T *y = NULL, *A2v = NULL, *Bv = NULL, *Cv = NULL, *x = NULL;
        if (buf) {
            in.dl = buf, in.uu = buf + T, in.bu = buf + 2 * T, in.zz = buf + 3 * T;
            y = buf + 4 * T, A2v = y + T, Bv = A2v + N, Cv = Bv + N, x = Cv + N;
        }
        /* dynamic: items are few and long (12 at dim 192), so a thread that loses its core
           for a while would otherwise hold up the whole call (results do not depend on it) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < items; ++item) {
            if (!buf) continue;
            const NAME(item) it = NAME(locate)(a, item);
            const int64_t row = it.b * a->dim + it.d0;
            NAME(load_rows)(A2v, A + it.d0 * N, N, it.lanes, N);
            for (int64_t n = 0; n < N; ++n) A2v[n] *= (REAL)LOG2E;
            if (!varB) NAME(load_rows)(Bv, B + it.d0 * N, N, it.lanes, N);
            if (!varC) NAME(load_rows)(Cv, C + it.d0 * N, N, it.lanes, N);
            const VEC_T Dv = NAME(load_lanes)(a->D, it.d0, it.lanes);
            const VEC_T bias = NAME(load_lanes)(a->delta_bias, it.d0, it.lanes);
            memset(x, 0, sizeof(VEC_T) * N);
            NAME(chunk_view) v = {.Bv = Bv, .Cv = Cv, .A2v = A2v, .length = L, .dstate = N};
            for (int64_t c = 0; c < chunks; ++c) {
                const int64_t l0 = c * T, steps = L - l0 < T ? L - l0 : T;
                NAME(load_chunk)(a, &in, row, it.lanes, l0, steps, a->delta_bias ? &bias : NULL);
                NAME(prefetch_chunk)(a, row, it.lanes, it.pair, c + 1, NULL, a->out);
                for (int64_t s = 0; s < steps; ++s) y[s] = Dv * in.uu[s];
                v.Bp = varB ? B + it.pair * N * L + l0 : NULL;
                v.Cp = varC ? C + it.pair * N * L + l0 : NULL;
                v.steps = steps;
                NAME(forward_chunk)(&v, varB, varC, in.dl, in.bu, y, x);
                NAME(store_rows)((REAL *)a->states + (row * chunks + c) * N, x, chunks * N,
                                 it.lanes, N);
                if (a->z)
                    for (int64_t s = 0; s < steps; ++s)
                        y[s] *= in.zz[s] * NAME(sigmoid)(in.zz[s]);
                NAME(store_transposed)((REAL *)a->out + row * L + l0, y, L, it.lanes, steps);
            }
        }
        free(buf);
    }
    return failed ? SCAN_NO_MEMORY : SCAN_OK;
}

/* Recompute states n0 .. n0 + nb - 1 over one chunk from x (carried out again), keeping every
   state and decay factor in xs / as ([step][n]); y[s] += x C; fixed dC gets dy x (variable dC
   is summed from xs afterwards). */
static inline __attribute__((always_inline)) void NAME(recompute_states)(
    const NAME(chunk_view) * v, int64_t n0, int nb, int varB, int varC, const VEC_T *dl,
    const VEC_T *bu, const VEC_T *dy, VEC_T *y, VEC_T *x, VEC_T *xs, VEC_T *as,
    VEC_T *dC_fixed) {
    const int64_t N = v->dstate, L = v->length;
    VEC_T xr[NB], ar[NB], br[NB], cr[NB], gc[NB];
    for (int j = 0; j < nb; ++j) {
        xr[j] = x[n0 + j], ar[j] = v->A2v[n0 + j];
        if (!varB) br[j] = v->Bv[n0 + j];
        if (!varC) cr[j] = v->Cv[n0 + j], gc[j] = dC_fixed[n0 + j];
    }
    const REAL *Bp = varB ? v->Bp + n0 * L : NULL, *Cp = varC ? v->Cp + n0 * L : NULL;
    for (int64_t s = 0; s < v->steps; ++s) {
        VEC_T d = dl[s], b = bu[s], g = dy[s], acc = y[s];
        for (int j = 0; j < nb; ++j) {
            VEC_T a = VEXP2(d * ar[j]);
            xr[j] = a * xr[j] + b * (varB ? NAME(splat)(Bp[j * L + s]) : br[j]);
            as[s * N + n0 + j] = a;
            xs[s * N + n0 + j] = xr[j];
            acc += xr[j] * (varC ? NAME(splat)(Cp[j * L + s]) : cr[j]);
            if (!varC) gc[j] += g * xr[j];
        }
        y[s] = acc;
    }
    for (int j = 0; j < nb; ++j) {
        x[n0 + j] = xr[j];
        if (!varC) dC_fixed[n0 + j] = gc[j];
    }
}

/* The adjoint recurrence of states n0 .. n0 + nb - 1 backwards through one chunk: with
   h_s = dy_s C_s + q_{s+1} (q carried in from the next chunk) and q_s = a_s h_s, the step's
   decay gets q_s x_{s-1} (-> delta and A) and its drive h_s (-> delta, u and B). Variable dB's
   contributions h_s delta'_s u_s replace the decay factors in `as`, which this step was the
   last to read, and are summed over lanes afterwards. */
static inline __attribute__((always_inline)) void NAME(reverse_states)(
    const NAME(chunk_view) * v, int64_t n0, int nb, int varB, int varC, const VEC_T *dl,
    const VEC_T *uu, const VEC_T *bu, const VEC_T *dy, const VEC_T *xs, VEC_T *as,
    const VEC_T *x0, VEC_T *q, VEC_T *ddl, VEC_T *dub, VEC_T *dA, VEC_T *dB_fixed) {
    const int64_t N = v->dstate, L = v->length;
    VEC_T qr[NB], ar[NB], br[NB], cr[NB], ga[NB], gb[NB];
    for (int j = 0; j < nb; ++j) {
        qr[j] = q[n0 + j], ar[j] = v->Av[n0 + j], ga[j] = dA[n0 + j];
        if (!varB) br[j] = v->Bv[n0 + j], gb[j] = dB_fixed[n0 + j];
        if (!varC) cr[j] = v->Cv[n0 + j];
    }
    const REAL *Bp = varB ? v->Bp + n0 * L : NULL, *Cp = varC ? v->Cp + n0 * L : NULL;
    for (int64_t s = v->steps - 1; s >= 0; --s) {
        VEC_T g = dy[s], d = dl[s], us = uu[s], b = bu[s], acc_d = ddl[s], acc_u = dub[s];
        for (int j = 0; j < nb; ++j) {
            VEC_T h = g * (varC ? NAME(splat)(Cp[j * L + s]) : cr[j]) + qr[j];
            VEC_T x_prev = s ? xs[(s - 1) * N + n0 + j] : x0[n0 + j];
            qr[j] = as[s * N + n0 + j] * h;
            VEC_T w = qr[j] * x_prev;
            VEC_T hB = h * (varB ? NAME(splat)(Bp[j * L + s]) : br[j]);
            acc_d += w * ar[j] + hB * us;
            acc_u += hB * d;
            ga[j] += w * d;
            if (varB) as[s * N + n0 + j] = h * b;
            else gb[j] += h * b;
        }
        ddl[s] = acc_d, dub[s] = acc_u;
    }
    for (int j = 0; j < nb; ++j) {
        q[n0 + j] = qr[j], dA[n0 + j] = ga[j];
        if (!varB) dB_fixed[n0 + j] = gb[j];
    }
}

/* Buffers of one backward item. */
typedef struct {
    const VEC_T *dl, *uu, *bu, *dy, *x0;
    VEC_T *y, *x, *xs, *as, *q, *ddl, *dub, *dA, *dB_fixed, *dC_fixed;
} NAME(backward_buffers);

static void NAME(recompute_chunk)(const NAME(chunk_view) * v, int varB, int varC,
                                  const NAME(backward_buffers) * w) {
    OVER_STATES(NAME(recompute_states), v, varB, varC, w->dl, w->bu, w->dy, w->y, w->x, w->xs,
                w->as, w->dC_fixed);
}

static void NAME(reverse_chunk)(const NAME(chunk_view) * v, int varB, int varC,
                                const NAME(backward_buffers) * w) {
    OVER_STATES(NAME(reverse_states), v, varB, varC, w->dl, w->uu, w->bu, w->dy, w->xs, w->as,
                w->x0, w->q, w->ddl, w->dub, w->dA, w->dB_fixed);
}

int NAME(scan_backward)(const scan_args *a) {
    const int64_t L = a->length, N = a->dstate, T = a->chunk, chunks = ceil_div(L, T);
    const int64_t blocks = ceil_div(a->dim / a->groups, VEC);
    const int64_t items = a->batch * a->groups * blocks;
    const int varB = a->variable_B, varC = a->variable_C, threads = a->threads;
    const REAL *A = a->A, *B = a->B, *C = a->C;
    /* Two private slots per thread for the groups it shares, each (dB, dC) of (N, L). */
    const int64_t slot = (varB || varC) ? 2 * N * L : 0;
    REAL *slots = slot ? aligned_alloc(64, (sizeof(REAL) * 2 * threads * slot + 63) / 64 * 64)
                       : NULL;
    int64_t *slot_pair = malloc(sizeof(int64_t) * 2 * threads);
    if ((slot && !slots) || !slot_pair) {
        free(slots);
        free(slot_pair);
        return SCAN_NO_MEMORY;
    }
    for (int i = 0; i < 2 * threads; ++i) slot_pair[i] = -1;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t lo = items * t / team, hi = items * (t + 1) / team;
        VEC_T *buf = scratch(sizeof(VEC_T) * ((10 + 2 * N) * T + 10 * N), &failed);
        REAL *mine = slots ? slots + 2 * t * slot : NULL;
        if (buf && mine) memset(mine, 0, sizeof(REAL) * 2 * slot);
        for (int64_t item = lo; item < hi && buf; ++item) {
            const NAME(item) it = NAME(locate)(a, item);
            const int64_t row = it.b * a->dim + it.d0;
            VEC_T *p = buf;
            NAME(chunk_inputs) in = {p, p + T, p + 2 * T, p + 3 * T, p + 4 * T};
            VEC_T *go = p + 5 * T, *dy = p + 6 * T, *y = p + 7 * T, *ddl = p + 8 * T;
            VEC_T *dub = p + 9 * T, *xs = p + 10 * T, *as = xs + N * T, *Av = as + N * T;
            VEC_T *Bv = Av + N, *Cv = Bv + N, *x0 = Cv + N, *x = x0 + N, *q = x + N;
            VEC_T *dA = q + N, *dB_fixed = dA + N, *dC_fixed = dB_fixed + N, *A2v = dC_fixed + N;
            if (!a->softplus) in.dsoft = NULL;
            NAME(load_rows)(Av, A + it.d0 * N, N, it.lanes, N);
            for (int64_t n = 0; n < N; ++n) A2v[n] = Av[n] * (REAL)LOG2E;
            if (!varB) NAME(load_rows)(Bv, B + it.d0 * N, N, it.lanes, N);
            if (!varC) NAME(load_rows)(Cv, C + it.d0 * N, N, it.lanes, N);
            const VEC_T Dv = NAME(load_lanes)(a->D, it.d0, it.lanes);
            const VEC_T bias = NAME(load_lanes)(a->delta_bias, it.d0, it.lanes);
            memset(q, 0, sizeof(VEC_T) * 4 * N); /* q, dA, dB_fixed, dC_fixed */
            VEC_T dD = (VEC_T){0}, dbias = (VEC_T){0};
            /* variable dB, dC: straight into the output when this thread owns the group */
            REAL *dB = NULL, *dC = NULL;
            if (slot) {
                const int owned = it.pair * blocks >= lo && (it.pair + 1) * blocks <= hi;
                const int which = it.pair == lo / blocks ? 0 : 1;
                if (!owned) slot_pair[2 * t + which] = it.pair;
                dB = owned ? (REAL *)a->dB + it.pair * N * L : mine + which * slot;
                dC = owned ? (REAL *)a->dC + it.pair * N * L : mine + which * slot + N * L;
            }
            NAME(chunk_view) v = {.Bv = Bv, .Cv = Cv, .Av = Av, .A2v = A2v, .length = L,
                                  .dstate = N};
            NAME(backward_buffers) w = {.dl = in.dl, .uu = in.uu, .bu = in.bu, .dy = dy,
                                        .x0 = x0, .y = y, .x = x, .xs = xs, .as = as, .q = q,
                                        .ddl = ddl, .dub = dub, .dA = dA,
                                        .dB_fixed = dB_fixed, .dC_fixed = dC_fixed};
            for (int64_t c = chunks - 1; c >= 0; --c) {
                const int64_t l0 = c * T, steps = L - l0 < T ? L - l0 : T;
                NAME(load_chunk)(a, &in, row, it.lanes, l0, steps, a->delta_bias ? &bias : NULL);
                NAME(load_transposed)(go, (const REAL *)a->dout + row * L + l0, L, it.lanes,
                                      steps);
                NAME(prefetch_chunk)(a, row, it.lanes, it.pair, c - 1, a->dout, a->du);
                for (int64_t s = 0; s < steps; ++s)
                    dy[s] = a->z ? go[s] * in.zz[s] * NAME(sigmoid)(in.zz[s]) : go[s];
                if (c > 0)
                    NAME(load_rows)(x0, (const REAL *)a->states + (row * chunks + c - 1) * N,
                                    chunks * N, it.lanes, N);
                else
                    memset(x0, 0, sizeof(VEC_T) * N);
                memcpy(x, x0, sizeof(VEC_T) * N);
                for (int64_t s = 0; s < steps; ++s) y[s] = (VEC_T){0};
                v.Bp = varB ? B + it.pair * N * L + l0 : NULL;
                v.Cp = varC ? C + it.pair * N * L + l0 : NULL;
                v.steps = steps;
                NAME(recompute_chunk)(&v, varB, varC, &w);
                if (varC) NAME(add_lane_sums)(dC + l0, xs, dy, N, L, steps);
                if (a->z) { /* dz = dout (y + D u) silu'(z); go becomes dz */
                    for (int64_t s = 0; s < steps; ++s) {
                        VEC_T zs = in.zz[s], sg = NAME(sigmoid)(zs);
                        go[s] = go[s] * (y[s] + Dv * in.uu[s]) * sg * (1 + zs * (1 - sg));
                    }
                    NAME(store_transposed)((REAL *)a->dz + row * L + l0, go, L, it.lanes,
                                           steps);
                }
                for (int64_t s = 0; s < steps; ++s) {
                    ddl[s] = (VEC_T){0};
                    dub[s] = Dv * dy[s];
                    dD += dy[s] * in.uu[s];
                }
                NAME(reverse_chunk)(&v, varB, varC, &w);
                if (varB) NAME(add_lane_sums)(dB + l0, as, NULL, N, L, steps);
                for (int64_t s = 0; s < steps; ++s) {
                    if (a->softplus) ddl[s] *= in.dsoft[s];
                    dbias += ddl[s];
                }
                NAME(store_transposed)((REAL *)a->ddelta + row * L + l0, ddl, L, it.lanes,
                                       steps);
                NAME(store_transposed)((REAL *)a->du + row * L + l0, dub, L, it.lanes, steps);
            }
            NAME(store_rows)((REAL *)a->dA + row * N, dA, N, it.lanes, N);
            if (!varB) NAME(store_rows)((REAL *)a->dB + row * N, dB_fixed, N, it.lanes, N);
            if (!varC) NAME(store_rows)((REAL *)a->dC + row * N, dC_fixed, N, it.lanes, N);
            for (int k = 0; k < it.lanes; ++k) {
                if (a->dD) ((REAL *)a->dD)[row + k] = dD[k];
                if (a->ddelta_bias) ((REAL *)a->ddelta_bias)[row + k] = dbias[k];
            }
        }
        free(buf);
        if (slot) {
#pragma omp barrier
#pragma omp for schedule(static)
            for (int64_t i = 0; i < N * L; ++i)
                for (int s = 0; s < 2 * team; ++s) {
                    const int64_t pair = slot_pair[s];
                    if (pair < 0) continue;
                    const REAL *from = slots + s * slot;
                    if (varB) ((REAL *)a->dB)[pair * N * L + i] += from[i];
                    if (varC) ((REAL *)a->dC)[pair * N * L + i] += from[N * L + i];
                }
        }
    }
    free(slots);
    free(slot_pair);
    return failed ? SCAN_NO_MEMORY : SCAN_OK;
}

#endif
