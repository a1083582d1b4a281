/* Fused ReLU + local response normalisation across channels, for the CPU.
 *
 * y_c = a_c * (k + alpha * sum_{j=c-h}^{c+h} a_j^2)^(-beta),  a = relu(x) or x,  h = size / 2,
 * channels outside [0, C) contribute nothing. alpha arrives already scaled (the paper's raw-sum
 * convention or Caffe's alpha / size): the Python side decides, this file only computes.
 *
 * One pass over the input and one over the output, instead of the eight or so full-tensor passes
 * of an eager torch implementation: conv1's 96x55x55 LRN is memory-bound, so passes are the cost.
 * Work units (pixels, or NCHW tiles) are shared among OpenMP threads. Built with -fopenmp this
 * library binds to the libgomp.so.1 torch already loaded, so it uses torch's own thread pool:
 * a second pool would fight oneDNN's spinning workers for the cores. Plain C with no torch or
 * Python headers, so it compiles in about a second.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_PARALLEL_UNITS 64 /* fewer units than this: not worth waking threads */
#define TILE 256 /* spatial positions per NCHW work unit: (C + 2h) * TILE floats stay in L2 */

static inline float load_f32(float v) { return v; }
static inline float store_f32(float v) { return v; }

static inline float load_bf16(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t store_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float load_f16(_Float16 v) { return (float)v; }
static inline _Float16 store_f16(float f) { return (_Float16)f; }

/* scale[i] <- (k + alpha * s[i])^(-beta), with the paper's beta = 0.75 as rsqrt * sqrt(rsqrt). */
static void lrn_scale(float *s, int64_t n, float alpha, float beta, float k) {
    if (beta == 0.75f) {
        for (int64_t i = 0; i < n; i++) {
            float r = 1.0f / sqrtf(k + alpha * s[i]);
            s[i] = r * sqrtf(r);
        }
    } else if (beta == 0.5f) {
        for (int64_t i = 0; i < n; i++) s[i] = 1.0f / sqrtf(k + alpha * s[i]);
    } else {
        for (int64_t i = 0; i < n; i++) s[i] = powf(k + alpha * s[i], -beta);
    }
}

/* Channels-last: unit = one pixel, its C channels contiguous. */
#define DEFINE_NHWC(SUFFIX, T)                                                                   \
    int lrn_nhwc_##SUFFIX(const T *x, T *y, int64_t u0, int64_t u1, int64_t C, int64_t size,    \
                          float alpha, float beta, float k, int relu) {                         \
        int64_t h = size / 2;                                                                   \
        int failed = 0;                                                                         \
        _Pragma("omp parallel if (u1 - u0 >= MIN_PARALLEL_UNITS)") {                            \
        float *buf = (float *)malloc(sizeof(float) * (3 * C + 2 * h));                          \
        float *a = buf, *sq = buf + C, *s = buf + 2 * C + 2 * h;                                \
        if (!buf) _Pragma("omp atomic write") failed = 1;                                      \
        else for (int64_t i = 0; i < h; i++) sq[i] = sq[C + h + i] = 0.0f;                      \
        _Pragma("omp for schedule(static)")                                                     \
        for (int64_t r = u0; r < u1; r++) {                                                     \
            if (!buf) continue;                                                                 \
            const T *xr = x + r * C;                                                            \
            T *yr = y + r * C;                                                                  \
            for (int64_t c = 0; c < C; c++) {                                                   \
                float v = load_##SUFFIX(xr[c]);                                                 \
                if (relu) v = v > 0.0f ? v : 0.0f;                                              \
                a[c] = v;                                                                       \
                sq[h + c] = v * v;                                                              \
            }                                                                                   \
            for (int64_t c = 0; c < C; c++) s[c] = sq[c];                                       \
            for (int64_t j = 1; j < size; j++)                                                  \
                for (int64_t c = 0; c < C; c++) s[c] += sq[c + j];                              \
            lrn_scale(s, C, alpha, beta, k);                                                    \
            for (int64_t c = 0; c < C; c++) yr[c] = store_##SUFFIX(a[c] * s[c]);                \
        }                                                                                       \
        free(buf);                                                                              \
        }                                                                                       \
        return failed;                                                                          \
    }

/* Contiguous NCHW: unit = (image, tile of TILE spatial positions), all C planes of the tile. */
#define DEFINE_NCHW(SUFFIX, T)                                                                   \
    int lrn_nchw_##SUFFIX(const T *x, T *y, int64_t u0, int64_t u1, int64_t C, int64_t HW,      \
                          int64_t size, float alpha, float beta, float k, int relu) {           \
        int64_t h = size / 2, tiles = (HW + TILE - 1) / TILE;                                   \
        int failed = 0;                                                                         \
        _Pragma("omp parallel if (u1 - u0 >= MIN_PARALLEL_UNITS / 8)") {                        \
        float *buf = (float *)malloc(sizeof(float) * TILE * (2 * C + 2 * h + 1));              \
        float *a = buf, *sq = buf + C * TILE, *s = buf + (2 * C + 2 * h) * TILE;                \
        if (!buf) _Pragma("omp atomic write") failed = 1;                                      \
        else {                                                                                  \
            memset(sq, 0, sizeof(float) * h * TILE);                                            \
            memset(sq + (C + h) * TILE, 0, sizeof(float) * h * TILE);                           \
        }                                                                                       \
        _Pragma("omp for schedule(static)")                                                     \
        for (int64_t u = u0; u < u1; u++) {                                                     \
            if (!buf) continue;                                                                 \
            int64_t n = u / tiles, p0 = (u % tiles) * TILE;                                     \
            int64_t T_ = HW - p0 < TILE ? HW - p0 : TILE;                                       \
            const T *xn = x + n * C * HW + p0;                                                  \
            T *yn = y + n * C * HW + p0;                                                        \
            for (int64_t c = 0; c < C; c++) {                                                   \
                for (int64_t t = 0; t < T_; t++) {                                              \
                    float v = load_##SUFFIX(xn[c * HW + t]);                                    \
                    if (relu) v = v > 0.0f ? v : 0.0f;                                          \
                    a[c * TILE + t] = v;                                                        \
                    sq[(c + h) * TILE + t] = v * v;                                             \
                }                                                                               \
            }                                                                                   \
            for (int64_t c = 0; c < C; c++) {                                                   \
                float *sc = s; /* one plane of sums, reused per channel */                      \
                for (int64_t t = 0; t < T_; t++) sc[t] = sq[c * TILE + t];                      \
                for (int64_t j = 1; j < size; j++)                                              \
                    for (int64_t t = 0; t < T_; t++) sc[t] += sq[(c + j) * TILE + t];           \
                lrn_scale(sc, T_, alpha, beta, k);                                              \
                for (int64_t t = 0; t < T_; t++)                                                \
                    yn[c * HW + t] = store_##SUFFIX(a[c * TILE + t] * sc[t]);                   \
            }                                                                                   \
        }                                                                                       \
        free(buf);                                                                              \
        }                                                                                       \
        return failed;                                                                          \
    }

DEFINE_NHWC(f32, float)
DEFINE_NHWC(bf16, uint16_t)
DEFINE_NHWC(f16, _Float16)
DEFINE_NCHW(f32, float)
DEFINE_NCHW(bf16, uint16_t)
DEFINE_NCHW(f16, _Float16)
