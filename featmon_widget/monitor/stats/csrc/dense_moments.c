/* The dense statistics update on the CPU: per feature of acts [n, f] (float32, bfloat16 or
 * float16), over the rows where valid is true, the same Moments as moments.py's batch_moments:
 * finite count, NaN/Inf count, active count and sum (x > threshold), sum and sum of squares of
 * (x - shift[i]) in float64, and float32 min / max of the finite values.
 *
 * Why C: the reduction runs down the rows, a whole feature row apart. Inductor's code walks
 * that stride one block of 16 columns at a time, which runs at memory latency on CPUs whose
 * prefetchers do not follow strides across pages (Intel Xeon: 7-15x a read). Here the columns
 * are cut into tiles; each tile's rows are streamed contiguously, four rows per sweep, while
 * the tile's accumulators stay in L1/L2. Threads take whole tiles.
 *
 * For the top-activating examples the same pass can also keep, per sequence (`tokens` rows
 * each) and feature, the largest finite value above the threshold and the earliest token
 * holding it (examples.c's featmon_row_max, without a second read of acts); and it counts
 * every feature's value distribution, and probes the sample of activating tokens, on the rows
 * it has just read (below).
 *
 * Built with -O3 -fno-trapping-math (so gcc if-converts the float compares) the sweep is
 * vectorized; selects, not 0/1 multiplies, keep NaN out of the sums. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featmon_protocol.h" /* DTYPE_*, ACT_*, VECTOR_CLONES, this file's prototype */

enum { TILE = 2048, ROWS = 4, AVX512_ROWS = 16, MAX_THREADS = 16 };
#ifndef COUNT_ROWS /* a test builds it with a small one */
#define COUNT_ROWS ((int64_t)1 << 30)
#endif

/* A tile's running sums; counts are int32 (one vector op per 16 values; folded into the
 * int64 outputs every COUNT_ROWS rows). best / arg: the current sequence's largest finite
 * value and its earliest token (-inf / -1 where none yet). Tracking them, the sweep leaves max
 * alone: each sequence's best joins it when the sequence is flushed, so a value takes one
 * compare, not two (its row maximum is its best if above the threshold). */
typedef struct {
    int32_t *count, *active;
    double *active_sum, *s1, *s2;
    float *min, *max, *best;
    int32_t *arg;
} Acc;

/* One value of token t into column i's sums (and its row maximum when `track`). */
#define FOLD(v, t)                                                         \
    do {                                                                   \
        const float v_ = (v);                                              \
        const int ok = (v_ - v_) == 0.0f; /* finite */                     \
        const double x = (double)v_;                                       \
        const double d = ok ? x - sh : 0.0;                                \
        const int on = ok & (v_ > tf);                                     \
        c += ok;                                                           \
        a += on;                                                           \
        as += on ? x : 0.0;                                                \
        s1 += d;                                                           \
        s2 += d * d;                                                       \
        lo = (ok & (v_ < lo)) ? v_ : lo;                                   \
        if (tracking) { /* a constant: compiled away when 0 */             \
            const int take = ok & (v_ > bst); /* later equal values lose */ \
            bst = take ? v_ : bst;                                         \
            ag = take ? (t) : ag;                                          \
        } else {                                                           \
            hi = (ok & (v_ > hi)) ? v_ : hi;                               \
        }                                                                  \
    } while (0)

/* Column i's sums into registers, and back. */
#define SWEEP_LOAD                                                                           \
    const double sh = shift[i];                                                              \
    int32_t c = count[i], a = active[i];                                                     \
    double as = active_sum[i], s1 = sum1[i], s2 = sum2[i];                                   \
    float lo = mn[i], hi = mx[i], bst = tracking ? best[i] : 0.0f;                           \
    int32_t ag = tracking ? arg[i] : 0
#define SWEEP_STORE                                                                          \
    count[i] = c, active[i] = a, active_sum[i] = as, sum1[i] = s1, sum2[i] = s2;             \
    mn[i] = lo, mx[i] = hi;                                                                  \
    if (tracking) best[i] = bst, arg[i] = ag

/* The SAE activation the statistics pass can apply in place (our own float32 SAEs): none, or
 * JumpReLU as SAELens writes it, relu(v) * (v > jump), with torch's result for every input:
 * NaN stays NaN, +inf whose mask is 0 becomes NaN (inf * 0), everything else not above both 0
 * and jump becomes 0. A plain ReLU is JumpReLU with jump = -inf.
 *
 * Written on the bits: with any float ?: (or a multiply by the mask) gcc threaded the value
 * ranges it could prove into the sums below and left the four-row sweep scalar. */
static inline float jump_relu(float v, float jump) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    const uint32_t keep = 0u - (uint32_t)(((v > 0.0f) & (v > jump)) | (v != v));
    const uint32_t to_nan = 0u - (uint32_t)((v == INFINITY) & !(v > jump));
    bits = (bits & keep) | (to_nan & 0x7FC00000u);
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
#define ACTIVATE(act, v, jump) ((act) == ACT_JUMP ? jump_relu((v), (jump)) : (v))
#define STORE_F32(p, v) (*(p) = (v))
#define STORE_NONE(p, v) ((void)0)

/* Row r's value in column i: loaded, activated (and written back) when `act`, and folded. */
#define STEP(r, t, load, store, act)                                                         \
    do {                                                                                     \
        float v_in = load(r[i]);                                                             \
        if (act != ACT_NONE) {                                                               \
            v_in = ACTIVATE(act, v_in, jump[i]);                                             \
            store(r + i, v_in);                                                              \
        }                                                                                    \
        FOLD(v_in, t);                                                                       \
    } while (0)

/* Rows r0..r3 (tokens t0..t3, in order) into the tile's n columns; `rows` is 4, or 1 for r0
 * alone. */
#define SWEEP(name, type, load, store, track, act)                                           \
    VECTOR_CLONES static void name(                                                          \
        type *restrict r0, type *restrict r1, type *restrict r2, type *restrict r3,          \
        int32_t t0, int32_t t1, int32_t t2, int32_t t3, int rows, int64_t n,                 \
        const double *restrict shift, float tf, const float *restrict jump,                  \
        int32_t *restrict count, int32_t *restrict active, double *restrict active_sum,      \
        double *restrict sum1, double *restrict sum2, float *restrict mn,                    \
        float *restrict mx, float *restrict best, int32_t *restrict arg) {                   \
        const int tracking = track;                                                          \
        (void)jump;                                                                          \
        if (rows == ROWS) {                                                                  \
            for (int64_t i = 0; i < n; i++) {                                                \
                SWEEP_LOAD;                                                                  \
                STEP(r0, t0, load, store, act);                                                                \
                STEP(r1, t1, load, store, act);                                                                \
                STEP(r2, t2, load, store, act);                                                                \
                STEP(r3, t3, load, store, act);                                                                \
                SWEEP_STORE;                                                                 \
            }                                                                                \
            return;                                                                          \
        }                                                                                    \
        for (int64_t i = 0; i < n; i++) {                                                    \
            SWEEP_LOAD;                                                                      \
            STEP(r0, t0, load, store, act);                                                                    \
            SWEEP_STORE;                                                                     \
        }                                                                                    \
    }

