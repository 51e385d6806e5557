/*
 * kd_log.h — leveled logging to stderr: the one channel through which library
 * code speaks (besides its errors, kd_err, and the progress callbacks long
 * operations take from their caller). Nothing else in the library prints.
 *
 * The level is process-wide (set once by the program from -v/-q or KD_LOG),
 * the only piece of global state in core.
 */
#ifndef KD_LOG_H
#define KD_LOG_H

#include <stdarg.h>

typedef enum kd_log_level {
    KD_LOG_ERROR = 0,
    KD_LOG_WARN = 1,
    KD_LOG_INFO = 2,
    KD_LOG_DEBUG = 3,
} kd_log_level;

void kd_log_set_level(kd_log_level level);
kd_log_level kd_log_get_level(void);
void kd_log(kd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A programming error: "kd: fatal: ..." whatever the level, then abort(). */
_Noreturn void kd_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void kd_vfatal(const char *fmt, va_list ap);

#define kd_warn(...)  kd_log(KD_LOG_WARN, __VA_ARGS__)
#define kd_info(...)  kd_log(KD_LOG_INFO, __VA_ARGS__)
#define kd_debug(...) kd_log(KD_LOG_DEBUG, __VA_ARGS__)

#endif
