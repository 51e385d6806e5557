/*
 * test_faults.c — kd under faults, through the command line (docs/testing.md,
 * "Faults"): nothing corrupt is accepted, nothing that was not kd's is
 * replaced, every failure names the file, the field and what was expected.
 *   - kill -9 at random moments of `kd teacher dump` and of `kd train`: the
 *     same command (dump) or --resume (train) gives the dump / the final
 *     weights of an uninterrupted run, bit for bit;
 *   - a write failure during a dump (a file-size limit: ulimit -f, so every
 *     write past it fails as on a full disk; and, where a private mount
 *     namespace is allowed, a real ENOSPC on a 1 MB tmpfs): a clear error naming
 *     the file, no crash at exit, and the rerun completes the dump identically;
 *   - a .partial whose data no longer matches its checksums (or, without
 *     checksums, holds invalid values): the resume rolls back to the last
 *     verified sequence, says so, and the result is identical;
 *   - concurrent runs: a second `kd train` on a run directory, a second
 *     `kd teacher dump` on a dump being written: refused by their locks;
 *   - outputs that are not regular files: a FIFO and /dev/null are streamed
 *     into (never replaced), a dump refuses them, a symbolic link stays a link;
 *   - corrupt trainer_state.json fields, corrupt dump values (log-prob > 0,
 *     NaN), a run killed before its first checkpoint, a batch that cannot fit
 *     in memory, an invalid tokenizer on import, hostile llama2.c headers, a
 *     missing model directory, a directory given as a file.
 * The trial counts are printed as "fault table:" lines (docs/testing.md).
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_time.h"
#include "data/kd_dump.h"

static char g_dir[512];

static const char *kd(void) { return kd_test_env("KD_BIN"); }

/* Run `sh -c CMD` in the fixture directory, one OpenMP thread, stderr to err.txt; returns the status. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[6000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return kd_test_sh("cd '%s' && export OMP_NUM_THREADS=1 KD=%s && (%s) 2> err.txt", g_dir, kd(), cmd);
}

/* err.txt contains every needle (NULL-terminated list); prints it otherwise. */
static void expect_err(const char *first, ...) {
    char p[700];
    snprintf(p, sizeof p, "%s/err.txt", g_dir);
    char *t = kd_read_file(p, NULL, NULL);
    assert_non_null(t);
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        if (!strstr(t, s)) {
            fprintf(stderr, "expected \"%s\" in:\n%s\n", s, t);
            free(t);
            va_end(ap);
            fail();
        }
    va_end(ap);
    free(t);
}

