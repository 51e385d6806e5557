/*
 * kd_file.h — whole-file reads, read-only maps and atomic writes.
 *
 * Atomic write: data goes to "PATH.tmp.PID", is fsync'ed, then renamed over
 * PATH and the directory is fsync'ed, so a reader (or a resumed run after a
 * kill) sees either the old file or the complete new one, never a torn file.
 */
#ifndef KD_FILE_H
#define KD_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "core/kd_err.h"

/* Read a whole file into a NUL-terminated malloc'ed buffer (free with free()). */
char *kd_read_file(const char *path, size_t *len_out, kd_err *err);

/* A read-only memory map of a whole file. */
typedef struct kd_mmap {
    const unsigned char *data;
    size_t len;
} kd_mmap;
int kd_mmap_open(kd_mmap *m, const char *path, kd_err *err);
void kd_mmap_close(kd_mmap *m);
/* Drop the resident pages wholly inside [p, p + n) of m once they have been
 * copied out (a mapped file's pages count in the RSS): the bytes stay readable,
 * read from the file again on access. Ranges outside m are ignored. */
void kd_mmap_release(const kd_mmap *m, const void *p, size_t n);

/*
 * Output paths. kd writes its files by the atomic rename above, and that rename
 * must never replace something that was not kd's: kd_out_kind says how PATH is
 * written.
 *   KD_OUT_FILE    PATH is absent or a regular file: written atomically. A symbolic
 *                  link to one is followed (real receives the target's path, so
 *                  the link stays a link and its target is replaced).
 *   KD_OUT_STREAM  PATH is a character device (/dev/null, /dev/stdout, a tty) or a
 *                  FIFO: written in place, in one pass, with no temporary and no
 *                  rename (a FIFO blocks until a reader opens it).
 * Anything else is refused with a message naming the path and what it is: a
 * directory, a block device, a socket, a dangling link. real (size n) receives
 * the path to write (PATH itself unless a link was followed); it may be NULL.
 */
enum { KD_OUT_FILE = 0, KD_OUT_STREAM = 1 };
int kd_out_kind(const char *path, char *real, size_t n, kd_err *err);
/* What PATH is, in words ("a directory", "a FIFO", ...; "absent" when missing). */
const char *kd_path_what(const char *path);

/* Atomic write of one buffer (streamed into PATH when kd_out_kind says so). */
int kd_write_file_atomic(const char *path, const void *data, size_t len, kd_err *err);

/* Streaming atomic write: open a temporary, write through f, then commit or abort. */
typedef struct kd_atomic_file {
    FILE *f;
    int stream;           /* KD_OUT_STREAM: f writes PATH itself; commit only flushes and closes */
    char path[4096];
    char tmp[4160];
} kd_atomic_file;
int kd_atomic_open(kd_atomic_file *af, const char *path, kd_err *err);
int kd_atomic_commit(kd_atomic_file *af, kd_err *err);   /* fsync + rename + dir fsync */
void kd_atomic_abort(kd_atomic_file *af);                 /* close and delete the temporary */

/* mkdir -p. */
int kd_mkdirs(const char *path, kd_err *err);
int kd_file_exists(const char *path);
/* Join a directory and a file name into out (size n). Returns -1 if it does not fit. */
int kd_path_join(char *out, size_t n, const char *dir, const char *name, kd_err *err);


/* Remove a file or a directory tree (like rm -rf); missing paths are fine. */
int kd_rmtree(const char *path, kd_err *err);
/* fsync a directory so renames inside it are durable. */
int kd_fsync_dir(const char *dir, kd_err *err);

/*
 * An exclusive advisory lock (flock) on the file PATH, created when missing:
 * returns its descriptor (≥ 0), held until kd_lock_release or the process's end
 * (a kill included). The lock file holds the owner's pid. When another process
 * holds the lock: -1 with "PATH: locked by another process (pid N): WHAT", and
 * *busy = 1 (busy may be NULL). The file is left in place after release:
 * removing a lock file lets two processes lock two different files.
 */
int kd_lock_acquire(const char *path, const char *what, int *busy, kd_err *err);
void kd_lock_release(int fd);

/* Bytes of memory this process may still use: MemAvailable of /proc/meminfo,
 * capped by the cgroup's memory.max − memory.current; -1 when unknown. */
int64_t kd_mem_available(void);
#endif
