/* Co-firing counts of a few selected features against every feature (see
 * monitor/record/cofiring.py).
 *
 * featmon_cofire: for each valid row of acts [n, f] (float32, or bfloat16 given as its bits),
 * a feature is active where x > threshold (the caller passes the largest value of the input's
 * type at most the monitor's threshold, so the float comparison here is exact; NaN is never
 * active): own[c] += 1 for every active feature c, and both[j * f + c] += 1 for every active c
 * of a row on which selected feature sel[j] is active. both is int32 [s, f], or int64 when
 * wide; own is int32 [f]. Every sel[j] is in 0..f-1 (checked by the caller).
 *
 * Why C: in torch this is a compare, a float copy and a skinny matrix product, 5 to 15 reads of
 * the activations on a 2-core CPU; here each row is read once, and again from cache only for
 * each selected feature active on it. Threads split the features (columns): no two threads
 * write one count. */
#include <stdint.h>

#include "featmon_protocol.h" /* this file's prototype */

enum { ALIGN = 16 };


#define ROW_PASSES(NAME, T, VALUE)                                                            \
    static void NAME(const T *restrict x, int64_t lo, int64_t hi, float t,                    \
                     int32_t *restrict own, const int64_t *on, int64_t m, int64_t f,          \
                     void *both, int wide) {                                                  \
        for (int64_t c = lo; c < hi; c++) own[c] += VALUE(x[c]) > t;                          \
        for (int64_t q = 0; q < m; q++) {                                                     \
            if (wide) {                                                                       \
                int64_t *restrict b = (int64_t *)both + on[q] * f;                            \
                for (int64_t c = lo; c < hi; c++) b[c] += VALUE(x[c]) > t;                    \
            } else {                                                                          \
                int32_t *restrict b = (int32_t *)both + on[q] * f;                            \
                for (int64_t c = lo; c < hi; c++) b[c] += VALUE(x[c]) > t;                    \
            }                                                                                 \
        }                                                                                     \
    }

#define AS_FLOAT(v) (v)
ROW_PASSES(passes_f32, float, AS_FLOAT)
ROW_PASSES(passes_bf16, uint16_t, featmon_bf16_to_f32)

void featmon_cofire(const void *acts, int is_bf16, const uint8_t *valid, int64_t n, int64_t f,
                    const int64_t *sel, int64_t s, float threshold, void *both, int wide,
                    int32_t *own, int threads) {
    if (threads < 1) threads = 1;
    int64_t width = (f + threads - 1) / threads;
    width = (width + ALIGN - 1) / ALIGN * ALIGN;
    const int64_t parts = (f + width - 1) / width;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t p = 0; p < parts; p++) {
        const int64_t lo = p * width, hi = lo + width < f ? lo + width : f;
        int64_t on[64];
        for (int64_t r = 0; r < n; r++) {
            if (!valid[r]) continue;
            int64_t m = 0;
            if (is_bf16) {
                const uint16_t *x = (const uint16_t *)acts + r * f;
                for (int64_t j = 0; j < s && j < 64; j++)
                    if (featmon_bf16_to_f32(x[sel[j]]) > threshold) on[m++] = j;
                passes_bf16(x, lo, hi, threshold, own, on, m, f, both, wide);
            } else {
                const float *x = (const float *)acts + r * f;
                for (int64_t j = 0; j < s && j < 64; j++)
                    if (x[sel[j]] > threshold) on[m++] = j;
                passes_f32(x, lo, hi, threshold, own, on, m, f, both, wide);
            }
        }
    }
    (void)threads;
}