#define LOAD_F32(v) (v)
SWEEP(sweep_f32, float, LOAD_F32, STORE_NONE, 0, ACT_NONE)
SWEEP(sweep_bf16, uint16_t, featmon_bf16_to_f32, STORE_NONE, 0, ACT_NONE)
SWEEP(sweep_f16, uint16_t, featmon_f16_to_f32, STORE_NONE, 0, ACT_NONE)
SWEEP(sweep_f32_max, float, LOAD_F32, STORE_NONE, 1, ACT_NONE)
SWEEP(sweep_bf16_max, uint16_t, featmon_bf16_to_f32, STORE_NONE, 1, ACT_NONE)
SWEEP(sweep_f16_max, uint16_t, featmon_f16_to_f32, STORE_NONE, 1, ACT_NONE)
SWEEP(sweep_f32_jump, float, LOAD_F32, STORE_F32, 0, ACT_JUMP)
SWEEP(sweep_f32_jump_max, float, LOAD_F32, STORE_F32, 1, ACT_JUMP)

/* ---- the value distributions, counted in the same pass (see monitor/record/distributions.py)
 *
 * Each finite value x > t of column c adds one to dist[c * DIST_BINS + b], b its log bin
 * (clamp((bits(x) >> 22) - DIST_BIN_BIAS, 0, DIST_LOG_BINS - 1) on the float32 bits: the same
 * as numpy's searchsorted over the edges); the inactive count (finite, at most t) is the
 * tile's finite count less its active count, added once per call. A count indexed by the value
 * is a scatter, which would leave the sweep scalar: so it comes in two phases with few
 * data-dependent branches. First each row's counted values' cells (column * DIST_BINS + bin,
 * in the tile) are compacted into a buffer: the AVX-512 sweep does it as it sums (the compare
 * into a mask it has already, the bins in vector lanes, one compress per sixteen columns and
 * row); elsewhere the swept rows, still in cache, are read again, and a vectorized compare
 * builds a 32-value block's bit mask whose set bits are written eight at a time. Then one loop
 * a row adds one to each cell of the thread's 16-bit tile counts (128 KB: in a tile's 256 KB
 * of int32 counts nearly every add missed L1), added into the distributions at the tile's end
 * and every LOCAL_ROWS rows, before any could overflow (a cell gains at most one a row). With
 * the sample's probe, each counted value whose token key's high half is at most its feature's
 * e-th kept key's also becomes a candidate (feature, row) of the thread's part
 * (featmon_sample_fused folds them). */
enum { BLOCK = 32, CELL_SLACK = BLOCK + 8 }; /* a row's cells: up to m + CELL_SLACK written */
/* With AVX-512 the sweep finds the cells of its rows as it goes (no second read of them):
 * row q's at[q], found[q] of them. */
typedef struct {
    int32_t *at[AVX512_ROWS];
    int64_t found[AVX512_ROWS];
} Cells;
#ifndef LOCAL_ROWS /* a test builds it with a small one */
#define LOCAL_ROWS ((int64_t)1 << 15) /* a flush comes before a cell can pass 65,535 */
#endif

typedef struct {
    void *counts; /* [f, DIST_BINS] int32, or int64 when wide; NULL: the probe or L0 alone */
    int wide;
    const int64_t *token_key, *key; /* [n], [f, e]; token_key NULL: no probe */
    int64_t e;
    int32_t *cand;                  /* [slots * per_part, 2] */
    int64_t per_part, *found, slots;
    int32_t *row_l0;                /* [threads, n] each thread's counted values a row, or NULL */
    const int32_t *top_slot;        /* [n] a row's history slot (-1: none), or NULL: no top-k */
    int64_t top_m, top_k;
    struct TopList *tops;           /* [threads, top_m] */
} Dist;

/* One thread's k largest counted values of one history row (largest first, ties to the lower
 * column), and how many values of the row it counted. */
typedef struct TopList {
    float *val;
    int32_t *idx;
    int64_t held, counted;
} TopList;

/* A thread's probe: its tile's salts and limits, its candidate part, count of capacity. */
typedef struct {
    uint32_t *salt, *limit;
    int32_t *cand;
    int64_t capacity, count;
} Probe;

static inline int32_t log_bin(float v) {
    int32_t bits;
    memcpy(&bits, &v, sizeof bits);
    const int32_t b = (bits >> 22) - DIST_BIN_BIAS; /* negative values: below 0 */
    return b < 0 ? 0 : b > DIST_LOG_BINS - 1 ? DIST_LOG_BINS - 1 : b;
}

/* Counted: finite and above t (NaN and both infinities are not). */
#define COUNTED(v, t) (((v) > (t)) & ((v) < INFINITY))

/* The cells of one row's m columns into `cells` (see above); their number. */
#define CELLS(NAME, T, LOAD)                                                                 \
    VECTOR_CLONES static int64_t NAME(const T *restrict x, int64_t m, float t,               \
                                      int32_t *restrict cells) {                             \
        int64_t found = 0;                                                                   \
        for (int64_t i = 0; i < m; i += BLOCK) {                                             \
            uint32_t mask = 0;                                                               \
            if (m - i >= BLOCK) {                                                            \
                for (int k = 0; k < BLOCK; k++) {                                            \
                    const float v = LOAD(x[i + k]);                                          \
                    mask |= (uint32_t)COUNTED(v, t) << k;                                    \
                }                                                                            \
            } else {                                                                         \
                for (int k = 0; k < m - i; k++) {                                            \
                    const float v = LOAD(x[i + k]);                                          \
                    mask |= (uint32_t)COUNTED(v, t) << k;                                    \
                }                                                                            \
            }                                                                                \
            int32_t *out = cells + found;                                                    \
            found += __builtin_popcount(mask);                                               \
            do { /* a bit past the block keeps ctz defined once the mask is empty */         \
                for (int q = 0; q < 8; q++) {                                                \
                    const int64_t k = i + __builtin_ctzll((uint64_t)mask | (1ull << 32));    \
                    out[q] = (int32_t)(k * DIST_BINS + (k < m ? log_bin(LOAD(x[k])) : 0));   \
                    mask &= mask - 1;                                                        \
                }                                                                            \
                out += 8;                                                                    \
            } while (mask);                                                                  \
        }                                                                                    \
        return found;                                                                        \
    }
