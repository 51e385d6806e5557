/*
 * kd_dump_impl.h — internals shared by kd_dump.c (reader), kd_dump_write.c
 * (writer) and kd_dump_check.c (validator). Not a public interface: every
 * function here expects the caller to hold the HDF5 lock (kdd_enter).
 */
#ifndef KD_DUMP_IMPL_H
#define KD_DUMP_IMPL_H

#include <hdf5.h>

#include "data/kd_dump.h"

/* Dataset slots; names depend on the kind of dump (kdd_dname). */
enum { D_TOKENS, D_MASK, D_IDS, D_VALUES, D_COUNT };
/* Classes returned by kdd_dtype_of. */
enum { DT_OTHER, DT_INT, DT_F16, DT_F32 };

struct kd_dump {
    char path[4096];
    hid_t file;
    hid_t ds[D_COUNT];     /* −1 when absent */
    int dt[D_COUNT];       /* DT_INT/DT_F16/DT_F32 */
    int raw16[D_COUNT];    /* stored as uint16 / float16: read raw and widen here */
    int direct[D_COUNT];   /* tokens / loss_mask: one unfiltered chunk per sequence in the type read, so a
                              sequence is read with H5Dread_chunk (no selection machinery: ~2.5x faster) */
    int64_t dims0[D_COUNT];
    kd_dump_meta meta;
    void *scratch;
    size_t scratch_cap;
    struct kdd_pack *pack; /* the compressed layout "topk-packed-v1" (kd_dump_pack.c); NULL = plain datasets */
    /* group 'tokenizer' as first read (kd_dump_read_tokenizer): read once per open, since
     * libhdf5 1.10 can fail on a damaged file's second read of the same variable-length string
     * (a memcpy overlap in H5HG_read that its first read, and the probe child, passed) */
    int tok_state;         /* 0 unread, 1 read (tok_cache), -1 refused (tok_err) */
    kd_dump_tokenizer tok_cache;
    kd_err tok_err;
};

/* The HDF5 lock, with HDF5's error printing silenced while it is held. */
typedef struct kdd_guard {
    H5E_auto2_t func;
    void *data;
} kdd_guard;
void kdd_enter(kdd_guard *g);
void kdd_leave(kdd_guard *g);

/* kd_errf plus " (HDF5: innermost error)" (KDD_H5_MARK: libhdf5 reported the failure); returns -1. */
#define KDD_H5_MARK " (HDF5: "
int kdd_h5_fail(kd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
hid_t kdd_f16(void);   /* IEEE binary16 little-endian, as h5py writes numpy float16 */
int kdd_dtype_of(hid_t t, char *name, size_t n, int *bytes, int *is_signed);

int kdd_attr_int(hid_t obj, const char *file, const char *name, int required, int64_t lo, int64_t hi, int64_t *out,
                 kd_err *err);
int kdd_attr_string(hid_t obj, const char *file, const char *name, int required, char *out, size_t n, kd_err *err);
int kdd_attr_write_i64(hid_t obj, const char *name, int64_t v);
int kdd_attr_write_f64(hid_t obj, const char *name, double v);
int kdd_attr_write_str(hid_t obj, const char *name, const char *v);

/* The group "tokenizer" of an open file (read: at most max_n pieces; write). */
int kdd_read_tokenizer(hid_t file, const char *path, int64_t max_n, kd_dump_tokenizer *t, kd_err *err);
int kdd_write_tokenizer(hid_t file, const char *path, const kd_dump_tokenizer *t, kd_err *err);

kd_dump *kdd_open_locked(const char *path, int rdwr, int partial, kd_err *err);
void kdd_free(kd_dump *d);
const char *kdd_dname(const kd_dump *d, int i);
void *kdd_scratch(kd_dump *d, size_t bytes, kd_err *err);
int kdd_io_block(kd_dump *d, int i, int write, int64_t s0, int64_t ns, int64_t p0, int64_t np, int64_t cols,
                 hid_t mtype, void *mem, kd_err *err);
int kdd_read_2d(kd_dump *d, int i, int64_t s0, int64_t ns, void *out, kd_err *err);
int kdd_read_3d(kd_dump *d, int i, int64_t s0, int64_t ns, int64_t p0, int64_t np, void *out, int64_t width,
                kd_err *err);

/* Checks of one position (kd_dump_check.c), shared by the writer and the validator.
 * Return 0 when fine, else -1 with *slot and what[0..n) describing the first bad entry.
 * stamp is a zeroed uint32 array of vocab_size entries; *mark is bumped per call. */
typedef struct kdd_pos_stats {
    double mass, top1;
} kdd_pos_stats;
int kdd_check_topk(const int32_t *ids, const float *lp, int k, int64_t vocab, int masked, double eps, double eps_abs, uint32_t *stamp,
                   uint32_t *mark, kdd_pos_stats *st, int64_t *slot, char *what, size_t n);
int kdd_check_sampled(const int32_t *ids, const float *lp, int k, int64_t vocab, int n_samples, int masked,
                      uint32_t *stamp, uint32_t *mark, kdd_pos_stats *st, int64_t *slot, char *what, size_t n);
/* e^x in float for x in [−87, 0.01] (the loader's fast check; relative error < 4e-6, tested). */
float kdd_fexp(float x);
int kdd_check_logits(const float *z, int64_t vocab, int64_t *slot, char *what, size_t n);

/* Create (and close) a resizable dataset of the given shape, limits and chunking (kd_dump_write.c). */
int kdd_create_chunked(hid_t file, const char *path, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const hsize_t *maxd, const hsize_t *chunk, kd_err *err);

/* The compressed top-k layout (kd_dump_pack.c): its datasets replace topk_ids / topk_logprobs. */
typedef struct kdd_pack kdd_pack;
int kdd_pack_create(hid_t file, const char *path, const kd_dump_meta *m, kd_err *err);
int kdd_pack_open(kd_dump *d, int partial, kd_err *err);   /* after tokens/loss_mask, with meta.n_seq known */
void kdd_pack_free(kd_dump *d);
/* sums (may be NULL): each sequence's checksum (kd_dump_seq_checksum) over the values as they decode. */
int kdd_pack_append(kd_dump *d, int64_t old, int64_t n, const int32_t *tokens, const uint8_t *mask,
                    const int32_t *ids, const float *lp, uint64_t *sums, kd_err *err);
int kdd_pack_set_n_seq(kd_dump *d, int64_t n, kd_err *err);
/* Sequences [s0, s0+ns), positions [p0, p0+np) into ids / lp ([ns, np, k]; either may be NULL);
 * mask: their loss_mask rows [ns, T] when the caller has read them, else NULL. */
int kdd_pack_read(kd_dump *d, int64_t s0, int64_t ns, int64_t p0, int64_t np, const uint8_t *mask, int32_t *ids,
                  float *lp, kd_err *err);
uint64_t kdd_pack_storage(const kd_dump *d);
/* Tolerances of the Σp check for decoded values: relative eps (returned) and absolute *eps_abs. */
double kdd_pack_check_eps(const kd_dump_meta *m, double *eps_abs);

/* Recovery of a writer's file cut short (kd_dump_salvage.c). kdd_flush_complete: *complete = 1
 * when the superblock's end of allocation matches the file's size (HDF5's last flush or close
 * completed), else 0; fd is open on path. kdd_salvage: copy src's attributes, tokenizer and
 * first n sequences (every resizable dataset's rows, raw) into a new file dst, n_seq = n. */
int kdd_flush_complete(int fd, const char *path, int *complete, kd_err *err);
int kdd_salvage(kd_dump *src, const char *dst, int64_t n, kd_err *err);

#endif
