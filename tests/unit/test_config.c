/* Unit tests of the configuration parser: every value type, every error message, defaults,
 * validation, the dump, and the shipped packaging/agent.conf. Run from the repository root,
 * as ctest does, so that packaging/agent.conf is found. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define PACKAGED_METHODS_DIR "/usr/share/exosphere-guest-agent/methods"

static char err_[512];

/* Parses text on top of the defaults and returns the error message, or "OK". */
static const char *parse_err(const char *text)
{
    exo_config_t c;
    if (exo_config_defaults(&c) != 0) return "defaults failed";
    strcpy(err_, "OK");
    int rc = exo_config_parse(&c, text, strlen(text), "agent.conf", err_, sizeof(err_));
    if ((rc == 0) != (strcmp(err_, "OK") == 0)) strcpy(err_, "return code and message disagree");
    if (rc != 0 && rc != -EINVAL) strcpy(err_, "unexpected return code");
    exo_config_free(&c);
    return err_;
}

/* Parses text on top of the defaults into c, which the caller frees. */
static int parse_into(exo_config_t *c, const char *text)
{
    if (exo_config_defaults(c) != 0) return -ENOMEM;
    err_[0] = '\0';
    return exo_config_parse(c, text, strlen(text), "agent.conf", err_, sizeof(err_));
}

/* Validates the defaults after applying text, and returns the message or "OK". */
static const char *validate_err(const char *text)
{
    exo_config_t c;
    if (parse_into(&c, text) != 0) {
        exo_config_free(&c);
        return "parse failed";
    }
    strcpy(err_, "OK");
    exo_config_validate(&c, err_, sizeof(err_));
    exo_config_free(&c);
    return err_;
}

/* Returns the dump of c as a string that the caller frees. */
static char *dump(const exo_config_t *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) return NULL;
    exo_config_dump(c, f);
    fclose(f);
    return text;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int ch;
    while ((ch = fgetc(f)) != EOF)
        fputc(ch, out);
    fclose(out);
    fclose(f);
    return text;
}

static void test_defaults(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    REQUIRE(c.listen.n == 2);
    CHECK_STR(c.listen.items[0], "0.0.0.0:8443");
    CHECK_STR(c.listen.items[1], "[::]:8443");
    CHECK_STR(c.unix_socket, "/run/exosphere-guest-agent/agent.sock");
    CHECK(c.unix_socket_mode == 0666);
    CHECK(c.tls == 1);
    CHECK(c.allow_plain_http == 0);
    CHECK(c.tls_certificate == NULL);
    CHECK(c.tls_private_key == NULL);
    CHECK_STR(c.state_dir, "/var/lib/exosphere-guest-agent");
    CHECK(c.max_connections == 1024);
    CHECK(c.max_header_size == 16 * 1024);
    CHECK(c.max_body_size == 1024 * 1024);
    CHECK(c.header_timeout_ms == 10000);
    CHECK(c.body_timeout_ms == 30000);
    CHECK(c.idle_timeout_ms == 75000);
    CHECK(c.max_pipelined == 16);
    CHECK(c.max_batch == 100);
    CHECK(c.call_timeout_ms == 30000);
    CHECK(c.drain_timeout_ms == 10000);
    REQUIRE(c.method_dirs.n == 1);
    CHECK_STR(c.method_dirs.items[0], EXO_DEFAULT_METHODS_DIR);
    CHECK(c.cpu_sample_interval_ms == 2000);
    CHECK(c.log_level == EXO_LOG_INFO);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
    /* Freeing twice is harmless because free leaves the structure zeroed. */
    exo_config_free(&c);
    CHECK(c.listen.items == NULL && c.unix_socket == NULL);
}

