/*
 * test_json.c — kd_json: parse errors give the line, column and byte; the typed
 * getters accept what they should and name file, field, found and expected
 * value otherwise; atomic writes round-trip.
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"

#define ASSERT_MSG(err, sub)                                                                \
    do {                                                                                    \
        if (!strstr((err).msg, (sub))) fail_msg("message \"%s\" lacks \"%s\"", (err).msg, (sub)); \
    } while (0)

static void test_parse_errors(void **state) {
    (void)state;
    kd_err err = {{0}};
    const char *bad = "{\n  \"a\": 1,\n  \"b\": ]\n}\n";
    assert_null(kd_json_parse(bad, strlen(bad), "cfg.json", &err));
    ASSERT_MSG(err, "cfg.json: invalid JSON at line 3, column 8 (byte 19), near ']'");

    assert_null(kd_json_parse("", 0, "empty.json", &err));
    ASSERT_MSG(err, "empty.json: invalid JSON: the text is empty");
    assert_null(kd_json_parse("{\"a\": 1} trailing", 17, NULL, &err));
    ASSERT_MSG(err, "<json>: invalid JSON at line 1, column 10 (byte 9), near 'trailing'");
    assert_null(kd_json_parse("{\"a\": [1, 2", 11, "cut.json", &err));
    ASSERT_MSG(err, "cut.json: invalid JSON");
    assert_null(kd_json_parse("{\"a\": 1}\0{}", 11, "nul.json", &err));   /* NUL inside the text */
    ASSERT_MSG(err, "nul.json: invalid JSON");

    /* not NUL-terminated: only len bytes are read */
    char buf[8] = {'{', '}', ' ', ' ', 'x', 'x', 'x', 'x'};
    cJSON *j = kd_json_parse(buf, 4, "buf", &err);
    assert_non_null(j);
    cJSON_Delete(j);

    char path[1024];
    snprintf(path, sizeof path, "%s/bad.json", kd_test_tmpdir());
    assert_int_equal(kd_write_file_atomic(path, bad, strlen(bad), &err), 0);
    assert_null(kd_json_load(path, &err));
    ASSERT_MSG(err, path);
    ASSERT_MSG(err, "line 3");
    assert_null(kd_json_load("/nonexistent/cfg.json", &err));
    ASSERT_MSG(err, "/nonexistent/cfg.json: cannot open");
}

static const char *cfg_text =
    "{\"n\": 12, \"n2\": 3.0, \"frac\": 2.5, \"big\": 1e300, \"neg\": -4, \"s\": \"llama\", \"t\": true,"
    " \"f\": false, \"nul\": null, \"arr\": [1], \"eps\": 1e-6, \"long\": \"abcdefghijklmnop\"}";

