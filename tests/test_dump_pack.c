/*
 * test_dump_pack.c — the compressed top-k layout "topk-packed-v1"
 * (data/kd_dump_codec.h, docs/dump-format.md "Compressed dumps"): the codec
 * round-trips ids exactly and log-probs within the documented bound (masked
 * positions, unfilled −Inf slots, escaped ids included) and refuses a cut
 * record; its decoder gives the values, verdicts and messages of a plain
 * reference decoder (one peek per symbol) on real records, long codes and
 * random bytes; kd's writer writes it, resumes it, and every reader (kd_dump_read,
 * the validator, the loader) takes it as a plain dump; kd teacher pack and
 * the documented h5py encoder (tests/py/dump_pack.py, verbatim in the docs)
 * produce files kd decodes within the bound of the original; kd teacher info
 * reports the layout, the decode error (--compare) and sizes (--estimate).
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_cpu.h"
#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "data/kd_loader.h"

#define CHECK(call) do { kd_err err_; if ((call) != 0) fail_msg("%s", err_.msg); } while (0)
#define E (&err_)

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", kd_test_tmpdir(), name); }

/* Valid top-k rows: distinct ids (some frequent, some rare), descending log-probs, a few
 * positions with unfilled −Inf slots, a few with a top-1 near p = 1 or a very flat tail. */
static void gen(kd_rng *r, int64_t P, int k, int64_t V, int32_t *ids, float *lp) {
    for (int64_t p = 0; p < P; p++) {
        int32_t *id = ids + p * k;
        float *l = lp + p * k;
        double w[256], sum = 0, mass = 0.5 + 0.49 * kd_rng_uniform(r);
        int sharp = p % 13 == 0, nfin = p % 7 == 3 ? 1 + (int)kd_rng_below(r, (uint64_t)k) : k;
        for (int j = 0; j < k; j++) {
            int dup;
            do {   /* mostly small ids (frequent), sometimes any id (rare, escaped) */
                id[j] = (int32_t)(kd_rng_uniform(r) < 0.8 ? kd_rng_below(r, 40 < V ? 40 : (uint64_t)V)
                                                          : kd_rng_below(r, (uint64_t)V));
                dup = 0;
                for (int q = 0; q < j; q++) dup |= id[q] == id[j];
            } while (dup);
            double u = kd_rng_uniform(r) + 1e-4;
            sum += w[j] = sharp && j == 0 ? 1e6 : pow(u, 6);
        }
        for (int j = 0; j < k; j++)
            for (int q = j; q > 0 && w[q] > w[q - 1]; q--) {
                double t = w[q]; w[q] = w[q - 1]; w[q - 1] = t;
            }
        for (int j = 0; j < k; j++) l[j] = j < nfin ? (float)log(w[j] / sum * mass) : -INFINITY;
    }
}

/* decoded (ids b, lp b) against the original (a): ids exact, sorted, within the bound */
static void check_close(const kd_pack_codec *c, int64_t P, const uint8_t *mask, const int32_t *ia, const float *la,
                        const int32_t *ib, const float *lb) {
    int k = c->k;
    for (int64_t p = 0; p < P; p++) {
        if (mask && !mask[p]) continue;
        for (int j = 0; j < k; j++) {
            float a = la[p * k + j], b = lb[p * k + j];
            if (!isfinite(a)) {
                assert_true(b == -INFINITY);
                continue;
            }
            assert_int_equal(ia[p * k + j], ib[p * k + j]);
            assert_true(b <= 0);
            if (j) assert_true(b <= lb[p * k + j - 1]);
            double gap = (double)lb[p * k] - b, e = fabs((double)a - b);
            if (gap < KD_PACK_GAP_MAX && e > kd_pack_error_bound(c, j, gap) + 1e-6 * (1 + fabs((double)a)))
                fail_msg("position %lld slot %d: %g decoded as %g (gap %g, bound %g)", (long long)p, j, a, b, gap,
                         kd_pack_error_bound(c, j, gap));
        }
    }
}