static void test_every_key(void)
{
    exo_config_t c;
    const char *text = "[server]\n"
                       "listen = 127.0.0.1:8080\n"
                       "unix_socket = /tmp/agent.sock\n"
                       "unix_socket_mode = 0600\n"
                       "tls = no\n"
                       "allow_plain_http = yes\n"
                       "tls_certificate = /etc/ssl/agent.pem\n"
                       "tls_private_key = \"/etc/ssl/agent.key\"\n"
                       "state_dir = /srv/state\n"
                       "max_connections = 10\n"
                       "max_header_size = 8K\n"
                       "max_body_size = 2M\n"
                       "header_timeout = 500ms\n"
                       "body_timeout = 2m\n"
                       "idle_timeout = 1h\n"
                       "max_pipelined = 1\n"
                       "max_batch = 10000\n"
                       "call_timeout = 45s\n"
                       "drain_timeout = 0s\n"
                       "[methods]\n"
                       "dirs = /usr/share/m, /etc/exosphere-guest-agent/methods.d\n"
                       "cpu_sample_interval = 100ms\n"
                       "[log]\n"
                       "level = debug\n";
    REQUIRE(parse_into(&c, text) == 0);
    REQUIRE(c.listen.n == 1);
    CHECK_STR(c.listen.items[0], "127.0.0.1:8080");
    CHECK_STR(c.unix_socket, "/tmp/agent.sock");
    CHECK(c.unix_socket_mode == 0600);
    CHECK(c.tls == 0);
    CHECK(c.allow_plain_http == 1);
    CHECK_STR(c.tls_certificate, "/etc/ssl/agent.pem");
    CHECK_STR(c.tls_private_key, "/etc/ssl/agent.key");
    CHECK_STR(c.state_dir, "/srv/state");
    CHECK(c.max_connections == 10);
    CHECK(c.max_header_size == 8192);
    CHECK(c.max_body_size == 2 * 1024 * 1024);
    CHECK(c.header_timeout_ms == 500);
    CHECK(c.body_timeout_ms == 120000);
    CHECK(c.idle_timeout_ms == 3600000);
    CHECK(c.max_pipelined == 1);
    CHECK(c.max_batch == 10000);
    CHECK(c.call_timeout_ms == 45000);
    CHECK(c.drain_timeout_ms == 0);
    REQUIRE(c.method_dirs.n == 2);
    CHECK_STR(c.method_dirs.items[0], "/usr/share/m");
    CHECK_STR(c.method_dirs.items[1], "/etc/exosphere-guest-agent/methods.d");
    CHECK(c.cpu_sample_interval_ms == 100);
    CHECK(c.log_level == EXO_LOG_DEBUG);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
}

static void test_booleans(void)
{
    static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes", "\"on\""};
    static const char *const no[] = {"false", "no", "off", "0", "False", "OFF", "\"0\""};
    char text[128];
    exo_config_t c;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(text, sizeof(text), "[server]\ntls = false\nallow_plain_http = %s\n", yes[i]);
        CHECK(parse_into(&c, text) == 0 && c.allow_plain_http == 1 && c.tls == 0);
        exo_config_free(&c);
        snprintf(text, sizeof(text), "[server]\ntls = %s\n", no[i]);
        CHECK(parse_into(&c, text) == 0 && c.tls == 0);
        exo_config_free(&c);
    }
    CHECK_STR(parse_err("[server]\ntls = maybe\n"),
              "agent.conf:2: [server] tls: expected true or false (or yes/no, on/off, 1/0), got "
              "'maybe'");
    CHECK_STR(parse_err("[server]\ntls =\n"), "agent.conf:2: [server] tls: expected true or false "
                                              "(or yes/no, on/off, 1/0), got ''");
}

static void test_sizes(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nmax_header_size = 1024\nmax_body_size = 64m\n") == 0);
    CHECK(c.max_header_size == 1024);
    CHECK(c.max_body_size == 64u * 1024 * 1024);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[server]\nmax_header_size = 1536\nmax_body_size = 3k\n") == 0);
    CHECK(c.max_header_size == 1536);
    CHECK(c.max_body_size == 3072);
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\n\n\n\n\n\nmax_body_size = lots\n"),
              "agent.conf:7: [server] max_body_size: expected a size like 512K or 1M, got 'lots'");
    CHECK_STR(parse_err("[server]\nmax_body_size = 1KB\n"),
              "agent.conf:2: [server] max_body_size: expected a size like 512K or 1M, got '1KB'");
    CHECK_STR(parse_err("[server]\nmax_body_size = -1K\n"),
              "agent.conf:2: [server] max_body_size: expected a size like 512K or 1M, got '-1K'");
    CHECK_STR(parse_err("[server]\nmax_body_size = 1.5M\n"),
              "agent.conf:2: [server] max_body_size: expected a size like 512K or 1M, got '1.5M'");
    CHECK_STR(parse_err("[server]\nmax_body_size = 128M\n"),
              "agent.conf:2: [server] max_body_size: 128M is out of range 1K..64M");
    CHECK_STR(parse_err("[server]\nmax_header_size = 1023\n"),
              "agent.conf:2: [server] max_header_size: 1023 is out of range 1K..1M");
    CHECK_STR(parse_err("[server]\nmax_header_size = 1G\n"),
              "agent.conf:2: [server] max_header_size: 1G is out of range 1K..1M");
    /* Numbers beyond 64 bits must be refused, not wrapped into range. */
    CHECK_STR(parse_err("[server]\nmax_header_size = 18446744073709551617\n"),
              "agent.conf:2: [server] max_header_size: 18446744073709551617 is out of range "
              "1K..1M");
    CHECK_STR(parse_err("[server]\nmax_body_size = 17179869184G\n"),
              "agent.conf:2: [server] max_body_size: 17179869184G is out of range 1K..64M");
}

