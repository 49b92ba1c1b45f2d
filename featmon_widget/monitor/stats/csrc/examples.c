/* The top-activating examples' two CPU kernels (see featmon_widget/monitor/examples.py).
 *
 * featmon_row_max: per sequence row of a batch [rows, tokens, f] and per feature, the largest
 * finite value above the threshold among the row's valid tokens, and the earliest token
 * holding it.
 *
 * Why C: the reduction runs over tokens, a stride of a whole feature row apart. Inductor's code
 * walks that stride column block by column block, which runs at memory latency on CPUs whose
 * prefetchers do not follow strides across pages. Here each token's features are streamed
 * contiguously, one tile at a time, while the tile's best values and tokens stay in L1.
 * Compiled with -O3 -fno-trapping-math the inner loop is if-converted and vectorized. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "featmon_protocol.h" /* KIND_*, VECTOR_CLONES, this file's prototypes */

enum { TILE = 1024, PREFETCH_AHEAD = 16 };
#if defined(__GNUC__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)0)
#endif

VECTOR_CLONES static void tile_f32(const float *restrict x, float *restrict best, int32_t *restrict arg,
                     int64_t n, int32_t t) {
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const int take = (v > best[i]) & (v < INFINITY); /* NaN compares false */
        best[i] = take ? v : best[i];
        arg[i] = take ? t : arg[i];
    }
}

VECTOR_CLONES static void tile_bf16(const uint16_t *restrict x, float *restrict best, int32_t *restrict arg,
                      int64_t n, int32_t t) {
    for (int64_t i = 0; i < n; i++) {
        const float v = featmon_bf16_to_f32(x[i]);
        const int take = (v > best[i]) & (v < INFINITY);
        best[i] = take ? v : best[i];
        arg[i] = take ? t : arg[i];
    }
}

/* acts: [rows, tokens, f] float32 (is_bf16 = 0) or bfloat16 (1); valid: [rows, tokens];
 * best, arg: [rows, f] outputs (arg -1 where no token qualified). Work items are (row, tile)
 * pairs, split across up to `threads` threads in contiguous ranges. */
typedef struct {
    const void *acts;
    int is_bf16;
    const uint8_t *valid;
    int64_t tokens, f, tiles, begin, end;
    float threshold;
    float *best;
    int32_t *arg;
} RowMaxWork;

static void *row_max_items(void *p) {
    const RowMaxWork *w = p;
    for (int64_t item = w->begin; item < w->end; item++) {
        const int64_t b = item / w->tiles, start = (item % w->tiles) * TILE;
        const int64_t n = w->f - start < TILE ? w->f - start : TILE;
        float *tile_best = w->best + b * w->f + start;
        int32_t *tile_arg = w->arg + b * w->f + start;
        for (int64_t i = 0; i < n; i++) {
            tile_best[i] = w->threshold;
            tile_arg[i] = -1;
        }
        for (int64_t t = 0; t < w->tokens; t++) {
            if (!w->valid[b * w->tokens + t]) continue;
            const int64_t at = (b * w->tokens + t) * w->f + start;
            if (w->is_bf16)
                tile_bf16((const uint16_t *)w->acts + at, tile_best, tile_arg, n, (int32_t)t);
            else
                tile_f32((const float *)w->acts + at, tile_best, tile_arg, n, (int32_t)t);
        }
    }
    return NULL;
}

enum { MAX_THREADS = 16 };

/* Run `fn` on each of `threads` work items (`size` bytes apart from `work`). Built with
 * OpenMP (torch's own runtime, see dense_moments.c), on its workers, still spinning after the
 * forward's last parallel op; otherwise item 0 here, the others on threads of their own (an
 * item whose thread cannot start runs here too). */