static void test_getters(void **state) {
    (void)state;
    kd_err err = {{0}};
    cJSON *c = kd_json_parse(cfg_text, strlen(cfg_text), "config.json", &err);
    assert_non_null(c);

    int64_t i = -1;
    assert_int_equal(kd_json_get_int(c, "n", "config.json", 1, 1, 100, &i, &err), 0);
    assert_int_equal(i, 12);
    assert_int_equal(kd_json_get_int(c, "n2", "config.json", 1, 1, 100, &i, &err), 0);
    assert_int_equal(i, 3);
    assert_int_equal(kd_json_get_int(c, "neg", "config.json", 1, INT64_MIN, INT64_MAX, &i, &err), 0);
    assert_int_equal(i, -4);
    i = 77;   /* optional and absent (or null): unchanged */
    assert_int_equal(kd_json_get_int(c, "absent", "config.json", 0, 1, 100, &i, &err), 0);
    assert_int_equal(kd_json_get_int(c, "nul", "config.json", 0, 1, 100, &i, &err), 0);
    assert_int_equal(i, 77);

    assert_int_equal(kd_json_get_int(c, "absent", "config.json", 1, 1, 100, &i, &err), -1);
    ASSERT_MSG(err, "config.json: field 'absent' is missing, expected an integer in [1, 100]");
    assert_int_equal(kd_json_get_int(c, "nul", "config.json", 1, 1, 100, &i, &err), -1);
    ASSERT_MSG(err, "config.json: field 'nul' is null, expected an integer");
    assert_int_equal(kd_json_get_int(c, "frac", "config.json", 1, 1, 100, &i, &err), -1);
    ASSERT_MSG(err, "config.json: field 'frac': found 2.5, expected an integer in [1, 100]");
    assert_int_equal(kd_json_get_int(c, "n", "config.json", 1, 1, 10, &i, &err), -1);
    ASSERT_MSG(err, "field 'n': found 12, expected an integer in [1, 10]");
    assert_int_equal(kd_json_get_int(c, "neg", "config.json", 0, 0, 10, &i, &err), -1);
    ASSERT_MSG(err, "field 'neg': found -4, expected an integer in [0, 10]");
    assert_int_equal(kd_json_get_int(c, "big", "config.json", 1, INT64_MIN, INT64_MAX, &i, &err), -1);
    ASSERT_MSG(err, "field 'big': found 1.0000000000000001e+300");
    assert_int_equal(kd_json_get_int(c, "s", "config.json", 1, 1, 10, &i, &err), -1);
    ASSERT_MSG(err, "field 's': found string \"llama\", expected an integer");
    assert_int_equal(kd_json_get_int(c, "t", "config.json", 1, 0, 1, &i, &err), -1);
    ASSERT_MSG(err, "field 't': found true, expected an integer in [0, 1]");
    assert_int_equal(kd_json_get_int(c, "arr", "config.json", 1, 0, 1, &i, &err), -1);
    ASSERT_MSG(err, "field 'arr': found array");
    assert_int_equal(i, 77);

    double d = -1;
    assert_int_equal(kd_json_get_float(c, "eps", "config.json", 1, 0, 1, &d, &err), 0);
    assert_true(d == 1e-6);
    assert_int_equal(kd_json_get_float(c, "n", "config.json", 1, 0, 100, &d, &err), 0);
    assert_true(d == 12.0);
    d = 0.5;
    assert_int_equal(kd_json_get_float(c, "absent", "config.json", 0, 0, 1, &d, &err), 0);
    assert_true(d == 0.5);
    assert_int_equal(kd_json_get_float(c, "frac", "config.json", 1, 0, 1, &d, &err), -1);
    ASSERT_MSG(err, "config.json: field 'frac': found 2.5, expected a number in [0, 1]");
    assert_int_equal(kd_json_get_float(c, "s", "config.json", 1, 0, 1, &d, &err), -1);
    ASSERT_MSG(err, "field 's': found string \"llama\", expected a number");

    int b = -1;
    assert_int_equal(kd_json_get_bool(c, "t", "config.json", 1, &b, &err), 0);
    assert_int_equal(b, 1);
    assert_int_equal(kd_json_get_bool(c, "f", "config.json", 1, &b, &err), 0);
    assert_int_equal(b, 0);
    assert_int_equal(kd_json_get_bool(c, "n", "config.json", 1, &b, &err), -1);
    ASSERT_MSG(err, "config.json: field 'n': found 12, expected true or false");
    assert_int_equal(kd_json_get_bool(c, "absent", "config.json", 1, &b, &err), -1);
    ASSERT_MSG(err, "field 'absent' is missing, expected true or false");

    char s[8] = "dflt";
    assert_int_equal(kd_json_get_string(c, "s", "config.json", 1, s, sizeof s, &err), 0);
    assert_string_equal(s, "llama");
    assert_int_equal(kd_json_get_string(c, "absent", "config.json", 0, s, sizeof s, &err), 0);
    assert_string_equal(s, "llama");
    assert_int_equal(kd_json_get_string(c, "long", "config.json", 1, s, sizeof s, &err), -1);
    ASSERT_MSG(err, "config.json: field 'long': found a string of 16 bytes, expected a string of at most 7 bytes");
    assert_int_equal(kd_json_get_string(c, "n", "config.json", 1, s, sizeof s, &err), -1);
    ASSERT_MSG(err, "field 'n': found 12, expected a string");
    assert_string_equal(s, "llama");

    /* the enclosing value is not an object */
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(c, "arr");
    assert_int_equal(kd_json_get_int(arr, "x", "config.json", 0, 0, 1, &i, &err), -1);
    ASSERT_MSG(err, "config.json: field 'x': the enclosing value is array, expected an object");
    assert_int_equal(kd_json_get_int(NULL, "x", NULL, 0, 0, 1, &i, &err), -1);
    ASSERT_MSG(err, "<json>: field 'x': the enclosing value is missing");
    assert_string_equal(kd_json_type_name(arr), "array");
    cJSON_Delete(c);
}

static void test_write_atomic(void **state) {
    (void)state;
    kd_err err = {{0}};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "steps", 1000);
    cJSON_AddStringToObject(o, "name", "tiny \"student\"");
    cJSON_AddBoolToObject(o, "resume", 1);
    char path[1024];
    snprintf(path, sizeof path, "%s/out.json", kd_test_tmpdir());
    assert_int_equal(kd_json_write_atomic(path, o, &err), 0);
    cJSON_Delete(o);

    size_t len;
    char *text = kd_read_file(path, &len, &err);
    assert_non_null(text);
    assert_true(len > 2 && text[len - 1] == '\n' && strchr(text, '\t'));   /* pretty-printed */
    free(text);
    cJSON *r = kd_json_load(path, &err);
    assert_non_null(r);
    int64_t steps = 0;
    int resume = 0;
    char name[64];
    assert_int_equal(kd_json_get_int(r, "steps", path, 1, 0, 1 << 30, &steps, &err), 0);
    assert_int_equal(kd_json_get_bool(r, "resume", path, 1, &resume, &err), 0);
    assert_int_equal(kd_json_get_string(r, "name", path, 1, name, sizeof name, &err), 0);
    assert_int_equal(steps, 1000);
    assert_int_equal(resume, 1);
    assert_string_equal(name, "tiny \"student\"");
    cJSON_Delete(r);

    cJSON *e = cJSON_CreateObject();
    assert_int_equal(kd_json_write_atomic("/nonexistent/dir/out.json", e, &err), -1);
    ASSERT_MSG(err, "/nonexistent/dir/out.json");
    cJSON_Delete(e);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_errors),
    cmocka_unit_test(test_getters),
    cmocka_unit_test(test_write_atomic),
};
KD_TEST_MAIN(tests)
