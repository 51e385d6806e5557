/*
 * kd_err.h — the one error type of kd.
 *
 * Every fallible function takes a `kd_err *err` as its last argument and
 * returns 0 on success or -1 on failure, having written a message into err.
 * Messages name what failed: the file, the field, what was found and what was
 * expected ("model.safetensors: tensor 'x': dtype 'I64', expected F32/F16/BF16").
 * err may be NULL when the caller does not care about the message.
 */
#ifndef KD_ERR_H
#define KD_ERR_H

#include <stddef.h>

#define KD_ERR_MSG_MAX 1024

typedef struct kd_err {
    char msg[KD_ERR_MSG_MAX];
} kd_err;

/* Format a message into err (if non-NULL). Always returns -1. */
int kd_errf(kd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the existing message with a context string: "ctx: old message". Returns -1. */
int kd_err_prefix(kd_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clear the message (sets it to the empty string). */
void kd_err_clear(kd_err *err);

#endif