CELLS(cells_f32, float, LOAD_F32)
CELLS(cells_bf16, uint16_t, featmon_bf16_to_f32)
CELLS(cells_f16, uint16_t, featmon_f16_to_f32)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define AVX512_CELLS 1
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))

/* Sixteen values of row x from column i as float32 (`take`: the lanes to load). */
AVX512 static inline __m512 load16(const void *x, int dtype, int64_t i, __mmask16 take) {
    if (dtype == DTYPE_F32) return _mm512_maskz_loadu_ps(take, (const float *)x + i);
    const __m256i h = _mm256_maskz_loadu_epi16(take, (const uint16_t *)x + i);
    if (dtype == DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Sixteen values' cells at `base` (their columns * DIST_BINS), compacted to cells + found;
 * the new count. */
AVX512 static inline int64_t compress16(__m512 v, __mmask16 on, __m512i base,
                                        int32_t *restrict cells, int64_t found) {
    const __m512i bias = _mm512_set1_epi32(DIST_BIN_BIAS);
    const __m512i top = _mm512_set1_epi32(DIST_LOG_BINS - 1);
    __m512i bin = _mm512_sub_epi32(_mm512_srai_epi32(_mm512_castps_si512(v), 22), bias);
    bin = _mm512_min_epi32(_mm512_max_epi32(bin, _mm512_setzero_si512()), top);
    _mm512_storeu_si512(cells + found, _mm512_maskz_compress_epi32(on, _mm512_add_epi32(base, bin)));
    return found + _mm_popcnt_u32(on);
}

/* Whether this CPU has what sweep_avx512 uses; FEATMON_AVX512=0 turns it off (the tests check
 * gcc's sweep and the portable cells against it). */
static int have_avx512(void) {
    const char *off = getenv("FEATMON_AVX512");
    if (off && off[0] == '0') return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
           && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

/* The sweep (see SWEEP) written with AVX-512 masks: gcc's code for it selects with a blend
 * and then adds, and tests finiteness with a subtract and a compare; here a masked add and
 * one fpclass do each. The same sums in the same order per column, rounded the same. Sixteen
 * columns a step, `take` the ones in the tile. */
AVX512 static inline __attribute__((always_inline)) void sweep16(
    void *const *r, const int32_t *t, int rows, int dtype, int64_t i, __mmask16 take,
    const double *restrict shift, float tf, const float *restrict jump, const Acc *acc,
    int track, Cells *cells) {
    const __mmask8 take_lo = (__mmask8)take, take_hi = (__mmask8)(take >> 8);
    const __m512d sh_lo = _mm512_maskz_loadu_pd(take_lo, shift + i);
    const __m512d sh_hi = _mm512_maskz_loadu_pd(take_hi, shift + i + 8);
    __m512i c = _mm512_maskz_loadu_epi32(take, acc->count + i);
    __m512i a = _mm512_maskz_loadu_epi32(take, acc->active + i);
    __m512d as_lo = _mm512_maskz_loadu_pd(take_lo, acc->active_sum + i);
    __m512d as_hi = _mm512_maskz_loadu_pd(take_hi, acc->active_sum + i + 8);
    __m512d s1_lo = _mm512_maskz_loadu_pd(take_lo, acc->s1 + i);
    __m512d s1_hi = _mm512_maskz_loadu_pd(take_hi, acc->s1 + i + 8);
    __m512d s2_lo = _mm512_maskz_loadu_pd(take_lo, acc->s2 + i);
    __m512d s2_hi = _mm512_maskz_loadu_pd(take_hi, acc->s2 + i + 8);
    __m512 lo = _mm512_maskz_loadu_ps(take, acc->min + i);
    __m512 hi = _mm512_maskz_loadu_ps(take, acc->max + i);
    __m512 bst = track ? _mm512_maskz_loadu_ps(take, acc->best + i) : _mm512_setzero_ps();
    __m512i ag = track ? _mm512_maskz_loadu_epi32(take, acc->arg + i) : _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1);
    const __m512 above = _mm512_set1_ps(tf);
    const __m512 jumps = jump ? _mm512_maskz_loadu_ps(take, jump + i) : _mm512_setzero_ps();
    const __m512i base = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_set1_epi32((int32_t)i),
                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)),
        5); /* the columns' first cells (column * DIST_BINS) */
    for (int q = 0; q < rows; q++) {
        __m512 v = load16(r[q], dtype, i, take);
        if (jump) { /* jump_relu's bits, written back (float32 only) */
            const __mmask16 over = _mm512_cmp_ps_mask(v, jumps, _CMP_GT_OQ);
            const __mmask16 keep = (_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ) & over)
                                   | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            const __mmask16 to_nan = _kandn_mask16(
                over, _mm512_cmp_ps_mask(v, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ));
            v = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(keep, v), to_nan,
                                   _mm512_castsi512_ps(_mm512_set1_epi32(0x7FC00000)));
            _mm512_mask_storeu_ps((float *)r[q] + i, take, v);
        }
        /* finite: not NaN (0x01, 0x80) nor +-Inf (0x08, 0x10) */
        const __mmask16 ok = _kandn_mask16(_mm512_fpclass_ps_mask(v, 0x99), take);
        const __mmask16 on = _mm512_mask_cmp_ps_mask(ok, v, above, _CMP_GT_OQ);
        if (cells) /* the counted values are `on`: their cells, as row_cells finds them */
            cells->found[q] = compress16(v, on, base, cells->at[q], cells->found[q]);
        c = _mm512_mask_add_epi32(c, ok, c, one);
        a = _mm512_mask_add_epi32(a, on, a, one);
        lo = _mm512_mask_min_ps(lo, ok, v, lo); /* equal (+0 / -0): the held one stays */
        if (track) {
            const __mmask16 more = _mm512_mask_cmp_ps_mask(ok, v, bst, _CMP_GT_OQ);
            bst = _mm512_mask_mov_ps(bst, more, v);
            ag = _mm512_mask_mov_epi32(ag, more, _mm512_set1_epi32(t[q]));
        } else {
            hi = _mm512_mask_max_ps(hi, ok, v, hi);
        }
        const __m512d x_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d x_hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
        const __mmask8 ok_lo = (__mmask8)ok, ok_hi = (__mmask8)(ok >> 8);
        const __m512d d_lo = _mm512_maskz_sub_pd(ok_lo, x_lo, sh_lo);
        const __m512d d_hi = _mm512_maskz_sub_pd(ok_hi, x_hi, sh_hi);
        s1_lo = _mm512_add_pd(s1_lo, d_lo), s1_hi = _mm512_add_pd(s1_hi, d_hi);
        /* squared, then added, as gcc's sweep does: the same sums bit for bit whichever
         * sweep ran (a plain multiply here would be contracted into an FMA) */
        s2_lo = _mm512_add_pd(s2_lo, _mm512_mul_round_pd(d_lo, d_lo, _MM_FROUND_CUR_DIRECTION));
        s2_hi = _mm512_add_pd(s2_hi, _mm512_mul_round_pd(d_hi, d_hi, _MM_FROUND_CUR_DIRECTION));
        as_lo = _mm512_mask_add_pd(as_lo, (__mmask8)on, as_lo, x_lo);
        as_hi = _mm512_mask_add_pd(as_hi, (__mmask8)(on >> 8), as_hi, x_hi);
    }
    _mm512_mask_storeu_epi32(acc->count + i, take, c);
    _mm512_mask_storeu_epi32(acc->active + i, take, a);
    _mm512_mask_storeu_pd(acc->active_sum + i, take_lo, as_lo);
    _mm512_mask_storeu_pd(acc->active_sum + i + 8, take_hi, as_hi);
    _mm512_mask_storeu_pd(acc->s1 + i, take_lo, s1_lo);
    _mm512_mask_storeu_pd(acc->s1 + i + 8, take_hi, s1_hi);
    _mm512_mask_storeu_pd(acc->s2 + i, take_lo, s2_lo);
    _mm512_mask_storeu_pd(acc->s2 + i + 8, take_hi, s2_hi);
    _mm512_mask_storeu_ps(acc->min + i, take, lo);
    _mm512_mask_storeu_ps(acc->max + i, take, hi);
    if (track) {
        _mm512_mask_storeu_ps(acc->best + i, take, bst);
        _mm512_mask_storeu_epi32(acc->arg + i, take, ag);
    }
}

