/* Per-feature value distributions on the CPU (see monitor/record/distributions.py).
 *
 * featmon_distributions: for each valid row of acts [n, f] (float32, bfloat16 or float16, as
 * DTYPE_*), each finite value x of column c adds one to counts[c * DIST_BINS + b]: b is the
 * log bin of x (clamp((bits(x) >> 22) - DIST_BIN_BIAS, 0, DIST_LOG_BINS - 1), on the float32
 * bits: exact, the same as numpy's searchsorted over the edges) where x > threshold, and
 * DIST_BINS - 1 (inactive) otherwise. NaN and Inf are not counted. The caller passes the
 * largest float32 at most the monitor's threshold, so the float compare here is exact. counts
 * is int32, or int64 when wide.
 *
 * Why its own kernel, not a fifth accumulator of the statistics sweep (dense_moments.c): a
 * count indexed by the value is a scatter, which would leave that sweep scalar. Here each row
 * is read once, in tiles of TILE columns whose counts stay in cache, and in blocks of BLOCK
 * values: a vectorized, read-only pass builds the block's bit mask of the values that are not
 * plainly inactive (active, NaN or Inf), and only those are visited (a ReLU SAE's features are
 * mostly 0: about 7% of the values at 7% density). The inactive count is not counted value by
 * value: per column it is the tile's valid rows less its visited values. BLOCK 32 measured
 * about twice as fast as 16 or 64 on AMD EPYC (bench/distributions.py). Threads split the
 * features (columns): no two threads write one count. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featmon_protocol.h" /* DTYPE_*, DIST_*, VECTOR_CLONES, this file's prototype */

enum { BLOCK = 32, ALIGN = 64, TILE = 2048 }; /* a block's mask: one uint32_t */

static inline float from_f32(float v) { return v; }

static inline float from_bf16(uint16_t h) { return featmon_bf16_to_f32(h); }
static inline float from_f16(uint16_t h) { return featmon_f16_to_f32(h); }

static inline int64_t log_bin(float v) {
    int32_t bits;
    memcpy(&bits, &v, sizeof bits);
    const int32_t b = (bits >> 22) - DIST_BIN_BIAS; /* negative values: below 0 */
    return b < 0 ? 0 : b > DIST_LOG_BINS - 1 ? DIST_LOG_BINS - 1 : b;
}

/* Not plainly inactive: active (above t), NaN or +-Inf; exact for every float32 and t. */
#define FLAGGED(v, t) (!((v) <= (t)) | ((v) == -INFINITY))

/* The sample's probe (featmon_distributions_sampled): the tile's salts and the high halves of
 * its features' e-th kept keys, the row's token hash's high half, and the part's candidate
 * buffer (feature, row), `count` of `capacity` used; over capacity, count becomes -1. */
typedef struct {
    const uint32_t *salt, *limit;
    uint32_t hi;
    int32_t column, row; /* the tile's first column, the row */
    int32_t *cand;
    int64_t capacity, count;
} Probe;

/* An active finite value at column k of the tile: a candidate of the sample if the high half
 * of its key is at most the feature's e-th kept key's (the test featmon_sample_dense makes). */
static inline void probe_visit(Probe *p, int64_t k) {
    if (featmon_sample_high(p->hi, p->salt[k]) > p->limit[k] || p->count < 0) return;
    if (p->count == p->capacity) {
        p->count = -1;
        return;
    }
    p->cand[2 * p->count] = p->column + (int32_t)k;
    p->cand[2 * p->count + 1] = p->row;
    p->count++;
}

/* Columns [0, m) of one row (x and counts start at the tile's first column); seen: the tile's
 * per-column count of flagged values. The mask loop (full blocks: a constant trip count) is
 * vectorized; the flagged values are then visited by their bits: a finite one adds one to its
 * log bin, a NaN / Inf adds 0 (to the bin its bits give). */
#define ROW(NAME, T, LOAD, PROBING)                                                         \
    VECTOR_CLONES static void NAME(const T *restrict x, int64_t m, float t,                 \
                                   int32_t *restrict seen, void *counts, int wide,          \
                                   Probe *probe) {                                          \
        for (int64_t i = 0; i < m; i += BLOCK) {                                             \
            uint32_t mask = 0;                                                               \
            if (m - i >= BLOCK) {                                                            \
                for (int k = 0; k < BLOCK; k++) {                                            \
                    const float v = LOAD(x[i + k]);                                          \
                    mask |= (uint32_t)FLAGGED(v, t) << k;                                    \
                }                                                                            \
            } else {                                                                         \
                for (int k = 0; k < m - i; k++) {                                            \
                    const float v = LOAD(x[i + k]);                                          \
                    mask |= (uint32_t)FLAGGED(v, t) << k;                                    \
                }                                                                            \
            }                                                                                \
            while (mask) {                                                                   \
                const int64_t k = i + __builtin_ctz(mask);                                   \
                mask &= mask - 1;                                                            \
                const float v = LOAD(x[k]);                                                  \
                const int ok = (v - v) == 0.0f;                                              \
                const int64_t at = k * DIST_BINS + log_bin(v);                               \
                seen[k] += 1;                                                                \
                if (PROBING && ok && v > t) probe_visit(probe, k);                           \
                if (wide)                                                                    \
                    ((int64_t *)counts)[at] += ok;                                           \
                else                                                                         \
                    ((int32_t *)counts)[at] += ok;                                           \
            }                                                                                \
        }                                                                                    \
    }

