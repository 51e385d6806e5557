/*
 * fuzz_common.c — temporary files and the rejection check of the fuzz
 * targets (see fuzz_common.h).
 */
#include "fuzz_common.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int kdf_verbose;
static char g_dir[512];

static void cleanup(void) {
    if (!g_dir[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) { /* best effort */ }
}

const char *kdf_tmpdir(void) {
    if (g_dir[0]) return g_dir;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/kd-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("kd fuzz: mkdtemp");
        abort();
    }
    atexit(cleanup);
    return g_dir;
}

const char *kdf_write_temp(const char *name, const uint8_t *data, size_t n) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", kdf_tmpdir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, data + off, n - off);
        if (w <= 0) {
            perror(path);
            abort();
        }
        off += (size_t)w;
    }
    close(fd);
    return path;
}

void kdf_rejected(const char *file, const kd_err *err) {
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int named = strstr(err->msg, file) || strstr(err->msg, base);
    if (kdf_verbose || !named) fprintf(stderr, "  rejected: %s\n", err->msg);
    if (!err->msg[0]) {
        fprintf(stderr, "kd fuzz: a rejection without a message (file %s)\n", file);
        abort();
    }
    if (!named) {
        fprintf(stderr, "kd fuzz: the message does not name the file %s\n", file);
        abort();
    }
}

int kdf_split(const uint8_t *data, size_t n, size_t *n1, size_t *off2) {
    const size_t sl = sizeof KDF_SEP - 1;
    for (size_t i = 0; i + sl <= n; i++)
        if (!memcmp(data + i, KDF_SEP, sl)) {
            *n1 = i;
            *off2 = i + sl;
            return 1;
        }
    *n1 = n;
    *off2 = n;
    return 0;
}

#include "core/kd_log.h"

/* Once per process (libFuzzer calls it; replay_main too): one thread, quiet logs,
 * a short limit for the HDF5 probe child (data/kd_dump.c) so that a hang inside
 * libhdf5 is reported well before libFuzzer's own -timeout. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    setenv("OMP_NUM_THREADS", "1", 0);
    setenv("KD_HDF5_PROBE_TIMEOUT", "5", 0);
    kd_log_set_level(getenv("KD_FUZZ_VERBOSE") ? KD_LOG_WARN : KD_LOG_ERROR);
    return 0;
}
