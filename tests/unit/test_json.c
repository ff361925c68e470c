/* Unit tests for the JSON codec (runtime/json.c) and its Lua binding (runtime/l_json.c). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "test.h"

static lua_State *L;
static exo_json_err_t err;
static char text[8192];

/* Decodes s[0..len) and encodes the result again. Returns the encoding, or "ERR: <msg> @<offset>"
 * if decoding failed; either way checks that the stack is as it should be. */
static const char *recode_n(const char *s, size_t len)
{
    int top = lua_gettop(L);
    int rc = exo_json_decode(L, s, len, &err);
    if (rc < 0) {
        CHECK(rc == -EINVAL);
        CHECK(lua_gettop(L) == top);
        snprintf(text, sizeof(text), "ERR: %s @%zu", err.msg, err.offset);
        return text;
    }
    CHECK(lua_gettop(L) == top + 1);
    exo_buf_t b = EXO_BUF_INIT;
    rc = exo_json_encode(L, -1, &b, &err);
    CHECK(lua_gettop(L) == top + 1);
    if (rc < 0)
        snprintf(text, sizeof(text), "ENCODE ERR: %s", err.msg);
    else
        snprintf(text, sizeof(text), "%.*s", (int)b.len, b.data);
    exo_buf_free(&b);
    lua_settop(L, top);
    return text;
}

static const char *recode(const char *s)
{
    return recode_n(s, strlen(s));
}

/* Evaluates the Lua expression and encodes its value into a buffer that already holds
 * "prefix". Returns the encoding or "ERR: <msg>"; checks that a failure leaves the buffer and
 * the stack as they were. */
static const char *enc_expr(const char *expr)
{
    char code[4096];
    int top = lua_gettop(L);

    snprintf(code, sizeof(code), "return %s", expr);
    if (luaL_dostring(L, code) != LUA_OK) {
        snprintf(text, sizeof(text), "LUA: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        return text;
    }
    exo_buf_t b = EXO_BUF_INIT;
    CHECK(exo_buf_appends(&b, "prefix") == 0);
    int rc = exo_json_encode(L, -1, &b, &err);
    CHECK(lua_gettop(L) == top + 1);
    if (rc < 0) {
        CHECK(rc == -EINVAL);
        CHECK(b.len == 6 && memcmp(b.data, "prefix", 6) == 0);
        snprintf(text, sizeof(text), "ERR: %s", err.msg);
    } else {
        snprintf(text, sizeof(text), "%.*s", (int)(b.len - 6), b.data + 6);
    }
    exo_buf_free(&b);
    lua_settop(L, top);
    return text;
}

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Decodes s, which must be valid, leaving the value on the stack. */
static int decode_ok(const char *s)
{
    int rc = exo_json_decode(L, s, strlen(s), &err);
    if (rc < 0) fprintf(stderr, "decoding %s: %s at %zu\n", s, err.msg, err.offset);
    return rc == 0;
}

static void test_round_trips(void)
{
    CHECK_STR(recode("{\"b\":1,\"a\":[true,false,null,\"x\"],\"c\":{}}"),
              "{\"a\":[true,false,null,\"x\"],\"b\":1,\"c\":{}}");
    CHECK_STR(recode(" \t\n\r{ \"a\" : [ 1 , 2 ] }\n "), "{\"a\":[1,2]}");
    CHECK_STR(recode("[]"), "[]");
    CHECK_STR(recode("{}"), "{}");
    CHECK_STR(recode("[[],{},[{}],{\"a\":[]}]"), "[[],{},[{}],{\"a\":[]}]");
    CHECK_STR(recode("\"\""), "\"\"");
    CHECK_STR(recode("true"), "true");
    CHECK_STR(recode("null"), "null");
    CHECK_STR(recode("0"), "0");
    CHECK_STR(recode("-0"), "0");
    CHECK_STR(recode("12.50"), "12.5");
    CHECK_STR(recode("1E2"), "100");
    CHECK_STR(recode("0.1"), "0.1");
    CHECK_STR(recode("-12e-1"), "-1.2");
    CHECK_STR(recode("{\"jsonrpc\":\"2.0\",\"method\":\"sys.info\",\"params\":{\"verbose\":true},"
                     "\"id\":\"a-1\"}"),
              "{\"id\":\"a-1\",\"jsonrpc\":\"2.0\",\"method\":\"sys.info\",\"params\":{\"verbose\":"
              "true}}");
    /* Keys that look like numbers are still object keys. */
    CHECK_STR(recode("{\"2\":\"b\",\"1\":\"a\"}"), "{\"1\":\"a\",\"2\":\"b\"}");
}

static void test_integers(void)
{
    REQUIRE(decode_ok("9007199254740993"));
    CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 9007199254740993LL);
    lua_pop(L, 1);
    CHECK_STR(recode("9007199254740993"), "9007199254740993");
    CHECK_STR(recode("9223372036854775807"), "9223372036854775807");
    CHECK_STR(recode("-9223372036854775808"), "-9223372036854775808");
    REQUIRE(decode_ok("-9223372036854775808"));
    CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == INT64_MIN);
    lua_pop(L, 1);

    /* One past the int64 range either way becomes a double. */
    REQUIRE(decode_ok("9223372036854775808"));
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 9223372036854775808.0);
    lua_pop(L, 1);
    CHECK_STR(recode("9223372036854775808"), "9.223372036854776e+18");
    CHECK_STR(recode("-9223372036854775809"), "-9.223372036854776e+18");
    REQUIRE(decode_ok("18446744073709551616"));
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 18446744073709551616.0);
    lua_pop(L, 1);
    CHECK_STR(recode("18446744073709551616"), "1.8446744073709552e+19");
    CHECK_STR(recode("12345678901234567890123"), "1.2345678901234568e+22");

    CHECK_STR(enc_expr("math.mininteger"), "-9223372036854775808");
    CHECK_STR(enc_expr("math.maxinteger"), "9223372036854775807");
    CHECK_STR(enc_expr("{0, -1, 9, 10, 99, 100, -100}"), "[0,-1,9,10,99,100,-100]");
}

