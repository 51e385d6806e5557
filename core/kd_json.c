/*
 * kd_json.c — loading, checked reading and atomic writing of JSON (see kd_json.h).
 */
#include "core/kd_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"

#define KD_JSON_EXACT_INT 9007199254740992.0   /* 2^53: larger doubles are not exact integers */

static const char *fname(const char *file) { return file ? file : "<json>"; }

/* The bytes at an error position, printable and cut short, for a message. */
static void snippet(const char *p, const char *end, char *out, size_t n) {
    size_t k = 0;
    while (p < end && *p && *p != '\n' && k + 1 < n && k < 24) {
        unsigned char c = (unsigned char)*p++;
        out[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[k] = '\0';
}

cJSON *kd_json_parse(const char *text, size_t len, const char *name, kd_err *err) {
    name = fname(name);
    /* cJSON may look one byte past the value for a terminator: parse a NUL-terminated copy. */
    char *buf = malloc(len + 1);
    if (!buf) {
        kd_errf(err, "%s: out of memory copying %zu bytes of JSON", name, len);
        return NULL;
    }
    if (len) memcpy(buf, text, len);
    buf[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (root && end != buf + len) {   /* stopped at a NUL byte inside the text */
        cJSON_Delete(root);
        root = NULL;
    }
    if (!root) {
        if (!end || end < buf || end > buf + len) end = cJSON_GetErrorPtr();
        if (!end || end < buf || end > buf + len) end = buf + len;
        size_t off = (size_t)(end - buf);
        int line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        char near[32];
        snippet(end, buf + len, near, sizeof near);
        if (len == 0)
            kd_errf(err, "%s: invalid JSON: the text is empty", name);
        else if (off >= len)
            kd_errf(err, "%s: invalid JSON at line %d, column %d (byte %zu): unexpected end of text", name, line,
                    col, off);
        else
            kd_errf(err, "%s: invalid JSON at line %d, column %d (byte %zu), near '%s'", name, line, col, off,
                    near);
    }
    free(buf);
    return root;
}

cJSON *kd_json_load(const char *path, kd_err *err) {
    size_t len = 0;
    char *text = kd_read_file(path, &len, err);
    if (!text) return NULL;
    cJSON *root = kd_json_parse(text, len, path, err);
    free(text);
    return root;
}

const char *kd_json_type_name(const cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsObject(v)) return "object";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsTrue(v)) return "true";
    if (cJSON_IsFalse(v)) return "false";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

/* What was found, for a message: the number, the quoted string (cut) or the type. */
static void describe(const cJSON *v, char *out, size_t n) {
    if (cJSON_IsNumber(v)) {
        snprintf(out, n, "%.17g", v->valuedouble);
    } else if (cJSON_IsString(v) && v->valuestring) {
        size_t len = strlen(v->valuestring);
        if (len > 48)
            snprintf(out, n, "string \"%.48s...\"", v->valuestring);
        else
            snprintf(out, n, "string \"%s\"", v->valuestring);
    } else {
        snprintf(out, n, "%s", kd_json_type_name(v));
    }
}

/* Look the field up. Returns 1 when present, 0 when absent-and-optional, -1 on error. */
static int field(const cJSON *obj, const char *key, const char *file, int required, const char *expected,
                 const cJSON **item, kd_err *err) {
    if (!cJSON_IsObject(obj)) {
        kd_errf(err, "%s: field '%s': the enclosing value is %s, expected an object", fname(file), key,
                kd_json_type_name(obj));
        return -1;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (!required) return 0;
        kd_errf(err, "%s: field '%s' is %s, expected %s", fname(file), key, v ? "null" : "missing", expected);
        return -1;
    }
    *item = v;
    return 1;
}

static int mismatch(const cJSON *v, const char *key, const char *file, const char *expected, kd_err *err) {
    char found[96];
    describe(v, found, sizeof found);
    return kd_errf(err, "%s: field '%s': found %s, expected %s", fname(file), key, found, expected);
}

int kd_json_get_int(const cJSON *obj, const char *key, const char *file, int required, int64_t lo, int64_t hi,
                    int64_t *out, kd_err *err) {
    char expected[96];
    snprintf(expected, sizeof expected, "an integer in [%lld, %lld]", (long long)lo, (long long)hi);
    const cJSON *v = NULL;
    int rc = field(obj, key, file, required, expected, &v, err);
    if (rc <= 0) return rc;
    if (!cJSON_IsNumber(v)) return mismatch(v, key, file, expected, err);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < -KD_JSON_EXACT_INT || d > KD_JSON_EXACT_INT)
        return mismatch(v, key, file, expected, err);
    int64_t i = (int64_t)d;
    if (i < lo || i > hi) return mismatch(v, key, file, expected, err);
    *out = i;
    return 0;
}

int kd_json_get_float(const cJSON *obj, const char *key, const char *file, int required, double lo, double hi,
                      double *out, kd_err *err) {
    char expected[96];
    snprintf(expected, sizeof expected, "a number in [%g, %g]", lo, hi);
    const cJSON *v = NULL;
    int rc = field(obj, key, file, required, expected, &v, err);
    if (rc <= 0) return rc;
    if (!cJSON_IsNumber(v)) return mismatch(v, key, file, expected, err);
    double d = v->valuedouble;
    if (!isfinite(d) || d < lo || d > hi) return mismatch(v, key, file, expected, err);
    *out = d;
    return 0;
}

int kd_json_get_bool(const cJSON *obj, const char *key, const char *file, int required, int *out, kd_err *err) {
    const char *expected = "true or false";
    const cJSON *v = NULL;
    int rc = field(obj, key, file, required, expected, &v, err);
    if (rc <= 0) return rc;
    if (!cJSON_IsBool(v)) return mismatch(v, key, file, expected, err);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

int kd_json_get_string(const cJSON *obj, const char *key, const char *file, int required, char *out, size_t n,
                       kd_err *err) {
    char expected[96];
    snprintf(expected, sizeof expected, "a string of at most %zu bytes", n ? n - 1 : 0);
    const cJSON *v = NULL;
    int rc = field(obj, key, file, required, expected, &v, err);
    if (rc <= 0) return rc;
    if (!cJSON_IsString(v) || !v->valuestring) return mismatch(v, key, file, expected, err);
    size_t len = strlen(v->valuestring);
    if (len >= n)
        return kd_errf(err, "%s: field '%s': found a string of %zu bytes, expected %s", fname(file), key, len,
                       expected);
    memcpy(out, v->valuestring, len + 1);
    return 0;
}

int kd_json_write_atomic(const char *path, const cJSON *obj, kd_err *err) {
    char *text = cJSON_Print(obj);
    if (!text) return kd_errf(err, "%s: cannot format JSON (out of memory or invalid value)", path);
    size_t len = strlen(text);
    char *buf = malloc(len + 2);   /* text belongs to cJSON's allocator: copy it */
    if (buf) memcpy(buf, text, len);
    cJSON_free(text);
    if (!buf) return kd_errf(err, "%s: out of memory formatting JSON", path);
    buf[len] = '\n';
    buf[len + 1] = '\0';
    int rc = kd_write_file_atomic(path, buf, len + 1, err);
    free(buf);
    return rc;
}
