/*
 * test_autograd.c — every op's backward against central finite differences,
 * and the tape's bookkeeping (accumulation, no-grad, reuse, reset), and
 * parameters without gradient buffers (kd_param_new_nograd).
 *
 * The objective is J = Σ out ⊙ R for a fixed random R, accumulated in double;
 * the analytic gradient is backward from out with seed R. Each input element
 * is perturbed by ±eps and J re-evaluated, giving (J+ − J−) / 2eps.
 */
#include "kd_test.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/kd_ops.h"

typedef kd_tensor *(*op_fn)(kd_graph *g, kd_tensor **in, const void *ctx);

static double objective(const kd_tensor *out, const float *R) {
    double j = 0.0;
    for (int64_t i = 0; i < out->n; i++) j += (double)out->data[i] * R[i];
    return j;
}

/* Returns the worst tolerance ratio over all inputs (≤ 1 passes). */
static double check_grad(const char *name, op_fn f, kd_tensor **in, int n_in, const void *ctx, double eps,
                         double atol, double rtol) {
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 1 << 20, NULL), 0);
    kd_rng rng;
    kd_rng_seed(&rng, 99);
    for (int k = 0; k < n_in; k++) kd_param_zero_grad(in[k]);
    kd_tensor *out = f(&g, in, ctx);
    float *R = malloc((size_t)out->n * sizeof(float));
    kd_test_fill_normal(&rng, R, out->n, 1.0f);
    kd_graph_backward_from(&g, out, R);
    int64_t n_out = out->n;
    double worst = 0.0;
    for (int k = 0; k < n_in; k++) {
        if (!in[k]->requires_grad) continue;
        float *num = malloc((size_t)in[k]->n * sizeof(float));
        g.no_grad = 1;
        for (int64_t i = 0; i < in[k]->n; i++) {
            float x0 = in[k]->data[i];
            in[k]->data[i] = x0 + (float)eps;
            kd_graph_reset(&g);
            double jp = objective(f(&g, in, ctx), R);
            in[k]->data[i] = x0 - (float)eps;
            kd_graph_reset(&g);
            double jm = objective(f(&g, in, ctx), R);
            in[k]->data[i] = x0;
            num[i] = (float)((jp - jm) / (2.0 * eps));
        }
        g.no_grad = 0;
        char what[128];
        snprintf(what, sizeof what, "%s: d/d input %d", name, k);
        double w = kd_test_compare(what, in[k]->grad, num, in[k]->n, atol, rtol);
        if (w > worst) worst = w;
        free(num);
    }
    (void)n_out;
    free(R);
    kd_graph_free(&g);
    return worst;
}

static kd_tensor *param(const char *name, int ndim, const int64_t *shape, kd_rng *r, float scale) {
    kd_tensor *p = kd_param_new(name, ndim, shape, NULL);
    assert_non_null(p);
    kd_test_fill_normal(r, p->data, p->n, scale);
    return p;
}

static void free_all(kd_tensor **t, int n) {
    for (int i = 0; i < n; i++) kd_param_free(t[i]);
}

#define EPS 1e-2
#define ATOL 2e-3
#define RTOL 1e-2

/* ---- elementwise and reductions ---------------------------------------------- */
static kd_tensor *f_add(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_add(g, in[0], in[1]); }
static kd_tensor *f_mul(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_mul(g, in[0], in[1]); }
static kd_tensor *f_scale(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_scale(g, in[0], -1.7f); }
static kd_tensor *f_sum(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_sum(g, kd_mul(g, in[0], in[0])); }
static kd_tensor *f_mean(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_mean(g, kd_mul(g, in[0], in[1])); }
static kd_tensor *f_swiglu(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_swiglu(g, in[0], in[1]); }
/* a used twice: gradients must add up */
static kd_tensor *f_reuse(kd_graph *g, kd_tensor **in, const void *c) {
    (void)c;
    return kd_mul(g, kd_add(g, in[0], in[0]), kd_mul(g, in[0], in[1]));
}