static void test_floats(void)
{
    CHECK_STR(recode("1e400"), "ERR: number out of range @0");
    CHECK_STR(recode("[-1e400]"), "ERR: number out of range @1");
    CHECK_STR(recode("1e-400"), "0");

    REQUIRE(decode_ok("-0.0"));
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 0 && signbit(lua_tonumber(L, -1)));
    lua_pop(L, 1);
    CHECK_STR(recode("-0.0"), "-0.0");
    CHECK_STR(enc_expr("-0.0"), "-0.0");

    REQUIRE(decode_ok("1.5e-7"));
    CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 1.5e-7);
    lua_pop(L, 1);
    CHECK_STR(recode("1.5e-7"), "1.5e-07");
    CHECK_STR(recode("1.5e-07"), "1.5e-07");

    CHECK_STR(enc_expr("0.1 + 0.2"), "0.30000000000000004");
    CHECK_STR(enc_expr("1 / 3"), "0.3333333333333333");
    CHECK_STR(enc_expr("3.0"), "3");
    CHECK_STR(enc_expr("1e300"), "1e+300");
    CHECK_STR(enc_expr("2.0^53"), "9007199254740992");
    CHECK_STR(enc_expr("123456789.125"), "123456789.125");
    CHECK_STR(enc_expr("5e-324"), "4.94065645841247e-324");
    CHECK_STR(enc_expr("1.7976931348623157e308"), "1.7976931348623157e+308");

    /* A token longer than the decoder's stack buffer goes through its scratch buffer. */
    char big[200];
    memset(big, '0', sizeof(big));
    memcpy(big, "1.", 2);
    big[sizeof(big) - 2] = '1';
    big[sizeof(big) - 1] = '\0';
    CHECK_STR(recode(big), "1");
    memcpy(big, "0.", 2);
    big[2] = '5';
    CHECK_STR(recode(big), "0.5");
}

static void test_strings(void)
{
    size_t len;

    REQUIRE(decode_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\""));
    const char *s = lua_tolstring(L, -1, &len);
    CHECK(len == 12 && memcmp(s, "a\"b\\c/d\b\f\n\r\t", 12) == 0);
    lua_pop(L, 1);
    CHECK_STR(recode("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\""), "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\"");

    REQUIRE(decode_ok("\"\\u00e9\\u20AC\\ud83d\\ude00\""));
    s = lua_tolstring(L, -1, &len);
    CHECK(len == 9 && memcmp(s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9) == 0);
    lua_pop(L, 1);
    CHECK_STR(recode("\"\\u00e9\\u20AC\\ud83d\\ude00\""),
              "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");

    /* \u0000 is a byte like any other in a Lua string. */
    REQUIRE(decode_ok("\"a\\u0000b\""));
    s = lua_tolstring(L, -1, &len);
    CHECK(len == 3 && memcmp(s, "a\0b", 3) == 0);
    lua_pop(L, 1);
    CHECK_STR(recode("\"a\\u0000b\""), "\"a\\u0000b\"");

    /* The limits of each UTF-8 length, raw and escaped. */
    const char *valid[] = {"\xc2\x80",         "\xdf\xbf",         "\xe0\xa0\x80",
                           "\xed\x9f\xbf",     "\xee\x80\x80",     "\xef\xbf\xbf",
                           "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\x7f plain ascii"};
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        char in[64];
        snprintf(in, sizeof(in), "\"%s\"", valid[i]);
        CHECK_STR(recode(in), in);
    }
    CHECK_STR(recode("\"\\u0080\\u07ff\\u0800\\uffff\\ud800\\udc00\\udbff\\udfff\""),
              "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"");

    CHECK_STR(enc_expr("'\\1\\31\\127\"\\\\'"), "\"\\u0001\\u001f\x7f\\\"\\\\\"");
    CHECK_STR(enc_expr("'\\8\\12\\10\\13\\9/'"), "\"\\b\\f\\n\\r\\t/\"");

    /* A long string with an escape far in goes through the slow path in one piece. */
    char big[3000];
    memset(big, 'x', sizeof(big));
    big[0] = '"';
    memcpy(big + 2000, "\\n\\u00e9", 8);
    memcpy(big + sizeof(big) - 2, "\"", 2);
    REQUIRE(decode_ok(big));
    s = lua_tolstring(L, -1, &len);
    CHECK(len == sizeof(big) - 3 - 8 + 3 && s[1999] == '\n' && s[2000] == '\xc3');
    lua_pop(L, 1);
    CHECK_STR(recode("{\"k\\ney\":\"v\\u0041\"}"), "{\"k\\ney\":\"vA\"}");
}

