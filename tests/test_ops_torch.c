/*
 * test_ops_torch.c — every autograd op's forward and backward against
 * PyTorch (tests/py/ops_ref.py, float64) on random inputs.
 *
 * Tolerances, relative to the largest reference magnitude of each tensor:
 * forward ≤ 1e-5, gradients ≤ 1e-4 (kd computes in float32; the reference in
 * float64; float32 sums of a few hundred terms stay well inside these).
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kd_ops.h"
#include "format/kd_safetensors.h"

#define MAX_CASES 32

typedef struct {
    char name[48];
    int n_in;
    kd_tensor *in[3];
    int32_t *ids;
    int64_t n_ids, ids_shape[2];
    int ids_ndim;
    kd_tensor *out;            /* in the graph */
    float *dy;
} op_case;

static op_case g_cases[MAX_CASES];
static int g_n;
static kd_graph g_graphs[MAX_CASES];   /* one tape per case: backward walks a whole tape */
#define CUR_GRAPH (&g_graphs[g_n - 1])
static kd_rng g_rng;

static op_case *new_case(const char *name, int n_in, int ndim, const int64_t *s0, const int64_t *s1, const int64_t *s2) {
    op_case *c = &g_cases[g_n++];
    memset(c, 0, sizeof *c);
    kd_graph_init(CUR_GRAPH, 0, NULL);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->n_in = n_in;
    const int64_t *shapes[3] = {s0, s1, s2};
    for (int i = 0; i < n_in; i++) {
        int nd = i == 0 ? ndim : (shapes[i][2] ? 3 : (shapes[i][1] ? 2 : 1));
        if (i == 0) nd = ndim;
        c->in[i] = kd_param_new("x", nd, shapes[i], NULL);
        kd_test_fill_normal(&g_rng, c->in[i]->data, c->in[i]->n, 1.0f);
    }
    return c;
}

static void finish_case(op_case *c, kd_tensor *out) {
    c->out = out;
    c->dy = malloc((size_t)out->n * sizeof(float));
    kd_test_fill_normal(&g_rng, c->dy, out->n, 1.0f);
    kd_graph_backward_from(CUR_GRAPH, out, c->dy);
}

static void build_cases(void) {
    kd_rng_seed(&g_rng, 2024);
    int64_t s345[3] = {3, 4, 5}, s79[3] = {7, 9, 0};
    op_case *c;
    c = new_case("add", 2, 3, s345, s345, NULL);   finish_case(c, kd_add(CUR_GRAPH, c->in[0], c->in[1]));
    c = new_case("mul", 2, 3, s345, s345, NULL);   finish_case(c, kd_mul(CUR_GRAPH, c->in[0], c->in[1]));
    c = new_case("scale", 1, 3, s345, NULL, NULL); finish_case(c, kd_scale(CUR_GRAPH, c->in[0], -1.7f));
    c = new_case("sum", 1, 2, s79, NULL, NULL);    finish_case(c, kd_sum(CUR_GRAPH, c->in[0]));
    c = new_case("mean", 1, 2, s79, NULL, NULL);   finish_case(c, kd_mean(CUR_GRAPH, c->in[0]));
    c = new_case("swiglu", 2, 3, s345, s345, NULL); finish_case(c, kd_swiglu(CUR_GRAPH, c->in[0], c->in[1]));
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t M = 6, K = 10, N = 7;
            int64_t sa[3] = {ta ? K : M, ta ? M : K, 0}, sb[3] = {tb ? N : K, tb ? K : N, 0};
            char name[32];
            snprintf(name, sizeof name, "matmul%d%d", ta, tb);
            c = new_case(name, 2, 2, sa, sb, NULL);
            finish_case(c, kd_matmul(CUR_GRAPH, c->in[0], c->in[1], ta, tb));
        }
    int64_t sx[3] = {2, 5, 16}, sw[3] = {12, 16, 0};
    c = new_case("linear", 2, 3, sx, sw, NULL); finish_case(c, kd_linear(CUR_GRAPH, c->in[0], c->in[1]));
    int64_t se[3] = {11, 8, 0};
    c = new_case("embedding", 1, 2, se, NULL, NULL);
    c->n_ids = 12; c->ids_ndim = 2; c->ids_shape[0] = 2; c->ids_shape[1] = 6;
    c->ids = malloc(12 * sizeof(int32_t));
    for (int i = 0; i < 12; i++) c->ids[i] = (int32_t)((i * 7) % 11 % 5);   /* repeated ids */
    finish_case(c, kd_embedding(CUR_GRAPH, c->in[0], c->ids, 2, 6));
    int64_t sr[3] = {2, 5, 32}, srw[3] = {32, 0, 0};
    c = new_case("rmsnorm", 2, 3, sr, srw, NULL); finish_case(c, kd_rmsnorm(CUR_GRAPH, c->in[0], c->in[1], 1e-5f));
    int32_t pos[9];
    for (int i = 0; i < 9; i++) pos[i] = i;
    int64_t sp[3] = {2, 9, 24};
    c = new_case("rope_half", 1, 3, sp, NULL, NULL); finish_case(c, kd_rope(CUR_GRAPH, c->in[0], 3, pos, 10000.0f, KD_ROPE_HALF));
    c = new_case("rope_pairs", 1, 3, sp, NULL, NULL); finish_case(c, kd_rope(CUR_GRAPH, c->in[0], 3, pos, 10000.0f, KD_ROPE_PAIRS));
    int64_t sq[3] = {2, 70, 32}, sk[3] = {2, 70, 16};
    c = new_case("attention_w0", 3, 3, sq, sk, sk); finish_case(c, kd_attention(CUR_GRAPH, c->in[0], c->in[1], c->in[2], 4, 2, 0));
    c = new_case("attention_w9", 3, 3, sq, sk, sk); finish_case(c, kd_attention(CUR_GRAPH, c->in[0], c->in[1], c->in[2], 4, 2, 9));
    int64_t sz[3] = {10, 33, 0};
    c = new_case("cross_entropy", 1, 2, sz, NULL, NULL);
    for (int64_t i = 0; i < c->in[0]->n; i++) c->in[0]->data[i] *= 3.0f;
    c->n_ids = 10; c->ids_ndim = 1; c->ids_shape[0] = 10;
    c->ids = malloc(10 * sizeof(int32_t));
    for (int i = 0; i < 10; i++) c->ids[i] = i % 4 == 3 ? KD_IGNORE_INDEX : (int32_t)((i * 5) % 33);
    finish_case(c, kd_cross_entropy(CUR_GRAPH, c->in[0], c->ids, KD_IGNORE_INDEX));
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs(b[i]));
        e = fmax(e, fabs((double)a[i] - b[i]));
    }
    return m > 0 ? e / m : e;
}