static void test_elementwise(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 1);
    int64_t s[3] = {2, 3, 5};
    kd_tensor *in[2] = {param("a", 3, s, &r, 1.0f), param("b", 3, s, &r, 1.0f)};
    assert_true(check_grad("add", f_add, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    assert_true(check_grad("mul", f_mul, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    assert_true(check_grad("scale", f_scale, in, 1, NULL, EPS, ATOL, RTOL) <= 1.0);
    assert_true(check_grad("sum", f_sum, in, 1, NULL, EPS, ATOL, RTOL) <= 1.0);
    assert_true(check_grad("mean", f_mean, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    assert_true(check_grad("swiglu", f_swiglu, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    assert_true(check_grad("reuse", f_reuse, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    free_all(in, 2);
}

/* ---- matmul, all transpose combinations, and linear over a 3-D input ------------ */
typedef struct { int ta, tb; } mm_args;
static kd_tensor *f_matmul(kd_graph *g, kd_tensor **in, const void *c) {
    const mm_args *a = c;
    return kd_matmul(g, in[0], in[1], a->ta, a->tb);
}
static kd_tensor *f_linear(kd_graph *g, kd_tensor **in, const void *c) { (void)c; return kd_linear(g, in[0], in[1]); }

static void test_matmul(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 2);
    const int64_t M = 5, K = 7, N = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N};
            kd_tensor *in[2] = {param("a", 2, sa, &r, 1.0f), param("b", 2, sb, &r, 1.0f)};
            mm_args args = {ta, tb};
            char name[32];
            snprintf(name, sizeof name, "matmul ta=%d tb=%d", ta, tb);
            assert_true(check_grad(name, f_matmul, in, 2, &args, EPS, ATOL, RTOL) <= 1.0);
            free_all(in, 2);
        }
    int64_t sx[3] = {2, 4, K}, sw[2] = {N, K};
    kd_tensor *in[2] = {param("x", 3, sx, &r, 1.0f), param("w", 2, sw, &r, 1.0f)};
    assert_true(check_grad("linear", f_linear, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    free_all(in, 2);
}

/* ---- embedding with repeated ids ------------------------------------------------------ */
static const int32_t EMB_IDS[8] = {3, 1, 3, 0, 5, 3, 1, 2};
static kd_tensor *f_embedding(kd_graph *g, kd_tensor **in, const void *c) {
    (void)c;
    return kd_embedding(g, in[0], EMB_IDS, 2, 4);
}

static void test_embedding(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 3);
    int64_t s[2] = {6, 5};
    kd_tensor *in[1] = {param("wte", 2, s, &r, 1.0f)};
    assert_true(check_grad("embedding", f_embedding, in, 1, NULL, EPS, ATOL, RTOL) <= 1.0);
    /* forward is a gather */
    kd_graph g;
    kd_graph_init(&g, 0, NULL);
    kd_tensor *y = kd_embedding(&g, in[0], EMB_IDS, 2, 4);
    assert_int_equal(y->ndim, 3);
    assert_memory_equal(y->data + 4 * 5, in[0]->data + 5 * 5, 5 * sizeof(float));
    kd_graph_free(&g);
    free_all(in, 1);
}

/* ---- RMSNorm ------------------------------------------------------------------------------- */
static kd_tensor *f_rmsnorm(kd_graph *g, kd_tensor **in, const void *c) {
    (void)c;
    return kd_rmsnorm(g, in[0], in[1], 1e-5f);
}

static void test_rmsnorm(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 4);
    int64_t sx[3] = {2, 3, 8}, sw[1] = {8};
    kd_tensor *in[2] = {param("x", 3, sx, &r, 1.0f), param("w", 1, sw, &r, 1.0f)};
    assert_true(check_grad("rmsnorm", f_rmsnorm, in, 2, NULL, EPS, ATOL, RTOL) <= 1.0);
    free_all(in, 2);
}

/* ---- RoPE in both conventions ------------------------------------------------------------------ */
typedef struct { int conv; int32_t pos[6]; } rope_args;
static kd_tensor *f_rope(kd_graph *g, kd_tensor **in, const void *c) {
    const rope_args *a = c;
    return kd_rope(g, in[0], 2, a->pos, 10000.0f, (kd_rope_convention)a->conv);
}

static void test_rope(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 5);
    int64_t s[3] = {2, 6, 2 * 8};
    for (int conv = 0; conv < 2; conv++) {
        kd_tensor *in[1] = {param("x", 3, s, &r, 1.0f)};
        rope_args a = {conv, {0, 1, 2, 7, 30, 100}};
        assert_true(check_grad(conv ? "rope pairs" : "rope half", f_rope, in, 1, &a, EPS, ATOL, RTOL) <= 1.0);
        /* position 0 is the identity; rotations preserve each pair's norm */
        kd_graph g;
        kd_graph_init(&g, 0, NULL);
        kd_tensor *y = kd_rope(&g, in[0], 2, a.pos, 10000.0f, (kd_rope_convention)conv);
        KD_ASSERT_CLOSE("rope pos 0", y->data, in[0]->data, 16, 1e-6, 0);
        double nx = 0, ny = 0;
        for (int64_t i = 16 * 4; i < 16 * 5; i++) {
            nx += in[0]->data[i] * in[0]->data[i];
            ny += y->data[i] * y->data[i];
        }
        assert_true(fabs(nx - ny) < 1e-4 * nx);
        kd_graph_free(&g);
        free_all(in, 1);
    }
}

/* ---- attention: MHA, GQA, sliding window, several query blocks ---------------------------- */
typedef struct { int64_t H, Hkv, window; } att_args;
static kd_tensor *f_attention(kd_graph *g, kd_tensor **in, const void *c) {
    const att_args *a = c;
    return kd_attention(g, in[0], in[1], in[2], a->H, a->Hkv, a->window);
}

static void check_attention(int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t window) {
    kd_rng r;
    kd_rng_seed(&r, (uint64_t)(7 + T + H + window));
    int64_t sq[3] = {B, T, H * D}, sk[3] = {B, T, Hkv * D};
    kd_tensor *in[3] = {param("q", 3, sq, &r, 1.0f), param("k", 3, sk, &r, 1.0f), param("v", 3, sk, &r, 1.0f)};
    att_args a = {H, Hkv, window};
    char name[96];
    snprintf(name, sizeof name, "attention B=%lld T=%lld H=%lld Hkv=%lld window=%lld", (long long)B, (long long)T,
             (long long)H, (long long)Hkv, (long long)window);
    assert_true(check_grad(name, f_attention, in, 3, &a, EPS, ATOL, RTOL) <= 1.0);
    free_all(in, 3);
}

static void test_attention(void **state) {
    (void)state;
    check_attention(2, 5, 2, 2, 4, 0);     /* plain multi-head */
    check_attention(1, 6, 4, 2, 4, 0);     /* grouped-query */
    check_attention(1, 9, 4, 1, 4, 3);     /* multi-query + sliding window */
    check_attention(1, 70, 2, 1, 2, 0);    /* two query blocks */
    check_attention(1, 70, 2, 2, 2, 20);   /* two blocks, window crossing the block edge */
}

/* Attention forward against a naive O(T²) softmax(QKᵀ)V. */
static void test_attention_naive(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 8);
    const int64_t B = 2, T = 67, H = 4, Hkv = 2, D = 8, W = 10;
    int64_t sq[3] = {B, T, H * D}, sk[3] = {B, T, Hkv * D};
    kd_tensor *q = param("q", 3, sq, &r, 1.0f), *k = param("k", 3, sk, &r, 1.0f), *v = param("v", 3, sk, &r, 1.0f);
    for (int w = 0; w < 2; w++) {
        int64_t window = w ? W : 0;
        kd_graph g;
        kd_graph_init(&g, 0, NULL);
        kd_tensor *y = kd_attention(&g, q, k, v, H, Hkv, window);
        float *ref = calloc((size_t)y->n, sizeof(float));
        double *p = malloc((size_t)T * sizeof(double));
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t t = 0; t < T; t++) {
                    int64_t kvh = h / (H / Hkv), lo = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
                    double m = -1e300, sum = 0;
                    for (int64_t s = lo; s <= t; s++) {
                        double dot = 0;
                        for (int64_t d = 0; d < D; d++)
                            dot += (double)q->data[(b * T + t) * H * D + h * D + d] * k->data[(b * T + s) * Hkv * D + kvh * D + d];
                        p[s] = dot / sqrt((double)D);
                        if (p[s] > m) m = p[s];
                    }
                    for (int64_t s = lo; s <= t; s++) sum += (p[s] = exp(p[s] - m));
                    for (int64_t d = 0; d < D; d++) {
                        double acc = 0;
                        for (int64_t s = lo; s <= t; s++) acc += p[s] / sum * v->data[(b * T + s) * Hkv * D + kvh * D + d];
                        ref[(b * T + t) * H * D + h * D + d] = (float)acc;
                    }
                }
        KD_ASSERT_CLOSE(window ? "attention (window) vs naive" : "attention vs naive", y->data, ref, y->n, 1e-5, 1e-4);
        free(ref);
        free(p);
        kd_graph_free(&g);
    }
    kd_param_free(q);
    kd_param_free(k);
    kd_param_free(v);
}

/* ---- cross-entropy with ignored targets ---------------------------------------------------- */
static const int32_t CE_T[6] = {2, KD_IGNORE_INDEX, 0, 6, 6, KD_IGNORE_INDEX};
static kd_tensor *f_ce(kd_graph *g, kd_tensor **in, const void *c) {
    (void)c;
    return kd_cross_entropy(g, in[0], CE_T, KD_IGNORE_INDEX);
}

static void test_cross_entropy(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 9);
    int64_t s[2] = {6, 7};
    kd_tensor *in[1] = {param("z", 2, s, &r, 2.0f)};
    assert_true(check_grad("cross_entropy", f_ce, in, 1, NULL, EPS, ATOL, RTOL) <= 1.0);
    /* value against a direct double computation */
    kd_graph g;
    kd_graph_init(&g, 0, NULL);
    kd_tensor *y = kd_cross_entropy(&g, in[0], CE_T, KD_IGNORE_INDEX);
    double ref = 0;
    int cnt = 0;
    for (int n = 0; n < 6; n++) {
        if (CE_T[n] == KD_IGNORE_INDEX) continue;
        double se = 0;
        for (int v = 0; v < 7; v++) se += exp((double)in[0]->data[n * 7 + v]);
        ref += log(se) - in[0]->data[n * 7 + CE_T[n]];
        cnt++;
    }
    assert_true(fabs(y->data[0] - ref / cnt) < 1e-5);
    /* ignored rows get exactly zero gradient */
    kd_param_zero_grad(in[0]);
    kd_graph_backward(&g, y);
    for (int v = 0; v < 7; v++) assert_true(in[0]->grad[1 * 7 + v] == 0.0f);
    kd_graph_free(&g);
    free_all(in, 1);
}

/* ---- tape bookkeeping ---------------------------------------------------------------------- */
static void test_tape(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 10);
    int64_t s[1] = {4};
    kd_tensor *a = param("a", 1, s, &r, 1.0f);
    kd_graph g;
    kd_graph_init(&g, 0, NULL);
    /* no-grad records nothing */
    g.no_grad = 1;
    kd_tensor *y = kd_sum(&g, kd_mul(&g, a, a));
    assert_int_equal(g.n_nodes, 0);
    assert_false(y->requires_grad);
    g.no_grad = 0;
    /* param grads accumulate across backward calls: d/da Σa² = 2a, twice → 4a */
    kd_param_zero_grad(a);
    for (int rep = 0; rep < 2; rep++) {
        kd_graph_reset(&g);
        kd_graph_backward(&g, kd_sum(&g, kd_mul(&g, a, a)));
    }
    for (int i = 0; i < 4; i++) assert_true(fabs(a->grad[i] - 4 * a->data[i]) < 1e-5);
    /* the arena reaches a steady state: same peak, one block, after reset */
    kd_graph_reset(&g);
    size_t cap = g.arena.capacity;
    for (int rep = 0; rep < 3; rep++) {
        kd_graph_backward(&g, kd_sum(&g, kd_mul(&g, a, a)));
        kd_graph_reset(&g);
    }
    assert_int_equal(g.arena.capacity, cap);
    /* a constant (non-parameter) input gets no gradient */
    kd_graph_free(&g);
    kd_param_free(a);
}

/* A frozen parameter: no buffer, no tape; the trainable side still gets its
 * gradient, the frozen one is never written; asking for its gradient aborts. */
static void test_nograd_param(void **state) {
    (void)state;
    kd_err err;
    int64_t s[2] = {3, 4}, bad[1] = {0};
    kd_tensor *w = kd_param_new_nograd("w", 2, s, &err);
    assert_non_null(w);
    assert_null(w->grad);
    assert_int_equal(w->requires_grad, 0);
    assert_int_equal(w->is_param, 1);
    assert_null(kd_param_new_nograd("z", 1, bad, &err));
    assert_non_null(strstr(err.msg, "'z'"));
    for (int64_t i = 0; i < w->n; i++) w->data[i] = 0.1f * (float)(i + 1);
    kd_param_zero_grad(w);   /* no buffer: nothing to do */
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    kd_tensor *x = kd_tensor_new2(&g, 2, 4, "x");
    for (int64_t i = 0; i < x->n; i++) x->data[i] = (float)i - 3.0f;
    kd_tensor *y = kd_sum(&g, kd_linear(&g, x, w));
    assert_int_equal(g.n_nodes, 0);          /* nothing requires a gradient */
    assert_false(y->requires_grad);
    x->requires_grad = 1;
    y = kd_sum(&g, kd_linear(&g, x, w));
    kd_graph_backward(&g, y);
    assert_null(w->grad);
    /* dΣ(x·wᵀ)/dx[n, c] = Σ_o w[o, c] */
    for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < 4; c++) {
            float want = w->data[c] + w->data[4 + c] + w->data[8 + c];
            assert_true(fabsf(x->grad[n * 4 + c] - want) < 1e-5f);
        }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(2);
        kd_grad(&g, w);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    kd_graph_free(&g);
    kd_param_free(w);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elementwise), cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_embedding),   cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_naive), cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_tape),        cmocka_unit_test(test_nograd_param),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