/* Each malformed input with the message and byte offset the decoder must give. */
static void test_malformed(void)
{
    static const struct {
        const char *in;
        size_t len; /* 0: strlen(in) */
        const char *msg;
        size_t offset;
    } cases[] = {
        {"", 0, "empty input", 0},
        {" \n\t", 0, "empty input", 3},
        {"[1,2", 0, "unexpected end of input", 4},
        {"[", 0, "unexpected end of input", 1},
        {"{\"a\":1", 0, "unexpected end of input", 6},
        {"{\"a\"", 0, "unexpected end of input", 4},
        {"{\"a\":", 0, "unexpected end of input", 5},
        {"\"abc", 0, "unterminated string", 0},
        {"[\"abc\\\"]", 0, "unterminated string", 1},
        {"\"abc\\", 0, "unterminated string", 0},
        {"\"\\x\"", 0, "invalid escape in string", 1},
        {"\"\\'\"", 0, "invalid escape in string", 1},
        {"\"\\U00e9\"", 0, "invalid escape in string", 1},
        {"\"\\u12g4\"", 0, "invalid \\u escape in string", 1},
        {"\"\\u12\"", 0, "invalid \\u escape in string", 1},
        {"\"ab\\u\"", 0, "invalid \\u escape in string", 3},
        {"\"\\ud800\"", 0, "lone surrogate in \\u escape", 1},
        {"\"\\udc00\"", 0, "lone surrogate in \\u escape", 1},
        {"\"\\ud800\\u0041\"", 0, "lone surrogate in \\u escape", 1},
        {"\"\\ud800\\ud800\"", 0, "lone surrogate in \\u escape", 1},
        {"\"\\ud800\\n\"", 0, "lone surrogate in \\u escape", 1},
        {"\"x\\ude00\\ud83d\"", 0, "lone surrogate in \\u escape", 2},
        {"\"\xff\"", 0, "invalid UTF-8 in string", 1},
        {"\"a\x80\"", 0, "invalid UTF-8 in string", 2},
        {"\"\xc0\xaf\"", 0, "invalid UTF-8 in string", 1},                 /* overlong '/' */
        {"\"\xc1\xbf\"", 0, "invalid UTF-8 in string", 1},                 /* overlong */
        {"\"\xe0\x80\xaf\"", 0, "invalid UTF-8 in string", 1},             /* overlong */
        {"\"\xe0\x9f\xbf\"", 0, "invalid UTF-8 in string", 1},             /* overlong */
        {"\"\xf0\x80\x80\xaf\"", 0, "invalid UTF-8 in string", 1},         /* overlong */
        {"\"\xf0\x8f\xbf\xbf\"", 0, "invalid UTF-8 in string", 1},         /* overlong */
        {"\"\xed\xa0\xbd\xed\xb8\x80\"", 0, "invalid UTF-8 in string", 1}, /* CESU-8 */
        {"\"\xed\xbf\xbf\"", 0, "invalid UTF-8 in string", 1},             /* U+DFFF */
        {"\"\xf4\x90\x80\x80\"", 0, "invalid UTF-8 in string", 1},         /* U+110000 */
        {"\"\xf5\x80\x80\x80\"", 0, "invalid UTF-8 in string", 1},
        {"\"\xf8\x88\x80\x80\x80\"", 0, "invalid UTF-8 in string", 1},
        {"\"\xe2\x82\"", 0, "invalid UTF-8 in string", 1}, /* truncated */
        {"\"\xe2\x82", 0, "invalid UTF-8 in string", 1},
        {"\"\xc3\"", 0, "invalid UTF-8 in string", 1},
        {"\"\xe2\x28\xa1\"", 0, "invalid UTF-8 in string", 1},
        {"\"\\n\xff\"", 0, "invalid UTF-8 in string", 3},
        {"\"\\n\xe2\x82\"", 0, "invalid UTF-8 in string", 3},
        {"\"a\nb\"", 0, "unescaped control character 0x0a in string", 2},
        {"\"\t\"", 0, "unescaped control character 0x09 in string", 1},
        {"\"\0\"", 3, "unescaped control character 0x00 in string", 1},
        {"\"\\n\x1f\"", 0, "unescaped control character 0x1f in string", 3},
        {"01", 0, "invalid number: leading zero", 0},
        {"-01", 0, "invalid number: leading zero", 0},
        {"00", 0, "invalid number: leading zero", 0},
        {"+1", 0, "unexpected character '+'", 0},
        {".5", 0, "unexpected character '.'", 0},
        {"1.", 0, "invalid number: expected a digit after '.'", 2},
        {"1.e5", 0, "invalid number: expected a digit after '.'", 2},
        {"1e", 0, "invalid number: expected a digit in the exponent", 2},
        {"1e+", 0, "invalid number: expected a digit in the exponent", 3},
        {"1E-x", 0, "invalid number: expected a digit in the exponent", 3},
        {"-", 0, "invalid number: expected a digit", 1},
        {"-a", 0, "invalid number: expected a digit", 1},
        {"-Infinity", 0, "invalid number: expected a digit", 1},
        {"0x10", 0, "trailing characters after JSON value", 1},
        {"NaN", 0, "unexpected character 'N'", 0},
        {"Infinity", 0, "unexpected character 'I'", 0},
        {"tru", 0, "invalid literal", 0},
        {"nul", 0, "invalid literal", 0},
        {"fals", 0, "invalid literal", 0},
        {"nulL", 0, "invalid literal", 0},
        {"True", 0, "unexpected character 'T'", 0},
        {"falsey", 0, "trailing characters after JSON value", 5},
        {"[truex]", 0, "expected ',' or ']' in array", 5},
        {"[1,]", 0, "unexpected character ']'", 3},
        {"[,1]", 0, "unexpected character ','", 1},
        {"[1 2]", 0, "expected ',' or ']' in array", 3},
        {"[1}", 0, "expected ',' or ']' in array", 2},
        {"{,}", 0, "expected a string as object key", 1},
        {"{\"a\":1,}", 0, "expected a string as object key", 7},
        {"{1:2}", 0, "expected a string as object key", 1},
        {"{'a':1}", 0, "expected a string as object key", 1},
        {"{\"a\" 1}", 0, "expected ':' after object key", 5},
        {"{\"a\"=1}", 0, "expected ':' after object key", 4},
        {"{\"a\":1 \"b\":2}", 0, "expected ',' or '}' in object", 7},
        {"{\"a\":1]", 0, "expected ',' or '}' in object", 6},
        {"{\"a\":}", 0, "unexpected character '}'", 5},
        {"]", 0, "unexpected character ']'", 0},
        {"{} x", 0, "trailing characters after JSON value", 3},
        {"[]]", 0, "trailing characters after JSON value", 2},
        {"\"a\"\"b\"", 0, "trailing characters after JSON value", 3},
        {"1 2", 0, "trailing characters after JSON value", 2},
        {"1\0", 2, "trailing characters after JSON value", 1},
        {"\0", 1, "unexpected byte 0x00", 0},
        {"\xef\xbb\xbf{}", 0, "unexpected byte 0xef", 0},
        {"\x0c{}", 0, "unexpected byte 0x0c", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[200];
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
        snprintf(want, sizeof(want), "ERR: %s @%zu", cases[i].msg, cases[i].offset);
        CHECK_STR(recode_n(cases[i].in, len), want);
    }
    /* A NULL pointer with length 0 is empty input, and err may be NULL. */
    CHECK(exo_json_decode(L, NULL, 0, &err) == -EINVAL);
    CHECK_STR(err.msg, "empty input");
    CHECK(exo_json_decode(L, "[", 1, NULL) == -EINVAL);
    CHECK(lua_gettop(L) == 0);
}

static void test_depth(void)
{
    char buf[2 * 70 * 6 + 1];
    size_t n = 0;

    for (int i = 0; i < 64; i++)
        buf[n++] = '[';
    for (int i = 0; i < 64; i++)
        buf[n++] = ']';
    buf[n] = '\0';
    CHECK_STR(recode(buf), buf);
    memmove(buf + 1, buf, n + 1);
    buf[0] = '[';
    buf[n + 1] = ']';
    buf[n + 2] = '\0';
    CHECK_STR(recode(buf), "ERR: nesting deeper than 64 @64");

    n = 0;
    for (int i = 0; i < 64; i++) {
        memcpy(buf + n, "{\"a\":", 5);
        n += 5;
    }
    buf[n++] = '1';
    for (int i = 0; i < 64; i++)
        buf[n++] = '}';
    buf[n] = '\0';
    CHECK_STR(recode(buf), buf);
    memmove(buf + 1, buf, n + 1);
    buf[0] = '[';
    buf[n + 1] = ']';
    buf[n + 2] = '\0';
    CHECK_STR(recode(buf), "ERR: nesting deeper than 64 @316");

    /* A long run of brackets fails at the limit, not when the C stack runs out. */
    size_t big = 1000000;
    char *deep = malloc(big);
    REQUIRE(deep != NULL);
    memset(deep, '[', big);
    CHECK_STR(recode_n(deep, big), "ERR: nesting deeper than 64 @64");
    free(deep);

    /* The encoder has the same limit, so whatever decodes also encodes. */
    CHECK(luaL_dostring(L, "local t = 1; for i = 1, 64 do t = {t} end; return t") == LUA_OK);
    exo_buf_t b = EXO_BUF_INIT;
    CHECK(exo_json_encode(L, -1, &b, &err) == 0);
    CHECK(b.len == 129);
    lua_newtable(L);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    b.len = 0;
    CHECK(exo_json_encode(L, -1, &b, &err) == -EINVAL);
    CHECK(has_prefix(err.msg, "tables nested deeper than 64 (a cycle?) at $[0][0][0]"));
    CHECK(b.len == 0);
    exo_buf_free(&b);
    lua_settop(L, 0);
}

static void test_encode_values(void)
{
    CHECK_STR(enc_expr("nil"), "null");
    CHECK_STR(enc_expr("json.null"), "null");
    CHECK_STR(enc_expr("{true, false, json.null}"), "[true,false,null]");
    CHECK_STR(enc_expr("{}"), "{}");
    CHECK_STR(enc_expr("json.array()"), "[]");
    CHECK_STR(enc_expr("json.array{}"), "[]");
    CHECK_STR(enc_expr("{a = {}, b = json.array()}"), "{\"a\":{},\"b\":[]}");
    CHECK_STR(enc_expr("json.array{1, 2}"), "[1,2]");
    CHECK_STR(enc_expr("{[1] = 'a', [2] = 'b', [3] = 'c'}"), "[\"a\",\"b\",\"c\"]");
    CHECK_STR(enc_expr("{[3] = 'c', [1] = 'a', [2] = 'b'}"), "[\"a\",\"b\",\"c\"]");
    CHECK_STR(enc_expr("{[2.0] = 'b', [1] = 'a'}"), "[\"a\",\"b\"]");
    CHECK_STR(enc_expr("'text'"), "\"text\"");
    /* Metamethods are ignored: only the raw contents count. */
    CHECK_STR(enc_expr("setmetatable({}, {__index = {a = 1}, __pairs = error})"), "{}");
    CHECK_STR(enc_expr("setmetatable({x = 1}, {__len = function() return 5 end})"), "{\"x\":1}");
}

static void test_encode_errors(void)
{
    CHECK_STR(enc_expr("{result = {x = print}}"), "ERR: cannot encode function at $.result.x");
    CHECK_STR(enc_expr("{a = {1, 2, print}}"), "ERR: cannot encode function at $.a[2]");
    CHECK_STR(enc_expr("{['a b'] = {print}}"), "ERR: cannot encode function at $[\"a b\"][0]");
    CHECK_STR(enc_expr("{['1x'] = print}"), "ERR: cannot encode function at $[\"1x\"]");
    CHECK_STR(enc_expr("{_ok9 = print}"), "ERR: cannot encode function at $._ok9");
    CHECK_STR(enc_expr("print"), "ERR: cannot encode function at $");
    CHECK_STR(enc_expr("{1, 2, x = 3}"),
              "ERR: cannot encode table with mixed or non-string keys at $");
    CHECK_STR(enc_expr("{[0] = 1}"), "ERR: cannot encode table with mixed or non-string keys at $");
    CHECK_STR(enc_expr("{[1.5] = 1}"),
              "ERR: cannot encode table with mixed or non-string keys at $");
    CHECK_STR(enc_expr("{[true] = 1}"),
              "ERR: cannot encode table with mixed or non-string keys at $");
    CHECK_STR(enc_expr("{v = {[1] = 1, [3] = 3}}"), "ERR: cannot encode sparse array at $.v");
    CHECK_STR(enc_expr("{1, nil, 3}"), "ERR: cannot encode sparse array at $");
    CHECK_STR(enc_expr("json.array{1, x = 1}"),
              "ERR: cannot encode array with keys other than 1..n at $");
    CHECK_STR(enc_expr("{v = 0/0}"), "ERR: cannot encode NaN at $.v");
    CHECK_STR(enc_expr("{1/0}"), "ERR: cannot encode infinity at $[0]");
    CHECK_STR(enc_expr("-1/0"), "ERR: cannot encode -infinity at $");
    CHECK_STR(enc_expr("{s = 'ok\\xff'}"), "ERR: invalid UTF-8 in string at $.s");
    CHECK_STR(enc_expr("'\\xed\\xa0\\x80'"), "ERR: invalid UTF-8 in string at $");
    CHECK_STR(enc_expr("{['\\xff'] = 1}"), "ERR: invalid UTF-8 in object key at $[\"?\"]");
    CHECK_STR(enc_expr("io.stdout"), "ERR: cannot encode userdata at $");
    CHECK_STR(enc_expr("coroutine.create(print)"), "ERR: cannot encode thread at $");

    const char *cycle = enc_expr("(function() local t = {}; t.self = t; return t end)()");
    CHECK(has_prefix(cycle, "ERR: tables nested deeper than 64 (a cycle?) at $.self.self"));
    CHECK(strlen(cycle) == 5 + sizeof(err.msg) - 1);

    /* A lightuserdata other than NULL is not null. */
    exo_buf_t b = EXO_BUF_INIT;
    lua_pushlightuserdata(L, &b);
    CHECK(exo_json_encode(L, -1, &b, NULL) == -EINVAL);
    CHECK(b.len == 0);
    lua_pop(L, 1);
    exo_buf_free(&b);
}

static void test_sorted_keys(void)
{
    CHECK_STR(enc_expr("{b = 1, a = 2, aa = 3, B = 4, [''] = 5, ['\\xc3\\xa9'] = 6, "
                       "['a\\0b'] = 7}"),
              "{\"\":5,\"B\":4,\"a\":2,\"a\\u0000b\":7,\"aa\":3,\"b\":1,\"\xc3\xa9\":6}");

    /* More keys than fit on the C stack, inserted in two different orders, give the same
     * bytes. */
    const char *forward = "(function() local t = {} for i = 1, 40 do t[('k%02d'):format(i)] = i "
                          "end return t end)()";
    const char *backward = "(function() local t = {} for i = 40, 1, -1 do "
                           "t[('k%02d'):format(i)] = i end return t end)()";
    char first[1024];
    snprintf(first, sizeof(first), "%s", enc_expr(forward));
    CHECK(has_prefix(first, "{\"k01\":1,\"k02\":2,"));
    CHECK(strstr(first, "\"k39\":39,\"k40\":40}") != NULL);
    CHECK_STR(enc_expr(backward), first);

    /* Long keys, which Lua does not intern. */
    CHECK_STR(enc_expr("{[('z'):rep(50)] = 1, [('y'):rep(50)] = {[('x'):rep(60)] = 2}}"),
              "{\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\":{"
              "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\":2},"
              "\"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\":1}");
}

static void test_duplicates(void)
{
    REQUIRE(decode_ok("{\"a\":1,\"b\":0,\"a\":2}"));
    lua_getfield(L, -1, "a");
    CHECK(lua_tointeger(L, -1) == 2);
    lua_settop(L, 0);
    CHECK_STR(recode("{\"a\":1,\"a\":{\"x\":1},\"a\":[3]}"), "{\"a\":[3]}");
    /* Escaped and plain spellings of one key are the same key. */
    CHECK_STR(recode("{\"id\":1,\"\\u0069d\":2}"), "{\"id\":2}");
}

static void test_lua_representation(void)
{
    REQUIRE(decode_ok("[null, {}, []]"));
    lua_rawgeti(L, 1, 1);
    CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
    exo_json_push_null(L);
    CHECK(lua_rawequal(L, -1, -2));
    lua_settop(L, 1);

    /* The decoded array, json.array and exo_json_mark_array share one metatable. */
    CHECK(lua_getmetatable(L, 1));
    exo_json_push_array_mt(L);
    CHECK(lua_rawequal(L, -1, -2));
    lua_settop(L, 1);
    lua_rawgeti(L, 1, 2);
    CHECK(!lua_getmetatable(L, -1));
    lua_pop(L, 1);
    lua_rawgeti(L, 1, 3);
    CHECK(lua_getmetatable(L, -1));
    lua_settop(L, 1);
    lua_newtable(L);
    exo_json_mark_array(L, -1);
    CHECK(lua_getmetatable(L, -1));
    CHECK(lua_getmetatable(L, 1) && lua_rawequal(L, -1, -2));
    lua_settop(L, 0);
}

static void test_object_member(void)
{
    const char *v;
    size_t n;
    const char *s = "{\"jsonrpc\":\"2.0\",\"id\": 12345678901234567890123, \"x\":1}";

    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 23 && memcmp(v, "12345678901234567890123", n) == 0);
    REQUIRE(exo_json_object_member(s, strlen(s), "x", &v, &n));
    CHECK(n == 1 && *v == '1');
    CHECK(!exo_json_object_member(s, strlen(s), "i", &v, &n));
    CHECK(!exo_json_object_member(s, strlen(s), "idx", &v, &n));

    s = "{\"id\":1,\"method\":\"m\",\"id\":\"two\"}";
    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 5 && memcmp(v, "\"two\"", n) == 0);

    s = "{\"params\":{\"id\":5,\"x\":[{\"id\":6}]},\"method\":\"m\"}";
    CHECK(!exo_json_object_member(s, strlen(s), "id", &v, &n));
    s = "{\"params\":{\"id\":5},\"id\":7}";
    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 1 && *v == '7');

    s = "  {\n \"id\" :\t[1, {\"a\":\"]\"}] \n}  ";
    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 14 && memcmp(v, "[1, {\"a\":\"]\"}]", n) == 0);

    s = "{\"x\":\"a\\\"b}\",\"id\":\"a\\\"b}\"}";
    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 7 && memcmp(v, "\"a\\\"b}\"", n) == 0);

    /* The name is compared as the decoder reads it. */
    s = "{\"\\u0069d\":3}";
    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 1 && *v == '3');
    s = "{\"\\/d\":3,\"i\\\"d\":4,\"\\u00e9\":5}";
    REQUIRE(exo_json_object_member(s, strlen(s), "/d", &v, &n));
    CHECK(!exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(!exo_json_object_member(s, strlen(s), "\xc3\xa9", &v, &n));

    s = "{\"id\":null}";
    REQUIRE(exo_json_object_member(s, strlen(s), "id", &v, &n));
    CHECK(n == 4 && memcmp(v, "null", 4) == 0);

    const char *not_objects[] = {"[1]", "\"id\"", "", " ", "{", "{}", "{ }", "null", "{\"id\""};
    for (size_t i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++)
        CHECK(!exo_json_object_member(not_objects[i], strlen(not_objects[i]), "id", &v, &n));
}

