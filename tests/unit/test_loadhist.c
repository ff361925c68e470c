/* Unit tests of the load history (runtime/loadhist.c): the ring (order, wrap-around, a clock
 * set back, the range query, its bounds), the history line and its strict parser, the console
 * line, the LOAD_SAMPLE fields, and the history file (damaged lines, compaction). Files go to
 * a mkdtemp directory under /tmp that is removed at the end. */
#include "loadhist.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static char dir_[] = "/tmp/exo-test-loadhist-XXXXXX";
static char err_[512];
static const int64_t NOW = 1764072000;

static exo_load_sample_t sample(int64_t epoch, unsigned cpu)
{
    exo_load_sample_t s = {.epoch = epoch, .cpu = (uint8_t)cpu, .mem = 50, .rootfs = 40};
    return s;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) return;
    fputs(text, f);
    fclose(f);
}

static size_t count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int c;
    while (f && (c = fgetc(f)) != EOF)
        n += c == '\n';
    if (f) fclose(f);
    return n;
}

static void test_sample_size(void)
{
    /* docs/decisions/0007-load-history.md counts on 32 bytes a sample. */
    CHECK(sizeof(exo_load_sample_t) == 32);
}

static void test_ring_order_and_wrap(void)
{
    exo_load_ring_t r;
    REQUIRE(exo_load_ring_init(&r, 3) == 0);
    for (int i = 0; i < 5; i++) {
        exo_load_sample_t s = sample(NOW + i * 60, (unsigned)i);
        exo_load_ring_push(&r, &s);
    }
    CHECK(r.n == 3);
    CHECK(exo_load_ring_at(&r, 0)->epoch == NOW + 120);
    CHECK(exo_load_ring_at(&r, 2)->epoch == NOW + 240);
    CHECK(exo_load_ring_at(&r, 2)->cpu == 4);
    CHECK(exo_load_ring_after(&r, NOW + 120) == 1);
    CHECK(exo_load_ring_after(&r, NOW) == 0);
    CHECK(exo_load_ring_after(&r, NOW + 240) == 3);
    exo_load_ring_free(&r);
}

static void test_ring_clock_back(void)
{
    exo_load_ring_t r;
    REQUIRE(exo_load_ring_init(&r, 10) == 0);
    for (int i = 0; i < 5; i++) {
        exo_load_sample_t s = sample(NOW + i * 60, (unsigned)i);
        exo_load_ring_push(&r, &s);
    }
    /* The same second again replaces the newest; an earlier one drops every later sample. */
    exo_load_sample_t same = sample(NOW + 240, 99);
    exo_load_ring_push(&r, &same);
    CHECK(r.n == 5 && exo_load_ring_at(&r, 4)->cpu == 99);
    exo_load_sample_t back = sample(NOW + 90, 7);
    exo_load_ring_push(&r, &back);
    CHECK(r.n == 3);
    CHECK(exo_load_ring_at(&r, 2)->epoch == NOW + 90 && exo_load_ring_at(&r, 2)->cpu == 7);
    exo_load_ring_free(&r);
}

static void test_ring_range(void)
{
    exo_load_ring_t r;
    size_t first;
    REQUIRE(exo_load_ring_init(&r, 100) == 0);
    CHECK(exo_load_ring_range(&r, INT64_MIN, INT64_MAX, 10, &first) == 0);
    for (int i = 0; i < 10; i++) {
        exo_load_sample_t s = sample(NOW + i * 60, (unsigned)i);
        exo_load_ring_push(&r, &s);
    }
    CHECK(exo_load_ring_range(&r, INT64_MIN, INT64_MAX, 10080, &first) == 10 && first == 0);
    /* Inclusive at both ends. */
    CHECK(exo_load_ring_range(&r, NOW + 60, NOW + 180, 10080, &first) == 3 && first == 1);
    CHECK(exo_load_ring_range(&r, NOW + 61, NOW + 179, 10080, &first) == 1 && first == 2);
    /* The newest within the limit. */
    CHECK(exo_load_ring_range(&r, INT64_MIN, NOW + 300, 2, &first) == 2 && first == 4);
    CHECK(exo_load_ring_range(&r, NOW + 1000, INT64_MAX, 5, &first) == 0);
    CHECK(exo_load_ring_range(&r, INT64_MIN, NOW - 1, 5, &first) == 0);
    CHECK(exo_load_ring_range(&r, NOW + 120, NOW + 120, 1, &first) == 1 && first == 2);
    exo_load_ring_free(&r);
}