/* Without the probe (PROBING 0) the code is the plain count's, unslowed. */
ROW(row_f32, float, from_f32, 0)
ROW(row_bf16, uint16_t, from_bf16, 0)
ROW(row_f16, uint16_t, from_f16, 0)
ROW(row_f32_probe, float, from_f32, 1)
ROW(row_bf16_probe, uint16_t, from_bf16, 1)
ROW(row_f16_probe, uint16_t, from_f16, 1)

/* Returns 0, or -1 where a part's scratch could not be allocated (counts then incomplete).
 * With token_key (not NULL), the pass also probes the sample of activating tokens: for each
 * valid row r and active finite value of feature c whose key's high half
 * featmon_sample_high(token_key[r] >> 32, featmon_sample_salt(c)) is at most that of key[c * e
 * + e - 1] (the feature's e-th kept key), (c, r) goes to part p's buffer cand[2 * p * per_part
 * ..], at most per_part pairs; found[p] (p < slots, slots >= threads) gets the part's count,
 * -1 where it overflowed or failed, 0 for the parts not used. featmon_sample_fused folds
 * them. */
static int distributions(const void *acts, int dtype, const uint8_t *valid, int64_t n,
                         int64_t f, float threshold, void *counts, int wide, int threads,
                         const int64_t *token_key, const int64_t *key, int64_t e,
                         int32_t *cand, int64_t per_part, int64_t *found, int64_t slots) {
    if (threads < 1) threads = 1;
    int64_t width = (f + threads - 1) / threads;
    width = (width + ALIGN - 1) / ALIGN * ALIGN;
    const int64_t parts = (f + width - 1) / width;
    const size_t size = dtype == DTYPE_F32 ? 4 : 2;
    if (token_key)
        for (int64_t p = 0; p < slots; p++) found[p] = p < parts ? -1 : 0;
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : failed)
#endif
    for (int64_t p = 0; p < parts; p++) {
        const int64_t lo = p * width, hi = lo + width < f ? lo + width : f;
        int32_t *seen = calloc(TILE, sizeof *seen);
        uint32_t *salt = token_key ? malloc(2 * TILE * sizeof *salt) : NULL;
        if (!seen || (token_key && !salt)) {
            free(seen);
            free(salt);
            failed = 1;
            continue;
        }
        Probe probe = {salt, salt + TILE, 0, 0, 0, cand + 2 * p * per_part, per_part, 0};
        uint32_t *limit = salt + TILE;
        /* Tiles of TILE columns, each over every row: the tile's counts (256 KiB) stay in
         * L2 while the rows stream past (8 KiB a row segment: the prefetchers follow). */
        for (int64_t start = lo; start < hi; start += TILE) {
            const int64_t m = hi - start < TILE ? hi - start : TILE;
            void *c = wide ? (void *)((int64_t *)counts + start * DIST_BINS)
                           : (void *)((int32_t *)counts + start * DIST_BINS);
            memset(seen, 0, TILE * sizeof *seen);
            if (token_key) {
                for (int64_t i = 0; i < m; i++) {
                    salt[i] = featmon_sample_salt(start + i);
                    limit[i] = (uint32_t)((uint64_t)key[(start + i) * e + e - 1] >> 32);
                }
                probe.column = (int32_t)start;
            }
            int64_t rows = 0; /* the valid rows */
            for (int64_t r = 0; r < n; r++) {
                if (valid && !valid[r]) continue;
                rows++;
                if (token_key) {
                    probe.hi = (uint32_t)((uint64_t)token_key[r] >> 32);
                    probe.row = (int32_t)r;
                }
                const char *x = (const char *)acts + ((size_t)r * (size_t)f + (size_t)start) * size;
                const int kind = dtype + (token_key ? 3 : 0);
                if (kind == DTYPE_F32)
                    row_f32((const float *)x, m, threshold, seen, c, wide, NULL);
                else if (kind == DTYPE_BF16)
                    row_bf16((const uint16_t *)x, m, threshold, seen, c, wide, NULL);
                else if (kind == DTYPE_F16)
                    row_f16((const uint16_t *)x, m, threshold, seen, c, wide, NULL);
                else if (kind == DTYPE_F32 + 3)
                    row_f32_probe((const float *)x, m, threshold, seen, c, wide, &probe);
                else if (kind == DTYPE_BF16 + 3)
                    row_bf16_probe((const uint16_t *)x, m, threshold, seen, c, wide, &probe);
                else
                    row_f16_probe((const uint16_t *)x, m, threshold, seen, c, wide, &probe);
            }
            for (int64_t i = 0; i < m; i++) { /* every value not seen was inactive */
                const int64_t at = i * DIST_BINS + DIST_BINS - 1;
                if (wide)
                    ((int64_t *)c)[at] += rows - seen[i];
                else
                    ((int32_t *)c)[at] += (int32_t)(rows - seen[i]);
            }
        }
        if (token_key) found[p] = probe.count;
        free(seen);
        free(salt);
    }
    return failed ? -1 : 0;
}

int featmon_distributions(const void *acts, int dtype, const uint8_t *valid, int64_t n,
                          int64_t f, float threshold, void *counts, int wide, int threads) {
    return distributions(acts, dtype, valid, n, f, threshold, counts, wide, threads, NULL, NULL,
                         0, NULL, 0, NULL, 0);
}

int featmon_distributions_sampled(const void *acts, int dtype, const uint8_t *valid, int64_t n,
                                  int64_t f, float threshold, void *counts, int wide,
                                  int threads, const int64_t *token_key, const int64_t *key,
                                  int64_t e, int32_t *cand, int64_t per_part, int64_t *found,
                                  int64_t slots) {
    return distributions(acts, dtype, valid, n, f, threshold, counts, wide, threads, token_key,
                         key, e, cand, per_part, found, slots);
}
