/* The monitor protocol's framing (privsep.c): what the monitor accepts from the worker before
 * its permit table looks at the fields. Every bound has a case. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "privsep.h"
#include "test.h"

static uint8_t buf[EXO_PRIV_MAX_MESSAGE + 64];

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void test_round_trip(void)
{
    exo_priv_field_t f[3] = {{"exo-user", 8}, {"A B:C", 5}, {"", 0}};
    int n = exo_priv_encode(buf, sizeof(buf), EXO_OP_LOGIN, 7, f, 3);
    REQUIRE(n == 12 + 3 * 4 + 8 + 5);
    exo_priv_msg_t m;
    const char *why = NULL;
    REQUIRE(exo_priv_decode(buf, (size_t)n, &m, &why) == 0);
    CHECK(m.op == EXO_OP_LOGIN && m.seq == 7 && m.n == 3);
    CHECK(exo_priv_field_is(&m.f[0], "exo-user"));
    CHECK(exo_priv_field_is(&m.f[1], "A B:C"));
    CHECK(exo_priv_field_is(&m.f[2], ""));
    CHECK(!exo_priv_field_is(&m.f[0], "exo-use"));
    char out[16];
    CHECK(exo_priv_field_copy(&m.f[1], out, sizeof(out)) == 0);
    CHECK_STR(out, "A B:C");
    CHECK(exo_priv_field_copy(&m.f[0], out, 8) == -1); /* no room for the terminator */
}

static void test_no_fields(void)
{
    int n = exo_priv_encode(buf, sizeof(buf), EXO_OP_READY, 1, NULL, 0);
    REQUIRE(n == 12);
    exo_priv_msg_t m;
    const char *why;
    CHECK(exo_priv_decode(buf, 12, &m, &why) == 0 && m.n == 0);
}

static void test_encode_limits(void)
{
    static char big[EXO_PRIV_MAX_MESSAGE];
    memset(big, 'x', sizeof(big));
    exo_priv_field_t f = {big, EXO_PRIV_MAX_MESSAGE - 16};
    CHECK(exo_priv_encode(buf, sizeof(buf), 1, 1, &f, 1) == EXO_PRIV_MAX_MESSAGE);
    f.len++;
    CHECK(exo_priv_encode(buf, sizeof(buf), 1, 1, &f, 1) == -EMSGSIZE);
    f.len = 10;
    CHECK(exo_priv_encode(buf, 20, 1, 1, &f, 1) == -EMSGSIZE); /* the buffer, not the limit */
    exo_priv_field_t many[EXO_PRIV_MAX_FIELDS + 1];
    for (size_t i = 0; i < EXO_PRIV_MAX_FIELDS + 1; i++)
        many[i] = (exo_priv_field_t){"a", 1};
    CHECK(exo_priv_encode(buf, sizeof(buf), 1, 1, many, EXO_PRIV_MAX_FIELDS) > 0);
    CHECK(exo_priv_encode(buf, sizeof(buf), 1, 1, many, EXO_PRIV_MAX_FIELDS + 1) == -EINVAL);
}

static int decode_fails(size_t len, const char *expect)
{
    exo_priv_msg_t m;
    const char *why = NULL;
    int rc = exo_priv_decode(buf, len, &m, &why);
    if (rc != -EBADMSG || why == NULL || strstr(why, expect) == NULL) {
        fprintf(stderr, "  decode of %zu bytes: rc %d, why %s (wanted \"%s\")\n", len, rc,
                why ? why : "(null)", expect);
        return 0;
    }
    return m.n == 0;
}

static void test_decode_refusals(void)
{
    memset(buf, 0, sizeof(buf));
    CHECK(decode_fails(0, "shorter than a header"));
    CHECK(decode_fails(11, "shorter than a header"));
    CHECK(decode_fails(EXO_PRIV_MAX_MESSAGE + 1, "longer than the message limit"));
    put32(buf + 8, EXO_PRIV_MAX_FIELDS + 1);
    CHECK(decode_fails(12, "too many fields"));
    put32(buf + 8, 0xffffffffu);
    CHECK(decode_fails(12, "too many fields"));
    /* One field announced, its length missing or running past the end. */
    put32(buf + 8, 1);
    CHECK(decode_fails(12, "a field length runs past the end"));
    CHECK(decode_fails(15, "a field length runs past the end"));
    put32(buf + 12, 5);
    CHECK(decode_fails(16 + 4, "a field runs past the end"));
    put32(buf + 12, 0xffffffffu);
    CHECK(decode_fails(16 + 4, "a field runs past the end"));
    /* Bytes after the last field. */
    put32(buf + 12, 2);
    CHECK(decode_fails(16 + 3, "bytes after the last field"));
    put32(buf + 8, 0);
    CHECK(decode_fails(13, "bytes after the last field"));
}

static void test_field_with_nul(void)
{
    exo_priv_field_t f = {"ab\0cd", 5};
    int n = exo_priv_encode(buf, sizeof(buf), 1, 1, &f, 1);
    exo_priv_msg_t m;
    const char *why;
    REQUIRE(n > 0 && exo_priv_decode(buf, (size_t)n, &m, &why) == 0);
    char out[16];
    CHECK(exo_priv_field_copy(&m.f[0], out, sizeof(out)) == -1);
    CHECK(!exo_priv_field_is(&m.f[0], "ab"));
}

int main(void)
{
    RUN(test_round_trip);
    RUN(test_no_fields);
    RUN(test_encode_limits);
    RUN(test_decode_refusals);
    RUN(test_field_with_nul);
    TEST_END();
}