static void test_ring_bounds(void)
{
    exo_load_ring_t r;
    CHECK(exo_load_ring_init(&r, 0) == -EINVAL);
    CHECK(exo_load_ring_init(&r, EXO_LOAD_MAX_SAMPLES + 1) == -EINVAL);
    REQUIRE(exo_load_ring_init(&r, EXO_LOAD_MAX_SAMPLES) == 0);
    exo_load_ring_free(&r);
    CHECK(exo_load_ring_capacity(24 * 3600000ull, 60000) == 1440);
    CHECK(exo_load_ring_capacity(3600000ull, 3600000) == 1);
    CHECK(exo_load_ring_capacity(168 * 3600000ull, 60000) == EXO_LOAD_MAX_SAMPLES);
    CHECK(exo_load_ring_capacity(24 * 3600000ull, 1000) == EXO_LOAD_MAX_SAMPLES);
    CHECK(exo_load_ring_capacity(3600000ull, 7000) == 515);
}

static void test_line_format_and_parse(void)
{
    char line[EXO_LOAD_LINE_MAX];
    exo_load_sample_t s = sample(NOW, 12), back;
    exo_load_line_format(&s, line, sizeof(line));
    CHECK_STR(line, "1764072000 12 50 40 -\n");
    REQUIRE(exo_load_line_parse(line, strlen(line), &back) == 0);
    CHECK(memcmp(&s, &back, sizeof(s)) == 0);
    s.n_gpu = EXO_LOAD_MAX_GPUS;
    for (int i = 0; i < EXO_LOAD_MAX_GPUS; i++)
        s.gpu[i] = 100;
    s.epoch = INT64_MAX;
    size_t len = exo_load_line_format(&s, line, sizeof(line));
    CHECK(len < EXO_LOAD_LINE_MAX && line[len - 1] == '\n');
    REQUIRE(exo_load_line_parse(line, len, &back) == 0);
    CHECK(memcmp(&s, &back, sizeof(s)) == 0);
    REQUIRE(exo_load_line_parse("0 0 0 0 5,97", 12, &back) == 0);
    CHECK(back.n_gpu == 2 && back.gpu[0] == 5 && back.gpu[1] == 97 && back.epoch == 0);

    static const char *const bad[] = {
        "",
        "\n",
        "1764072000 12 50 40\n",                                   /* no GPU field */
        "1764072000 12 50 40 - x\n",                               /* a sixth field */
        "1764072000 101 50 40 -\n",                                /* over 100 */
        "1764072000 12 50 40 101\n",                               /* a GPU over 100 */
        "1764072000  12 50 40 -\n",                                /* two spaces */
        "1764072000 012 50 40 -\n",                                /* a leading zero */
        "-1764072000 12 50 40 -\n",                                /* a sign */
        "+1764072000 12 50 40 -\n",                                /* a sign */
        "1764072000 12 50 40 5,\n",                                /* an empty GPU */
        "1764072000 12 50 40 ,5\n",                                /* an empty GPU */
        "1764072000 12 50 40 \n",                                  /* an empty GPU list */
        "99999999999999999999 1 1 1 -\n",                          /* past int64 */
        "9223372036854775808 1 1 1 -\n",                           /* INT64_MAX + 1 */
        "1764072000 12 50 40 -\r\n",                               /* a CR */
        "1764072000 1e1 50 40 -\n",                                /* not decimal */
        "1764072000 12 50 40 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1\n", /* 17 GPUs */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (exo_load_line_parse(bad[i], strlen(bad[i]), &back) != -EINVAL) {
            fprintf(stderr, "accepted: '%s'\n", bad[i]);
            CHECK(0);
        }
    }
}

