/*
 * fuzz_checkpoint.c — fuzz target: a checkpoint directory (config.json +
 * model.safetensors, student/kd_checkpoint.c). The input is config.json, the
 * separator KDF_SEP, then model.safetensors (no separator: config.json only).
 */
#include <stdio.h>
#include <string.h>

#include "student/kd_checkpoint.h"
#include "student/kd_config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t n1, off2;
    int two = kdf_split(data, size, &n1, &off2);
    char cfg[1024], st[1024], dir[1024];
    snprintf(dir, sizeof dir, "%s", kdf_tmpdir());
    snprintf(cfg, sizeof cfg, "%s", kdf_write_temp("config.json", data, n1));
    snprintf(st, sizeof st, "%s", kdf_write_temp("model.safetensors", data + off2, two ? size - off2 : 0));
    kd_err err = {{0}};
    kd_config c;
    if (kd_config_load(&c, cfg, &err)) {
        kdf_rejected(cfg, &err);
        return 0;
    }
    kd_model m;
    if (kd_checkpoint_load_flags(&m, dir, KD_MODEL_NO_GRAD, &err)) {
        /* the message names config.json or model.safetensors: either is the file at fault */
        kdf_rejected(strstr(err.msg, "config.json") ? cfg : st, &err);
        return 0;
    }
    kd_model_free(&m);
    return 0;
}
