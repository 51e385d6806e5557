/*
 * kd_tensor.h — FP32 tensors and the reverse-mode autograd tape.
 *
 * A kd_tensor is a contiguous row-major FP32 array of up to 4 dimensions with
 * an optional gradient buffer of the same shape. Two kinds exist:
 *   - parameters (kd_param_new): own their data and grad (kd_alloc), live
 *     across steps, grads accumulate until kd_param_zero_grad; a parameter made
 *     with kd_param_new_nograd (inference) has no grad buffer and
 *     requires_grad 0, so no op records a node for it and no backward writes
 *     to it (kd_grad on it aborts: that would be a bug in an op);
 *   - activations (returned by ops): struct, data and grad come from the
 *     graph's arena and vanish at kd_graph_reset.
 *
 * A kd_graph is the tape of one step. Each op appends a node (inputs, output,
 * backward function, saved context) when any input requires a gradient and
 * the graph is not in no-grad mode. kd_graph_backward walks the nodes in
 * reverse; an input used several times receives the sum of its gradients
 * (every backward accumulates with +=). Activation gradients are allocated
 * (zeroed) in the arena on first use. Run backward once per tape: a second
 * call would propagate the earlier seeds again (reset the graph in between).
 *
 * Errors: a shape mismatch is a programming error and aborts with a message
 * naming the op and the shapes; running out of memory aborts with the number
 * of bytes asked (plan sizes beforehand with `kd plan`).
 */
#ifndef KD_TENSOR_H
#define KD_TENSOR_H

#include <stdint.h>
#include <stddef.h>

#include "core/kd_err.h"
#include "core/kd_mem.h"

#define KD_MAX_DIMS 4

typedef struct kd_tensor {
    float *data;
    float *grad;                 /* NULL until a gradient exists */
    int64_t shape[KD_MAX_DIMS];
    int ndim;
    int64_t n;                   /* element count */
    int requires_grad;
    int is_param;
    char name[96];               /* parameters: checkpoint name; activations: op name */
} kd_tensor;

/* ---- parameters ---------------------------------------------------------- */
kd_tensor *kd_param_new(const char *name, int ndim, const int64_t *shape, kd_err *err);
/* A parameter without a gradient buffer (grad NULL, requires_grad 0): half the
 * memory of kd_param_new, for models that only run forward. */
kd_tensor *kd_param_new_nograd(const char *name, int ndim, const int64_t *shape, kd_err *err);
void kd_param_free(kd_tensor *p);
void kd_param_zero_grad(kd_tensor *p);

/* ---- the tape ---------------------------------------------------------------- */
typedef struct kd_graph kd_graph;
typedef struct kd_node kd_node;
typedef void (*kd_backward_fn)(kd_graph *g, kd_node *node);

#define KD_NODE_MAX_IN 3

struct kd_node {
    const char *op;
    kd_backward_fn backward;
    kd_tensor *out;
    kd_tensor *in[KD_NODE_MAX_IN];
    void *ctx;                   /* op-specific saved data, in the arena */
};

struct kd_graph {
    kd_arena arena;
    kd_node *nodes;
    int n_nodes, cap_nodes;
    int no_grad;                 /* when set, ops record nothing */
};

int kd_graph_init(kd_graph *g, size_t arena_bytes, kd_err *err);
void kd_graph_free(kd_graph *g);
/* Forget the tape and every activation (the arena is kept for the next step). */
void kd_graph_reset(kd_graph *g);
/* Back-propagate from a scalar (seed gradient 1) or from out with a given gradient. */
void kd_graph_backward(kd_graph *g, kd_tensor *loss);
void kd_graph_backward_from(kd_graph *g, kd_tensor *out, const float *out_grad);

/* ---- helpers for ops ------------------------------------------------------------ */
/* New activation tensor (uninitialised data) in the graph's arena. */
kd_tensor *kd_tensor_new(kd_graph *g, int ndim, const int64_t *shape, const char *name);
kd_tensor *kd_tensor_new2(kd_graph *g, int64_t d0, int64_t d1, const char *name);
/* Arena memory for an op's saved context or scratch. */
void *kd_graph_alloc(kd_graph *g, size_t bytes);
/* The gradient buffer of t, allocated zeroed in the arena on first use (an
 * activation's). Aborts for a parameter that does not require a gradient. */
float *kd_grad(kd_graph *g, kd_tensor *t);
/* Record a node when any input requires grad (and not no-grad). Returns NULL when
 * nothing is recorded; sets out->requires_grad accordingly. */
kd_node *kd_graph_record(kd_graph *g, const char *op, kd_backward_fn bw, kd_tensor *out,
                         kd_tensor *a, kd_tensor *b, kd_tensor *c);

/* Abort with a message (shape errors, out of memory in the hot path). */
_Noreturn void kd_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Shape text like "[4, 16, 64]" for messages. */
const char *kd_shape_str(const kd_tensor *t, char *buf, size_t n);
/* Size of the last dimension, and the product of the others. */
static inline int64_t kd_last_dim(const kd_tensor *t) { return t->shape[t->ndim - 1]; }
static inline int64_t kd_rows(const kd_tensor *t) { return t->n / t->shape[t->ndim - 1]; }

#endif