/* Rows r[0..rows) (tokens t) into the tile's n columns' sums, as the SWEEP functions do;
 * with `jump` (float32 rows) activated in place first, as sweep_f32_jump does. */
AVX512 static void sweep_avx512(void *const *r, const int32_t *t, int rows, int dtype,
                                int64_t n, const double *restrict shift, float tf,
                                const float *restrict jump, const Acc *acc, int track,
                                Cells *cells) {
    int64_t i = 0;
    for (int q = 0; cells && q < rows; q++) cells->found[q] = 0;
    if (track && cells)
        for (; i + 16 <= n; i += 16)
            sweep16(r, t, rows, dtype, i, 0xFFFF, shift, tf, jump, acc, 1, cells);
    else if (track)
        for (; i + 16 <= n; i += 16)
            sweep16(r, t, rows, dtype, i, 0xFFFF, shift, tf, jump, acc, 1, NULL);
    else if (cells)
        for (; i + 16 <= n; i += 16)
            sweep16(r, t, rows, dtype, i, 0xFFFF, shift, tf, jump, acc, 0, cells);
    else
        for (; i + 16 <= n; i += 16)
            sweep16(r, t, rows, dtype, i, 0xFFFF, shift, tf, jump, acc, 0, NULL);
    if (i < n)
        sweep16(r, t, rows, dtype, i, (__mmask16)((1u << (n - i)) - 1), shift, tf, jump, acc,
                track, cells);
}
#endif

/* One row's cells (`cells`: m + CELL_SLACK ints of scratch), where the sweep did not find
 * them (without AVX-512). */
static int64_t row_cells(const void *x, int dtype, int64_t m, float t, int32_t *cells) {
    if (dtype == DTYPE_F32) return cells_f32(x, m, t, cells);
    if (dtype == DTYPE_BF16) return cells_bf16(x, m, t, cells);
    return cells_f16(x, m, t, cells);
}

/* One to each of `found` cells (the tile's counts); probing, a candidate for each of those
 * whose key passes (see above). */
static void count_cells(const int32_t *restrict cells, int64_t found, uint16_t *local,
                        Probe *probe, uint32_t hi, int32_t column, int32_t row) {
    if (!probe || probe->count < 0) { /* no probe, or it overflowed: the counts alone */
        for (int64_t j = 0; local && j < found; j++) local[cells[j]] += 1;
        return;
    }
    for (int64_t j = 0; j < found; j++) { /* one loop for both: each cell read once */
        const int32_t cell = cells[j], k = cell / DIST_BINS;
        if (local) local[cell] += 1;
        if (probe->count < 0 || featmon_sample_high(hi, probe->salt[k]) > probe->limit[k])
            continue;
        if (probe->count == probe->capacity) { /* full: the sample folds by itself */
            probe->count = -1;
            continue;
        }
        probe->cand[2 * probe->count] = column + k;
        probe->cand[2 * probe->count + 1] = row;
        probe->count++;
    }
}

/* The tile's 16-bit counts (`cells` of them) added into its distribution counts, and zeroed. */
VECTOR_CLONES static void flush_local(uint16_t *restrict local, void *restrict counts, int wide,
                        int64_t cells) {
    if (wide) {
        int64_t *out = counts;
        for (int64_t i = 0; i < cells; i++) out[i] += local[i], local[i] = 0;
    } else {
        int32_t *out = counts;
        for (int64_t i = 0; i < cells; i++) out[i] += local[i], local[i] = 0;
    }
}

/* v (column i) into a list of k sorted largest first, not full or v above its last: an
 * equal value stays behind the ones already held (they have lower columns). */
/* Whether value v of column i ranks above value u of column c: larger, or equal and to the
 * left. */
static inline int ranks_above(float v, int32_t i, float u, int32_t c) {
    return v > u || (v == u && i < c);
}

static void top_insert(TopList *list, int64_t k, float v, int32_t i) {
    int64_t j = list->held < k ? list->held : k - 1; /* full: the last entry drops out */
    while (j > 0 && ranks_above(v, i, list->val[j - 1], list->idx[j - 1])) {
        list->val[j] = list->val[j - 1];
        list->idx[j] = list->idx[j - 1];
        j--;
    }
    list->val[j] = v;
    list->idx[j] = i;
    if (list->held < k) list->held++;
}

