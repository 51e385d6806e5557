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

/* Atomic write of one buffer. */
int kd_write_file_atomic(const char *path, const void *data, size_t len, kd_err *err);

/* Streaming atomic write: open a temporary, write through f, then commit or abort. */
typedef struct kd_atomic_file {
    FILE *f;
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
#endif