static void run_parts(void *(*fn)(void *), void *work, size_t size, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int k = 0; k < threads; k++) fn((char *)work + k * size);
#else
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 1; k < threads; k++)
        started[k] = pthread_create(&ids[k], NULL, fn, (char *)work + k * size) == 0;
    fn(work);
    for (int k = 1; k < threads; k++) {
        if (started[k])
            pthread_join(ids[k], NULL);
        else
            fn((char *)work + k * size);
    }
#endif
}

void featmon_row_max(const void *acts, int is_bf16, const uint8_t *valid, int64_t rows,
                     int64_t tokens, int64_t f, float threshold, float *best, int32_t *arg,
                     int threads) {
    const int64_t tiles = (f + TILE - 1) / TILE, items = rows * tiles;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > items) threads = (int)items;
    if (threads < 1) threads = 1;
    RowMaxWork work[MAX_THREADS];
    for (int k = 0; k < threads; k++)
        work[k] = (RowMaxWork){acts, is_bf16, valid, tokens, f, tiles, items * k / threads,
                               items * (k + 1) / threads, threshold, best, arg};
    run_parts(row_max_items, work, sizeof work[0], threads);
}

/* float32 -> bfloat16 bits, rounded to nearest even (NaN stays NaN). */
static uint16_t to_bf16(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    if (v != v) return 0x7FC0;
    return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

/* The feature's activation on token t of row b: dense float32 (KIND_F32) or bfloat16
 * (KIND_BF16) [batch * tokens, f], or TopK (KIND_TOPK) indices / float32 values
 * [batch * tokens, k] where an index that is not stored means 0. */
static float activation(const void *acts, int kind, const int64_t *indices, int64_t k,
                        int64_t token, int64_t f, int64_t feature) {
    if (kind == KIND_F32) return ((const float *)acts)[token * f + feature];
    if (kind == KIND_BF16) {
        const float v = featmon_bf16_to_f32(((const uint16_t *)acts)[token * f + feature]);
        return v;
    }
    for (int64_t j = 0; j < k; j++)
        if (indices[token * k + j] == feature) return ((const float *)acts)[token * k + j];
    return 0.0f;
}

/* Make room at slot `at` of a feature's kept records: the `moved` records from there shift
 * one slot down (the last one falls off). */
static void make_room(int64_t at, int64_t moved, int64_t span, float *value, int64_t *request,
                      int32_t *row, int32_t *position, int32_t *window, uint16_t *window_acts) {
    memmove(value + at + 1, value + at, moved * sizeof *value);
    memmove(request + at + 1, request + at, moved * sizeof *request);
    memmove(row + at + 1, row + at, moved * sizeof *row);
    memmove(position + at + 1, position + at, moved * sizeof *position);
    memmove(window + (at + 1) * span, window + at * span, moved * span * sizeof *window);
    memmove(window_acts + (at + 1) * span, window_acts + at * span,
            moved * span * sizeof *window_acts);
}

/* Write the record of feature i's activation v at token t of row b into slot `at`: its value,
 * request, row, position, token window and the feature's activation on each window token. */
static void write_record(int64_t at, int64_t i, int64_t b, float v, int64_t t, int64_t f,
                         int64_t span, int64_t tokens, const int64_t *positions,
                         const int64_t *rank, const int64_t *context, const int64_t *source,
                         int64_t width, const void *acts, int kind, const int64_t *indices,
                         int64_t k, int64_t code, float *value, int64_t *request, int32_t *row,
                         int32_t *position, int32_t *window, uint16_t *window_acts) {
    value[at] = v;
    request[at] = code;
    row[at] = (int32_t)b;
    position[at] = (int32_t)positions[b * tokens + t];
    const int64_t first = b * width + rank[b * tokens + t];
    for (int64_t c = 0; c < span; c++) {
        const int64_t token = source[first + c];
        window[at * span + c] = (int32_t)context[first + c];
        window_acts[at * span + c] = token < 0 ? 0x7FC0
            : to_bf16(activation(acts, kind, indices, k, b * tokens + token, f, i));
    }
}

/* Insert the candidate (value v at token t of row b) into feature i's kept examples, if it is
 * better than the worst kept one; an equal value goes after the ones already kept. */
static void insert(int64_t i, int64_t b, float v, int64_t t, int64_t f, int64_t e, int64_t span,
                   int64_t tokens, const int64_t *positions, const int64_t *rank,
                   const int64_t *context, const int64_t *source, int64_t width,
                   const void *acts, int kind, const int64_t *indices, int64_t k, int64_t code,
                   float *value, int64_t *request, int32_t *row, int32_t *position,
                   int32_t *window, uint16_t *window_acts) {
    float *val = value + i * e;
    if (!(v > -INFINITY) || !(v > val[e - 1])) return; /* none, or not better */
    int64_t j = e - 1;
    while (j > 0 && val[j - 1] < v) j--;
    const int64_t at = i * e + j;
    make_room(at, e - 1 - j, span, value, request, row, position, window, window_acts);
    write_record(at, i, b, v, t, f, span, tokens, positions, rank, context, source, width, acts,
                 kind, indices, k, code, value, request, row, position, window, window_acts);
}

/* Merge one chunk of rows' candidates (value [rows, f], -inf where none; token t [rows, f])
 * into the kept examples of every feature: value [f, e] (best first, -inf = empty), request,
 * row, position [f, e], token windows and the feature's activation on each window token
 * [f, e, span] (bfloat16 bits, NaN where not known). Rows are taken in order and an equal value
 * goes after the ones already kept, so ties stay with the earliest. A new example's window is
 * context[row, rank[row, t] .. + span) (see examples.py); `source` gives, per context column,
 * the token of this forward it holds (-1: an earlier forward's, or none). */
void featmon_examples_merge(int64_t f, int64_t e, int64_t span, int64_t rows,
                            const float *cand_value, const int64_t *cand_t, int64_t b0,
                            int64_t tokens, const int64_t *positions, const int64_t *rank,
                            const int64_t *context, const int64_t *source, int64_t width,
                            const void *acts, int kind, const int64_t *indices, int64_t k,
                            int64_t code, float *value, int64_t *request, int32_t *row,
                            int32_t *position, int32_t *window, uint16_t *window_acts) {
    for (int64_t i = 0; i < f; i++)
        for (int64_t r = 0; r < rows; r++)
            insert(i, b0 + r, cand_value[r * f + i], cand_t[r * f + i], f, e, span, tokens,
                   positions, rank, context, source, width, acts, kind, indices, k, code, value,
                   request, row, position, window, window_acts);
}

/* The same merge for a list of n candidates (feature, row, value, token), ordered by feature
 * then row: TopK input touches k features a token, so its merge costs O(n), not O(rows * f). */
void featmon_examples_merge_list(int64_t n, const int64_t *cand_feature, const int64_t *cand_row,
                                 const float *cand_value, const int64_t *cand_t, int64_t f,
                                 int64_t e, int64_t span, int64_t tokens,
                                 const int64_t *positions, const int64_t *rank,
                                 const int64_t *context, const int64_t *source, int64_t width,
                                 const void *acts, int kind, const int64_t *indices, int64_t k,
                                 int64_t code, float *value, int64_t *request, int32_t *row,
                                 int32_t *position, int32_t *window, uint16_t *window_acts) {
    for (int64_t c = 0; c < n; c++) {
        /* Each candidate's kept values are one scattered read (a cache miss at a million
         * features): ask for a later candidate's while this one is merged. */
        if (c + PREFETCH_AHEAD < n) PREFETCH(value + cand_feature[c + PREFETCH_AHEAD] * e);
        insert(cand_feature[c], cand_row[c], cand_value[c], cand_t[c], f, e, span, tokens,
               positions, rank, context, source, width, acts, kind, indices, k, code, value,
               request, row, position, window, window_acts);
    }
}

/* ---- The uniform sample of each feature's activating tokens (monitor/record/samples.py) ----
 *
 * Every (token, feature) has a 63-bit key: the high 31 bits ((hi ^ salt) * MIX mod 2^32) >> 1
 * with the feature's salt fmix32(feature * SALT),
 * where (hi, lo) is the token's own hash (token_key = hi << 32 | lo, made by the caller from the
 * seed, the rank and the token's counter), and the low 32 bits lo. Each feature keeps the
 * `e` activating tokens of smallest key, ascending (key INT64_MAX: an empty slot). A token is a
 * candidate when its value is finite and above the threshold and the high half of its key is
 * at most the high half of the feature's e-th key; candidates are rare once the slots fill, so
 * the hash and the comparison run vectorized over a tile of features and the inserts after. */

enum { SAMPLE_TILE = 512 }; /* the hash: featmon_sample_salt / _high (featmon_protocol.h) */

VECTOR_CLONES static uint32_t sample_tile_f32(const float *restrict x,
                                              const uint32_t *restrict limit,
                                              const uint32_t *restrict salt,
                                              uint32_t *restrict hit, int64_t n, uint32_t hi,
                                              float threshold) {
    uint32_t any = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const uint32_t h = featmon_sample_high(hi, salt[i]);
        const uint32_t take = (v > threshold) & (v < INFINITY) & (h <= limit[i]);
        hit[i] = take;
        any |= take;
    }
    return any;
}

