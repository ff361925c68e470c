/* Unit tests of the URL parser behind [metadata] url: what it accepts (and how it splits it),
 * and each refusal with its message. */
#include "url.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static char err_[256];
static exo_url_t url_;

/* Parses s into url_ and returns "OK" or the error message. */
static const char *parse(const char *s)
{
    strcpy(err_, "OK");
    int rc = exo_url_parse(s, &url_, err_, sizeof(err_));
    if ((rc == 0) != (strcmp(err_, "OK") == 0)) return "return code and message disagree";
    if (rc != 0 && rc != -EINVAL) return "unexpected return code";
    return err_;
}

static void test_default_url(void)
{
    REQUIRE(strcmp(parse("http://169.254.169.254/openstack/latest/meta_data.json"), "OK") == 0);
    CHECK_STR(url_.host, "169.254.169.254");
    CHECK(url_.host_kind == EXO_URL_IPV4);
    CHECK(url_.port == 80);
    CHECK_STR(url_.path, "/openstack/latest/meta_data.json");
}

static void test_hosts_and_ports(void)
{
    REQUIRE(strcmp(parse("http://127.0.0.1:8080/x"), "OK") == 0);
    CHECK_STR(url_.host, "127.0.0.1");
    CHECK(url_.port == 8080);
    REQUIRE(strcmp(parse("HTTP://[fe80::a9fe:a9fe]:65535/m?x=1"), "OK") == 0);
    CHECK_STR(url_.host, "fe80::a9fe:a9fe");
    CHECK(url_.host_kind == EXO_URL_IPV6);
    CHECK(url_.port == 65535);
    CHECK_STR(url_.path, "/m?x=1");
    REQUIRE(strcmp(parse("http://[::1]/"), "OK") == 0);
    CHECK_STR(url_.host, "::1");
    CHECK(url_.port == 80);
    REQUIRE(strcmp(parse("http://metadata.google.internal"), "OK") == 0);
    CHECK_STR(url_.host, "metadata.google.internal");
    CHECK(url_.host_kind == EXO_URL_NAME);
    CHECK_STR(url_.path, "/");
    REQUIRE(strcmp(parse("http://localhost:1?q"), "OK") == 0);
    CHECK_STR(url_.host, "localhost");
    CHECK(url_.port == 1);
    CHECK_STR(url_.path, "/?q");
    REQUIRE(strcmp(parse("http://a-b.example.:80/p"), "OK") == 0);
    CHECK_STR(url_.host, "a-b.example.");
}

static void test_schemes(void)
{
    CHECK_STR(parse("https://169.254.169.254/x"),
              "https is not supported: the metadata service is plain HTTP on the link-local "
              "network; use http://");
    CHECK_STR(parse("ftp://h/x"), "only http:// URLs are supported");
    CHECK_STR(parse("169.254.169.254/x"),
              "expected a URL like http://169.254.169.254/openstack/latest/meta_data.json");
    CHECK_STR(parse(""),
              "expected a URL like http://169.254.169.254/openstack/latest/meta_data.json");
}

static void test_bad_hosts(void)
{
    CHECK_STR(parse("http:///x"), "the host is missing");
    CHECK_STR(parse("http://:80/x"), "the host is missing");
    CHECK_STR(parse("http://999.1.1.1/x"), "'999.1.1.1' is not an IPv4 address");
    CHECK_STR(parse("http://[zz::1]/x"), "'zz::1' is not an IPv6 address");
    CHECK_STR(parse("http://[fe80::1%25eth0]/x"), "IPv6 zone ids (%eth0) are not supported");
    CHECK_STR(parse("http://[::1/x"),
              "an IPv6 address must be in brackets, like [fe80::a9fe:a9fe]");
    CHECK_STR(parse("http://::1/x"), "an IPv6 address must be in brackets, like [fe80::a9fe:a9fe]");
    CHECK_STR(parse("http://-a.example/x"),
              "the host must be an IPv4 address, an IPv6 address in brackets or a DNS name");
    CHECK_STR(parse("http://a..b/x"),
              "the host must be an IPv4 address, an IPv6 address in brackets or a DNS name");
    CHECK_STR(parse("http://a_b/x"),
              "the host must be an IPv4 address, an IPv6 address in brackets or a DNS name");
    CHECK_STR(parse("http://user:pw@169.254.169.254/x"),
              "user information (user@host) is not supported");
    char label[100];
    memset(label, 'a', 64);
    strcpy(label + 64, "/x");
    char long_label[120] = "http://";
    strcat(long_label, label);
    CHECK_STR(parse(long_label),
              "the host must be an IPv4 address, an IPv6 address in brackets or a DNS name");
    char host[400] = "http://";
    for (int i = 0; i < 64; i++)
        strcat(host, "abcd.");
    strcat(host, "x/");
    CHECK_STR(parse(host), "the host name is too long");
}

static void test_bad_ports(void)
{
    const char *msg = "the port must be a number from 1 to 65535";
    CHECK_STR(parse("http://h:/x"), msg);
    CHECK_STR(parse("http://h:0/x"), msg);
    CHECK_STR(parse("http://h:65536/x"), msg);
    CHECK_STR(parse("http://h:123456/x"), msg);
    CHECK_STR(parse("http://h:8a/x"), msg);
    CHECK_STR(parse("http://[::1]:/x"), msg);
    CHECK_STR(parse("http://[::1]x/x"), "expected ':port' or the path after ']'");
}

static void test_bad_paths(void)
{
    CHECK_STR(parse("http://h/x#frag"), "a fragment (#...) is not allowed");
    CHECK_STR(parse("http://h/a b"),
              "only printable ASCII without spaces is allowed (percent-encode the rest)");
    CHECK_STR(parse("http://h/\x7f"),
              "only printable ASCII without spaces is allowed (percent-encode the rest)");
    CHECK_STR(parse("http://h/caf\xc3\xa9"),
              "only printable ASCII without spaces is allowed (percent-encode the rest)");
    CHECK_STR(parse("http://h/\r\nHost: evil"),
              "only printable ASCII without spaces is allowed (percent-encode the rest)");
    /* The limits: a path of exactly EXO_URL_PATH_MAX bytes fits; one more does not. */
    char *u = malloc(EXO_URL_MAX + 16);
    REQUIRE(u != NULL);
    strcpy(u, "http://h");
    memset(u + 8, 'p', EXO_URL_PATH_MAX);
    u[8] = '/';
    u[8 + EXO_URL_PATH_MAX] = '\0';
    CHECK_STR(parse(u), "OK");
    CHECK(strlen(url_.path) == EXO_URL_PATH_MAX);
    strcat(u, "p");
    CHECK_STR(parse(u), "the path is longer than 1024 bytes");
    memset(u + 8, 'p', EXO_URL_MAX);
    u[8] = '/';
    u[8 + EXO_URL_MAX] = '\0';
    CHECK_STR(parse(u), "longer than 2048 bytes");
    free(u);
}

int main(void)
{
    RUN(test_default_url);
    RUN(test_hosts_and_ports);
    RUN(test_schemes);
    RUN(test_bad_hosts);
    RUN(test_bad_ports);
    RUN(test_bad_paths);
    TEST_END();
}
