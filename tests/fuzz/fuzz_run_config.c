/*
 * fuzz_run_config.c — fuzz target: a run.json of `kd train` (train/kd_run_config.c).
 * The input is run.json, optionally followed by KDF_SEP and one `--set` assignment.
 */
#include <stdlib.h>
#include <string.h>

#include "train/kd_run_config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t n1, off2;
    int two = kdf_split(data, size, &n1, &off2);
    const char *path = kdf_write_temp("run.json", data, n1);
    char *set = NULL;
    if (two) {
        set = malloc(size - off2 + 1);
        if (!set) abort();
        memcpy(set, data + off2, size - off2);
        set[size - off2] = '\0';
    }
    kd_err err = {{0}};
    kd_run_config c;
    cJSON *resolved = NULL;
    if (kd_run_config_load(&c, path, set ? &set : NULL, set ? 1 : 0, &resolved, &err)) {
        /* a bad --set names the assignment, not the file */
        if (!(set && strstr(err.msg, "--set"))) kdf_rejected(path, &err);
    } else {
        cJSON_Delete(resolved);
    }
    free(set);
    return 0;
}
