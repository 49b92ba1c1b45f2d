/* Each picked row's k strongest features, for the history ring (see monitor/history.py).
 *
 * featmon_row_topk: for rows pick[0..m) of acts [rows, f] (float32 or bfloat16, row-major), the
 * k largest values, largest first, with their feature indices; NaN ranks above every number (as
 * in torch.topk) and equal values keep the lower index first. bfloat16 values are widened to
 * float32 exactly (a 16-bit shift), 64 at a time, so they rank as their float32 values do.
 *
 * Why C: torch.topk over [100, 24576] costs about 15 reads of it on a 2-core CPU, and the rows
 * had to be gathered into a copy first. Here each row is read once, in order: a vectorized
 * test of 64 values at a time against the current k-th best skips nearly all of them, and the
 * few that beat it are inserted into a sorted list of k. For bfloat16 this also replaces
 * torch's gather of the rows (index_select on bfloat16 is not vectorized: seconds at 131072
 * features) and the float copy before torch.topk. */
#include <stdint.h>
#include <string.h>

#include "featmon_protocol.h" /* this file's prototype */

enum { BLOCK = 64 };

/* Whether a ranks strictly below v (NaN above numbers; among NaNs the earlier stays first). */
static int ranks_below(float a, float v) {
    if (v != v) return a == a;
    return a == a && a < v;
}

static void insert(float *val, int32_t *idx, int64_t *held, int64_t k, float v, int32_t i) {
    int64_t j = *held < k ? *held : k - 1; /* full: the last entry drops out */
    while (j > 0 && ranks_below(val[j - 1], v)) {
        val[j] = val[j - 1];
        idx[j] = idx[j - 1];
        j--;
    }
    val[j] = v;
    idx[j] = i;
    if (*held < k) (*held)++;
}

/* Whether any of x[0..n) could enter a full list whose last entry is kth. */
static int any_beats(const float *restrict x, int64_t n, float kth) {
    int any = 0;
    const int kth_is_number = kth == kth;
    for (int64_t q = 0; q < n; q++) any |= (x[q] > kth) | ((x[q] != x[q]) & kth_is_number);
    return any;
}

/* x[i0..i0+n) of a row as float32: the row itself, or its bfloat16 values widened into buf. */
static const float *block_of(const void *row, int is_bf16, int64_t i0, int64_t n, float *buf) {
    if (!is_bf16) return (const float *)row + i0;
    const uint16_t *h = (const uint16_t *)row + i0;
    for (int64_t q = 0; q < n; q++) {
        const uint32_t bits = (uint32_t)h[q] << 16;
        memcpy(buf + q, &bits, sizeof bits);
    }
    return buf;
}

static void row_topk(const void *row, int is_bf16, int64_t f, int64_t k, float *val,
                     int32_t *idx) {
    float buf[BLOCK];
    int64_t held = 0;
    for (int64_t i = 0; i < f; i += BLOCK) {
        const int64_t n = f - i < BLOCK ? f - i : BLOCK;
        const float *x = block_of(row, is_bf16, i, n, buf);
        int64_t q = 0;
        for (; q < n && held < k; q++) insert(val, idx, &held, k, x[q], (int32_t)(i + q));
        if (q == 0 && !any_beats(x, n, val[k - 1])) continue;
        for (; q < n; q++) {
            const float v = x[q], kth = val[k - 1];
            if (v > kth || (v != v && kth == kth)) insert(val, idx, &held, k, v, (int32_t)(i + q));
        }
    }
}

/* acts [rows, f] float32 (is_bf16 = 0) or bfloat16 (1); pick [m] row numbers; outputs val [m, k] float32 and idx [m, k] int32;
 * 1 <= k <= f. A pick outside 0..rows-1 (never made by the monitor) reads nothing and gives
 * index -1, value NaN. */
void featmon_row_topk(const void *acts, int is_bf16, int64_t rows, int64_t f,
                      const int64_t *pick, int64_t m, int64_t k, float *val, int32_t *idx,
                      int threads) {
    const size_t width = is_bf16 ? sizeof(uint16_t) : sizeof(float);
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < m; r++) {
        if (pick[r] < 0 || pick[r] >= rows) {
            for (int64_t j = 0; j < k; j++) val[r * k + j] = 0.0f / 0.0f, idx[r * k + j] = -1;
            continue;
        }
        row_topk((const char *)acts + (size_t)(pick[r] * f) * width, is_bf16, f, k, val + r * k,
                 idx + r * k);
    }
    (void)threads;
}