static void test_codec_roundtrip(void **state) {
    (void)state;
    const int64_t T = 50;
    const struct { int k; int64_t V; double step, knee; } cases[] = {
        {64, 512, 1.0 / 16, 2}, {7, 128256, 1.0 / 64, 1}, {1, 3, 1, 64}, {33, 70000, 1.0 / 1024, 1.0 / 16}};
    kd_rng r;
    kd_rng_seed(&r, 42);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int k = cases[ci].k;
        int64_t V = cases[ci].V;
        int32_t *ids = malloc((size_t)(T * k) * 4), *ids2 = malloc((size_t)(T * k) * 4), *order = malloc((size_t)V * 4);
        float *lp = malloc((size_t)(T * k) * 4), *lp2 = malloc((size_t)(T * k) * 4);
        uint8_t mask[50];
        for (int t = 0; t < T; t++) mask[t] = t % 9 != 4;
        gen(&r, T, k, V, ids, lp);
        kd_pack_order_from(ids, T * k, V, order);
        kd_pack_codec c;
        CHECK(kd_pack_init(&c, k, V, cases[ci].step, cases[ci].knee, order, E));
        size_t cap = kd_pack_bound(&c, T) + kd_pack_pad(&c);
        uint8_t *buf = calloc(1, cap);
        size_t n = kd_pack_encode(&c, T, mask, ids, lp, buf);
        assert_true(n > 8 && n <= kd_pack_bound(&c, T));
        CHECK(kd_pack_decode(&c, T, mask, buf, n, ids2, lp2, "case", E));
        check_close(&c, T, mask, ids, lp, ids2, lp2);
        for (int t = 0; t < T; t++)   /* masked positions: ids 0, log-probs 0 */
            if (!mask[t]) assert_true(ids2[t * k] == 0 && lp2[t * k] == 0);
        /* a record cut short is an error naming the position, never a crash */
        kd_err err;
        assert_int_equal(kd_pack_decode(&c, T, mask, buf, n / 2, ids2, lp2, "cut", &err), -1);
        assert_non_null(strstr(err.msg, "cut"));
        assert_int_equal(kd_pack_decode(&c, T, mask, buf, 5, ids2, lp2, "tiny", &err), -1);
        kd_pack_free(&c);
        free(buf);
        free(ids);
        free(ids2);
        free(order);
        free(lp);
        free(lp2);
    }
    kd_pack_codec c;
    kd_err err;
    assert_int_equal(kd_pack_init(&c, 4, 10, 2.0, 2, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "lp_step"));
    int32_t bad[3] = {0, 0, 2};
    assert_int_equal(kd_pack_init(&c, 2, 3, 0.1, 2, bad, &err), -1);
    assert_non_null(strstr(err.msg, "topk_id_order"));
}


/* ---- the decoder against a plain reference ------------------------------------------------ */

/* The stream format decoded the plainest way (docs/dump-format.md, kd_dump_codec.c's head comment):
 * one fresh 64-bit peek per symbol. kd_pack_decode's windows must give the same values, the same
 * verdicts and the same messages. */
static uint64_t ref_peek(const uint8_t *in, uint64_t pos) {
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x |= (uint64_t)in[(pos >> 3) + (uint64_t)i] << (8 * i);
    return x >> (pos & 7);
}

static uint32_t ref_rice(const uint8_t *in, uint64_t *pos, int r, int wide) {
    uint64_t x = ref_peek(in, *pos);
    int q = 0;
    while (q < 16 && ((x >> q) & 1)) q++;
    if (q < 16) {
        *pos += (uint64_t)(q + 1 + r);
        return ((uint32_t)q << r) | (uint32_t)((x >> (q + 1)) & ((1ull << r) - 1));
    }
    x = ref_peek(in, *pos + 16);
    *pos += 16 + (uint64_t)wide;
    return (uint32_t)(x & ((1ull << wide) - 1));
}