static void test_array_next(void)
{
    const char *s = " [ {\"id\":1} ,\n 2 , \"x,y]\" ,[3, [4]] ,null\t] ";
    const char *want[] = {"{\"id\":1}", "2", "\"x,y]\"", "[3, [4]]", "null"};
    const char *e;
    size_t n, pos = 0, count = 0;

    while (exo_json_array_next(s, strlen(s), &pos, &e, &n)) {
        REQUIRE(count < 5);
        CHECK(n == strlen(want[count]) && memcmp(e, want[count], n) == 0);
        count++;
    }
    CHECK(count == 5);
    CHECK(!exo_json_array_next(s, strlen(s), &pos, &e, &n));

    const char *empty[] = {"[]", " [ ] ", "{}", "", "1", "[", "[1,", "\"[1]\""};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        pos = 0;
        count = 0;
        while (exo_json_array_next(empty[i], strlen(empty[i]), &pos, &e, &n))
            count++;
        CHECK(count == (i == 6 ? 1u : 0u));
    }
}

static void test_skip(void)
{
    static const struct {
        const char *s;
        size_t pos, want;
    } cases[] = {
        {"  123 ", 0, 5},
        {"-1.5e+3,", 0, 7},
        {"\"a\\\"b\" x", 0, 6},
        {"{\"a\":[1,{}],\"b\":\"}\"} ", 0, 20},
        {"[1, [2, 3]]", 3, 10},
        {"true", 0, 4},
        {"[false]", 1, 6},
        {"null ", 0, 4},
        {"", 0, (size_t)-1},
        {"   ", 0, (size_t)-1},
        {"[1,2", 0, (size_t)-1},
        {"\"abc", 0, (size_t)-1},
        {"\"abc\\\"", 0, (size_t)-1},
        {"]", 0, (size_t)-1},
        {",", 0, (size_t)-1},
        {"tru", 0, 3}, /* the text is trusted: literals are not spelled out */
        {"[1]", 5, (size_t)-1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = exo_json_skip(cases[i].s, strlen(cases[i].s), cases[i].pos);
        if (got != cases[i].want)
            fprintf(stderr, "skip(\"%s\", %zu) = %zu\n", cases[i].s, cases[i].pos, got);
        CHECK(got == cases[i].want);
    }
    CHECK(exo_json_skip(NULL, 0, 0) == (size_t)-1);
}

static void test_stack_and_collector(void)
{
    exo_buf_t b = EXO_BUF_INIT;

    lua_settop(L, 0);
    lua_pushinteger(L, 1);
    CHECK(exo_json_decode(L, "[1]", 3, &err) == 0 && lua_gettop(L) == 2);
    CHECK(exo_json_decode(L, "[1", 2, &err) == -EINVAL && lua_gettop(L) == 2);
    CHECK(exo_json_encode(L, 2, &b, &err) == 0 && lua_gettop(L) == 2);
    CHECK(lua_gc(L, LUA_GCISRUNNING, 0) == 1);
    lua_pushcfunction(L, luaopen_base);
    CHECK(exo_json_encode(L, -1, &b, &err) == -EINVAL && lua_gettop(L) == 3);
    CHECK(lua_gc(L, LUA_GCISRUNNING, 0) == 1);
    /* A collector someone else paused stays paused. */
    lua_gc(L, LUA_GCSTOP);
    CHECK(exo_json_encode(L, 2, &b, &err) == 0);
    CHECK(lua_gc(L, LUA_GCISRUNNING, 0) == 0);
    lua_gc(L, LUA_GCRESTART);
    /* Pseudo-indices work too. */
    CHECK(exo_json_encode(L, LUA_REGISTRYINDEX, &b, &err) == -EINVAL);
    CHECK(b.len == 6 && memcmp(b.data, "[1][1]", 6) == 0);
    exo_buf_free(&b);
    lua_settop(L, 0);
}

static void test_lua_binding(void)
{
    static const char code[] =
        "local json = ...\n"
        "assert(json.encode({b = 1, a = {json.null, true}}) == '{\"a\":[null,true],\"b\":1}')\n"
        "assert(json.encode(json.array()) == '[]' and json.encode({}) == '{}')\n"
        "local v = json.decode('{\"a\":[],\"n\":null,\"i\":9007199254740993,\"o\":{}}')\n"
        "assert(json.is_array(v.a) and not json.is_array(v) and not json.is_array(v.o))\n"
        "assert(v.n == json.null and json.null ~= nil)\n"
        "assert(math.type(v.i) == 'integer' and v.i == 9007199254740993)\n"
        "local ok, msg = pcall(json.encode, {f = print})\n"
        "assert(not ok and msg:find('json encode: cannot encode function at $.f', 1, true), msg)\n"
        "local r, e = json.decode('[1,')\n"
        "assert(r == nil and e == 'json decode: unexpected end of input at byte 3', e)\n"
        "assert(not pcall(json.decode, 123) and not pcall(json.decode))\n"
        "assert(not pcall(json.encode))\n"
        "assert(json.encode(nil) == 'null')\n"
        "assert(getmetatable(v.a) == 'exo.json.array')\n"
        "assert(not pcall(setmetatable, v.a, {}))\n"
        "local t = {1, 2}\n"
        "assert(json.array(t) == t and json.is_array(t) and json.array(t) == t)\n"
        "assert(not pcall(json.array, setmetatable({}, {})))\n"
        "assert(not pcall(json.array, 5))\n"
        "assert(json.is_array(5) == false and json.is_array({}) == false)\n"
        "assert(json.decode('\"x\"') == 'x')\n"
        "assert(select('#', json.decode('1')) == 1)\n"
        "return true\n";

    int top = lua_gettop(L);
    REQUIRE(luaL_loadstring(L, code) == LUA_OK);
    lua_getglobal(L, "json");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    CHECK(lua_toboolean(L, -1));
    lua_settop(L, top);
}

/* An allocator that refuses to grow anything once `budget` allocations have been made, to
 * check that running out of memory anywhere is reported and leaves the stack clean. */
static long budget = -1;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if ((ptr == NULL || nsize > osize) && budget >= 0 && budget-- == 0) {
        budget = 0;
        return NULL;
    }
    return realloc(ptr, nsize);
}

