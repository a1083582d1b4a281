/* The int8 model's input boundary: fp32 pictures (N, C, H, W) -> quint8 channels-last (N, H, W, C).
 *
 * torch's quantize_per_tensor writes the NCHW layout it is given, and the first int8 convolution
 * (fbgemm's) then copies it to channels-last: two passes over the batch, the second a 3-channel
 * transpose one byte at a time. This does both in one: each work unit quantises a block of pixels
 * of every channel plane (contiguous, vectorised) into a small buffer, then interleaves them.
 *
 * The rounding is fbgemm's, which torch uses on x86: q = nearbyint(x * (1 / scale)) + zero_point,
 * the reciprocal taken in float, ties to even, clamped to [0, 255]; so the bytes equal
 * quantize_per_tensor's for every finite input torch itself quantises correctly (beyond about
 * 2^31 * scale torch's float-to-int conversion overflows to 0; this saturates to 0 or 255; NaN,
 * which torch maps to 0 or 255 depending on its code path, is 0 here and counted in *nans, so
 * the caller can refuse the batch instead of computing on a value no byte can hold).
 * Plain C, no torch headers; OpenMP binds to the libgomp torch loaded (see kernels/__init__.py).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 1024 /* pixels a work unit: C * BLOCK bytes of buffer stay in L1 */
#define MAX_C 8    /* channels this kernel handles (pictures: 1 to 4) */

/* dst[i] = q(src[i]) for i < len; returns how many of the src values were NaN (written as 0). */
static inline int64_t quantize_run(const float *src, uint8_t *dst, int64_t len, float inv, float zp) {
    int64_t nans = 0;
    for (int64_t i = 0; i < len; i++) {
        const float v = nearbyintf(src[i] * inv) + zp; /* NaN fails both tests: 0 */
        dst[i] = (uint8_t)(v > 255.0f ? 255.0f : (v >= 0.0f ? v : 0.0f));
        nans += src[i] != src[i];
    }
    return nans;
}

/* dst[i * C + c] = planes[c * stride + i] for i < len: C channel planes to pixel-interleaved bytes. */
static inline void interleave(const uint8_t *planes, int64_t stride, uint8_t *dst, int64_t len, int64_t C) {
    if (C == 3) {
        for (int64_t i = 0; i < len; i++) {
            dst[3 * i] = planes[i];
            dst[3 * i + 1] = planes[stride + i];
            dst[3 * i + 2] = planes[2 * stride + i];
        }
    } else {
        for (int64_t i = 0; i < len; i++)
            for (int64_t c = 0; c < C; c++) dst[i * C + c] = planes[c * stride + i];
    }
}

/* Returns 1 (and writes nothing) when C is out of range. */
int quantize_nchw_to_nhwc_u8(const float *x, uint8_t *y, int64_t N, int64_t C, int64_t HW, float scale,
                             int zero_point, int64_t *nans) {
    if (C < 1 || C > MAX_C) return 1;
    const float inv = 1.0f / scale, zp = (float)zero_point;
    const int64_t blocks = (HW + BLOCK - 1) / BLOCK;
    int64_t found = 0;
    _Pragma("omp parallel for schedule(static) reduction(+ : found) if (N * HW >= 65536)")
    for (int64_t u = 0; u < N * blocks; u++) {
        uint8_t buf[MAX_C * BLOCK];
        const int64_t n = u / blocks, p0 = (u % blocks) * BLOCK, len = HW - p0 < BLOCK ? HW - p0 : BLOCK;
        for (int64_t c = 0; c < C; c++) found += quantize_run(x + (n * C + c) * HW + p0, buf + c * BLOCK, len, inv, zp);
        interleave(buf, BLOCK, y + (n * HW + p0) * C, len, C);
    }
    *nans = found;
    return 0;
}

/* The same quantisation into conv1's space-to-depth layout: y is (N, HB, WB, S * S * C) with
 * y[n, by, bx, (dy * S + dx) * C + c] = q(x[n, c, by * S + dy - P, bx * S + dx - P]), zero_point
 * where that pixel lies outside the picture (the convolution's zero padding). A stride-S KxK
 * convolution of x is then a stride-1 ceil(K/S) x ceil(K/S) one of y with S * S * C channels: for
 * conv1, 3x3 over 48 channels instead of 11x11 over 3, which int8 kernels run faster. Returns 1
 * (and writes nothing) when C or S is out of range. */
int quantize_nchw_to_blocks_u8(const float *x, uint8_t *y, int64_t N, int64_t C, int64_t H, int64_t W, int64_t S,
                               int64_t P, int64_t HB, int64_t WB, float scale, int zero_point, int64_t *nans) {
    if (C < 1 || C > MAX_C || S < 2 || S > 8 || WB * S > BLOCK) return 1;
    const float inv = 1.0f / scale, zp = (float)zero_point;
    /* a row's columns j - P: padding before lo, the picture's pixels up to end, padding after */
    const int64_t span = WB * S, lo = P < span ? P : span, hi = W + P < span ? W + P : span, end = hi > lo ? hi : lo;
    int64_t found = 0;
    _Pragma("omp parallel for schedule(static) reduction(+ : found) if (N * HB >= 16)")
    for (int64_t u = 0; u < N * HB; u++) {
        uint8_t rows[MAX_C * BLOCK], mixed[8 * MAX_C * BLOCK]; /* one input row's channels; S rows interleaved */
        const int64_t n = u / HB, by = u % HB, SC = S * C;
        for (int64_t dy = 0; dy < S; dy++) {
            const int64_t r = by * S + dy - P;
            uint8_t *mix = mixed + dy * span * C; /* (column, channel) bytes of input row r */
            if (r < 0 || r >= H) {
                memset(mix, zero_point, (size_t)(span * C));
                continue;
            }
            for (int64_t c = 0; c < C; c++) {
                uint8_t *row = rows + c * span;
                memset(row, zero_point, (size_t)lo);
                const float *xr = x + ((n * C + c) * H + r) * W; /* column j of the row is xr[j - P] */
                if (end > lo) found += quantize_run(xr + (lo - P), row + lo, end - lo, inv, zp);
                memset(row + end, zero_point, (size_t)(span - end));
            }
            interleave(rows, span, mix, span, C);
        }
        /* block bx holds, for each dy, the S * C bytes of columns bx * S .. bx * S + S - 1 of row dy */
        uint8_t *yo = y + u * WB * S * SC;
        for (int64_t bx = 0; bx < WB; bx++)
            for (int64_t dy = 0; dy < S; dy++, yo += SC) memcpy(yo, mixed + dy * span * C + bx * SC, (size_t)SC);
    }
    *nans = found;
    return 0;
}