static int ref_decode(const kd_pack_codec *c, int64_t T, const uint8_t *mask, const uint8_t *in, size_t n,
                      int32_t *ids, float *lp, char *msg, size_t msg_n) {
    static const int lo[5] = {0, 1, 4, 16, 1 << 30};
    int k = c->k, kb = 0;
    while ((1 << kb) < k) kb++;
    if (n < 8) return snprintf(msg, msg_n, "header"), -1;
    uint64_t h = ref_peek(in, 0), len_a = h >> 32;
    if (len_a > n - 8) return snprintf(msg, msg_n, "stream A"), -1;
    uint64_t pa = 64, end_a = (8 + len_a) * 8, pb = end_a, end_b = (uint64_t)n * 8;
    for (int64_t t = 0; t < T; t++) {
        int32_t *id = ids + t * k;
        float *l = lp + t * k;
        if (mask && !mask[t]) {
            for (int j = 0; j < k; j++) id[j] = 0, l[j] = 0;
            continue;
        }
        int nf = k, bad = 0;
        uint64_t x = ref_peek(in, pa);
        pa += 1;
        if (!(x & 1)) {
            nf = (int)((x >> 1) & ((1ull << kb) - 1)) + 1;
            pa += (uint64_t)kb;
        }
        if (nf <= k) {
            float r0 = -(float)ref_rice(in, &pa, (int)(h >> 16) & 15, 24) * (float)c->step;
            uint64_t code = 0;
            for (int j = 0; j < nf; j++) {
                int b = 0;
                while (j >= lo[b + 1]) b++;
                if (j) code += ref_rice(in, &pa, (int)(h >> (16 + 4 * b)) & 15, 16);
                uint32_t rk = ref_rice(in, &pb, (int)(h >> (4 * b)) & 15, c->id_bits);
                bad |= code > (uint64_t)c->cmax || rk >= (uint32_t)c->vocab;
                l[j] = j ? r0 - c->gap[code > (uint64_t)c->cmax ? (uint64_t)c->cmax : code] : r0;
                id[j] = c->order[rk >= (uint32_t)c->vocab ? 0 : rk];
            }
            for (int j = nf; j < k; j++) id[j] = 0, l[j] = -INFINITY;
        }
        if (nf > k || bad || pa > end_a || pb > end_b)
            return snprintf(msg, msg_n, "position %lld: malformed packed stream (bits %llu of %llu, %llu of %llu)",
                            (long long)t, (unsigned long long)pa, (unsigned long long)end_a, (unsigned long long)pb,
                            (unsigned long long)end_b), -1;
    }
    return 0;
}

