/*
 * kd_file.c — whole-file reads, read-only maps and atomic writes (see kd_file.h).
 */
#define _GNU_SOURCE   /* nftw */
#include "core/kd_file.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

char *kd_read_file(const char *path, size_t *len_out, kd_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        kd_errf(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                kd_errf(err, "%s: out of memory reading file", path);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        kd_errf(err, "%s: read error", path);
        return NULL;
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

int kd_mmap_open(kd_mmap *m, const char *path, kd_err *err) {
    m->data = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return kd_errf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return kd_errf(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kd_errf(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {      /* mmap of length 0 fails; an empty map is valid */
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return kd_errf(err, "%s: cannot mmap: %s", path, strerror(errno));
    m->data = p;
    m->len = (size_t)st.st_size;
    return 0;
}

void kd_mmap_release(const kd_mmap *m, const void *p, size_t n) {
    uintptr_t lo0 = (uintptr_t)m->data, hi0 = lo0 + m->len, a = (uintptr_t)p, b = a + n;
    if (!m->data || !n || a < lo0 || b > hi0 || b < a) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (a + page - 1) & ~(page - 1), hi = b & ~(page - 1);   /* whole pages only */
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void kd_mmap_close(kd_mmap *m) {
    if (m->data) munmap((void *)m->data, m->len);
    m->data = NULL;
    m->len = 0;
}

static int fsync_dir_of(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int kd_atomic_open(kd_atomic_file *af, const char *path, kd_err *err) {
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path) return kd_errf(err, "%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) return kd_errf(err, "%s: cannot create: %s", af->tmp, strerror(errno));
    return 0;
}

int kd_atomic_commit(kd_atomic_file *af, kd_err *err) {
    if (!af->f) return kd_errf(err, "%s: atomic file not open", af->path);
    int bad = fflush(af->f) != 0 || ferror(af->f);
    if (!bad) bad = fsync(fileno(af->f)) != 0;
    int saved = errno;
    if (fclose(af->f) != 0) bad = 1;
    af->f = NULL;
    if (bad) {
        unlink(af->tmp);
        return kd_errf(err, "%s: write failed: %s", af->path, strerror(saved));
    }
    if (rename(af->tmp, af->path) != 0) {
        saved = errno;
        unlink(af->tmp);
        return kd_errf(err, "%s: cannot rename into place: %s", af->path, strerror(saved));
    }
    fsync_dir_of(af->path);
    return 0;
}

void kd_atomic_abort(kd_atomic_file *af) {
    if (af->f) {
        fclose(af->f);
        af->f = NULL;
        unlink(af->tmp);
    }
}

int kd_write_file_atomic(const char *path, const void *data, size_t len, kd_err *err) {
    kd_atomic_file af;
    if (kd_atomic_open(&af, path, err)) return -1;
    if (len && fwrite(data, 1, len, af.f) != len) {
        kd_atomic_abort(&af);
        return kd_errf(err, "%s: write failed: %s", path, strerror(errno));
    }
    return kd_atomic_commit(&af, err);
}

int kd_mkdirs(const char *path, kd_err *err) {
    char tmp[4096];
    if (strlen(path) >= sizeof tmp) return kd_errf(err, "%s: path too long", path);
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return kd_errf(err, "%s: cannot create directory: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return kd_errf(err, "%s: cannot create directory: %s", tmp, strerror(errno));
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode))
        return kd_errf(err, "%s: exists and is not a directory", tmp);
    return 0;
}

int kd_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int kd_path_join(char *out, size_t n, const char *dir, const char *name, kd_err *err) {
    int w = snprintf(out, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n) return kd_errf(err, "%s/%s: path too long", dir, name);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

int kd_rmtree(const char *path, kd_err *err) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : kd_errf(err, "%s: %s", path, strerror(errno));
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return kd_errf(err, "%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

int kd_fsync_dir(const char *dir, kd_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return kd_errf(err, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc ? kd_errf(err, "%s: fsync failed: %s", dir, strerror(errno)) : 0;
}
