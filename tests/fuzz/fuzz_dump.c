/*
 * fuzz_dump.c — fuzz target: a teacher dump (HDF5, data/kd_dump.c): open,
 * the tokenizer group, the first sequences, the validator, and the first
 * batch of a loader over it.
 */
#include <stdlib.h>
#include <string.h>

#include "data/kd_dump.h"
#include "data/kd_dump_tok.h"
#include "data/kd_loader.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = kdf_write_temp("dump.h5", data, size);
    kd_err err = {{0}};
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) {
        kdf_rejected(path, &err);
        return 0;
    }
    const kd_dump_meta *m = kd_dump_get_meta(d);
    if (m->has_tokenizer) {
        kd_dump_tokenizer t;
        if (kd_dump_read_tokenizer(d, &t, &err)) {
            kdf_rejected(path, &err);
        } else {
            kd_tokenizer *tok = kd_tokenizer_from_dump(&t, path, &err);
            if (!tok) kdf_rejected(path, &err);
            kd_tokenizer_free(tok);
            kd_dump_tokenizer_free(&t);
        }
    }
    kd_dump_report rep;
    if (kd_dump_check(d, &rep, &err)) kdf_rejected(path, &err);
    kd_dump_close(d);

    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = &path;
    o.n_paths = 1;
    o.batch_size = 2;
    o.shuffle = 0;
    o.prefetch = 0;
    /* the same bytes were just probed and opened: the loader's open skips the probe child (half the forks) */
    setenv("KD_HDF5_PROBE", "0", 1);
    kd_loader *L = kd_loader_new(&o, &err);
    unsetenv("KD_HDF5_PROBE");
    if (!L) {
        kdf_rejected(path, &err);
        return 0;
    }
    if (kd_loader_n_sequences(L) > 0 && !kd_loader_next(L, &err)) kdf_rejected(path, &err);
    kd_loader_free(L);
    return 0;
}