VECTOR_CLONES static uint32_t sample_tile_bf16(const uint16_t *restrict x,
                                               const uint32_t *restrict limit,
                                               const uint32_t *restrict salt,
                                               uint32_t *restrict hit, int64_t n, uint32_t hi,
                                               float threshold) {
    uint32_t any = 0;
    for (int64_t i = 0; i < n; i++) {
        const float v = featmon_bf16_to_f32(x[i]);
        const uint32_t h = featmon_sample_high(hi, salt[i]);
        const uint32_t take = (v > threshold) & (v < INFINITY) & (h <= limit[i]);
        hit[i] = take;
        any |= take;
    }
    return any;
}

/* Feature i's key of a token whose hash is token_key. */
static int64_t sample_key(uint64_t token_key, int64_t i) {
    const uint32_t hi = (uint32_t)(token_key >> 32), lo = (uint32_t)token_key;
    const uint32_t h = featmon_sample_high(hi, featmon_sample_salt(i));
    return (int64_t)(((uint64_t)h << 32) | lo);
}

/* Keep feature i's activation v at token t of row b if its key is among the e smallest. */
typedef struct {
    int64_t f, e, span, tokens, width, k, code;
    const int64_t *positions, *rank, *context, *source, *indices;
    const void *acts;
    int kind;
    int64_t *key;
    float *value;
    int64_t *request;
    int32_t *row, *position, *window;
    uint16_t *window_acts;
} SampleTable;