/* Value i of row x, as float32. */
static inline float value_at(const void *x, int dtype, int64_t i) {
    return dtype == DTYPE_F32 ? ((const float *)x)[i]
           : dtype == DTYPE_BF16 ? featmon_bf16_to_f32(((const uint16_t *)x)[i])
                                 : featmon_f16_to_f32(((const uint16_t *)x)[i]);
}

/* A history row's counted values (its `found` cells, of columns start..) into its list. */
static void top_cells(const void *x, int dtype, const int32_t *restrict cells, int64_t found,
                      int32_t start, int64_t k, TopList *list) {
    list->counted += found;
    for (int64_t j = 0; j < found; j++) {
        const int32_t i = cells[j] / DIST_BINS;
        const float v = value_at(x, dtype, i);
        if (list->held < k || v > list->val[k - 1]) top_insert(list, k, v, start + i);
    }
}

typedef void (*SweepFn)(void *, void *, void *, void *, int32_t, int32_t, int32_t, int32_t, int,
                        int64_t, const double *, float, const float *, int32_t *, int32_t *,
                        double *, double *, double *, float *, float *, float *, int32_t *);

/* [act][track][dtype]; activations only for float32 (NULL elsewhere: refused up front). */
static SweepFn sweep_for(int act, int track, int dtype) {
    static const SweepFn table[2][2][3] = {
        [ACT_NONE] = {{[DTYPE_F32] = (SweepFn)sweep_f32, [DTYPE_BF16] = (SweepFn)sweep_bf16,
                       [DTYPE_F16] = (SweepFn)sweep_f16},
                      {[DTYPE_F32] = (SweepFn)sweep_f32_max,
                       [DTYPE_BF16] = (SweepFn)sweep_bf16_max,
                       [DTYPE_F16] = (SweepFn)sweep_f16_max}},
        [ACT_JUMP] = {{[DTYPE_F32] = (SweepFn)sweep_f32_jump},
                      {[DTYPE_F32] = (SweepFn)sweep_f32_jump_max}}};
    return table[act][track][dtype];
}

typedef struct {
    void *acts; /* written in place when act != ACT_NONE */
    int dtype, act;
    const float *jump; /* [f] JumpReLU thresholds (ACT_JUMP; -inf: ReLU) */
    const int64_t *rows; /* the valid rows, in order */
    int64_t n_valid, f, tokens, batch, tiles;
    int64_t *next; /* the next tile not taken, shared by the threads */
    const double *shift; /* NULL: the pass takes each tile's (tile_shifts) */
    float tf;
    int into; /* 1: the outputs are running totals, merged into per tile (see below) */
    int64_t *count, *nan_count, *active_count;
    double *active_sum, *s1, *s2, *min, *max; /* into: s1 and s2 are the mean and M2 */
    float *best; /* [batch, f], or NULL: no row maxima */
    int64_t *arg;
    const Dist *dist; /* the distributions (and the sample's probe) to count too, or NULL */
    int part;         /* this work's candidate part */
    int avx512;       /* whether the sweep (and with it the cells) may use AVX-512 */
    char *scratch;    /* SCRATCH bytes */
    int64_t nonfinite; /* out: the NaN / Inf values in this work's tiles */
} Work;

/* The tile's row maxima of sequences [from, to) into the outputs (a best not above the
 * threshold: -inf / 0), the bests into the tile's max, and the trackers reset for the next
 * sequence. */
static void flush_maxima(const Work *w, Acc *acc, int64_t start, int64_t n, int64_t from,
                         int64_t to) {
    for (int64_t b = from; b < to; b++) {
        float *best = w->best + b * w->f + start;
        int64_t *arg = w->arg + b * w->f + start;
        for (int64_t i = 0; i < n; i++) {
            const float v = acc->best[i];
            const int on = v > w->tf;
            best[i] = on ? v : -INFINITY;
            arg[i] = on ? acc->arg[i] : 0;
            acc->max[i] = v > acc->max[i] ? v : acc->max[i];
            acc->best[i] = -INFINITY, acc->arg[i] = -1;
        }
    }
}

/* The tile's int32 counts added into its int64 counts (count, active), and zeroed. */
static void flush_counts(Acc *acc, int64_t *count, int64_t *active, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        count[i] += acc->count[i];
        active[i] += acc->active[i];
        acc->count[i] = acc->active[i] = 0;
    }
}

/* The tile's moments (count, active: its int64 counts) written out, or with `into` merged
 * into the running totals: moments.py's merge_moments, operation for operation (the same
 * bits as the compiled and eager merges), with no [f] moments in between. */
static void finish_tile(Work *w, const Acc *acc, const int64_t *count, const int64_t *active,
                        const double *shift, int64_t start, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = start + i, nan = w->n_valid - count[i];
        const double s1 = acc->s1[i], s2 = acc->s2[i], mn = acc->min[i], mx = acc->max[i];
        w->nonfinite += nan;
        if (!w->into) {
            w->count[j] = count[i], w->nan_count[j] = nan, w->active_count[j] = active[i];
            w->active_sum[j] = acc->active_sum[i], w->s1[j] = s1, w->s2[j] = s2;
            w->min[j] = mn, w->max[j] = mx;
            continue;
        }
        const int64_t total = w->count[j] + count[i];
        const double safe_n = (double)(total > 1 ? total : 1);
        double m2 = w->s2[j];
        if (total > 0) {
            m2 = m2 + s2 - s1 * s1 / safe_n;
            w->s1[j] = shift[i] + s1 / safe_n;
        }
        w->s2[j] = m2 < 0.0 ? 0.0 : m2; /* clamp_min(0): NaN stays NaN */
        w->count[j] = total, w->nan_count[j] += nan, w->active_count[j] += active[i];
        w->active_sum[j] += acc->active_sum[i];
        w->min[j] = mn < w->min[j] ? mn : w->min[j];
        w->max[j] = mx > w->max[j] ? mx : w->max[j];
    }
}

/* The tile's shifts where the caller gave none (into the running totals only): each
 * feature's running mean, or where nothing is counted yet its value in the first valid row,
 * activated (0 where that is not finite, or no row is valid): moments.py's shift_for, read
 * before the tile's merge. */
