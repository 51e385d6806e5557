/*
 * kd_log.h — leveled logging to stderr.
 *
 * The level is process-wide (set once by the program from -v/-q or KD_LOG),
 * the only piece of global state in core.
 */
#ifndef KD_LOG_H
#define KD_LOG_H

typedef enum kd_log_level {
    KD_LOG_ERROR = 0,
    KD_LOG_WARN = 1,
    KD_LOG_INFO = 2,
    KD_LOG_DEBUG = 3,
} kd_log_level;

void kd_log_set_level(kd_log_level level);
kd_log_level kd_log_get_level(void);
void kd_log(kd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define kd_warn(...)  kd_log(KD_LOG_WARN, __VA_ARGS__)
#define kd_info(...)  kd_log(KD_LOG_INFO, __VA_ARGS__)
#define kd_debug(...) kd_log(KD_LOG_DEBUG, __VA_ARGS__)

#endif