static void test_durations(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nheader_timeout = 1500ms\nbody_timeout = 1H\n"
                           "call_timeout = 10M\n[methods]\ncpu_sample_interval = 1m\n") == 0);
    CHECK(c.header_timeout_ms == 1500);
    CHECK(c.body_timeout_ms == 3600000);
    CHECK(c.call_timeout_ms == 600000);
    CHECK(c.cpu_sample_interval_ms == 60000);
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\ncall_timeout = 30\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got '30' (durations need a unit)");
    CHECK_STR(parse_err("[server]\ncall_timeout = 30 s\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got '30 s'");
    CHECK_STR(parse_err("[server]\ncall_timeout = 1d\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got '1d'");
    CHECK_STR(parse_err("[server]\ncall_timeout = s\n"),
              "agent.conf:2: [server] call_timeout: expected a duration like 500ms, 30s, 5m or "
              "1h, got 's'");
    CHECK_STR(parse_err("[methods]\ncpu_sample_interval = 61s\n"),
              "agent.conf:2: [methods] cpu_sample_interval: 61s is out of range 100ms..1m");
    CHECK_STR(parse_err("[methods]\ncpu_sample_interval = 99ms\n"),
              "agent.conf:2: [methods] cpu_sample_interval: 99ms is out of range 100ms..1m");
    CHECK_STR(parse_err("[server]\nidle_timeout = 2h\n"),
              "agent.conf:2: [server] idle_timeout: 2h is out of range 100ms..1h");
    CHECK_STR(parse_err("[server]\ndrain_timeout = 99999999999999h\n"),
              "agent.conf:2: [server] drain_timeout: 99999999999999h is out of range 0s..1h");
}

static void test_numbers_and_modes(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nunix_socket_mode = 660\nmax_connections = 100000\n") == 0);
    CHECK(c.unix_socket_mode == 0660);
    CHECK(c.max_connections == 100000);
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[server]\nunix_socket_mode = 0\n") == 0);
    CHECK(c.unix_socket_mode == 0);
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\nmax_connections = 0\n"),
              "agent.conf:2: [server] max_connections: 0 is out of range 1..100000");
    CHECK_STR(parse_err("[server]\nmax_connections = many\n"),
              "agent.conf:2: [server] max_connections: expected a whole number from 1 to "
              "100000, got 'many'");
    CHECK_STR(parse_err("[server]\nmax_batch = 1e3\n"),
              "agent.conf:2: [server] max_batch: expected a whole number from 1 to 10000, got "
              "'1e3'");
    CHECK_STR(parse_err("[server]\nmax_pipelined = 1025\n"),
              "agent.conf:2: [server] max_pipelined: 1025 is out of range 1..1024");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = 0668\n"),
              "agent.conf:2: [server] unix_socket_mode: expected an octal mode like 0660, got "
              "'0668'");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = rw-rw-rw-\n"),
              "agent.conf:2: [server] unix_socket_mode: expected an octal mode like 0660, got "
              "'rw-rw-rw-'");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = 1777\n"),
              "agent.conf:2: [server] unix_socket_mode: 1777 is out of range 0000..0777");
    CHECK_STR(parse_err("[server]\nunix_socket_mode = 00660\n"),
              "agent.conf:2: [server] unix_socket_mode: expected an octal mode like 0660, got "
              "'00660'");
}

static void test_log_levels(void)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char text[64];
    exo_config_t c;
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof(text), "[log]\nlevel = %s\n", names[i]);
        CHECK(parse_into(&c, text) == 0 && c.log_level == (exo_log_level_t)i);
        CHECK_STR(exo_log_level_name((exo_log_level_t)i), names[i]);
        exo_config_free(&c);
    }
    CHECK(parse_into(&c, "[log]\nlevel = WARN\n") == 0 && c.log_level == EXO_LOG_WARN);
    exo_config_free(&c);
    CHECK_STR(exo_log_level_name((exo_log_level_t)7), "unknown");
    CHECK_STR(parse_err("[log]\nlevel = warning\n"),
              "agent.conf:2: [log] level: expected one of debug, info, warn, error, got "
              "'warning'");
}

