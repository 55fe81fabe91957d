/* CPU kernels of the synthesis layers, each one pass over memory where PyTorch's ops take several or walk
 * strided views slowly (benchmarks/RESULTS.md, "layer tail"):
 *  - layer_tail: y = clamp(leaky_relu(y + noise, slope), -clamp, clamp) in place; y channels_last
 *    [N, H, W, C] (bf16 or fp32), noise one value per pixel ([N or 1, H, W]) or NULL;
 *  - interleave_phases: a folded up-conv's [N, H, W, (row phase, column phase, C)] output into the
 *    rows and columns of its up-sampled grid, times an optional fp32 per-channel scale.
 * bf16 is computed in fp32 and rounded once, to nearest even (the AVX512-BF16 steps flush denormals to
 * zero), where PyTorch's ops round after each op and scale by a bf16-rounded factor: bf16 images differ in
 * their last bits with and without these kernels. fp32 gives PyTorch's bits.
 * Plain C on raw pointers, built by latentedit/ops/cpu_kernels.py with the system compiler. The work is
 * split over `threads` OpenMP threads (one core does not saturate the memory bandwidth): loaded after
 * torch, the library binds to the libgomp torch has loaded, so its threads are torch's own (a second pool
 * would compete with torch's spinning workers for the same cores). */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define BF16_VECTORS 1
#else
#define BF16_VECTORS 0
#endif

#define MIN_VALUES_PER_THREAD (1L << 16) /* below this a thread costs more than it saves */

static inline float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#if BF16_VECTORS
/* 16 bf16 values widened to fp32, and back with the hardware's conversion (round to nearest even;
 * denormals flush to zero). */
static inline __m512 load_bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline void store_bf16x16(uint16_t *p, __m512 v) {
    _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(v));
}
#endif

static inline float tail(float v, float slope, float clamp) {
    v = v > 0.0f ? v : v * slope;
    if (v > clamp) v = clamp;
    if (v < -clamp) v = -clamp;
    return v;
}

/* One pixel's bf16 channels. With AVX512-BF16, 16 channels a step with the hardware's conversion (round to
 * nearest even; it flushes denormals to zero): on short rows (32 channels) the compiler's own loop spent
 * more on its set-up than on the values (1024 px, 32 channels: 16 ms against 5 for a flat loop). */
static void bf16_pixel(uint16_t *restrict row, long channels, float add, float slope, float clamp) {
    long c = 0;
#if BF16_VECTORS
    const __m512 a = _mm512_set1_ps(add), s = _mm512_set1_ps(slope), zero = _mm512_setzero_ps();
    const __m512 hi = _mm512_set1_ps(clamp), lo = _mm512_set1_ps(-clamp);
    for (; c + 16 <= channels; c += 16) {
        __m512 v = _mm512_add_ps(load_bf16x16(row + c), a);
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), _mm512_mul_ps(v, s), v);
        v = _mm512_max_ps(lo, _mm512_min_ps(hi, v)); /* NaN in v comes out as v: min / max return their second operand */
        store_bf16x16(row + c, v);
    }
#endif
    for (; c < channels; c++) row[c] = f32_to_bf16(tail(bf16_to_f32(row[c]) + add, slope, clamp));
}

void layer_tail(void *y, const void *noise, long n_batch, long pixels, long channels, long noise_batch_stride,
                float slope, float clamp, int bf16, int threads) {
    const int parallel = threads > 1 && pixels * channels >= 2 * MIN_VALUES_PER_THREAD;
    for (long n = 0; n < n_batch; n++) { /* per sample: no division per pixel to find its noise */
        #pragma omp parallel for num_threads(threads) schedule(static) if (parallel)
        for (long p = 0; p < pixels; p++) {
            const long r = n * pixels + p, noise_at = n * noise_batch_stride + p;
            if (bf16) {
                const float add = noise ? bf16_to_f32(((const uint16_t *)noise)[noise_at]) : 0.0f;
                bf16_pixel((uint16_t *)y + r * channels, channels, add, slope, clamp);
            } else {
                const float add = noise ? ((const float *)noise)[noise_at] : 0.0f;
                float *restrict row = (float *)y + r * channels;
                for (long c = 0; c < channels; c++) row[c] = tail(row[c] + add, slope, clamp);
            }
        }
    }
}

/* n_values bf16 or fp32 values from src to dst, times scale[c] when scale is not NULL. */
static void scaled_copy(const void *src, void *dst, long n_values, const float *scale, int bf16) {
    if (!scale) {
        memcpy(dst, src, (size_t)n_values * (bf16 ? 2 : 4));
        return;
    }
    long c = 0;
    if (bf16) {
        const uint16_t *s = (const uint16_t *)src;
        uint16_t *d = (uint16_t *)dst;
#if BF16_VECTORS
        for (; c + 16 <= n_values; c += 16) {
            store_bf16x16(d + c, _mm512_mul_ps(load_bf16x16(s + c), _mm512_loadu_ps(scale + c)));
        }
#endif
        for (; c < n_values; c++) d[c] = f32_to_bf16(bf16_to_f32(s[c]) * scale[c]);
    } else {
        const float *s = (const float *)src;
        float *d = (float *)dst;
        for (; c < n_values; c++) d[c] = s[c] * scale[c];
    }
}

void interleave_phases(const void *src, void *dst, long n_batch, long height, long width, long channels,
                       long dst_n, long dst_h, long dst_a, long dst_w, long dst_b, const float *scale,
                       long scale_batch_stride, int bf16, int threads) {
    /* dst strides in values: sample, input row, row phase, input column, column phase (channels: 1) */
    const long size = bf16 ? 2 : 4;
    const int parallel = threads > 1 && height * width * 4 * channels >= 2 * MIN_VALUES_PER_THREAD;
    for (long n = 0; n < n_batch; n++) {
        const float *sc = scale ? scale + n * scale_batch_stride : NULL;
        #pragma omp parallel for num_threads(threads) schedule(static) if (parallel)
        for (long h = 0; h < height; h++) {
            for (long w = 0; w < width; w++) {
                const char *pixel = (const char *)src + ((n * height + h) * width + w) * 4 * channels * size;
                for (int a = 0; a < 2; a++) {
                    for (int b = 0; b < 2; b++) {
                        char *to = (char *)dst + (n * dst_n + h * dst_h + a * dst_a + w * dst_w + b * dst_b) * size;
                        scaled_copy(pixel + (a * 2 + b) * channels * size, to, channels, sc, bf16);
                    }
                }
            }
        }
    }
}
