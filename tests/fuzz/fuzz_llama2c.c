/*
 * fuzz_llama2c.c — fuzz target: a llama2.c checkpoint (.bin, student/kd_llama2c.c).
 */
#include "student/kd_llama2c.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = kdf_write_temp("model.bin", data, size);
    kd_err err = {{0}};
    kd_model m;
    if (kd_llama2c_load_flags(&m, path, KD_MODEL_NO_GRAD, &err)) {
        kdf_rejected(path, &err);
        return 0;
    }
    kd_model_free(&m);
    return 0;
}