static void sample_insert(const SampleTable *s, int64_t i, int64_t key, int64_t b, int64_t t,
                          float v) {
    int64_t *kept = s->key + i * s->e;
    if (!(key < kept[s->e - 1])) return;
    int64_t j = s->e - 1;
    while (j > 0 && kept[j - 1] > key) j--;
    const int64_t at = i * s->e + j, moved = s->e - 1 - j;
    memmove(kept + j + 1, kept + j, moved * sizeof *kept);
    kept[j] = key;
    make_room(at, moved, s->span, s->value, s->request, s->row, s->position, s->window,
              s->window_acts);
    write_record(at, i, b, v, t, s->f, s->span, s->tokens, s->positions, s->rank, s->context,
                 s->source, s->width, s->acts, s->kind, s->indices, s->k, s->code, s->value,
                 s->request, s->row, s->position, s->window, s->window_acts);
}

typedef struct {
    const SampleTable *table;
    const uint8_t *valid;
    const int64_t *token_key;
    int64_t n, begin, end; /* tiles begin..end */
    float threshold;
} SampleWork;

static void *sample_tiles(void *p) {
    const SampleWork *w = p;
    const SampleTable *s = w->table;
    uint32_t limit[SAMPLE_TILE], salt[SAMPLE_TILE], hit[SAMPLE_TILE];
    for (int64_t tile = w->begin; tile < w->end; tile++) {
        const int64_t start = tile * SAMPLE_TILE;
        const int64_t n = s->f - start < SAMPLE_TILE ? s->f - start : SAMPLE_TILE;
        for (int64_t i = 0; i < n; i++) {
            limit[i] = (uint32_t)((uint64_t)s->key[(start + i) * s->e + s->e - 1] >> 32);
            salt[i] = featmon_sample_salt(start + i);
        }
        for (int64_t r = 0; r < w->n; r++) {
            if (!w->valid[r]) continue;
            const uint64_t token_key = (uint64_t)w->token_key[r];
            const uint32_t hi = (uint32_t)(token_key >> 32);
            uint32_t any;
            if (s->kind == KIND_BF16)
                any = sample_tile_bf16((const uint16_t *)s->acts + r * s->f + start, limit, salt,
                                       hit, n, hi, w->threshold);
            else
                any = sample_tile_f32((const float *)s->acts + r * s->f + start, limit, salt,
                                      hit, n, hi, w->threshold);
            if (!any) continue;
            for (int64_t i = 0; i < n; i++) {
                if (!hit[i]) continue;
                const int64_t feature = start + i;
                sample_insert(s, feature, sample_key(token_key, feature), r / s->tokens,
                              r % s->tokens, activation(s->acts, s->kind, NULL, 0, r, s->f,
                                                        feature));
                limit[i] = (uint32_t)((uint64_t)s->key[feature * s->e + s->e - 1] >> 32);
            }
        }
    }
    return NULL;
}

