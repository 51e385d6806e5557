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
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

char *kd_read_file(const char *path, size_t *len_out, kd_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        kd_errf(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        kd_errf(err, "%s: is a directory, expected a file", path);
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
        return kd_errf(err, "%s: is %s, expected a regular file", path, kd_path_what(path));
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

const char *kd_path_what(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return "absent";
    if (S_ISLNK(st.st_mode) && stat(path, &st) != 0) return "a dangling symbolic link";
    if (S_ISREG(st.st_mode)) return "a regular file";
    if (S_ISDIR(st.st_mode)) return "a directory";
    if (S_ISCHR(st.st_mode)) return "a character device";
    if (S_ISBLK(st.st_mode)) return "a block device";
    if (S_ISFIFO(st.st_mode)) return "a FIFO";
    if (S_ISSOCK(st.st_mode)) return "a socket";
    return "a special file";
}

int kd_out_kind(const char *path, char *real, size_t n, kd_err *err) {
    if (strlen(path) >= 4096 || (real && strlen(path) >= n)) return kd_errf(err, "%s: path too long", path);
    if (real) snprintf(real, n, "%s", path);
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return KD_OUT_FILE;
        return kd_errf(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISLNK(st.st_mode)) {
        if (stat(path, &st) != 0)
            return kd_errf(err, "%s: a symbolic link to a missing file (%s): give the target's own path, or remove "
                           "the link", path, strerror(errno));
        if (S_ISREG(st.st_mode) && real) {   /* replace the target, keep the link */
            char *rp = realpath(path, NULL);
            int fits = rp && strlen(rp) < n && strlen(rp) < 4096;
            if (fits) snprintf(real, n, "%s", rp);
            free(rp);
            if (!fits) return kd_errf(err, "%s: cannot resolve the symbolic link: %s", path, rp ? "path too long" : strerror(errno));
        }
    }
    if (S_ISREG(st.st_mode)) return KD_OUT_FILE;
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return KD_OUT_STREAM;
    return kd_errf(err, "%s: is %s, expected a file path (a regular file is replaced atomically; a character device "
                   "or a FIFO is written as a stream)", path, kd_path_what(path));
}

int kd_atomic_open(kd_atomic_file *af, const char *path, kd_err *err) {
    memset(af, 0, sizeof *af);
    int kind = kd_out_kind(path, af->path, sizeof af->path, err);
    if (kind < 0) return -1;
    if (kind == KD_OUT_STREAM) {   /* a device or a FIFO: never replaced, written in place */
        af->stream = 1;
        af->f = fopen(af->path, "wb");
        if (!af->f) return kd_errf(err, "%s: cannot open %s for writing: %s", path, kd_path_what(path), strerror(errno));
        return 0;
    }
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", af->path, (long)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) return kd_errf(err, "%s: cannot create: %s", af->tmp, strerror(errno));
    return 0;
}

int kd_atomic_commit(kd_atomic_file *af, kd_err *err) {
    if (!af->f) return kd_errf(err, "%s: atomic file not open", af->path);
    if (af->stream) {
        int bad = fflush(af->f) != 0 || ferror(af->f);
        int saved = errno;
        if (fclose(af->f) != 0 && !bad) {
            bad = 1;
            saved = errno;
        }
        af->f = NULL;
        return bad ? kd_errf(err, "%s: write failed: %s", af->path, strerror(saved)) : 0;
    }
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
        if (!af->stream) unlink(af->tmp);
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

int kd_lock_acquire(const char *path, const char *what, int *busy, kd_err *err) {
    if (busy) *busy = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return kd_errf(err, "%s: cannot create the lock file: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t got = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        pid[got > 0 ? got : 0] = '\0';
        for (char *p = pid; *p; p++)
            if (*p < '0' || *p > '9') *p = '\0';
        if (e != EWOULDBLOCK) return kd_errf(err, "%s: cannot lock: %s", path, strerror(e));
        if (busy) *busy = 1;
        return kd_errf(err, "%s: locked by another process%s%s%s: %s", path, pid[0] ? " (pid " : "", pid,
                       pid[0] ? ")" : "", what);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message of a second process loses it */
    }
    return fd;
}

void kd_lock_release(int fd) {
    if (fd >= 0) close(fd);   /* closing the descriptor drops the flock */
}

static int64_t read_i64_file(const char *path) {
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok || buf[0] < '0' || buf[0] > '9') return -1;   /* "max", empty */
    return (int64_t)strtoll(buf, NULL, 10);
}

int64_t kd_mem_available(void) {
    int64_t avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = (int64_t)kb * 1024;
        fclose(f);
    }
    /* a cgroup limit (v2, then v1): what the limit leaves */
    int64_t lim = read_i64_file("/sys/fs/cgroup/memory.max"), cur = read_i64_file("/sys/fs/cgroup/memory.current");
    if (lim < 0) {
        lim = read_i64_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        cur = read_i64_file("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    }
    if (lim > 0 && lim < ((int64_t)1 << 60) && cur >= 0) {
        int64_t left = lim > cur ? lim - cur : 0;
        if (avail < 0 || left < avail) avail = left;
    }
    return avail;
}