static void test_lists(void)
{
    exo_config_t c;
    /* Quoted items keep commas, '#' and escaped quotes and backslashes; bare ones are trimmed. */
    REQUIRE(parse_into(&c, "[methods]\n"
                           "dirs =  \"/a,b\" ,/plain , \"/x \\\"q\\\" \\\\ # y\",\"/z\"  \n") == 0);
    REQUIRE(c.method_dirs.n == 4);
    CHECK_STR(c.method_dirs.items[0], "/a,b");
    CHECK_STR(c.method_dirs.items[1], "/plain");
    CHECK_STR(c.method_dirs.items[2], "/x \"q\" \\ # y");
    CHECK_STR(c.method_dirs.items[3], "/z");
    exo_config_free(&c);
    REQUIRE(parse_into(&c, "[server]\nlisten = [::1]:1, 127.0.0.1:2,localhost:0\n") == 0);
    REQUIRE(c.listen.n == 3);
    CHECK_STR(c.listen.items[0], "[::1]:1");
    CHECK_STR(c.listen.items[1], "127.0.0.1:2");
    CHECK_STR(c.listen.items[2], "localhost:0");
    exo_config_free(&c);
    /* An empty listen list leaves only the Unix socket. */
    REQUIRE(parse_into(&c, "[server]\nlisten =\n") == 0);
    CHECK(c.listen.n == 0 && c.listen.items == NULL);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    exo_config_free(&c);
    CHECK_STR(parse_err("[methods]\ndirs =\n"),
              "agent.conf:2: [methods] dirs: expected 1 to 16 items, got 0");
    CHECK_STR(parse_err("[methods]\ndirs = /a,,/b\n"),
              "agent.conf:2: [methods] dirs: item 2 of the list is empty; items are separated "
              "by single commas");
    CHECK_STR(parse_err("[methods]\ndirs = /a,\n"),
              "agent.conf:2: [methods] dirs: item 2 of the list is empty; items are separated "
              "by single commas");
    CHECK_STR(parse_err("[methods]\ndirs = /a, relative\n"),
              "agent.conf:2: [methods] dirs: expected an absolute path, got 'relative'");
    CHECK_STR(parse_err("[methods]\ndirs = \"/a\", \"/b\n"),
              "agent.conf:2: [methods] dirs: missing closing quote in \"/b");
    CHECK_STR(parse_err("[server]\nlisten = 0.0.0.0:8443, example.org:443\n"),
              "agent.conf:2: [server] listen: 'example.org:443' is not host:port with a numeric "
              "IPv4 address, an IPv6 address in brackets or localhost, and a port 0..65535");
    CHECK_STR(parse_err("[server]\nlisten = ::1:8443\n"),
              "agent.conf:2: [server] listen: '::1:8443' is an IPv6 address without brackets; "
              "write it like [::1]:8443");
    CHECK_STR(parse_err("[server]\nlisten = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,"
                        "21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,"
                        "45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65\n"),
              "agent.conf:2: [server] listen: expected 0 to 64 items, got 65");
}

static void test_paths(void)
{
    exo_config_t c;
    /* "" disables the Unix socket but keeps a string; for the certificate it means "none". */
    REQUIRE(parse_into(&c, "[server]\nunix_socket = \"\"\ntls_certificate = /c\n"
                           "tls_private_key = /k\n") == 0);
    CHECK_STR(c.unix_socket, "");
    CHECK_STR(c.tls_certificate, "/c");
    const char *unset = "[server]\ntls_certificate =\ntls_private_key = \"\"\n";
    REQUIRE(exo_config_parse(&c, unset, strlen(unset), "second.conf", err_, sizeof(err_)) == 0);
    CHECK(c.tls_certificate == NULL && c.tls_private_key == NULL);
    exo_config_free(&c);
    /* A value may contain '#' or ';' when nothing but text precedes it. */
    REQUIRE(parse_into(&c, "[server]\nstate_dir = /srv/a#b;c\n") == 0);
    CHECK_STR(c.state_dir, "/srv/a#b;c");
    exo_config_free(&c);
    /* Only the first '=' separates the key from the value. */
    REQUIRE(parse_into(&c, "[server]\nstate_dir = /srv/k=v\n") == 0);
    CHECK_STR(c.state_dir, "/srv/k=v");
    exo_config_free(&c);
    CHECK_STR(parse_err("[server]\nstate_dir =\n"),
              "agent.conf:2: [server] state_dir: expected an absolute path, got ''");
    CHECK_STR(parse_err("[server]\nunix_socket = agent.sock\n"),
              "agent.conf:2: [server] unix_socket: expected an absolute path or \"\" to disable, "
              "got 'agent.sock'");
    CHECK_STR(parse_err("[server]\ntls_certificate = cert.pem\n"),
              "agent.conf:2: [server] tls_certificate: expected an absolute path or \"\" for "
              "none, got 'cert.pem'");
    char text[300] = "[server]\nunix_socket = /";
    memset(text + strlen(text), 'a', 107);
    strcat(text, "\n");
    CHECK_STR(parse_err(text), "agent.conf:2: [server] unix_socket: path is longer than 107 bytes");
    text[strlen(text) - 2] = '\n';
    text[strlen(text) - 1] = '\0';
    CHECK_STR(parse_err(text), "OK");
}

static void test_syntax(void)
{
    exo_config_t c;
    /* Comments, blank lines, indentation, spaces inside the brackets, a section given twice,
     * CRLF line endings, a byte order mark and a last line without a newline. */
    const char *text = "\xef\xbb\xbf# comment\r\n"
                       "; another\r\n"
                       "\r\n"
                       "  [ server ]  \r\n"
                       "\t# indented comment\r\n"
                       "  max_batch=7\r\n"
                       "[log]\r\n"
                       "[server]\r\n"
                       "max_pipelined = 3";
    REQUIRE(parse_into(&c, text) == 0);
    CHECK(c.max_batch == 7);
    CHECK(c.max_pipelined == 3);
    exo_config_free(&c);
    CHECK_STR(parse_err(""), "OK");
    CHECK_STR(parse_err("[server]\r\nstate_dir = /srv\r\n"), "OK");
}