static void test_decoder_matches_reference(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 7);
    enum { NV = 5, NK = 6, TMAX = 24, KMAX = 80, NMAX = 6000 };
    const int64_t vocabs[NV] = {3, 512, 32000, 70000, 1 << 18};
    const int ks[NK] = {1, 3, 16, 17, 64, KMAX};
    kd_pack_codec codecs[NV][NK];
    for (int v = 0; v < NV; v++)
        for (int i = 0; i < NK; i++)
            CHECK(kd_pack_init(&codecs[v][i], ks[i], vocabs[v], KD_PACK_STEP_DEFAULT, KD_PACK_KNEE_DEFAULT, NULL, E));
    int32_t *ia = malloc(TMAX * KMAX * 4), *ib = malloc(TMAX * KMAX * 4), *ids = malloc(TMAX * KMAX * 4);
    float *la = malloc(TMAX * KMAX * 4), *lb = malloc(TMAX * KMAX * 4), *lp = malloc(TMAX * KMAX * 4);
    int agree_ok = 0, agree_bad = 0;
    for (int trial = 0; trial < 6000; trial++) {
        kd_cpu_set_generic(trial >= 3000);   /* the CPU's decoder, then the plain x86-64 one */
        kd_pack_codec *c = &codecs[kd_rng_below(&r, NV)][kd_rng_below(&r, NK)];
        int k = c->k;
        int64_t T = 1 + (int64_t)kd_rng_below(&r, TMAX);
        size_t n, cap = 8 + TMAX * KMAX * 6 + NMAX;   /* ≥ any record below: 6 bytes ≥ an entry's 40 + 40 bits */
        uint8_t *buf = calloc(cap + 4096, 1), mask[TMAX];   /* + ≥ kd_pack_pad of every codec here */
        for (int t = 0; t < T; t++) mask[t] = kd_rng_uniform(&r) < 0.8;
        const uint8_t *mk = trial % 3 ? mask : NULL;
        int real = trial % 2 && c->vocab >= k;
        if (real) {   /* a real record: the Rice parameters the encoder picks, escaped ids */
            gen(&r, T, k, c->vocab, ids, lp);
            n = kd_pack_encode(c, T, mk, ids, lp, buf);
        } else if (trial % 4 == 2) {   /* valid values, random long id codes: unary parts of 12..16 (escapes) */
            c = &codecs[NV - 1][NK - 1 - (int)kd_rng_below(&r, 2)];   /* V = 2^18: most ranks valid; k 64 or 80 */
            k = c->k;
            mk = NULL;
            int rv = 8 + (int)kd_rng_below(&r, 6);   /* ≤ 13: every rank < 2^17 < V */
            buf[0] = buf[1] = (uint8_t)(rv | rv << 4);   /* ids: rv in every band; values: 0 */
            uint64_t bit = 64;
            for (int t = 0; t < T; t++, bit += (uint64_t)k + 1)   /* stream A: full, q0 = 0, k − 1 differences 0 */
                buf[bit >> 3] |= (uint8_t)(1u << (bit & 7));
            uint32_t len_a = (uint32_t)((bit + 7) / 8 - 8);
            memcpy(buf + 4, &len_a, 4);
            bit = (8 + (uint64_t)len_a) * 8;
            for (int64_t sym = 0; sym < T * k; sym++) {   /* stream B */
                int q = kd_rng_uniform(&r) < 0.3 ? (int)kd_rng_below(&r, 12) : 12 + (int)kd_rng_below(&r, 4);
                if (kd_rng_uniform(&r) < 0.02) q = 16;
                int len = q < 16 ? q + 1 + rv : 16 + c->id_bits;
                uint64_t v = q < 16 ? (((uint64_t)1 << q) - 1) | (kd_rng_below(&r, (uint64_t)1 << rv) << (q + 1))
                                    : 0xffff | (kd_rng_below(&r, (uint64_t)1 << c->id_bits) << 16);
                for (int i = 0; i < len; i++, bit++)
                    if ((v >> i) & 1) buf[bit >> 3] |= (uint8_t)(1u << (bit & 7));
            }
            n = (size_t)((bit + 7) / 8);
            real = 1;
        } else {   /* random bytes under any Rice parameters, runs of one bits (long codes, escapes) */
            n = 8 + kd_rng_below(&r, NMAX);
            double ones = kd_rng_uniform(&r);
            for (size_t i = 8; i < n; i++)
                buf[i] = kd_rng_uniform(&r) < ones * 0.7 ? 0xff : (uint8_t)kd_rng_below(&r, 256);
            for (int i = 0; i < 4; i++) buf[i] = (uint8_t)kd_rng_below(&r, 256);
            uint32_t len_a = (uint32_t)kd_rng_below(&r, n - 8 + 1);
            memcpy(buf + 4, &len_a, 4);
        }
        char ref_msg[256];
        kd_err err;
        memset(ia, 0x55, TMAX * KMAX * 4), memset(ib, 0x55, TMAX * KMAX * 4);
        memset(la, 0x55, TMAX * KMAX * 4), memset(lb, 0x55, TMAX * KMAX * 4);
        int a = kd_pack_decode(c, T, mk, buf, n, ia, la, "rec", &err);
        int b = ref_decode(c, T, mk, buf, n, ib, lb, ref_msg, sizeof ref_msg);
        assert_int_equal(a, b);
        if (a == 0) {
            assert_memory_equal(ia, ib, (size_t)(T * k) * 4);
            assert_memory_equal(la, lb, (size_t)(T * k) * 4);
            agree_ok++;
        } else {
            assert_false(real);   /* real records decode */
            if (strstr(ref_msg, "position")) assert_non_null(strstr(err.msg, ref_msg));
            agree_bad++;
        }
        free(buf);
    }
    kd_cpu_set_generic(0);
    assert_true(agree_ok > 2000 && agree_bad > 1000);   /* both outcomes were exercised */
    for (int v = 0; v < NV; v++)
        for (int i = 0; i < NK; i++) kd_pack_free(&codecs[v][i]);
    free(ia);
    free(ib);
    free(ids);
    free(la);
    free(lb);
    free(lp);
}

