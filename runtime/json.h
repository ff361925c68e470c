/* The agent's JSON codec (RFC 8259) between JSON text and Lua values, plus allocation-free
 * helpers that find raw spans in text already known to be valid.
 *
 * Lua representation: objects are plain tables with string keys; arrays are tables that carry
 * the array metatable (exo_json_push_array_mt), so an empty array stays an array; null is the
 * lightuserdata NULL (exo_json_push_null); integers that fit in int64 are lua_Integer, every
 * other number is a float. Decoding and encoding never raise and never longjmp past the call:
 * each runs under its own lua_pcall, so L must be able to make calls (the main thread, or a
 * coroutine that is running or has returned, not one suspended in a yield or dead of an
 * error). */
#ifndef EXO_JSON_H
#define EXO_JSON_H

#include <stddef.h>
#include <lua.h>

#include "buf.h"

/* Containers (decoding) and tables (encoding) may nest this deep; one more is an error. */
#define EXO_JSON_MAX_DEPTH 64

/* The registry name of the array metatable. */
#define EXO_JSON_ARRAY_MT "exo.json.array"

typedef struct exo_json_err_s {
    size_t offset; /* byte offset of the problem in the input when decoding; 0 when encoding */
    char msg[128]; /* short, NUL-terminated, without the offset */
} exo_json_err_t;

/* Decodes exactly one JSON text from s[0..len) (whitespace allowed around it) and pushes the
 * value on L's stack. Returns 0, or -EINVAL with err->offset and err->msg describing the
 * malformed input, or -ENOMEM; nothing is pushed on failure. err may be NULL. */
int exo_json_decode(lua_State *L, const char *s, size_t len, exo_json_err_t *err);

/* Appends the JSON encoding of the value at stack index idx to out: object keys sorted
 * bytewise, so equal values always give equal bytes. Returns 0, or -EINVAL with err->msg
 * naming the problem and where it is (e.g. "cannot encode function at $.result.x"; array
 * positions are 0-based, as in JSONPath), or -ENOMEM. On failure out->len is restored to its
 * value at entry. The stack is left unchanged. err may be NULL. */
int exo_json_encode(lua_State *L, int idx, exo_buf_t *out, exo_json_err_t *err);

/* For text already known to be valid JSON: returns the offset just past the value that starts
 * at s[pos] (whitespace before it is skipped), or (size_t)-1 if the input is malformed or
 * ends early. Never reads outside s[0..len) and allocates nothing. */
size_t exo_json_skip(const char *s, size_t len, size_t pos);

/* If s[0..len) is a JSON object (after optional whitespace), finds the member whose name,
 * with escapes decoded, equals the plain ASCII key. The last occurrence wins, as in the
 * decoder. On success sets *val and *vlen to the raw text of the member's value and returns 1;
 * returns 0 if there is no such member or s is not an object. */
int exo_json_object_member(const char *s, size_t len, const char *key, const char **val,
                           size_t *vlen);

/* Iterates over the elements of the JSON array s[0..len). Start with *pos = 0; each call sets
 * *elem and *elen to the raw text of the next element (without surrounding whitespace),
 * advances *pos and returns 1. Returns 0 at the end, or if s is not an array. */
int exo_json_array_next(const char *s, size_t len, size_t *pos, const char **elem, size_t *elen);

/* Pushes the null sentinel, the lightuserdata NULL: one value everywhere, so `v == json.null`
 * holds for every decoded null. */
void exo_json_push_null(lua_State *L);

/* Pushes the array metatable, creating it in the registry under EXO_JSON_ARRAY_MT on first
 * use. It is protected (__metatable), so Lua code can neither alter it for every array at
 * once nor swap it on one array. Like any lua_push function it may raise a memory error. */
void exo_json_push_array_mt(lua_State *L);
/* 1 if the value at idx is a table carrying the array metatable, else 0; the stack is kept. */
int exo_json_is_array(lua_State *L, int idx);

/* Marks the table at idx as a JSON array by setting the array metatable on it, replacing any
 * other metatable. May raise a memory error. */
void exo_json_mark_array(lua_State *L, int idx);

/* A lua_CFunction (l_json.c) that pushes the Lua API table {encode, decode, null, array,
 * is_array}; registered as the module "exo.json". */
int exo_json_open(lua_State *L);

#endif
