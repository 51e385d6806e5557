/*
 * kd_log.c — leveled logging to stderr (see kd_log.h).
 * The initial level comes from the environment variable KD_LOG
 * (error|warn|info|debug), default warn.
 */
#include "core/kd_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_level = -1;

static kd_log_level level_from_env(void) {
    const char *s = getenv("KD_LOG");
    if (!s) return KD_LOG_WARN;
    if (!strcmp(s, "error")) return KD_LOG_ERROR;
    if (!strcmp(s, "info")) return KD_LOG_INFO;
    if (!strcmp(s, "debug")) return KD_LOG_DEBUG;
    return KD_LOG_WARN;
}

void kd_log_set_level(kd_log_level level) { g_level = (int)level; }

kd_log_level kd_log_get_level(void) {
    if (g_level < 0) g_level = (int)level_from_env();
    return (kd_log_level)g_level;
}

void kd_log(kd_log_level level, const char *fmt, ...) {
    if (level > kd_log_get_level()) return;
    static const char *names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "kd: %s: ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

_Noreturn void kd_vfatal(const char *fmt, va_list ap) {
    fprintf(stderr, "kd: fatal: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    abort();
}

_Noreturn void kd_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kd_vfatal(fmt, ap);
}