/* A plain dump and the same data written packed by kd's writer (two appends, a resume between). */
enum { N = 9, T = 12, K = 8, V = 300 };
static int32_t g_tok[N * (T + 1)], g_ids[N * T * K];
static uint8_t g_mask[N * T];
static float g_lp[N * T * K];

static void write_dump(const char *path, int packed) {
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32,
                      .has_loss_mask = 1, .packed = packed};
    snprintf(m.teacher, sizeof m.teacher, "pack-test");
    kd_dump_writer *w;
    CHECK(!(w = kd_dump_writer_create(path, &m, NULL, E)));
    CHECK(kd_dump_writer_append(w, 4, g_tok, g_mask, g_ids, g_lp, E));
    CHECK(kd_dump_writer_close(w, E));
    CHECK(!(w = kd_dump_writer_resume(path, E)));   /* reopens the finished file and appends the rest */
    assert_int_equal(kd_dump_writer_n_seq(w), 4);
    assert_int_equal(kd_dump_writer_meta(w)->packed, packed);
    CHECK(kd_dump_writer_append(w, N - 4, g_tok + 4 * (T + 1), g_mask + 4 * T, g_ids + 4 * T * K, g_lp + 4 * T * K, E));
    CHECK(kd_dump_writer_close(w, E));
}

static void test_writer_reader_loader(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 7);
    for (int i = 0; i < N * (T + 1); i++) g_tok[i] = (int32_t)kd_rng_below(&r, V);
    for (int i = 0; i < N * T; i++) g_mask[i] = i % 10 != 3;
    gen(&r, N * T, K, V, g_ids, g_lp);
    char plain[1024], packed[1024];
    tmp_path(plain, sizeof plain, "plain.h5");
    tmp_path(packed, sizeof packed, "packed.h5");
    write_dump(plain, 0);
    write_dump(packed, 1);

    kd_dump *d;
    CHECK(!(d = kd_dump_open(packed, E)));
    const kd_dump_meta *m = kd_dump_get_meta(d);
    assert_int_equal(m->packed, 1);
    assert_int_equal(m->n_seq, N);
    assert_true(m->pack_step == KD_PACK_STEP_DEFAULT && m->pack_knee == KD_PACK_KNEE_DEFAULT);
    static int32_t tok[N * (T + 1)], ids[N * T * K];
    static float lp[N * T * K];
    static uint8_t mask[N * T];
    kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
    CHECK(kd_dump_read(d, 0, N, &rows, E));
    assert_memory_equal(tok, g_tok, sizeof tok);
    assert_memory_equal(mask, g_mask, sizeof mask);
    kd_pack_codec c;
    CHECK(kd_pack_init(&c, K, V, m->pack_step, m->pack_knee, NULL, E));
    check_close(&c, N * T, g_mask, g_ids, g_lp, ids, lp);
    /* ids alone, then log-probs alone, of one sequence: the same values */
    static int32_t ids1[T * K];
    static float lp1[T * K];
    kd_dump_rows r1 = {.topk_ids = ids1}, r2 = {.topk_logprobs = lp1};
    CHECK(kd_dump_read(d, 5, 1, &r1, E));
    CHECK(kd_dump_read(d, 5, 1, &r2, E));
    assert_memory_equal(ids1, ids + 5 * T * K, sizeof ids1);
    assert_memory_equal(lp1, lp + 5 * T * K, sizeof lp1);
    assert_true(kd_dump_storage_bytes(d) > 0);
    kd_dump_report rep;
    CHECK(kd_dump_check(d, &rep, E));
    assert_int_equal(rep.n_positions, N * T);
    kd_dump_close(d);

    /* the loader: each row equals kd_dump_read of its sequence */
    const char *paths[1] = {packed};
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = 1;
    o.batch_size = 4;
    o.seed = 3;
    kd_loader *L;
    CHECK(!(L = kd_loader_new(&o, E)));
    for (int i = 0; i < 3; i++) {
        const kd_batch *b;
        CHECK(!(b = kd_loader_next(L, E)));
        for (int row = 0; row < b->B; row++) {
            if (b->dump[row] < 0) continue;
            int64_t s = b->seq[row];
            assert_memory_equal(b->topk_ids + row * T * K, ids + s * T * K, (size_t)(T * K) * 4);
            assert_memory_equal(b->topk_logprobs + row * T * K, lp + s * T * K, (size_t)(T * K) * 4);
        }
    }
    kd_loader_free(L);

    /* kd teacher pack of the plain dump; compare both packed files with it */
    char repacked[1024];
    tmp_path(repacked, sizeof repacked, "repacked.h5");
    CHECK(kd_dump_repack(plain, repacked, 1.0 / 32, 1.0, E));
    const char *files[2] = {packed, repacked};
    for (int i = 0; i < 2; i++) {
        kd_dump *a, *b;
        CHECK(!(a = kd_dump_open(files[i], E)));
        CHECK(!(b = kd_dump_open(plain, E)));
        kd_dump_diff df;
        CHECK(kd_dump_compare(a, b, &df, E));
        assert_int_equal(df.id_mismatch, 0);
        assert_int_equal(df.over_bound, 0);
        assert_true(df.entries > 0 && df.max_lp_err > 0);
        kd_dump_close(a);
        kd_dump_close(b);
    }
    kd_pack_free(&c);
    /* a packed dump cannot be written without a top-k */
    kd_dump_meta bad = {.vocab_size = V, .k = 0, .seq_len = T, .temperature = 1.0, .packed = 1};
    kd_err err;
    char p2[1024];
    tmp_path(p2, sizeof p2, "bad.h5");
    assert_null(kd_dump_writer_create(p2, &bad, NULL, &err));
    assert_non_null(strstr(err.msg, "packed"));
}

