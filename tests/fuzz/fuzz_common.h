/*
 * fuzz_common.h — shared by the fuzz targets in tests/fuzz (fuzz_*.c): each
 * target defines LLVMFuzzerTestOneInput and is linked either with libFuzzer
 * (clang, -DKD_FUZZ=ON) or with replay_main.c, which runs files through it
 * (the CTest test fuzz_replay, in every build).
 *
 * The readers take paths, so the input is written to a temporary file first.
 * Every rejection goes through kdf_rejected, which checks that the message
 * names the file: in replay mode it prints the one line and fails the run if
 * the file is not named; under libFuzzer it aborts (a finding) likewise.
 */
#ifndef KD_FUZZ_COMMON_H
#define KD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"

/* Write data[0..n) to a per-process temporary file named `name` (e.g.
 * "model.gguf") inside a per-process directory; returns its path (static). */
const char *kdf_write_temp(const char *name, const uint8_t *data, size_t n);
/* The per-process temporary directory (created on first use). */
const char *kdf_tmpdir(void);
/* A rejected input: err must name `file` (its path or its base name). */
void kdf_rejected(const char *file, const kd_err *err);
/* Split data at the first occurrence of KDF_SEP: [0, *n1) and [*off2, n). Returns 0
 * when the separator is missing (then everything is part one). */
#define KDF_SEP "\n--kd-fuzz-next-file--\n"
int kdf_split(const uint8_t *data, size_t n, size_t *n1, size_t *off2);

/* Set by replay_main: print each rejection's line to stderr. */
extern int kdf_verbose;

#endif