static void test_structure_errors(void)
{
    CHECK_STR(parse_err("[server]\n\n\n\n\n\n\n\n\n\n\nfoo = 1\n"),
              "agent.conf:12: unknown key 'foo' in section [server]");
    CHECK_STR(parse_err("[server]\nlevel = debug\n"),
              "agent.conf:2: unknown key 'level' in section [server]; it belongs in [log]");
    CHECK_STR(parse_err("# x\n[serve]\n"), "agent.conf:2: unknown section [serve]; the sections "
                                           "are [server], [methods], [log]");
    CHECK_STR(parse_err("[server\n"),
              "agent.conf:1: a section header must end with ']', got '[server'");
    CHECK_STR(parse_err("[server] # main\n"),
              "agent.conf:1: a section header must end with ']', got '[server] # main'");
    CHECK_STR(parse_err("tls = true\n"),
              "agent.conf:1: key 'tls' is outside any section; put it under [server]");
    CHECK_STR(parse_err("colour = blue\n"), "agent.conf:1: key 'colour' is outside any section");
    CHECK_STR(parse_err("[server]\ntls true\n"), "agent.conf:2: expected 'key = value', a "
                                                 "[section] header or a comment, got 'tls true'");
    CHECK_STR(parse_err("[server]\ntls = true\n\n[log]\n[server]\ntls = false\n"),
              "agent.conf:6: [server] tls: given twice, on lines 2 and 6");
    CHECK_STR(parse_err("[server]\nstate_dir = /srv # state\n"),
              "agent.conf:2: [server] state_dir: comments must be on a line of their own; quote "
              "the value if '#' belongs to it, in /srv # state");
    CHECK_STR(parse_err("[server]\ntls = true ; on\n"),
              "agent.conf:2: [server] tls: comments must be on a line of their own; quote the "
              "value if ';' belongs to it, in true ; on");
    CHECK_STR(parse_err("[server]\nstate_dir = \"/srv\" # state\n"),
              "agent.conf:2: [server] state_dir: unexpected text after the closing quote in "
              "\"/srv\" # state");
    CHECK_STR(parse_err("[server]\nstate_dir = \"/srv\n"),
              "agent.conf:2: [server] state_dir: missing closing quote in \"/srv");
    CHECK_STR(parse_err("[server]\nstate_dir = \"/srv\\n\"\n"),
              "agent.conf:2: [server] state_dir: unknown escape in \"/srv\\n\"; only \\\" and "
              "\\\\ are allowed");
    CHECK_STR(parse_err("[server]\nstate_dir = /s\"rv\"\n"),
              "agent.conf:2: [server] state_dir: a quote may only begin a value, in /s\"rv\"");
}