static void test_console_line(void)
{
    char out[EXO_LOAD_CONSOLE_MAX];
    exo_load_sample_t s = sample(NOW, 3);
    exo_load_console_format(&s, out, sizeof(out));
    CHECK_STR(out, "{\"epoch\":1764072000,\"cpuPctUsed\":3,\"memPctUsed\":50,\"rootfsPctUsed\":40,"
                   "\"gpuPctUsed\":null}\n");
    s.n_gpu = 2;
    s.gpu[0] = 5;
    s.gpu[1] = 97;
    exo_load_console_format(&s, out, sizeof(out));
    CHECK_STR(out, "{\"epoch\":1764072000,\"cpuPctUsed\":3,\"memPctUsed\":50,\"rootfsPctUsed\":40,"
                   "\"gpuPctUsed\":[5,97]}\n");
    s.n_gpu = EXO_LOAD_MAX_GPUS;
    s.epoch = INT64_MAX;
    for (int i = 0; i < EXO_LOAD_MAX_GPUS; i++)
        s.gpu[i] = 100;
    size_t n = exo_load_console_format(&s, out, sizeof(out));
    CHECK(n < EXO_LOAD_CONSOLE_MAX - 1 && out[n - 1] == '\n' && out[n - 2] == '}');
}

static void test_fields(void)
{
    char text[EXO_LOAD_LINE_MAX];
    exo_priv_field_t f[5];
    exo_load_sample_t s = sample(NOW, 7), back;
    s.n_gpu = 1;
    s.gpu[0] = 100;
    exo_load_sample_fields(&s, text, f);
    CHECK(exo_load_sample_from_fields(f, 5, NOW, &back) == NULL);
    CHECK(memcmp(&s, &back, sizeof(s)) == 0);
    s.n_gpu = 0;
    exo_load_sample_fields(&s, text, f);
    CHECK(f[4].len == 0);
    CHECK(exo_load_sample_from_fields(f, 5, NOW, &back) == NULL && back.n_gpu == 0);
    CHECK(exo_load_sample_from_fields(f, 4, NOW, &back) != NULL);

    /* Each field out of its bounds. */
    exo_priv_field_t g[5] = {{"1764072000", 10}, {"1", 1}, {"2", 1}, {"3", 1}, {"", 0}};
    CHECK(exo_load_sample_from_fields(g, 5, NOW, &back) == NULL);
    g[1] = (exo_priv_field_t){"101", 3};
    CHECK_STR(exo_load_sample_from_fields(g, 5, NOW, &back),
              "a load sample with a percentage that is not an integer from 0 to 100");
    g[1] = (exo_priv_field_t){"-1", 2};
    CHECK(exo_load_sample_from_fields(g, 5, NOW, &back) != NULL);
    g[1] = (exo_priv_field_t){"1", 1};
    g[4] = (exo_priv_field_t){"1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", 33};
    CHECK_STR(exo_load_sample_from_fields(g, 5, NOW, &back), "a load sample with a bad GPU list");
    g[4] = (exo_priv_field_t){"1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", 31};
    CHECK(exo_load_sample_from_fields(g, 5, NOW, &back) == NULL && back.n_gpu == 16);
    g[4] = (exo_priv_field_t){"", 0};
    g[0] = (exo_priv_field_t){"1764158401", 10}; /* a day and a second ahead */
    CHECK_STR(exo_load_sample_from_fields(g, 5, NOW, &back),
              "a load sample with an epoch more than a day in the future");
    g[0] = (exo_priv_field_t){"1764158400", 10}; /* exactly a day ahead */
    CHECK(exo_load_sample_from_fields(g, 5, NOW, &back) == NULL);
    g[0] = (exo_priv_field_t){"17640720\0000", 11};
    CHECK_STR(exo_load_sample_from_fields(g, 5, NOW, &back), "a load sample with a bad epoch");
}