static const double *tile_shifts(const Work *w, int64_t start, int64_t n, double *out) {
    const char *first = w->n_valid ? (const char *)w->acts + (size_t)w->rows[0] * (size_t)w->f
                                         * (w->dtype == DTYPE_F32 ? 4 : 2)
                                   : NULL;
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = start + i;
        if (w->count[j] > 0) {
            out[i] = w->s1[j];
            continue;
        }
        float v = first ? value_at(first, w->dtype, j) : 0.0f;
        if (w->act == ACT_JUMP) v = jump_relu(v, w->jump[j]);
        out[i] = v - v == 0.0f ? (double)v : 0.0;
    }
    return out;
}

/* A thread's scratch: its tile's sums (3 double and 6 float / int32 arrays), its int64
 * counts and shifts, the cells of a sweep's rows, the probe's salts and limits, and the 16-bit
 * distribution counts. */
enum {
    CELLS = TILE + CELL_SLACK, /* a row's cells buffer */
    SCRATCH_LOCAL = TILE * (3 * 8 + 6 * 4 + 3 * 8) + AVX512_ROWS * CELLS * 4 + 2 * TILE * 4,
    SCRATCH = SCRATCH_LOCAL + TILE * DIST_BINS * 2
};

static void *run_tiles(void *p) {
    Work *w = p;
    double *sums = (double *)w->scratch; /* reused across this thread's tiles */
    float *f32 = (float *)(sums + 3 * TILE);
    Acc acc = {(int32_t *)(f32 + 4 * TILE), (int32_t *)(f32 + 5 * TILE), sums, sums + TILE,
               sums + 2 * TILE, f32, f32 + TILE, f32 + 2 * TILE, (int32_t *)(f32 + 3 * TILE)};
    int64_t *count = (int64_t *)(f32 + 6 * TILE), *active = count + TILE;
    double *own_shift = (double *)(active + TILE); /* the tile's, where none is given */
    int32_t *cells = (int32_t *)(own_shift + TILE);
    uint16_t *local = NULL; /* the tile's distribution counts, zero between tiles */
    if (w->dist && w->dist->counts) {
        local = (uint16_t *)(w->scratch + SCRATCH_LOCAL);
        memset(local, 0, (size_t)TILE * DIST_BINS * sizeof *local);
    }
    const int track = w->best != NULL;
    const SweepFn sweep = sweep_for(w->act, track, w->dtype);
    const int avx512_sweep = w->avx512; /* an activation only on float32 (checked up front) */
    const Dist *dist = w->dist;
    const int probing = dist && dist->token_key;
    Probe probe = {0};
    if (probing) {
        probe.salt = (uint32_t *)(cells + AVX512_ROWS * CELLS);
        probe.limit = probe.salt + TILE;
        probe.cand = dist->cand + 2 * w->part * dist->per_part;
        probe.capacity = dist->per_part;
    }
    Cells swept; /* with AVX-512, the sweep's rows' cells, found by the sweep */
    for (int q = 0; q < AVX512_ROWS; q++) swept.at[q] = cells + q * CELLS;
    Cells *fused = avx512_sweep && dist ? &swept : NULL;
    const size_t width = w->dtype == DTYPE_F32 ? 4 : 2;
    char *base = w->acts;
    /* Threads take the next tile as they finish one (an atomic count): on a shared VM one
     * thread is often slowed for a while, and halves cut up front left the other waiting. A
     * thread's tiles still come in column order. */
    for (int64_t tile; (tile = __atomic_fetch_add(w->next, 1, __ATOMIC_RELAXED)) < w->tiles;) {
        const int64_t start = tile * TILE, n = w->f - start < TILE ? w->f - start : TILE;
        memset(sums, 0, (size_t)TILE * 3 * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            acc.count[i] = acc.active[i] = 0;
            count[i] = active[i] = 0;
            acc.min[i] = INFINITY, acc.max[i] = -INFINITY;
            acc.best[i] = -INFINITY, acc.arg[i] = -1;
        }
        const double *shift = w->shift ? w->shift + start : tile_shifts(w, start, n, own_shift);
        void *tile_counts = NULL;
        if (local)
            tile_counts = dist->wide ? (void *)((int64_t *)dist->counts + start * DIST_BINS)
                                     : (void *)((int32_t *)dist->counts + start * DIST_BINS);
        for (int64_t i = 0; probing && i < n; i++) {
            probe.salt[i] = featmon_sample_salt(start + i);
            probe.limit[i] = (uint32_t)((uint64_t)dist->key[(start + i) * dist->e + dist->e - 1] >> 32);
        }
        int64_t done = 0; /* sequences whose maxima are written */
        /* Rows of one sequence when tracking: four per sweep (the rest one at a time), or up
         * to sixteen per AVX-512 sweep (each sweep loads and stores the tile's sums: with
         * more rows a sweep, fewer of those). */
        for (int64_t j = 0; j < w->n_valid;) {
            const int64_t seq = w->rows[j] / w->tokens;
            if (track && seq > done) {
                flush_maxima(w, &acc, start, n, done, seq); /* done .. seq-1 are complete */
                done = seq;
            }
            int rows;
            if (avx512_sweep) {
                rows = w->n_valid - j < AVX512_ROWS ? (int)(w->n_valid - j) : AVX512_ROWS;
                while (track && w->rows[j + rows - 1] / w->tokens != seq) rows--;
            } else {
                rows = w->n_valid - j >= ROWS ? ROWS : 1;
                if (track && rows == ROWS && w->rows[j + ROWS - 1] / w->tokens != seq) rows = 1;
            }
            void *r[AVX512_ROWS];
            int32_t t[AVX512_ROWS];
            for (int q = 0; q < AVX512_ROWS; q++) {
                const int64_t row = w->rows[j + (q < rows ? q : 0)];
                r[q] = base + ((size_t)row * (size_t)w->f + (size_t)start) * width;
                t[q] = (int32_t)(row % w->tokens);
            }
            if (j / COUNT_ROWS != (j + rows) / COUNT_ROWS) flush_counts(&acc, count, active, n);
            if (local && j / LOCAL_ROWS != (j + rows) / LOCAL_ROWS)
                flush_local(local, tile_counts, dist->wide, n * DIST_BINS);
            j += rows;
#ifdef AVX512_CELLS
            if (avx512_sweep)
                sweep_avx512(r, t, rows, w->dtype, n, shift, w->tf,
                             w->act == ACT_JUMP ? w->jump + start : NULL, &acc, track, fused);
            else
#endif
            sweep(r[0], r[1], r[2], r[3], t[0], t[1], t[2], t[3], rows, n, shift, w->tf,
                  w->jump ? w->jump + start : NULL, acc.count, acc.active, acc.active_sum, acc.s1, acc.s2, acc.min, acc.max,
                  acc.best, acc.arg);
            for (int q = 0; dist && q < rows; q++) { /* the same rows, still in cache */
                const int64_t row = w->rows[j - rows + q];
                const uint32_t hi = probing ? (uint32_t)((uint64_t)dist->token_key[row] >> 32) : 0;
                const int32_t *at = fused ? fused->at[q] : cells;
                const int64_t found = fused ? fused->found[q]
                                            : row_cells(r[q], w->dtype, n, w->tf, cells);
                if (dist->row_l0) dist->row_l0[w->part * w->batch * w->tokens + row] += (int32_t)found;
                if (dist->top_slot && dist->top_slot[row] >= 0)
                    top_cells(r[q], w->dtype, at, found, (int32_t)start, dist->top_k,
                              &dist->tops[w->part * dist->top_m + dist->top_slot[row]]);
                count_cells(at, found, local, probing ? &probe : NULL, hi,
                            (int32_t)start, (int32_t)row);
            }
        }
        if (track) flush_maxima(w, &acc, start, n, done, w->batch);
        flush_counts(&acc, count, active, n);
        finish_tile(w, &acc, count, active, shift, start, n);
        if (local) flush_local(local, tile_counts, dist->wide, n * DIST_BINS);
        for (int64_t i = 0; tile_counts && i < n; i++) { /* finite and not active: inactive */
            const int64_t at = i * DIST_BINS + DIST_BINS - 1;
            const int64_t inactive = count[i] - active[i];
            if (dist->wide)
                ((int64_t *)tile_counts)[at] += inactive;
            else
                ((int32_t *)tile_counts)[at] += (int32_t)inactive;
        }
    }
    if (probing) dist->found[w->part] = probe.count;
    return NULL;
}