static void test_line_errors(void)
{
    char *text = malloc(5000);
    REQUIRE(text != NULL);
    /* A line of exactly 4096 bytes is accepted; CR of CRLF does not count towards it. */
    strcpy(text, "[server]\n#");
    memset(text + 10, 'x', 4095);
    strcpy(text + 4105, "\r\n");
    CHECK_STR(parse_err(text), "OK");
    strcpy(text + 4105, "x\n");
    CHECK_STR(parse_err(text), "agent.conf:2: line is longer than 4096 bytes");
    free(text);

    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    static const char nul[] = "[server]\ntls = tr\0ue\n";
    CHECK(exo_config_parse(&c, nul, sizeof(nul) - 1, "agent.conf", err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "agent.conf:2: line contains a NUL byte");
    /* Control bytes in a quoted value are replaced so that messages stay on one line. */
    const char *escape = "[log]\nlevel = x\x1b[2Jy\n";
    CHECK(exo_config_parse(&c, escape, strlen(escape), "agent.conf", err_, sizeof(err_)) ==
          -EINVAL);
    CHECK_STR(err_, "agent.conf:2: [log] level: expected one of debug, info, warn, error, got "
                    "'x?[2Jy'");
    /* A long value is cut short in the message. */
    char big[200] = "[log]\nlevel = ";
    memset(big + strlen(big), 'v', 100);
    CHECK(exo_config_parse(&c, big, strlen(big), "agent.conf", err_, sizeof(err_)) == -EINVAL);
    char want[80] = "got '";
    memset(want + strlen(want), 'v', 60);
    strcat(want, "...'");
    CHECK(strstr(err_, want) != NULL);
    /* A small buffer is filled without overflowing; no buffer at all is fine too. */
    char tiny[12];
    CHECK(exo_config_parse(&c, "x", 1, "agent.conf", tiny, sizeof(tiny)) == -EINVAL);
    CHECK_STR(tiny, "agent.conf:");
    CHECK(exo_config_parse(&c, "x", 1, "agent.conf", NULL, 0) == -EINVAL);
    exo_config_free(&c);
}

static void test_layering_and_atomicity(void)
{
    exo_config_t c;
    REQUIRE(parse_into(&c, "[server]\nmax_batch = 5\nstate_dir = /first\n") == 0);
    char *before = dump(&c);
    REQUIRE(before != NULL);
    /* A later text changes only the keys it names; a key may be given again in another text. */
    const char *second = "[server]\nmax_batch = 6\n";
    REQUIRE(exo_config_parse(&c, second, strlen(second), "b.conf", err_, sizeof(err_)) == 0);
    CHECK(c.max_batch == 6);
    CHECK_STR(c.state_dir, "/first");
    /* A failed parse leaves every earlier value, including those set before the bad line. */
    const char *bad = "[server]\nmax_batch = 7\nstate_dir = /second\nlisten = \"[::1]:1\"\n"
                      "tls = sometimes\n";
    CHECK(exo_config_parse(&c, bad, strlen(bad), "c.conf", err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "c.conf:5: [server] tls: expected true or false (or yes/no, on/off, 1/0), "
                    "got 'sometimes'");
    CHECK(c.max_batch == 6);
    CHECK_STR(c.state_dir, "/first");
    CHECK(c.listen.n == 2);
    c.max_batch = 5;
    char *after = dump(&c);
    REQUIRE(after != NULL);
    CHECK_STR(after, before);
    free(before);
    free(after);
    exo_config_free(&c);
}

static void test_validate(void)
{
    CHECK_STR(validate_err(""), "OK");
    CHECK_STR(validate_err("[server]\ntls_certificate = /c\n"),
              "[server] tls_private_key: must be set when tls_certificate is, since each needs "
              "the other");
    CHECK_STR(validate_err("[server]\ntls_private_key = /k\n"),
              "[server] tls_certificate: must be set when tls_private_key is, since each needs "
              "the other");
    CHECK_STR(validate_err("[server]\ntls_certificate = /c\ntls_private_key = /k\n"), "OK");
    CHECK_STR(validate_err("[server]\ntls = false\n"),
              "[server] tls: false serves plain HTTP, but listen has '0.0.0.0:8443', which is "
              "not a loopback address; listen on loopback only or set allow_plain_http = true");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = 127.0.0.1:1, [::1]:2\n"), "OK");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = [::1]:2, 10.0.0.5:80\n"),
              "[server] tls: false serves plain HTTP, but listen has '10.0.0.5:80', which is not "
              "a loopback address; listen on loopback only or set allow_plain_http = true");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = 127.9.9.9:1, localhost:2, "
                           "[::ffff:127.0.0.1]:3\n"),
              "OK");
    CHECK_STR(validate_err("[server]\ntls = false\nlisten = [::ffff:10.0.0.1]:3\n"),
              "[server] tls: false serves plain HTTP, but listen has '[::ffff:10.0.0.1]:3', "
              "which is not a loopback address; listen on loopback only or set "
              "allow_plain_http = true");
    CHECK_STR(validate_err("[server]\ntls = false\nallow_plain_http = true\n"), "OK");
    CHECK_STR(validate_err("[server]\nlisten = 127.0.0.1:1, 127.0.0.1:1\n"),
              "[server] listen: '127.0.0.1:1' is listed twice");
    CHECK_STR(validate_err("[server]\nlisten =\nunix_socket = \"\"\n"),
              "[server] listen: is empty and unix_socket is disabled, so there is nowhere to "
              "listen");

    /* Lists set from the command line are checked here, since no parser saw them. */
    static const char *const bad_items[] = {
        "127.0.0.1",        "127.0.0.1:",       "127.0.0.1:65536", "127.0.0.1:+80", "[::1]8443",
        "[::1:8443",        "[fe80::1%eth0]:1", "1.2.3:80",        "localhost.:80", ":8443",
        "127.0.0.1:123456", "[127.0.0.1]:80",   "0.0.0.0:84 43",   "[:::1]:80",
    };
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    for (size_t i = 0; i < sizeof(bad_items) / sizeof(bad_items[0]); i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "[server] listen: '%s' is not host:port with a numeric IPv4 address, an IPv6 "
                 "address in brackets or localhost, and a port 0..65535",
                 bad_items[i]);
        REQUIRE(exo_config_set_list(&c.listen, &bad_items[i], 1) == 0);
        CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
        CHECK_STR(err_, want);
    }
    static const char *const good[] = {"0.0.0.0:0", "[::]:65535", "localhost:8080"};
    REQUIRE(exo_config_set_list(&c.listen, good, 3) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == 0);
    REQUIRE(exo_config_set_list(&c.method_dirs, NULL, 0) == 0);
    CHECK(exo_config_validate(&c, err_, sizeof(err_)) == -EINVAL);
    CHECK_STR(err_, "[methods] dirs: expected 1 to 16 items, got 0");
    exo_config_free(&c);
}