static void test_file_load_damaged(void)
{
    char path[128];
    exo_load_ring_t r;
    size_t lines, damaged;
    snprintf(path, sizeof(path), "%s/damaged", dir_);
    REQUIRE(exo_load_ring_init(&r, 100) == 0);
    CHECK(exo_load_file_load(&r, path, NOW, &lines, &damaged, err_, sizeof(err_)) == -ENOENT);
    CHECK(r.n == 0);
    char longline[400];
    memset(longline, '7', sizeof(longline) - 2);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    char text[1024];
    snprintf(text, sizeof(text),
             "1764071880 1 50 40 -\n"
             "garbage\n"
             "%s"
             "1764071940 2 50 40 5\n"
             "1764072000 101 50 40 -\n" /* out of range */
             "1864072000 3 50 40 -\n"   /* far in the future */
             "1764072000 4 50 40 -\n"
             "1764072060 5 5", /* cut short by a crash */
             longline);
    write_file(path, text);
    REQUIRE(exo_load_file_load(&r, path, NOW, &lines, &damaged, err_, sizeof(err_)) == 0);
    CHECK(lines == 8);
    CHECK(damaged == 5);
    CHECK(r.n == 3);
    CHECK(exo_load_ring_at(&r, 0)->epoch == 1764071880);
    CHECK(exo_load_ring_at(&r, 1)->n_gpu == 1);
    CHECK(exo_load_ring_at(&r, 2)->cpu == 4);
    exo_load_ring_free(&r);

    /* A symbolic link or a directory in its place is refused. */
    char link[160];
    snprintf(link, sizeof(link), "%s/link", dir_);
    REQUIRE(symlink(path, link) == 0);
    REQUIRE(exo_load_ring_init(&r, 10) == 0);
    CHECK(exo_load_file_load(&r, link, NOW, &lines, &damaged, err_, sizeof(err_)) == -ELOOP);
    CHECK(exo_load_file_load(&r, dir_, NOW, &lines, &damaged, err_, sizeof(err_)) == -EINVAL);
    exo_load_sample_t s = sample(NOW, 1);
    CHECK(exo_load_file_append(link, &s, err_, sizeof(err_)) == -ELOOP);
    exo_load_ring_free(&r);
}

/* Appends past twice the ring and compacts as the monitor does: the file stays bounded and
 * holds exactly the ring afterwards; a reload gives the same ring back. */
static void test_file_append_compact(void)
{
    char path[128];
    exo_load_ring_t r, again;
    size_t lines = 0, damaged;
    snprintf(path, sizeof(path), "%s/history", dir_);
    REQUIRE(exo_load_ring_init(&r, 5) == 0);
    for (int i = 0; i < 23; i++) {
        exo_load_sample_t s = sample(NOW + i, (unsigned)i);
        exo_load_ring_push(&r, &s);
        REQUIRE(exo_load_file_append(path, &s, err_, sizeof(err_)) == 0);
        if (++lines > 2 * r.cap) {
            REQUIRE(exo_load_file_compact(&r, path, err_, sizeof(err_)) == 0);
            lines = r.n;
        }
        CHECK(count_lines(path) == lines);
        CHECK(lines <= 2 * r.cap);
    }
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);
    REQUIRE(exo_load_ring_init(&again, 5) == 0);
    REQUIRE(exo_load_file_load(&again, path, NOW, &lines, &damaged, err_, sizeof(err_)) == 0);
    CHECK(damaged == 0);
    REQUIRE(again.n == r.n);
    for (size_t i = 0; i < r.n; i++)
        CHECK(memcmp(exo_load_ring_at(&r, i), exo_load_ring_at(&again, i),
                     sizeof(exo_load_sample_t)) == 0);
    CHECK(exo_load_ring_at(&again, 4)->epoch == NOW + 22);
    /* A leftover temporary file is replaced, not followed. */
    write_file(tmp, "leftover\n");
    CHECK(exo_load_file_compact(&r, path, err_, sizeof(err_)) == 0);
    CHECK(count_lines(path) == 5);
    exo_load_ring_free(&r);
    exo_load_ring_free(&again);
}

static void remove_dir(void)
{
    const char *names[] = {"damaged", "link", "history", "history.tmp"};
    char path[160];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir_, names[i]);
        unlink(path);
    }
    rmdir(dir_);
}

int main(void)
{
    if (mkdtemp(dir_) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_sample_size);
    RUN(test_ring_order_and_wrap);
    RUN(test_ring_clock_back);
    RUN(test_ring_range);
    RUN(test_ring_bounds);
    RUN(test_line_format_and_parse);
    RUN(test_console_line);
    RUN(test_fields);
    RUN(test_file_load_damaged);
    RUN(test_file_append_compact);
    remove_dir();
    TEST_END();
}
