/*
 * kd_err.c — formatting of kd_err messages (see kd_err.h).
 */
#include "core/kd_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int kd_errf(kd_err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int kd_err_prefix(kd_err *err, const char *fmt, ...) {
    if (!err) return -1;
    char old[KD_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t used = w < 0 ? 0 : (size_t)w;
    if (used + 2 < sizeof err->msg) {   /* append ": old", cut at the buffer's end */
        memcpy(err->msg + used, ": ", 2);
        used += 2;
        size_t room = sizeof err->msg - used - 1, len = strlen(old);
        if (len > room) len = room;
        memcpy(err->msg + used, old, len);
        err->msg[used + len] = '\0';
    }
    return -1;
}

void kd_err_clear(kd_err *err) {
    if (err) err->msg[0] = '\0';
}