static void test_python_encoder_and_cli(void **state) {
    (void)state;
    char plain[1024], py[1024], dir[1024];
    tmp_path(plain, sizeof plain, "plain.h5");
    tmp_path(py, sizeof py, "py.h5");
    tmp_path(dir, sizeof dir, "");
    const char *kd = kd_test_env("KD_BIN");
    if (kd_test_sh("'%s' -c 'import h5py, numpy' 2>/dev/null", kd_test_env("KD_PYTHON")) != 0) {
        KD_TEST_MISSING("Python with numpy and h5py (KD_PYTHON) for tests/py/dump_pack.py");
        return;
    }
    assert_int_equal(kd_test_python("dump_pack.py", "'%s' '%s' 0.03125 1.5", plain, py), 0);
    char doc[1024], recipe[1024];
    snprintf(doc, sizeof doc, "%s/docs/dump-format.md", kd_test_env("KD_SOURCE_DIR"));
    snprintf(recipe, sizeof recipe, "%s/tests/py/dump_pack.py", kd_test_env("KD_SOURCE_DIR"));
    assert_int_equal(kd_test_python("dump_check.py", "doc-sync '%s' '%s'", doc, recipe), 0);
    kd_dump *a, *b;
    CHECK(!(a = kd_dump_open(py, E)));
    CHECK(!(b = kd_dump_open(plain, E)));
    assert_true(kd_dump_get_meta(a)->packed && kd_dump_get_meta(a)->pack_step == 0.03125);
    kd_dump_diff df;
    CHECK(kd_dump_compare(a, b, &df, E));
    assert_int_equal(df.id_mismatch, 0);
    assert_int_equal(df.over_bound, 0);
    kd_dump_close(a);
    kd_dump_close(b);
    /* kd teacher info: layout, --compare, --estimate; kd teacher pack */
    assert_int_equal(kd_test_sh("'%s' teacher info '%s' --compare '%s' --estimate 1000000 > '%s/info.txt'", kd, py, plain, dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'layout topk-packed-v1: log-prob grid step 0.03125 nats, knee 1.5' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^vs original .* 0 ids differ' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '; 0 entries over the documented bound' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^estimate     1000000 tokens: packed' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^check        ok' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("'%s' teacher pack '%s' --out '%s/cli.h5' && '%s' teacher info '%s/cli.h5' --compare '%s' "
                                "> /dev/null", kd, plain, dir, kd, dir, plain), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s' --estimate 1000 | grep -q 'packed .* measured on its first'", kd,
                                plain), 0);
    assert_int_equal(kd_test_sh("'%s' teacher pack '%s' 2>/dev/null", kd, plain), 2);
}