/* Fold a dense forward (acts [n = batch * tokens, f], float32 or bfloat16 by `kind`; valid
 * [n]; token_key [n]) into the sample: key [f, e] ascending, and the records as the top
 * examples keep them (see featmon_examples_merge for the window arguments). Threads take
 * disjoint tiles of features. */
void featmon_sample_dense(const void *acts, int kind, const uint8_t *valid,
                          const int64_t *token_key, int64_t n, int64_t f, float threshold,
                          int64_t e, int64_t span, int64_t tokens, const int64_t *positions,
                          const int64_t *rank, const int64_t *context, const int64_t *source,
                          int64_t width, int64_t code, int64_t *key, float *value,
                          int64_t *request, int32_t *row, int32_t *position, int32_t *window,
                          uint16_t *window_acts, int threads) {
    const SampleTable table = {f, e, span, tokens, width, 0, code, positions, rank, context,
                               source, NULL, acts, kind, key, value, request, row, position,
                               window, window_acts};
    const int64_t tiles = (f + SAMPLE_TILE - 1) / SAMPLE_TILE;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > tiles) threads = (int)tiles;
    if (threads < 1) threads = 1;
    SampleWork work[MAX_THREADS];
    for (int j = 0; j < threads; j++)
        work[j] = (SampleWork){&table, valid, token_key, n, tiles * j / threads,
                               tiles * (j + 1) / threads, threshold};
    run_parts(sample_tiles, work, sizeof work[0], threads);
}

/* Candidates of parts [begin, end) folded into the sample (featmon_sample_fused). */
typedef struct {
    const SampleTable *s;
    const int64_t *found;
    const int32_t *cand;
    int64_t per_part;
    const int64_t *token_key;
    int64_t begin, end;
} FoldWork;

enum { FOLD_THREADED = 2048 }; /* candidates below which one thread folds them all */

static void *fold_parts(void *p) {
    const FoldWork *w = p;
    const SampleTable *s = w->s;
    for (int64_t part = w->begin; part < w->end; part++) {
        const int32_t *c = w->cand + 2 * part * w->per_part;
        for (int64_t j = 0; j < w->found[part]; j++) {
            const int64_t feature = c[2 * j], r = c[2 * j + 1];
            sample_insert(s, feature, sample_key((uint64_t)w->token_key[r], feature),
                          r / s->tokens, r % s->tokens,
                          activation(s->acts, s->kind, NULL, 0, r, s->f, feature));
        }
    }
    return NULL;
}