static void test_setters(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    static const char *const dev[] = {"127.0.0.1:8080"};
    REQUIRE(exo_config_set_list(&c.listen, dev, 1) == 0);
    REQUIRE(c.listen.n == 1);
    CHECK_STR(c.listen.items[0], "127.0.0.1:8080");
    CHECK(c.listen.items[0] != dev[0]);
    REQUIRE(exo_config_set_list(&c.listen, NULL, 0) == 0);
    CHECK(c.listen.n == 0 && c.listen.items == NULL);
    REQUIRE(exo_config_set_string(&c.tls_certificate, "/cert") == 0);
    CHECK_STR(c.tls_certificate, "/cert");
    REQUIRE(exo_config_set_string(&c.tls_certificate, NULL) == 0);
    CHECK(c.tls_certificate == NULL);
    REQUIRE(exo_config_set_string(&c.state_dir, c.state_dir) == 0);
    CHECK_STR(c.state_dir, "/var/lib/exosphere-guest-agent");
    exo_config_free(&c);
}

static void test_dump_round_trip(void)
{
    exo_config_t c, d;
    REQUIRE(exo_config_defaults(&c) == 0);
    char *text = dump(&c);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "\n[server]\n# TCP addresses") != NULL);
    CHECK(strstr(text, "\nlisten = \"0.0.0.0:8443\", \"[::]:8443\"\n") != NULL);
    CHECK(strstr(text, "\nunix_socket_mode = 0666\n") != NULL);
    CHECK(strstr(text, "\ntls = true\n") != NULL);
    CHECK(strstr(text, "\ntls_certificate = \"\"\n") != NULL);
    CHECK(strstr(text, "\nmax_header_size = 16K\n") != NULL);
    CHECK(strstr(text, "\nmax_body_size = 1M\n") != NULL);
    CHECK(strstr(text, "\nidle_timeout = 75s\n") != NULL);
    CHECK(strstr(text, "\ncpu_sample_interval = 2s\n") != NULL);
    CHECK(strstr(text, "\n[log]\n# Least severe level logged: debug, info, warn or error.\n"
                       "level = info\n") != NULL);
    free(text);
    exo_config_free(&c);

    /* Values that need quoting, exact units and odd numbers survive a dump and a parse. */
    const char *odd = "[server]\n"
                      "listen = \"[::1]:1\"\n"
                      "unix_socket = \"\"\n"
                      "unix_socket_mode = 0\n"
                      "tls = off\n"
                      "tls_certificate = \"/c \\\"q\\\" \\\\ , # ;\"\n"
                      "tls_private_key = /k\n"
                      "max_header_size = 1025\n"
                      "max_body_size = 64M\n"
                      "header_timeout = 1001ms\n"
                      "body_timeout = 90s\n"
                      "idle_timeout = 60m\n"
                      "drain_timeout = 0ms\n"
                      "[methods]\n"
                      "dirs = \"/a,b\", /c\n"
                      "[log]\n"
                      "level = error\n";
    REQUIRE(parse_into(&c, odd) == 0);
    text = dump(&c);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "\nidle_timeout = 1h\n") != NULL);
    CHECK(strstr(text, "\nbody_timeout = 90s\n") != NULL);
    CHECK(strstr(text, "\nheader_timeout = 1001ms\n") != NULL);
    CHECK(strstr(text, "\nmax_header_size = 1025\n") != NULL);
    CHECK(strstr(text, "\ndrain_timeout = 0s\n") != NULL);
    CHECK(strstr(text, "\nunix_socket_mode = 0000\n") != NULL);
    CHECK(strstr(text, "\ntls_certificate = \"/c \\\"q\\\" \\\\ , # ;\"\n") != NULL);
    REQUIRE(exo_config_defaults(&d) == 0);
    CHECK(exo_config_parse(&d, text, strlen(text), "dump", err_, sizeof(err_)) == 0);
    CHECK_STR(err_, "");
    char *again = dump(&d);
    CHECK_STR(again, text);
    CHECK_STR(d.tls_certificate, "/c \"q\" \\ , # ;");
    REQUIRE(d.method_dirs.n == 2);
    CHECK_STR(d.method_dirs.items[0], "/a,b");
    free(again);
    free(text);
    exo_config_free(&c);
    exo_config_free(&d);
}

