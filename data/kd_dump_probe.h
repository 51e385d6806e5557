/*
 * kd_dump_probe.h — reading an untrusted HDF5 file first in a child process
 * with a time limit (see kd_dump_probe.c). Internal to data/.
 */
#ifndef KD_DUMP_PROBE_H
#define KD_DUMP_PROBE_H

#include "core/kd_err.h"

/* Run fn(path) in a forked child. 0 when it succeeded; its error message when it
 * refused the file; an error naming path, `what` ("kd teacher dump") and the
 * last stage the child reported when it crashed, failed or ran past the limit.
 * Call with the HDF5 lock held (kdd_enter): fn runs the *_locked functions. */
int kdd_probe(const char *path, const char *what, int (*fn)(const char *path, kd_err *err), kd_err *err);
/* In a probe child: the object being read now ("attribute 'teacher'"); a no-op elsewhere. */
void kdd_stage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
