/*
 * kd_dump_probe.c — untrusted HDF5 files are read first in a child process.
 *
 * Debian 12's libhdf5 (1.10.8) crashes or loops forever on some damaged files
 * inside its own code (H5Aexists, H5Aread of variable-length strings through
 * the global heap, object-header parsing), before kd sees any value it could
 * check. kd cannot check what it cannot read, so kd_dump_open and
 * kd_tokenizer_load_h5 first run the same reads (the metadata, the tokenizer
 * group, the first position of every dataset) in a forked child with a time
 * limit. A crash or a hang there becomes an error naming the file and the
 * object being read when it happened; a clean refusal there is returned as is;
 * only a file the child read without trouble is opened by the process itself.
 * docs/testing.md ("Fuzzing") explains the choice. KD_HDF5_PROBE=0 turns the
 * probe off; KD_HDF5_PROBE_TIMEOUT (seconds, default 30) sets the limit.
 */
#include "data/kd_dump_probe.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_probe_fd = -1;   /* the pipe to the parent, in a probe child only */

/* Sanitizer runtimes (when linked): no crash report hooks of the parent's in the child. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void send_rec(char type, const char *text) {
    if (g_probe_fd < 0) return;
    char buf[KD_ERR_MSG_MAX + 2];
    int n = snprintf(buf, sizeof buf, "%c%s", type, text);
    if (n < 0) return;
    size_t len = (size_t)(n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 2) + 1;   /* with the NUL */
    for (size_t off = 0; off < len;) {
        ssize_t w = write(g_probe_fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += (size_t)w;
    }
}

void kdd_stage(const char *fmt, ...) {
    if (g_probe_fd < 0) return;
    char s[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof s, fmt, ap);
    va_end(ap);
    send_rec('S', s);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int kdd_probe(const char *path, const char *what, int (*fn)(const char *path, kd_err *err), kd_err *err) {
    const char *env = getenv("KD_HDF5_PROBE");
    if (env && !strcmp(env, "0")) return 0;
    const char *tenv = getenv("KD_HDF5_PROBE_TIMEOUT");
    double limit = tenv && atof(tenv) > 0 ? atof(tenv) : 30.0;
    int fds[2];
    if (pipe(fds)) return kd_errf(err, "%s: cannot create a pipe to check the file: %s", path, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return kd_errf(err, "%s: cannot fork to check the file: %s", path, strerror(errno));
    }
    if (pid == 0) {   /* the child: read, report, _exit (no atexit handlers: the parent's files stay as they are) */
        close(fds[0]);
        g_probe_fd = fds[1];
        static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM, SIGTERM, SIGINT};
        for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) signal(sigs[i], SIG_DFL);
        if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(NULL);
        kd_err e = {{0}};
        int rc = fn(path, &e);
        send_rec(rc ? 'E' : 'K', rc ? e.msg : "");
        _exit(0);
    }
    close(fds[1]);
    /* the parent: collect the child's records until it closes the pipe, or the time is up */
    char stage[256] = "the file's superblock", result = 0, rec[KD_ERR_MSG_MAX + 2], msg[KD_ERR_MSG_MAX] = "";
    size_t rl = 0;
    int timed_out = 0;
    const double deadline = now_s() + limit;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {fds[0], POLLIN, 0};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        char buf[4096];
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;   /* the child is gone */
        for (ssize_t i = 0; i < n; i++) {
            if (rl < sizeof rec - 1) rec[rl++] = buf[i];
            if (buf[i] != '\0') continue;
            rec[rl < sizeof rec ? rl : sizeof rec - 1] = '\0';
            if (rec[0] == 'S') {
                strncpy(stage, rec + 1, sizeof stage - 1);
                stage[sizeof stage - 1] = '\0';
            } else if (rec[0] == 'E' || rec[0] == 'K') {
                result = rec[0];
                strncpy(msg, rec + 1, sizeof msg - 1);
                msg[sizeof msg - 1] = '\0';
            }
            rl = 0;
        }
    }
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    /* LLVM's OpenMP runtime (clang builds) registers a forked child in a /dev/shm file that only
     * the child's exit handlers remove, which _exit and a crash skip */
    char shm[80];
    snprintf(shm, sizeof shm, "/dev/shm/__KMP_REGISTERED_LIB_%d_%d", (int)pid, (int)getuid());
    unlink(shm);
    if (timed_out)
        return kd_errf(err, "%s: not a valid %s: the HDF5 library did not finish reading %s within %g s (a damaged "
                       "file; KD_HDF5_PROBE_TIMEOUT sets the limit)", path, what, stage, limit);
    if (result == 'E') return kd_errf(err, "%s", msg);
    if (result == 'K' && WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status))
        return kd_errf(err, "%s: not a valid %s: the HDF5 library crashed (signal %d, %s) while reading %s (a damaged "
                       "file)", path, what, WTERMSIG(status), strsignal(WTERMSIG(status)), stage);
    return kd_errf(err, "%s: not a valid %s: the HDF5 library failed (exit status %d) while reading %s (a damaged file)",
                   path, what, WIFEXITED(status) ? WEXITSTATUS(status) : -1, stage);
}