static void test_out_of_memory(void)
{
    const char *doc = "{\"a\":[1,2,{\"b\":\"c\\n\"}],\"k01\":1,\"k02\":2,\"k03\":3,\"k04\":4,"
                      "\"k05\":5,\"k06\":6,\"k07\":7,\"k08\":8,\"k09\":9,\"k10\":10,\"k11\":11,"
                      "\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":16,\"k17\":17,"
                      "\"a long key that Lua does not intern, being over forty bytes\":[]}";

    /* Phase 0 fails the n-th allocation of decoding, phase 1 that of encoding. */
    for (int phase = 0; phase < 2; phase++) {
        int rc = -ENOMEM;
        long n;
        for (n = 0; n < 10000 && rc != 0; n++) {
            lua_State *M = lua_newstate(limited_alloc, NULL);
            exo_buf_t b = EXO_BUF_INIT;
            REQUIRE(M != NULL);
            budget = phase == 0 ? n : -1;
            rc = exo_json_decode(M, doc, strlen(doc), &err);
            CHECK(rc == 0 || (rc == -ENOMEM && strcmp(err.msg, "out of memory") == 0));
            CHECK(lua_gettop(M) == (rc == 0));
            if (phase == 1) {
                REQUIRE(rc == 0);
                budget = n;
                rc = exo_json_encode(M, 1, &b, &err);
                CHECK(rc == 0 || (rc == -ENOMEM && strcmp(err.msg, "out of memory") == 0));
                CHECK(lua_gettop(M) == 1);
                CHECK(rc == 0 ? b.len > 100 : b.len == 0);
            }
            budget = -1;
            exo_buf_free(&b);
            lua_close(M);
        }
        CHECK(rc == 0 && n > 1);
    }
}

int main(void)
{
    L = luaL_newstate();
    if (L == NULL) return 1;
    luaL_openlibs(L);
    exo_json_open(L);
    lua_setglobal(L, "json");

    RUN(test_round_trips);
    RUN(test_integers);
    RUN(test_floats);
    RUN(test_strings);
    RUN(test_malformed);
    RUN(test_depth);
    RUN(test_encode_values);
    RUN(test_encode_errors);
    RUN(test_sorted_keys);
    RUN(test_duplicates);
    RUN(test_lua_representation);
    RUN(test_object_member);
    RUN(test_array_next);
    RUN(test_skip);
    RUN(test_stack_and_collector);
    RUN(test_lua_binding);
    RUN(test_out_of_memory);

    lua_close(L);
    TEST_END();
}