/* The largest float32 t with (x > t) == (x > threshold) for every float32 x. */
static float float_threshold(double threshold) {
    if (threshold != threshold) return NAN; /* nothing is above NaN */
    if (threshold >= 3.4028234663852886e38) return 3.4028234663852886e38f;
    if (threshold < -3.4028234663852886e38) return -INFINITY;
    float t = (float)threshold;
    if ((double)t > threshold) t = nextafterf(t, -INFINITY);
    return t;
}

/* The activation alone on the rows the statistics skip (padding), so every row of acts
 * holds features afterwards. */
static void activate_invalid_rows(float *acts, const uint8_t *valid, int64_t n, int64_t f,
                                  int act, const float *jump) {
    for (int64_t row = 0; row < n; row++) {
        if (valid[row]) continue;
        float *x = acts + row * f;
        for (int64_t i = 0; i < f; i++) x[i] = ACTIVATE(act, x[i], jump[i]);
    }
}

/* ---- each history row's top-k, from the counted values the cells pass has found
 *
 * A row's k largest values are its k largest counted ones when it has at least k counted
 * values and no NaN or +Inf (both rank above every number): every other value is at most the
 * threshold. Each thread keeps a list per history row over its tiles (in column order, so
 * ties keep the lower column); the merge of the threads' lists breaks ties by column. Where a row has fewer
 * counted values, or the call saw a NaN or an Inf, the call returns 0 and the caller ranks the
 * rows itself (row_topk.c). */
typedef struct {
    int32_t *slot;   /* [n] the first history slot of a row, -1: none */
    TopList *lists;  /* [threads, m] */
    float *val;      /* [threads, m, k] */
    int32_t *idx;
    int64_t m, k;
} Tops;

static int tops_alloc(Tops *t, int threads, int64_t n, int64_t m, int64_t k) {
    const size_t lists = (size_t)threads * (size_t)m;
    t->slot = malloc((size_t)(n > 0 ? n : 1) * sizeof *t->slot);
    t->lists = calloc(lists, sizeof *t->lists);
    t->val = malloc(lists * (size_t)k * sizeof *t->val);
    t->idx = malloc(lists * (size_t)k * sizeof *t->idx);
    t->m = m, t->k = k;
    if (!t->slot || !t->lists || !t->val || !t->idx) return 0;
    for (size_t l = 0; l < lists; l++)
        t->lists[l].val = t->val + l * (size_t)k, t->lists[l].idx = t->idx + l * (size_t)k;
    return 1;
}

static void tops_free(Tops *t) {
    free(t->slot), free(t->lists), free(t->val), free(t->idx);
}

/* Each picked row's first slot (a pick outside 0..n-1, a filler, has none). */
static void tops_place(Tops *t, const int64_t *pick, int64_t n) {
    for (int64_t row = 0; row < n; row++) t->slot[row] = -1;
    for (int64_t p = t->m - 1; p >= 0; p--)
        if (pick[p] >= 0 && pick[p] < n) t->slot[pick[p]] = (int32_t)p;
}

/* The threads' lists merged into val / idx [m, k] (a filler: NaN / -1; a repeated row: its
 * first slot's); whether every picked row had k counted values. */
static int tops_merge(const Tops *t, const int64_t *pick, int64_t n, int threads, float *val,
                      int32_t *idx) {
    const int64_t m = t->m, k = t->k;
    int exact = 1;
    for (int64_t p = 0; p < m; p++) {
        float *v = val + p * k;
        int32_t *i = idx + p * k;
        if (pick[p] < 0 || pick[p] >= n) {
            for (int64_t j = 0; j < k; j++) v[j] = NAN, i[j] = -1;
            continue;
        }
        const int32_t first = t->slot[pick[p]];
        if (first != p) {
            memcpy(v, val + first * k, (size_t)k * sizeof *v);
            memcpy(i, idx + first * k, (size_t)k * sizeof *i);
            continue;
        }
        TopList out = {v, i, 0, 0};
        for (int q = 0; q < threads; q++) {
            const TopList *part = &t->lists[q * m + p];
            out.counted += part->counted;
            for (int64_t j = 0; j < part->held; j++)
                if (out.held < k ||
                    ranks_above(part->val[j], part->idx[j], out.val[k - 1], out.idx[k - 1]))
                    top_insert(&out, k, part->val[j], part->idx[j]);
        }
        exact &= out.counted >= k;
    }
    return exact;
}

