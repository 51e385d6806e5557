/*
 * kd_json.h — loading, checked reading and atomic writing of JSON (over cJSON).
 *
 * The getters read one field of an object and fail with a message naming the
 * file, the field, what was found and what was expected:
 *   "config.json: field 'hidden_size': found 3.5, expected an integer in [1, 65536]".
 * `file` is only used in messages (NULL gives "<json>"). With required == 0 an
 * absent field (or a JSON null) is not an error: the getter returns 0 and
 * leaves *out unchanged, so the caller pre-loads the default.
 */
#ifndef KD_JSON_H
#define KD_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <cJSON.h>

#include "core/kd_err.h"

/* Parse text[0..len) (need not be NUL-terminated). On a syntax error the message
 * gives `name`, the line, column and byte offset of the error and the text there.
 * Free the result with cJSON_Delete. */
cJSON *kd_json_parse(const char *text, size_t len, const char *name, kd_err *err);
/* Read and parse a whole file (errors as kd_json_parse, named by path). */
cJSON *kd_json_load(const char *path, kd_err *err);

/* "object", "array", "string", "number", "true", "false", "null", "missing". */
const char *kd_json_type_name(const cJSON *v);

/* An integral number in [lo, hi] (e.g. 2.0 is accepted, 2.5 is not). */
int kd_json_get_int(const cJSON *obj, const char *key, const char *file, int required, int64_t lo, int64_t hi,
                    int64_t *out, kd_err *err);
/* A finite number in [lo, hi]. */
int kd_json_get_float(const cJSON *obj, const char *key, const char *file, int required, double lo, double hi,
                      double *out, kd_err *err);
/* true or false (numbers and strings are not accepted); *out becomes 1 or 0. */
int kd_json_get_bool(const cJSON *obj, const char *key, const char *file, int required, int *out, kd_err *err);
/* A string copied NUL-terminated into out[0..n); longer than n-1 bytes is an error. */
int kd_json_get_string(const cJSON *obj, const char *key, const char *file, int required, char *out, size_t n,
                       kd_err *err);

/* Write obj pretty-printed (with a final newline) to path, atomically. */
int kd_json_write_atomic(const char *path, const cJSON *obj, kd_err *err);

#endif