/* kd teacher dump --compress on the real aidreams260K teacher gives the plain run's data within the bound,
 * and a short distillation on it ends within 2 % of the plain run's validation KL (same seed and steps;
 * validated on the plain dump, so both KLs are against the original teacher). */
static void test_compress_dump_and_student(void **state) {
    (void)state;
    char dir[1024], p[1200];
    tmp_path(dir, sizeof dir, "real");
    const char *kd = kd_test_env("KD_BIN");
    assert_int_equal(kd_test_sh("mkdir -p '%s'", dir), 0);
    snprintf(p, sizeof p, "%s/teacher", dir);
    assert_int_equal(kd_test_import_aidreams(p), 0);
    const char *dump = "'%s' teacher dump --teacher '%s/teacher' --generate 200 --seq-len 32 --topk 32 --batch 50 --quiet "
                       "--out '%s/%s.h5'%s";
    char extra[1200];
    snprintf(extra, sizeof extra, " --val-out '%s/val.h5' --val-fraction 0.2", dir);
    assert_int_equal(kd_test_sh(dump, kd, dir, dir, "plain", extra), 0);
    snprintf(extra, sizeof extra, " --val-out '%s/valp.h5' --val-fraction 0.2 --compress", dir);
    assert_int_equal(kd_test_sh(dump, kd, dir, dir, "packed", extra), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/packed.h5' --compare '%s/plain.h5' > '%s/info.txt'", kd, dir, dir,
                                dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'layout topk-packed-v1: log-prob grid step 0.0625 nats, knee 2' '%s/info.txt'",
                                dir), 0);
    /* resuming with another layout is refused by name */
    assert_int_equal(kd_test_sh("cp '%s/plain.h5' '%s/x.h5.partial' && '%s' teacher dump --teacher '%s/teacher' "
                                "--generate 10 --seq-len 32 --topk 32 --compress --quiet --out '%s/x.h5' 2> '%s/err.txt'",
                                dir, dir, kd, dir, dir, dir), 1);
    assert_int_equal(kd_test_sh("grep -q 'layout plain' '%s/err.txt'", dir), 0);
    double kl[2];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/run%d.json", dir, i);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fprintf(f, "{\"student\": \"%s/configs/student-tiny.json\", \"train_data\": \"%s/%s.h5\", "
                   "\"val_data\": \"%s/val.h5\", \"batch_size\": 8, \"steps\": 40, \"lr\": 3e-3, \"warmup\": 4, "
                   "\"eval_every\": 40, \"save_every\": 1000, \"alpha\": 1.0, \"temperature\": 1.0, \"seed\": 5}\n",
                kd_test_env("KD_SOURCE_DIR"), dir, i ? "packed" : "plain", dir);
        fclose(f);
        assert_int_equal(kd_test_sh("'%s' train --config '%s' --out '%s/run%d' > /dev/null 2>&1", kd, p, dir, i), 0);
        snprintf(p, sizeof p, "run%d/final_eval.json", i);
        kl[i] = kd_test_json_number(dir, p, "kl");
    }
    print_message("val KL after 40 steps: plain %.4f, packed %.4f\n", kl[0], kl[1]);
    if (fabs(kl[1] - kl[0]) > 0.02 * kl[0]) fail_msg("val KL %g (packed) vs %g (plain): more than 2 %% apart", kl[1], kl[0]);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_codec_roundtrip),
    cmocka_unit_test(test_decoder_matches_reference),
    cmocka_unit_test(test_writer_reader_loader),
    cmocka_unit_test(test_python_encoder_and_cli),
    cmocka_unit_test(test_compress_dump_and_student),
};
KD_TEST_MAIN(tests)