static void test_load(void)
{
    exo_config_t c;
    REQUIRE(exo_config_defaults(&c) == 0);
    CHECK(exo_config_load(&c, "/nonexistent/agent.conf", err_, sizeof(err_)) == -ENOENT);
    CHECK_STR(err_, "/nonexistent/agent.conf: cannot read: No such file or directory");
    CHECK(exo_config_load(&c, "/", err_, sizeof(err_)) == -EISDIR);
    CHECK_STR(err_, "/: cannot read: Is a directory");

    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char *text = "[server]\nmax_batch = 9\n[log]\nlevel = loud\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == -EINVAL);
    char want[128];
    snprintf(want, sizeof(want),
             "%s:4: [log] level: expected one of debug, info, warn, error, got 'loud'", path);
    CHECK_STR(err_, want);
    CHECK(c.max_batch == 100);
    CHECK(ftruncate(fd, 23) == 0);
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == 0);
    CHECK(c.max_batch == 9);
    /* A file over 1 MiB is refused before it is all read. */
    CHECK(ftruncate(fd, 2 * 1024 * 1024) == 0);
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == -EINVAL);
    snprintf(want, sizeof(want), "%s: larger than 1048576 bytes; is this the configuration file?",
             path);
    CHECK_STR(err_, want);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(exo_config_load(&c, path, err_, sizeof(err_)) == 0);
    close(fd);
    unlink(path);
    exo_config_free(&c);
}

/* The shipped file sets nothing: every key is commented out, so it parses to the defaults. */
static void test_packaged_file_is_defaults(void)
{
    char *text = read_file("packaging/agent.conf");
    REQUIRE(text != NULL);
    exo_config_t c, d;
    REQUIRE(exo_config_defaults(&c) == 0);
    REQUIRE(exo_config_defaults(&d) == 0);
    CHECK(exo_config_parse(&c, text, strlen(text), "packaging/agent.conf", err_, sizeof(err_)) ==
          0);
    char *a = dump(&c), *b = dump(&d);
    CHECK_STR(a, b);
    free(a);
    free(b);
    free(text);
    exo_config_free(&c);
    exo_config_free(&d);
}

/* Appends the key names of the "key = value" lines of text, in order, to names. Lines of the
 * packaged file that start "#key = " are commented-out settings and count too when
 * `commented` is set; prose comments start with "# ". */
static void key_names(const char *text, int commented, char *names, size_t len)
{
    names[0] = '\0';
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (commented && p[0] == '#' && p[1] >= 'a' && p[1] <= 'z')
            p++;
        else if (commented || p[0] == '#')
            continue;
        size_t n = strcspn(p, " =\n");
        if (p[n] == ' ' && strncmp(p + n, " = ", 3) == 0 && strlen(names) + n + 2 < len)
            strncat(strcat(names, " "), p, n);
    }
}

/* The shipped file lists every key in the table's order, and uncommenting every setting
 * gives the defaults again, so its documented values cannot drift from the code. */
static void test_packaged_file_documents_defaults(void)
{
    char *text = read_file("packaging/agent.conf");
    REQUIRE(text != NULL);
    exo_config_t c, d;
    REQUIRE(exo_config_defaults(&d) == 0);
    char *want = dump(&d), have_names[1024], want_names[1024];
    key_names(want, 0, want_names, sizeof(want_names));
    key_names(text, 1, have_names, sizeof(have_names));
    CHECK(strlen(want_names) > 100);
    CHECK_STR(have_names, want_names);

    for (char *p = text; p != NULL; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (p[0] == '#' && p[1] >= 'a' && p[1] <= 'z') p[0] = ' ';
    }
    REQUIRE(exo_config_defaults(&c) == 0);
    err_[0] = '\0';
    CHECK(exo_config_parse(&c, text, strlen(text), "uncommented", err_, sizeof(err_)) == 0);
    CHECK_STR(err_, "");
    /* The file shows the packaged location of the methods, which a build under another prefix
     * does not have as its default. */
    REQUIRE(c.method_dirs.n == 1);
    CHECK_STR(c.method_dirs.items[0], PACKAGED_METHODS_DIR);
    REQUIRE(exo_config_set_list(&c.method_dirs, (const char *const *)d.method_dirs.items,
                                d.method_dirs.n) == 0);
    char *have = dump(&c);
    CHECK_STR(have, want);
    free(have);
    free(want);
    free(text);
    exo_config_free(&c);
    exo_config_free(&d);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_every_key);
    RUN(test_booleans);
    RUN(test_sizes);
    RUN(test_durations);
    RUN(test_numbers_and_modes);
    RUN(test_log_levels);
    RUN(test_lists);
    RUN(test_paths);
    RUN(test_syntax);
    RUN(test_structure_errors);
    RUN(test_line_errors);
    RUN(test_layering_and_atomicity);
    RUN(test_validate);
    RUN(test_setters);
    RUN(test_dump_round_trip);
    RUN(test_load);
    RUN(test_packaged_file_is_defaults);
    RUN(test_packaged_file_documents_defaults);
    TEST_END();
}