/* acts: [n, f] row-major, dtype DTYPE_F32 / DTYPE_BF16 / DTYPE_F16; valid: [n] bytes or NULL (every row);
 * shift: [f] float64; outputs [f] each: the batch's Moments, or with into_totals the running
 * Totals (count, nan_count, active_count, active_sum, mean, m2, min, max), into which each
 * tile's moments are merged as moments.py's merge_moments does (no [f] moments are written:
 * a pass at 131,072 features saves 8 MB of stores and the merge's read of them); there shift
 * may be NULL: the pass takes moments.py's shift_for itself (see tile_shifts). With best / arg
 * ([n / tokens, f] float32 / int64; NULL for none) the row maxima of each sequence of `tokens`
 * rows too (-inf / 0 where no valid value is above the threshold). With act = ACT_JUMP
 * (jump [f]; float32 only) acts holds pre-activations and is overwritten with the activated
 * features, whose statistics these are.
 *
 * With dist_counts ([f, DIST_BINS] int32, or int64 when dist_wide; NULL: none) every
 * feature's value distribution is counted in too (see "the value distributions" above);
 * with token_key ([n]; NULL: none) the sample's probe: for each valid row r and counted value of
 * feature c whose key's high half featmon_sample_high(token_key[r] >> 32,
 * featmon_sample_salt(c)) is at most that of key[c * e + e - 1] (the feature's e-th kept key),
 * (c, r) goes to part p's buffer cand[2 * p * per_part ..], at most per_part pairs, each
 * feature's in row order; found[p] (p < slots) gets the part's count, -1 where it overflowed,
 * 0 for the parts not used (examples.c's featmon_sample_fused folds them); with row_l0 ([n]
 * int32, added to) each valid row's counted values (its L0, finite values above the
 * threshold), for the health check. With top_pick ([top_m] rows; a row outside 0..n-1 is a
 * filler) each picked row's top_k largest values, largest first with ties to the lower
 * column, into top_val / top_idx [top_m, top_k] (a filler's: NaN / -1) where it returns 1
 * (see "each history row's top-k" above; 0: the caller ranks them). Any of these may come
 * without the others.
 *
 * Returns 0, or 1 where the picked rows were ranked; -1 if the scratch could not be allocated
 * (nothing is then written); -2 for an activation on 16-bit input; -3 for no shift and no
 * totals. */
int featmon_dense_moments(void *acts, int dtype, const uint8_t *valid, int64_t n, int64_t f,
                          const double *shift, double threshold, int into_totals,
                          int64_t *count, int64_t *nan_count, int64_t *active_count,
                          double *active_sum, double *s1_or_mean, double *s2_or_m2,
                          double *min, double *max,
                          int64_t tokens, float *best, int64_t *arg, int act, const float *jump,
                          int threads, void *dist_counts, int dist_wide,
                          const int64_t *token_key, const int64_t *key, int64_t e,
                          int32_t *cand, int64_t per_part, int64_t *found, int64_t slots,
                          int32_t *row_l0, const int64_t *top_pick, int64_t top_m,
                          int64_t top_k, float *top_val, int32_t *top_idx) {
    if (act != ACT_NONE && (act != ACT_JUMP || dtype != DTYPE_F32 || !jump)) return -2;
    if (!shift && !into_totals) return -3;
    if (top_pick && (top_k < 1 || top_k > f || top_m < 1)) top_pick = NULL; /* returns 0 */
    if (tokens < 1) tokens = n > 0 ? n : 1;
    const int64_t tiles = (f + TILE - 1) / TILE;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > tiles) threads = (int)tiles;
    if (token_key && threads > slots) threads = (int)slots; /* a candidate part each */
    if (threads < 1) threads = 1;
    /* Every buffer before anything is written: a failure leaves every input as it was. */
    char *scratch = malloc((size_t)threads * SCRATCH);
    int64_t *rows_buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *rows_buf); /* the valid rows */
    int32_t *l0_parts = row_l0 ? calloc((size_t)threads * n, sizeof *l0_parts) : NULL;
    Tops tops = {0};
    if (!scratch || !rows_buf || (row_l0 && !l0_parts) ||
        (top_pick && !tops_alloc(&tops, threads, n, top_m, top_k))) {
        free(scratch);
        free(rows_buf);
        free(l0_parts);
        tops_free(&tops);
        return -1;
    }
    int64_t n_valid = 0;
    for (int64_t row = 0; row < n; row++)
        if (!valid || valid[row]) rows_buf[n_valid++] = row;
    if (act != ACT_NONE && valid) activate_invalid_rows(acts, valid, n, f, act, jump);
    const int riding = dist_counts || token_key || row_l0 || top_pick; /* cells wanted */
#ifdef AVX512_CELLS
    const int avx512 = have_avx512();
#else
    const int avx512 = 0;
#endif
    if (top_pick) tops_place(&tops, top_pick, n);
    const Dist dist = {dist_counts, dist_wide, token_key, key, e, cand, per_part, found, slots,
                       l0_parts, top_pick ? tops.slot : NULL, top_m, top_k, tops.lists};
    if (token_key)
        for (int64_t p = threads; p < slots; p++) found[p] = 0; /* the parts not used */
    Work work[MAX_THREADS];
    int64_t next_tile = 0;
    for (int k = 0; k < threads; k++)
        work[k] = (Work){acts, dtype, act, jump, rows_buf, n_valid, f, tokens, n / tokens,
                         tiles, &next_tile, shift,
                         float_threshold(threshold), into_totals != 0, count, nan_count,
                         active_count, active_sum, s1_or_mean, s2_or_m2, min, max, best, arg,
                         riding ? &dist : NULL, k, avx512, scratch + (size_t)k * SCRATCH, 0};
#ifdef _OPENMP
    /* Built with -fopenmp and loaded next to torch, this is torch's own OpenMP runtime (same
     * soname): its workers, still spinning after the forward's last parallel op, take the
     * tiles at once. Fresh pthreads waited behind them for a scheduler slice. */
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int k = 0; k < threads; k++) run_tiles(&work[k]);
#else
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    /* Thread 0's share runs here; a thread that cannot start runs here too. */
    for (int k = 1; k < threads; k++)
        started[k] = pthread_create(&ids[k], NULL, run_tiles, &work[k]) == 0;
    run_tiles(&work[0]);
    for (int k = 1; k < threads; k++) {
        if (started[k])
            pthread_join(ids[k], NULL);
        else
            run_tiles(&work[k]);
    }
#endif
    for (int k = 0; l0_parts && k < threads; k++)
        for (int64_t row = 0; row < n; row++) row_l0[row] += l0_parts[k * n + row];
    int ranked = 0;
    if (top_pick) {
        int64_t nonfinite = 0;
        for (int k = 0; k < threads; k++) nonfinite += work[k].nonfinite;
        ranked = tops_merge(&tops, top_pick, n, threads, top_val, top_idx) && !nonfinite;
    }
    tops_free(&tops);
    free(l0_parts);
    free(rows_buf);
    free(scratch);
    return ranked;
}