static void setup_once(void) {
    if (g_dir[0]) return;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    assert_int_equal(kd_test_train_fixture(g_dir), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/text.txt", g_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int i = 0; i < 120; i++)
        fprintf(f, "Once upon a time there was a little girl named Lily %d. She liked to play outside in the park with "
                   "her friends.\n", i);
    fclose(f);
}

/* Two dumps hold the same sequences: every dataset compared through kd's reader. */
static int dumps_equal(const char *a, const char *b) {
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/%s", g_dir, a);
    snprintf(pb, sizeof pb, "%s/%s", g_dir, b);
    kd_err err;
    kd_dump *da = kd_dump_open(pa, &err), *db = da ? kd_dump_open(pb, &err) : NULL;
    if (!da || !db) {
        fprintf(stderr, "%s\n", err.msg);
        kd_dump_close(da);
        return 0;
    }
    const kd_dump_meta *ma = kd_dump_get_meta(da), *mb = kd_dump_get_meta(db);
    int same = ma->n_seq == mb->n_seq && ma->k == mb->k && ma->seq_len == mb->seq_len && ma->vocab_size == mb->vocab_size;
    int64_t T = ma->seq_len, k = ma->k;
    size_t nt = (size_t)(T + 1), nk = (size_t)(T * k);
    int32_t *t1 = malloc(nt * 4), *t2 = malloc(nt * 4), *i1 = malloc(nk * 4), *i2 = malloc(nk * 4);
    uint8_t *m1 = malloc((size_t)T), *m2 = malloc((size_t)T);
    float *v1 = malloc(nk * 4), *v2 = malloc(nk * 4);
    for (int64_t s = 0; same && s < ma->n_seq; s++) {
        kd_dump_rows r1 = {t1, m1, i1, v1, NULL, 0}, r2 = {t2, m2, i2, v2, NULL, 0};
        same = !kd_dump_read(da, s, 1, &r1, &err) && !kd_dump_read(db, s, 1, &r2, &err) &&
               !memcmp(t1, t2, nt * 4) && !memcmp(m1, m2, (size_t)T) && !memcmp(i1, i2, nk * 4) &&
               !memcmp(v1, v2, nk * 4);
        if (!same) fprintf(stderr, "%s and %s differ at sequence %lld\n", a, b, (long long)s);
    }
    free(t1), free(t2), free(i1), free(i2), free(m1), free(m2), free(v1), free(v2);
    kd_dump_close(da);
    kd_dump_close(db);
    return same;
}

#define DUMP "$KD teacher dump --teacher teacher --text text.txt --seq-len 16 --topk 8 --batch 8 --quiet --out"

static double g_dump_s;   /* wall time of one uninterrupted dump */

static void make_reference_dump(void) {
    static int done;
    if (done++) return;
    double t0 = kd_now_s();
    assert_int_equal(run(DUMP " ref.h5"), 0);
    g_dump_s = kd_now_s() - t0;
}

/* ---- dumps ----------------------------------------------------------------------------- */

static void test_dump_kill(void **state) {
    (void)state;
    setup_once();
    make_reference_dump();
    kd_rng r;
    kd_rng_seed(&r, 21);
    /* moments spread over one dump's duration (as long as the reference took, in this build) */
    int trials = 24, ok = 0;
    for (int i = 0; i < trials; i++) {
        double at = 0.01 + 1.1 * g_dump_s * kd_rng_uniform(&r);
        run("rm -f k.h5 k.h5.partial; timeout -s KILL %.3f " DUMP " k.h5; true", at);
        int rc = run(DUMP " k.h5");
        if (rc == 0 && dumps_equal("ref.h5", "k.h5")) ok++;
        else {
            fprintf(stderr, "dump killed at %.3f s: resume status %d\n", at, rc);
            char p[700];
            snprintf(p, sizeof p, "%s/err.txt", g_dir);
            char *t = kd_read_file(p, NULL, NULL);
            fprintf(stderr, "%s\n", t ? t : "");
            free(t);
        }
    }
    printf("fault table: kd teacher dump killed (-9) at random moments: %d/%d resumed identical\n", ok, trials);
    assert_int_equal(ok, trials);
}

/* A file cut short in the middle of an HDF5 write (bytes past the end of the allocation its
 * superblock records, as chunks written before a flush leave them): the resume copies its
 * verified sequences into a new file, bit for bit, and carries on. Plain and packed layout. */
static void test_dump_salvage(void **state) {
    (void)state;
    setup_once();
    make_reference_dump();
    assert_int_equal(run("cp ref.h5 s.h5.partial && rm -f s.h5 && head -c 3000 /dev/zero >> s.h5.partial"), 0);
    assert_int_equal(run(DUMP " s.h5"), 0);
    expect_err("s.h5.partial: cut short in the middle of an HDF5 write", "verified sequences (all it holds) were copied "
               "into a new file", NULL);
    assert_true(dumps_equal("ref.h5", "s.h5"));
    /* packed: its byte stream is cut where the last kept sequence ends; one append lost */
    assert_int_equal(run(DUMP " p.h5 --compress && h5dump -H p.h5 >/dev/null"), 0);
    assert_int_equal(run("cp p.h5 s.h5.partial && rm -f s.h5 && head -c 3000 /dev/zero >> s.h5.partial"), 0);
    assert_int_equal(run(DUMP " s.h5 --compress"), 0);
    assert_true(dumps_equal("p.h5", "s.h5"));
    assert_int_equal(run("h5dump p.h5 | tail -n +2 > a.txt && h5dump s.h5 | tail -n +2 > b.txt && cmp a.txt b.txt"),
                     0);
}

static void test_dump_write_failure(void **state) {
    (void)state;
    setup_once();
    make_reference_dump();
    /* ulimit -f (1 KiB blocks): every write past the limit fails (EFBIG) as on a full disk */
    const int limits[] = {100, 180, 260, 350};
    int ok = 0, n = (int)(sizeof limits / sizeof *limits);
    for (int i = 0; i < n; i++) {
        int rc = run("rm -f w.h5 w.h5.partial; trap '' XFSZ; ulimit -f %d; exec " DUMP " w.h5", limits[i]);
        assert_int_equal(rc, 1);   /* an error, not a crash (139) or a hang */
        expect_err("w.h5.partial: dataset '", "cannot write sequences [", "File too large", "the same command resumes",
                   NULL);
        if (run(DUMP " w.h5") == 0 && dumps_equal("ref.h5", "w.h5")) ok++;
    }
    printf("fault table: kd teacher dump, write failure (file-size limit): %d/%d resumed identical\n", ok, n);
    assert_int_equal(ok, n);
    /* a real full disk: a 1 MB tmpfs in a private mount namespace (root only) */
    if (run("unshare -m true") != 0)   /* the write-failure part above has run */
        KD_TEST_MISSING("ENOSPC on a tmpfs: no private mount namespace here (unshare -m needs root)");
    int rc = run("mkdir -p full && unshare -m sh -c 'mount -t tmpfs -o size=256k tmpfs full && " DUMP
                 " full/d.h5; echo $? > full.rc; cp full/d.h5.partial full.partial'");
    (void)rc;
    char p[700];
    snprintf(p, sizeof p, "%s/full.rc", g_dir);
    char *t = kd_read_file(p, NULL, NULL);
    assert_non_null(t);
    assert_int_equal(atoi(t), 1);
    free(t);
    expect_err("full/d.h5.partial: No space left on device: the next 8 sequences need",
               "nothing of them was written", NULL);
    /* space freed (the file moved to a disk with room): the same command resumes it */
    assert_int_equal(run("rm -f e.h5; mv full.partial e.h5.partial && " DUMP " e.h5"), 0);
    assert_true(dumps_equal("ref.h5", "e.h5"));
    printf("fault table: kd teacher dump, ENOSPC on a 256 KiB tmpfs: 1/1 resumed identical\n");
}

static void test_dump_checksums(void **state) {
    (void)state;
    setup_once();
    make_reference_dump();
    /* a .partial of 40 sequences whose sequence 37 is changed behind the writer's back */
    assert_int_equal(run("rm -f c.h5*; KD_DUMP_STOP_AFTER=5 " DUMP " c.h5; test $? = 75"), 0);
    assert_int_equal(kd_test_python("dump_corrupt.py", "'%s/c.h5.partial' 37 keep", g_dir), 0);
    assert_int_equal(run(DUMP " c.h5"), 0);
    expect_err("c.h5.partial: sequence 37 of 40 failed verification: its data does not match the checksum",
               "dropped it and the 2 after it, resuming after the 37 verified sequences", NULL);
    assert_true(dumps_equal("ref.h5", "c.h5"));
    /* a file without checksums (h5py, an older kd) whose sequence 33 holds log-probs of 0 */
    assert_int_equal(run("rm -f c.h5*; KD_DUMP_STOP_AFTER=5 " DUMP " c.h5; test $? = 75"), 0);
    assert_int_equal(kd_test_python("dump_corrupt.py", "'%s/c.h5.partial' 33 drop", g_dir), 0);
    assert_int_equal(run(DUMP " c.h5"), 0);
    expect_err("sequence 33 of 40 failed verification: it has no checksum and its values are invalid",
               "dataset 'topk_logprobs': sequence 33, position 0", "probabilities sum to", NULL);
    assert_true(dumps_equal("ref.h5", "c.h5"));
    /* the checksums kd stores are the documented ones (recomputed independently in numpy) */
    assert_int_equal(kd_test_python("dump_corrupt.py", "'%s/c.h5' 0 verify", g_dir), 0);
}

static void test_dump_lock(void **state) {
    (void)state;
    setup_once();
    /* a writer holds PATH.partial: a second dump of the same --out is refused and leaves it alone */
    assert_int_equal(run("rm -f l.h5*; KD_DUMP_STOP_AFTER=2 " DUMP " l.h5; test $? = 75"), 0);
    assert_int_equal(run("flock -x l.h5.partial -c 'sleep 2' & sleep 0.5; " DUMP " l.h5; rc=$?; wait; exit $rc"), 1);
    expect_err("l.h5.partial: another process is writing this dump", "choose another --out", NULL);
    assert_int_equal(run(DUMP " l.h5"), 0);   /* the lock gone, the same command resumes */
    assert_true(dumps_equal("ref.h5", "l.h5"));
}

/* ---- outputs that are not regular files --------------------------------------------------- */

static void test_special_outputs(void **state) {
    (void)state;
    setup_once();
    /* /dev/null: written into, still the device */
    assert_int_equal(run("$KD export --model teacher --type f32 --out /dev/null >/dev/null && test -c /dev/null"), 0);
    assert_int_equal(run("$KD logits --model teacher --tokens '1 2 3' --out /dev/null && test -c /dev/null"), 0);
    /* a FIFO: streamed to its reader, still a FIFO; the bytes = a regular export's but for general.name */
    assert_int_equal(run("rm -f fifo fifo.out && mkfifo fifo && (cat fifo > fifo.out &) && "
                         "$KD export --model teacher --type f32 --out fifo >/dev/null && sleep 0.2 && test -p fifo && "
                         "$KD export --model teacher --type f32 --out fifo.gguf >/dev/null && "
                         "test $(stat -c %%s fifo.out) = $(stat -c %%s fifo.gguf)"), 0);
    assert_int_equal(run("(cat fifo > fifo.out &) && $KD logits --model teacher --tokens '1 2 3' --out fifo && "
                         "sleep 0.2 && $KD logits --model teacher --tokens '1 2 3' --out reg.f32 && cmp fifo.out reg.f32 "
                         "&& test -p fifo"), 0);
    /* a dump needs a seekable file: refused, the FIFO and the device untouched */
    assert_int_equal(run(DUMP " fifo"), 1);
    expect_err("--out fifo: is a FIFO; a dump is an HDF5 file", "fifo is never replaced", NULL);
    assert_int_equal(run("test -p fifo && test ! -e fifo.partial"), 0);
    assert_int_equal(run(DUMP " /dev/null"), 1);
    expect_err("--out /dev/null: is a character device", NULL);
    /* a directory: refused by name */
    assert_int_equal(run("mkdir -p adir && $KD export --model teacher --type f32 --out adir"), 1);
    expect_err("adir: is a directory, expected a file path", NULL);
    /* a symbolic link: its target is replaced, the link stays */
    assert_int_equal(run("rm -f target.gguf link.gguf && echo old > target.gguf && ln -s target.gguf link.gguf && "
                         "$KD export --model teacher --type f32 --out link.gguf >/dev/null && test -L link.gguf && "
                         "test $(head -c 4 target.gguf) = GGUF"), 0);
    assert_int_equal(run("rm -f tl.h5 lk.h5 && echo old > tl.h5 && ln -s tl.h5 lk.h5 && " DUMP
                         " lk.h5 && test -L lk.h5 && $KD teacher info tl.h5 >/dev/null"), 0);
    printf("fault table: outputs that are not regular files (FIFO, /dev/null, directory, symlink): 9/9 handled, "
           "none replaced\n");
}

/* ---- kd train ----------------------------------------------------------------------------- */

static void reference_run(void) {
    static int done;
    if (done++) return;
    assert_int_equal(run("rm -rf ref && $KD train --config run.json --out ref --quiet"), 0);
}

static void test_train_kill(void **state) {
    (void)state;
    setup_once();
    reference_run();
    kd_rng r;
    kd_rng_seed(&r, 17);
    int trials = 5, ok = 0;
    for (int i = 0; i < trials; i++) {
        double at = 0.05 + 1.2 * kd_rng_uniform(&r);
        run("rm -rf k; timeout -s KILL %.3f $KD train --config run.json --out k --quiet; true", at);
        /* killed before run.json: nothing to resume, start it again; otherwise --resume */
        int rc = run("if [ -e k/run.json ]; then $KD train --resume k --quiet; else rm -rf k && "
                     "$KD train --config run.json --out k --quiet; fi");
        if (rc == 0 && run("cmp -s ref/final/model.safetensors k/final/model.safetensors") == 0) ok++;
        else fprintf(stderr, "train killed at %.3f s: resume status %d\n", at, rc);
        assert_int_equal(run("test $(grep -c '\"step\"' k/metrics.jsonl) = $(grep -c '\"step\"' ref/metrics.jsonl)"), 0);
    }
    /* killed before its first checkpoint (run.json written, no checkpoints/): --resume starts at step 0 */
    assert_int_equal(run("rm -rf n && mkdir n && cp ref/run.json n/ && printf '{\"step\":1,\"lo' > n/metrics.jsonl && "
                         "$KD train --resume n && cmp ref/final/model.safetensors n/final/model.safetensors"), 0);
    expect_err("restarted from step 0 (killed before its first checkpoint)", NULL);
    trials++, ok++;
    printf("fault table: kd train killed (-9) at random moments, then --resume: %d/%d bit-identical\n", ok, trials);
    assert_int_equal(ok, trials);
}

static void test_train_lock(void **state) {
    (void)state;
    setup_once();
    /* a second kd train (or --resume) on a directory a running kd train holds */
    assert_int_equal(run("rm -rf c && ($KD train --config run.json --set steps=400 --out c --quiet 2>/dev/null &) && "
                         "for i in $(seq 100); do [ -e c/run.json ] && break; sleep 0.05; done; "
                         "$KD train --resume c --quiet"), 1);
    expect_err("c/.lock: locked by another process (pid ", "another kd train is running in this run directory", NULL);
    assert_int_equal(run("$KD train --config run.json --out c --quiet"), 1);
    expect_err("c already holds a run (use --resume, or another --out)", NULL);
    run("while ! flock -n c/.lock true; do sleep 0.1; done");   /* the first one ends */
    /* two started together: one trains, the other refuses; one run's metrics */
    run("rm -rf t && ($KD train --config run.json --out t --quiet 2> e1.txt; echo $? > r1.txt) & "
        "($KD train --config run.json --out t --quiet 2> e2.txt; echo $? > r2.txt) & wait");
    assert_int_equal(run("test $(cat r1.txt r2.txt | sort | tr -d '\\n') = 01 && "
                         "test $(grep -c '\"step\"' t/metrics.jsonl) = $(grep -c '\"step\"' ref/metrics.jsonl) && "
                         "cmp ref/final/model.safetensors t/final/model.safetensors"), 0);
    assert_int_equal(run("cat e1.txt e2.txt | grep -q -e 'another kd train is running' -e 'already holds a run'"), 0);
    printf("fault table: concurrent kd train on one run directory: 3/3 refused, the first run intact\n");
}

/* A corrupt field of trainer_state.json: --resume refuses, naming the file and the field. */
static void corrupt_state(const char *sed, const char *needle) {
    assert_int_equal(run("rm -rf s && cp -r s0 s && sed -i -E '%s' s/checkpoints/step-00000004/trainer_state.json && "
                         "$KD train --resume s --quiet", sed), 1);
    expect_err("s/checkpoints/step-00000004/trainer_state.json", needle, NULL);
}

static void test_corrupt_state(void **state) {
    (void)state;
    setup_once();
    assert_int_equal(run("rm -rf s0 && $KD train --config run.json --out s0 --quiet --stop-after 4"), 0);
    corrupt_state("s/\"seed\":\\s*\"1234\"/\"seed\": \"12x4\"/",
                  "bad trainer state: s/checkpoints/step-00000004/trainer_state.json: field 'cursor.seed': found string "
                  "\"12x4\", expected a decimal integer");
    corrupt_state("s/\"seed\":\\s*\"1234\"/\"seed\": \"99\"/", "field 'cursor.seed': found \"99\", expected \"1234\"");
    corrupt_state("s/\"batch\":\\s*4/\"batch\": 3/",
                  "fields 'cursor.epoch' 0 and 'cursor.batch' 3, expected epoch 0 and batch 4");
    corrupt_state("s/\"epoch\":\\s*0/\"epoch\": 7/", "expected epoch 0 and batch 4");
    corrupt_state("s/\"batch\":\\s*4/\"batch\": 4.5/", "field 'cursor.batch': found 4.5, expected an integer");
    corrupt_state("s/\"step\":\\s*4,/\"step\": 40,/", "field 'step': found 40, expected an integer in [0, 12]");
    corrupt_state("s/\"adam_step\":\\s*4/\"adam_step\": 5/", "field 'adam_step': found 5, expected an integer in [0, 4]");
    corrupt_state("s/\"config_hash\":\\s*\"/\"config_hash\": \"x/", "field 'cursor.config_hash'");
    corrupt_state("s/\"cursor\"/\"cursorX\"/", "field 'cursor' is missing, expected an object");
    corrupt_state("s/\"step\"/\"step\" ]/", "invalid JSON at line");
    /* a latest that names something else, a truncated checkpoint file */
    assert_int_equal(run("rm -rf s && cp -r s0 s && echo '../../x' > s/checkpoints/latest && $KD train --resume s"), 1);
    expect_err("s/checkpoints/latest: names \"../../x\", expected a checkpoint directory name step-NNNNNNNN", NULL);
    assert_int_equal(run("rm -rf s && cp -r s0 s && truncate -s 1000 s/checkpoints/step-00000004/model.safetensors && "
                         "$KD train --resume s"), 1);
    expect_err("s/checkpoints/step-00000004/model.safetensors", NULL);
    printf("fault table: corrupt trainer_state.json / checkpoint: 12/12 refused, naming file and field\n");
}

static void test_corrupt_values(void **state) {
    (void)state;
    setup_once();
    /* log-prob > 0 and NaN in a dump: kd train and kd eval stop, naming file, dataset, sequence, position */
    assert_int_equal(kd_test_python("dump_corrupt.py", "'%s/train.h5' 5 value '%s/pos.h5' 0.5", g_dir, g_dir), 0);
    assert_int_equal(kd_test_python("dump_corrupt.py", "'%s/train.h5' 5 value '%s/nan.h5' nan", g_dir, g_dir), 0);
    assert_int_equal(run("rm -rf v && $KD train --config run.json --set train_data=pos.h5 --out v --quiet"), 1);
    expect_err("pos.h5: dataset 'topk_logprobs': sequence 5, position 3, slot 0: log-prob 0.5 > 0", "dump is corrupt",
               NULL);
    assert_int_equal(run("rm -rf v && $KD train --config run.json --set train_data=nan.h5 --out v --quiet"), 1);
    expect_err("nan.h5: dataset 'topk_logprobs': sequence 5, position 3, slot 0: log-prob is NaN", NULL);
    assert_int_equal(run("$KD eval --model ref/final --data pos.h5"), 1);
    expect_err("pos.h5: dataset 'topk_logprobs': sequence 5, position 3, slot 0: log-prob 0.5 > 0", NULL);
}

/* ---- resources and inputs ------------------------------------------------------------------ */

static void test_resources_and_inputs(void **state) {
    (void)state;
    setup_once();
    /* a batch no machine holds: refused before allocating, with the plan and what fits */
    assert_int_equal(run("rm -rf m && $KD train --config run.json --set batch_size=1048576 --out m --quiet"), 1);
    expect_err("batch_size 1048576 × seq_len 32 needs about", "GiB of memory is available: batch_size ", " fits",
               NULL);
    assert_int_equal(run("test ! -e m/run.json"), 0);
    /* kd import --tokenizer: validated before anything is written */
    char bin[700];
    snprintf(bin, sizeof bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    assert_int_equal(run("rm -rf imp && $KD import llama2c --model '%s' --tokenizer text.txt --out imp", bin), 1);
    expect_err("--tokenizer: not a llama2.c tokenizer.bin: text.txt", NULL);
    assert_int_equal(run("test ! -e imp"), 0);
    assert_int_equal(run("$KD import llama2c --model '%s' --tokenizer teacher --out imp", bin), 1);
    expect_err("teacher: is a directory, expected a file", NULL);
    /* a llama2.c header with n_kv_heads 2^31-1: the message says what it must be relative to n_heads */
    assert_int_equal(kd_test_python("dump_corrupt.py", "'%s' 4 header '%s/hdr.bin' 2147483647", bin, g_dir), 0);
    assert_int_equal(run("$KD import llama2c --model hdr.bin --out imp"), 1);
    expect_err("hdr.bin: header field n_kv_heads = 2147483647, expected a divisor of n_heads = 4", NULL);
    /* kd export of a missing model, or of a file */
    assert_int_equal(run("$KD export --model MISSING --type f32 --out x.gguf"), 1);
    expect_err("MISSING: no such checkpoint directory", NULL);
    assert_int_equal(run("$KD export --model text.txt --type f32 --out x.gguf"), 1);
    expect_err("text.txt: is a regular file, expected a checkpoint directory", NULL);
    /* a directory where a file is expected */
    assert_int_equal(run("$KD teacher dump --teacher teacher --text teacher --seq-len 16 --out y.h5 --quiet"), 1);
    expect_err("teacher: is a directory, expected a file", NULL);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dump_kill),
        cmocka_unit_test(test_dump_salvage),
        cmocka_unit_test(test_dump_write_failure),
        cmocka_unit_test(test_dump_checksums),   cmocka_unit_test(test_dump_lock),
        cmocka_unit_test(test_special_outputs),  cmocka_unit_test(test_train_kill),
        cmocka_unit_test(test_train_lock),       cmocka_unit_test(test_corrupt_state),
        cmocka_unit_test(test_corrupt_values),   cmocka_unit_test(test_resources_and_inputs),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
