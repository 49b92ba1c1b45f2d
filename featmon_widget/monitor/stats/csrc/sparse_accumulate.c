/* One pass over a TopK SAE's (indices, values) that folds every stored value into a per-feature
 * record of 8 doubles (one cache line): stored, nan, active, active_sum, s1, s2, min, max,
 * where s1 and s2 sum (x - shift[i]) and its square. Padding rows go to record f and indices
 * outside 0..f-1 to record f + 1, so no input can write outside the table.
 *
 * Counts are doubles: exact up to 2^53, and the caller folds the table long before that.
 * Why C: in aten the same work is six scatters, each a random pass over an f-sized buffer
 * plus a prepared copy of its source; here it is one random access per value. */
#include <stdint.h>

#include "featmon_protocol.h" /* RECORD and its fields RECORD_*, this file's prototypes */

enum { PREFETCH_AHEAD = 16 };

static void fold_value(double *a, double x, double shift, double threshold) {
    if (x - x != 0.0) { /* NaN or infinite */
        a[RECORD_NONFINITE] += 1.0;
        return;
    }
    const double d = x - shift;
    a[RECORD_STORED] += 1.0;
    if (x > threshold) {
        a[RECORD_ACTIVE] += 1.0;
        a[RECORD_ACTIVE_SUM] += x;
    }
    a[RECORD_S1] += d;
    a[RECORD_S2] += d * d;
    if (x < a[RECORD_MIN]) a[RECORD_MIN] = x;
    if (x > a[RECORD_MAX]) a[RECORD_MAX] = x;
}

/* A record holding nothing: zero sums, min +inf and max -inf. */
static void empty_record(double *a) {
    a[RECORD_STORED] = a[RECORD_NONFINITE] = a[RECORD_ACTIVE] = a[RECORD_ACTIVE_SUM] = 0.0;
    a[RECORD_S1] = a[RECORD_S2] = 0.0;
    a[RECORD_MIN] = 1.0 / 0.0;
    a[RECORD_MAX] = -1.0 / 0.0;
}

/* values are float32 unless values_are_f64; rows[0] += number of valid rows. */
void featmon_sparse_accumulate(const int64_t *idx, const void *values, int values_are_f64,
                               const uint8_t *valid, int64_t n, int64_t k, int64_t f,
                               const double *shift, double threshold, double *acc,
                               double *rows) {
    const int64_t m = n * k;
    int64_t valid_rows = 0;
    for (int64_t r = 0; r < n; r++) {
        const int row_ok = valid[r] != 0;
        valid_rows += row_ok;
        for (int64_t p = r * k; p < (r + 1) * k; p++) {
            /* The table is far larger than cache and visited at random: ask for later
             * records now so their misses overlap. */
            if (p + PREFETCH_AHEAD < m) {
                const int64_t q = idx[p + PREFETCH_AHEAD];
                if (q >= 0 && q < f) {
                    __builtin_prefetch(acc + q * RECORD, 1);
                    __builtin_prefetch(shift + q, 0);
                }
            }
            int64_t i = idx[p];
            i = !row_ok ? f : (i >= 0 && i < f) ? i : f + 1;
            const double x = values_are_f64 ? ((const double *)values)[p]
                                            : (double)((const float *)values)[p];
            fold_value(acc + i * RECORD, x, shift[i], threshold);
        }
    }
    rows[0] += (double)valid_rows;
}

/* A TopK row that names a feature twice has no dense meaning: the first occurrence counts and
 * each later repeat within the row is set to -1 (out of range: ignored and counted as dropped
 * by every path). idx [n, k] is the monitor's own copy, rewritten in place. stamp [f] holds,
 * per feature, the mark of the last row that named it; rows get marks first_mark + 1.., so the
 * caller keeps one stamp array and never clears it (marks only grow). */
void featmon_drop_repeats(int64_t *idx, int64_t n, int64_t k, int64_t f, int64_t *stamp,
                          int64_t first_mark) {
    for (int64_t r = 0; r < n; r++) {
        const int64_t mark = first_mark + r + 1;
        for (int64_t p = r * k; p < (r + 1) * k; p++) {
            const int64_t i = idx[p];
            if (i < 0 || i >= f) continue;
            if (stamp[i] == mark) idx[p] = -1;
            else stamp[i] = mark;
        }
    }
}

/* Merge the table (taken against shift[i]) into the running totals in place and empty it, in
 * one pass over the records: the arithmetic of pending.merge_table and moments.merge_moments,
 * operation for operation (no contraction: -std=c99), so the totals come out bit for bit as
 * the torch path gives them. Returns the indices dropped (the out-of-range record). */
int64_t featmon_merge_table(int64_t f, double *table, double rows, const double *shift,
                            int zero_is_active, int64_t *count, int64_t *nan_count,
                            int64_t *active_count, double *active_sum, double *mean,
                            double *m2, double *mn, double *mx) {
    const int64_t n_rows = (int64_t)rows;
    for (int64_t i = 0; i < f; i++) {
        double *a = table + i * RECORD;
        const int64_t stored = (int64_t)a[RECORD_STORED];
        const int64_t nonfinite = (int64_t)a[RECORD_NONFINITE];
        const int64_t n = n_rows - nonfinite, zeros = n - stored;
        const double zeros_f = (double)zeros, s = shift[i];
        const int64_t active = (int64_t)a[RECORD_ACTIVE] + (zero_is_active ? zeros : 0);
        const double s1 = a[RECORD_S1] - zeros_f * s;
        const double s2 = a[RECORD_S2] + zeros_f * s * s;
        double lo = a[RECORD_MIN], hi = a[RECORD_MAX];
        if (zeros > 0) {
            if (lo > 0.0) lo = 0.0;
            if (hi < 0.0) hi = 0.0;
        }
        const int64_t n_new = count[i] + n;
        const double safe_n = (double)(n_new > 1 ? n_new : 1);
        if (n_new > 0) {
            double v = m2[i] + s2 - s1 * s1 / safe_n;
            m2[i] = v < 0.0 ? 0.0 : v;
            mean[i] = s + s1 / safe_n;
        } else if (m2[i] < 0.0) {
            m2[i] = 0.0;
        }
        count[i] = n_new;
        nan_count[i] += nonfinite;
        active_count[i] += active;
        active_sum[i] += a[RECORD_ACTIVE_SUM];
        if (lo < mn[i]) mn[i] = lo;
        if (hi > mx[i]) mx[i] = hi;
        empty_record(a);
    }
    const double *out = table + (f + 1) * RECORD;
    const int64_t dropped = (int64_t)(out[RECORD_STORED] + out[RECORD_NONFINITE]);
    for (int64_t i = f; i < f + 2; i++) {
        double *a = table + i * RECORD;
        empty_record(a);
    }
    return dropped;
}
