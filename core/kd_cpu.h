/*
 * kd_cpu.h — CPU features and the choice of OpenBLAS kernels.
 *
 * Debian's OpenBLAS is a DYNAMIC_ARCH build that picks its kernels once, when
 * the library loads. On some CPUs (seen: Sapphire Rapids under a hypervisor)
 * it falls back to generic "Prescott" kernels, about 6x slower than the
 * AVX-512 "SkylakeX" ones the CPU can run. The core type can only be changed
 * through OPENBLAS_CORETYPE before the library initialises, so
 * kd_blas_select(), called first thing in main(), re-executes the program once
 * with that variable set when the loaded core is weaker than the CPU allows.
 * A user's own OPENBLAS_CORETYPE always wins; KD_BLAS_AUTO=0 disables this
 * (KD_BLAS_AUTO=force re-selects even over OPENBLAS_CORETYPE: used by tests to
 * exercise the re-exec on machines where OpenBLAS already chose well).
 */
#ifndef KD_CPU_H
#define KD_CPU_H

#include <stddef.h>

typedef struct kd_cpu_info {
    int sse3, avx, avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512_bf16, avx512_vnni;
} kd_cpu_info;

void kd_cpu_detect(kd_cpu_info *cpu);
/* Feature list as text, e.g. "avx2 fma avx512f ...". */
void kd_cpu_describe(const kd_cpu_info *cpu, char *out, size_t n);

/* The OpenBLAS core in use (openblas_get_corename()), e.g. "SkylakeX". */
const char *kd_blas_corename(void);

/* Rank of an OpenBLAS core name: 3 AVX-512, 2 AVX2, 1 older/generic, 0 unknown. */
int kd_blas_core_tier(const char *core);

/* The core kd should force for this CPU, or NULL when `current` is already as
 * good as the CPU allows (pure function, unit-tested). */
const char *kd_blas_choose_core(const kd_cpu_info *cpu, const char *current);

/* Call first in main(): may re-execute the program (never returns then). */
void kd_blas_select(int argc, char **argv);

/* One line describing the BLAS choice, for `kd --version` and logs. */
void kd_blas_describe(char *out, size_t n);

/* 1 when the data layer's CPU-specific paths (the loader's vector check, the packed decoder's BMI
 * clone) must take their plain x86-64 versions: KD_ISA=scalar in the environment, or
 * kd_cpu_set_generic(1) (tests compare the paths; both give the same results). */
int kd_cpu_generic(void);
void kd_cpu_set_generic(int on);

/* Threads OpenMP (and the OpenMP OpenBLAS) will use. */
int kd_num_threads(void);

#endif