/* The same fold from the candidates the statistics pass found (featmon_dense_moments with
 * a sample probe, which reads the forward once for both): part p's found[p] candidates are
 * cand[2 * (p * per_part + j)] (feature, row), j = 0.., each feature's in row order; each is an
 * active finite value of a valid row whose key's high half was at most the feature's e-th
 * kept key's when the forward began, a superset of the ones the dense fold inserts, and
 * sample_insert drops the rest, so the kept set is the dense fold's exactly. Where a part's
 * count is -1 (its buffer overflowed, or its scratch failed) nothing is inserted from the
 * candidates and the forward is folded by featmon_sample_dense instead. */
void featmon_sample_fused(const int64_t *found, int64_t parts, int64_t per_part,
                          const int32_t *cand, const void *acts, int kind, const uint8_t *valid,
                          const int64_t *token_key, int64_t n, int64_t f, float threshold,
                          int64_t e, int64_t span, int64_t tokens, const int64_t *positions,
                          const int64_t *rank, const int64_t *context, const int64_t *source,
                          int64_t width, int64_t code, int64_t *key, float *value,
                          int64_t *request, int32_t *row, int32_t *position, int32_t *window,
                          uint16_t *window_acts, int threads) {
    for (int64_t p = 0; p < parts; p++) {
        if (found[p] < 0) {
            featmon_sample_dense(acts, kind, valid, token_key, n, f, threshold, e, span, tokens,
                                 positions, rank, context, source, width, code, key, value,
                                 request, row, position, window, window_acts, threads);
            return;
        }
    }
    const SampleTable s = {f, e, span, tokens, width, 0, code, positions, rank, context,
                           source, NULL, acts, kind, key, value, request, row, position,
                           window, window_acts};
    int64_t total = 0;
    for (int64_t p = 0; p < parts; p++) total += found[p];
    /* Parts hold disjoint features, so threads may fold them side by side; each insert
     * gathers its token window from rows far apart (memory misses), but starting threads
     * costs more than a few hundred inserts. */
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > parts) threads = (int)parts;
    if (total < FOLD_THREADED || threads < 1) threads = 1;
    FoldWork work[MAX_THREADS];
    for (int k = 0; k < threads; k++)
        work[k] = (FoldWork){&s, found, cand, per_part, token_key, parts * k / threads,
                             parts * (k + 1) / threads};
    run_parts(fold_parts, work, sizeof work[0], threads);
}

/* The same for a TopK forward: indices / float32 values [n, k] (an index outside 0..f-1 is
 * none; repeats within a token already dropped by the caller). */
void featmon_sample_sparse(const int64_t *indices, const float *values, int64_t k,
                           const uint8_t *valid, const int64_t *token_key, int64_t n, int64_t f,
                           float threshold, int64_t e, int64_t span, int64_t tokens,
                           const int64_t *positions, const int64_t *rank,
                           const int64_t *context, const int64_t *source, int64_t width,
                           int64_t code, int64_t *key, float *value, int64_t *request,
                           int32_t *row, int32_t *position, int32_t *window,
                           uint16_t *window_acts) {
    const SampleTable table = {f, e, span, tokens, width, k, code, positions, rank, context,
                               source, indices, values, KIND_TOPK, key, value, request, row,
                               position, window, window_acts};
    for (int64_t r = 0; r < n; r++) {
        if (!valid[r]) continue;
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = indices[r * k + j];
            const float v = values[r * k + j];
            if (i < 0 || i >= f || !(v > threshold) || !(v < INFINITY)) continue;
            sample_insert(&table, i, sample_key((uint64_t)token_key[r], i), r / tokens,
                          r % tokens, v);
        }
    }
}