static void test_ops_vs_torch(void **state) {
    (void)state;
    kd_err err;
    build_cases();
    char in[600], out[600], key[96];
    snprintf(in, sizeof in, "%s/ops_in.safetensors", kd_test_tmpdir());
    snprintf(out, sizeof out, "%s/ops_out.safetensors", kd_test_tmpdir());
    kd_st_writer *w = kd_st_writer_new(&err);
    char (*names)[96] = calloc(MAX_CASES * 6, sizeof *names);
    int nn = 0;
    for (int i = 0; i < g_n; i++) {
        op_case *c = &g_cases[i];
        for (int k = 0; k < c->n_in; k++) {
            snprintf(names[nn], 96, "%.40s.in%d", c->name, k);
            assert_int_equal(kd_st_writer_add(w, names[nn++], KD_ST_F32, c->in[k]->ndim, c->in[k]->shape, c->in[k]->data, &err), 0);
        }
        snprintf(names[nn], 96, "%.40s.dy", c->name);
        assert_int_equal(kd_st_writer_add(w, names[nn++], KD_ST_F32, c->out->ndim, c->out->shape, c->dy, &err), 0);
        if (c->ids) {
            snprintf(names[nn], 96, "%.40s.ids", c->name);
            assert_int_equal(kd_st_writer_add(w, names[nn++], KD_ST_I32, c->ids_ndim, c->ids_shape, c->ids, &err), 0);
        }
    }
    assert_int_equal(kd_st_writer_save(w, in, &err), 0);
    kd_st_writer_free(w);
    assert_int_equal(kd_test_python("ops_ref.py", "'%s' '%s'", in, out), 0);
    kd_st_file *ref = kd_st_open(out, &err);
    assert_non_null(ref);
    int failures = 0;
    for (int i = 0; i < g_n; i++) {
        op_case *c = &g_cases[i];
        float *buf = malloc((size_t)c->out->n * sizeof(float));
        snprintf(key, sizeof key, "%.40s.out", c->name);
        assert_int_equal(kd_st_read_f32(ref, key, buf, c->out->ndim, c->out->shape, &err), 0);
        double ef = rel_err(c->out->data, buf, c->out->n), eg = 0;
        free(buf);
        for (int k = 0; k < c->n_in; k++) {
            buf = malloc((size_t)c->in[k]->n * sizeof(float));
            snprintf(key, sizeof key, "%.40s.grad%d", c->name, k);
            assert_int_equal(kd_st_read_f32(ref, key, buf, c->in[k]->ndim, c->in[k]->shape, &err), 0);
            eg = fmax(eg, rel_err(c->in[k]->grad, buf, c->in[k]->n));
            free(buf);
        }
        int ok = ef <= 1e-5 && eg <= 1e-4;
        fprintf(stderr, "%-14s forward %.1e  backward %.1e  %s\n", c->name, ef, eg, ok ? "ok" : "FAIL");
        failures += !ok;
    }
    assert_int_equal(failures, 0);
    kd_st_close(ref);
    for (int i = 0; i < g_n; i++) {
        for (int k = 0; k < g_cases[i].n_in; k++) kd_param_free(g_cases[i].in[k]);
        free(g_cases[i].dy);
        free(g_cases[i].ids);
        kd_graph_free(&g_graphs[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ops_vs_torch)};
    return KD_RUN_GROUP(tests, NULL, NULL);
}
