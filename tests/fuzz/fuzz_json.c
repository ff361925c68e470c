/* Fuzz target for the JSON codec. Any input must be handled without a crash, a leak or a
 * stray stack slot; an input that decodes must encode, and re-decoding that encoding must give
 * the same bytes again (encoding is a fixed point). The raw-span helpers must agree with the
 * decoder: skip on where the value ends, object_member and array_next on what the members
 * and elements are. A disagreement calls abort(). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

/* The state lives across inputs, as a fuzz target's should; closing it at exit lets leak
 * checkers (LeakSanitizer, valgrind) tell the codec's leaks apart from it. */
static void close_state(void)
{
    lua_close(L);
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_json: %s\n", what);
    abort();
}

/* Encodes the value at idx into out, replacing its contents; whatever the decoder produced
 * must encode. */
static void encode(int idx, exo_buf_t *out)
{
    exo_json_err_t err;

    out->len = 0;
    if (exo_json_encode(L, idx, out, &err) != 0) {
        fprintf(stderr, "fuzz_json: cannot encode a decoded value: %s\n", err.msg);
        abort();
    }
}

/* Checks that the raw span s[0..len) decodes on its own to a value that encodes as `want`. */
static void check_span(const char *s, size_t len, const exo_buf_t *want, exo_buf_t *tmp)
{
    exo_json_err_t err;

    if (exo_json_decode(L, s, len, &err) != 0) fail("a raw span does not decode");
    encode(-1, tmp);
    lua_pop(L, 1);
    if (tmp->len != want->len || memcmp(tmp->data, want->data, want->len) != 0)
        fail("a raw span differs from what the decoder made of it");
}

static int is_array(int idx)
{
    int marked = 0;
    if (lua_getmetatable(L, idx)) {
        exo_json_push_array_mt(L);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return marked;
}

/* The member of the decoded object at index 1 named key must be found by
 * exo_json_object_member exactly when the decoder has it, with the same value. */
static void check_member(const char *s, size_t size, const char *key, exo_buf_t *a, exo_buf_t *b)
{
    const char *v = NULL;
    size_t n = 0;
    int found = exo_json_object_member(s, size, key, &v, &n);

    lua_pushstring(L, key);
    lua_rawget(L, 1);
    if (found != !lua_isnil(L, -1)) fail("object_member disagrees with the decoder about a member");
    if (found) {
        encode(-1, a);
        check_span(v, n, a, b);
    }
    lua_pop(L, 1);
}

/* exo_json_array_next must step through exactly the elements of the decoded array at 1. */
static void check_elements(const char *s, size_t size, exo_buf_t *a, exo_buf_t *b)
{
    const char *e;
    size_t n, pos = 0;
    lua_Integer i = 0;

    while (exo_json_array_next(s, size, &pos, &e, &n)) {
        lua_rawgeti(L, 1, ++i);
        encode(-1, a);
        lua_pop(L, 1);
        check_span(e, n, a, b);
    }
    if ((lua_Unsigned)i != lua_rawlen(L, 1))
        fail("array_next disagrees with the decoder about the number of elements");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *v;
    exo_buf_t first = EXO_BUF_INIT, second = EXO_BUF_INIT;
    exo_json_err_t err;
    size_t n, pos = 0;

    if (L == NULL) {
        if ((L = luaL_newstate()) == NULL) fail("no Lua state");
        atexit(close_state);
    }

    /* The raw helpers must stay inside the input whatever it is. */
    size_t end = exo_json_skip(s, size, 0);
    if (end != (size_t)-1 && end > size) fail("skip went past the end");
    if (exo_json_object_member(s, size, "id", &v, &n) && (v < s || n > size - (size_t)(v - s)))
        fail("object_member went past the end");
    while (exo_json_array_next(s, size, &pos, &v, &n))
        if (v < s || n > size - (size_t)(v - s) || pos > size) fail("array_next went past the end");

    int rc = exo_json_decode(L, s, size, &err);
    if (rc != 0) {
        if (rc != -EINVAL || lua_gettop(L) != 0 || err.offset > size || err.msg[0] == '\0')
            fail("a failed decode is not reported properly");
        return 0;
    }
    if (lua_gettop(L) != 1) fail("decode did not push exactly one value");
    if (end == (size_t)-1) fail("skip rejects valid JSON");
    for (size_t i = end; i < size; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            fail("skip ended before the value did");

    encode(1, &first);
    if (exo_json_decode(L, first.data, first.len, &err) != 0) fail("the encoding does not decode");
    encode(2, &second);
    if (first.len != second.len || memcmp(first.data, second.data, first.len) != 0)
        fail("encoding is not a fixed point");
    lua_settop(L, 1);

    if (lua_type(L, 1) == LUA_TTABLE && is_array(1)) {
        check_elements(s, size, &first, &second);
    } else if (lua_type(L, 1) == LUA_TTABLE) {
        check_member(s, size, "id", &first, &second);
        check_member(s, size, "method", &first, &second);
    }
    if (lua_gettop(L) != 1) fail("the stack is unbalanced");
    lua_settop(L, 0);
    exo_buf_free(&first);
    exo_buf_free(&second);
    return 0;
}
