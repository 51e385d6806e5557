/*
 * kd_cpu.c — CPU feature detection and OpenBLAS kernel selection (see kd_cpu.h).
 */
#include "core/kd_cpu.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/kd_log.h"

extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);

void kd_cpu_detect(kd_cpu_info *cpu) {
    memset(cpu, 0, sizeof *cpu);
    __builtin_cpu_init();
    cpu->sse3 = __builtin_cpu_supports("sse3");
    cpu->avx = __builtin_cpu_supports("avx");
    cpu->avx2 = __builtin_cpu_supports("avx2");
    cpu->fma = __builtin_cpu_supports("fma");
    cpu->avx512f = __builtin_cpu_supports("avx512f");
    cpu->avx512bw = __builtin_cpu_supports("avx512bw");
    cpu->avx512vl = __builtin_cpu_supports("avx512vl");
    cpu->avx512dq = __builtin_cpu_supports("avx512dq");
    cpu->avx512_vnni = __builtin_cpu_supports("avx512vnni");
    cpu->avx512_bf16 = __builtin_cpu_supports("avx512bf16");
    /* F16C has no __builtin_cpu_supports name in GCC 12: read CPUID.1:ECX[29]. */
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    cpu->f16c = (c >> 29) & 1;
}

static int g_generic = -1;   /* −1: not read from the environment yet */

int kd_cpu_generic(void) {
    int g = __atomic_load_n(&g_generic, __ATOMIC_RELAXED);
    if (g < 0) {
        const char *e = getenv("KD_ISA");
        g = e && !strcmp(e, "scalar");
        __atomic_store_n(&g_generic, g, __ATOMIC_RELAXED);
    }
    return g;
}

void kd_cpu_set_generic(int on) { __atomic_store_n(&g_generic, on != 0, __ATOMIC_RELAXED); }

void kd_cpu_describe(const kd_cpu_info *cpu, char *out, size_t n) {
    out[0] = '\0';
    struct { int on; const char *name; } f[] = {
        {cpu->avx, "avx"}, {cpu->avx2, "avx2"}, {cpu->fma, "fma"}, {cpu->f16c, "f16c"},
        {cpu->avx512f, "avx512f"}, {cpu->avx512bw, "avx512bw"}, {cpu->avx512vl, "avx512vl"},
        {cpu->avx512dq, "avx512dq"}, {cpu->avx512_vnni, "avx512vnni"}, {cpu->avx512_bf16, "avx512bf16"},
    };
    size_t used = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!f[i].on) continue;
        int w = snprintf(out + used, n - used, "%s%s", used ? " " : "", f[i].name);
        if (w < 0 || (size_t)w >= n - used) break;
        used += (size_t)w;
    }
    if (!used) snprintf(out, n, "(no AVX)");
}

const char *kd_blas_corename(void) {
    const char *s = openblas_get_corename();
    return s ? s : "unknown";
}

int kd_blas_core_tier(const char *core) {
    static const char *tier3[] = {"skylakex", "cooperlake", "sapphirerapids"};
    static const char *tier2[] = {"haswell", "zen", "skylake"};
    static const char *tier1[] = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom",
                                  "sandybridge", "barcelona", "bobcat", "bulldozer", "piledriver",
                                  "steamroller", "excavator", "katmai", "coppermine", "northwood",
                                  "banias", "opteron", "opteron_sse3", "athlon", "generic"};
    if (!core) return 0;
    for (size_t i = 0; i < sizeof tier3 / sizeof *tier3; i++) if (!strcasecmp(core, tier3[i])) return 3;
    for (size_t i = 0; i < sizeof tier2 / sizeof *tier2; i++) if (!strcasecmp(core, tier2[i])) return 2;
    for (size_t i = 0; i < sizeof tier1 / sizeof *tier1; i++) if (!strcasecmp(core, tier1[i])) return 1;
    return 0;
}

const char *kd_blas_choose_core(const kd_cpu_info *cpu, const char *current) {
    const char *want = NULL;
    int want_tier = 0;
    if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq) {
        want = "SkylakeX";
        want_tier = 3;
    } else if (cpu->avx2 && cpu->fma) {
        want = "Haswell";
        want_tier = 2;
    }
    if (!want) return NULL;
    int cur = kd_blas_core_tier(current);
    if (cur == 0) return NULL;          /* an unknown (newer?) core: leave it alone */
    return cur < want_tier ? want : NULL;
}

void kd_blas_select(int argc, char **argv) {
    (void)argc;
    const char *autosel = getenv("KD_BLAS_AUTO");
    if (autosel && !strcmp(autosel, "0")) return;
    if (getenv("KD_BLAS_REEXEC")) return;          /* we already chose once */
    int force = autosel && !strcmp(autosel, "force");   /* tests: override the variable below */
    if (getenv("OPENBLAS_CORETYPE") && !force) return;  /* the user's explicit choice wins */
    kd_cpu_info cpu;
    kd_cpu_detect(&cpu);
    const char *cur = kd_blas_corename();
    const char *want = kd_blas_choose_core(&cpu, cur);
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("KD_BLAS_REEXEC", cur, 1);              /* remember what OpenBLAS picked itself */
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernels, but say so. */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("KD_BLAS_REEXEC");
    kd_warn("OpenBLAS uses generic '%s' kernels on a CPU that supports '%s'; re-exec failed, "
            "set OPENBLAS_CORETYPE=%s for full speed", cur, want, want);
}

void kd_blas_describe(char *out, size_t n) {
    const char *cur = kd_blas_corename();
    const char *prev = getenv("KD_BLAS_REEXEC");
    const char *user = getenv("OPENBLAS_CORETYPE");
    const char *how;
    char buf[160];
    if (prev) {
        snprintf(buf, sizeof buf, "selected by kd; OpenBLAS had picked generic '%s'", prev);
        how = buf;
    } else if (user) {
        how = "set by OPENBLAS_CORETYPE";
    } else {
        how = "OpenBLAS's own choice";
    }
    /* openblas_get_config() starts with "OpenBLAS <version> ..." */
    const char *cfg = openblas_get_config();
    char ver[32] = "?";
    if (cfg && !strncmp(cfg, "OpenBLAS ", 9)) sscanf(cfg + 9, "%31s", ver);
    snprintf(out, n, "OpenBLAS %s, kernels '%s' (%s)", ver, cur, how);
}

int kd_num_threads(void) { return omp_get_max_threads(); }
