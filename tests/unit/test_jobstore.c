/* The monitor's job record store (runtime/jobstore.c): the checks of a JOB_PUT, the bound on
 * records, expiry, paging in id order, and the file (atomic save, load with damaged lines).
 * Files go to a mkdtemp directory under /tmp that is removed at the end. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobstore.h"
#include "test.h"

static char dir_[] = "/tmp/exo-test-jobstore-XXXXXX";

/* A job id made of one repeated hex digit (or two: a then b). */
static const char *id_of(char a, char b)
{
    static char id[EXO_JOB_ID_LEN + 1];
    memset(id, a, EXO_JOB_ID_LEN);
    id[EXO_JOB_ID_LEN - 1] = b;
    id[EXO_JOB_ID_LEN] = '\0';
    return id;
}

static int put(exo_job_store_t *s, const char *id, int64_t expiry, const char *blob, int64_t now)
{
    return exo_job_store_put(s, id, expiry, blob, strlen(blob), now);
}

static const exo_job_rec_t *get(const exo_job_store_t *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->r[i].id, id) == 0) return &s->r[i];
    return NULL;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) return;
    fputs(text, f);
    fclose(f);
}

static void test_checks(void)
{
    CHECK(exo_job_id_check(id_of('a', '0'), EXO_JOB_ID_LEN) == NULL);
    CHECK(exo_job_id_check("abc", 3) != NULL);
    CHECK(exo_job_id_check("ABCDEF0123456789abcdef0123456789", 32) != NULL);
    CHECK(exo_job_id_check("g0000000000000000000000000000000", 32) != NULL);
    CHECK(exo_job_blob_check("{}", 2) == NULL);
    CHECK(exo_job_blob_check("", 0) != NULL);
    CHECK(exo_job_blob_check("{\n}", 3) != NULL);
    CHECK(exo_job_blob_check("{\0}", 3) != NULL);
    char *big = malloc(EXO_JOB_MAX_BLOB + 1);
    REQUIRE(big);
    memset(big, 'x', EXO_JOB_MAX_BLOB + 1);
    CHECK(exo_job_blob_check(big, EXO_JOB_MAX_BLOB) == NULL);
    CHECK(exo_job_blob_check(big, EXO_JOB_MAX_BLOB + 1) != NULL);
    free(big);

    int64_t expiry;
    exo_priv_field_t f[3] = {{id_of('1', '2'), 32}, {"1100", 4}, {"{}", 2}};
    CHECK(exo_job_put_check(f, 3, 1000, 100, &expiry) == NULL && expiry == 1100);
    CHECK_STR(exo_job_put_check(f, 3, 1000, 99, &expiry),
              "a job record that expires after [jobs] keep");
    CHECK_STR(exo_job_put_check(f, 2, 1000, 100, &expiry), "a job record without exactly 3 fields");
    f[1] = (exo_priv_field_t){"01", 2};
    CHECK_STR(exo_job_put_check(f, 3, 1000, 100, &expiry), "a job record with a bad expiry");
    f[1] = (exo_priv_field_t){"-1", 2};
    CHECK_STR(exo_job_put_check(f, 3, 1000, 100, &expiry), "a job record with a bad expiry");
    f[1] = (exo_priv_field_t){"99999999999999999999", 20};
    CHECK_STR(exo_job_put_check(f, 3, 1000, 100, &expiry), "a job record with a bad expiry");
    f[1] = (exo_priv_field_t){"1", 1};
    f[0] = (exo_priv_field_t){"../../etc/passwd", 16};
    CHECK(exo_job_put_check(f, 3, 1000, 100, &expiry) != NULL);
}

static void test_put_replace_remove(void)
{
    exo_job_store_t s;
    REQUIRE(exo_job_store_init(&s, 10) == 0);
    CHECK(put(&s, id_of('b', 'b'), 200, "{\"b\":1}", 100) == 0);
    CHECK(put(&s, id_of('a', 'a'), 200, "{\"a\":1}", 100) == 0);
    CHECK(s.n == 2 && strcmp(s.r[0].id, id_of('a', 'a')) == 0); /* sorted by id */
    CHECK(put(&s, id_of('b', 'b'), 300, "{\"b\":2}", 100) == 0);
    CHECK(s.n == 2);
    CHECK_STR(get(&s, id_of('b', 'b'))->blob, "{\"b\":2}");
    CHECK(get(&s, id_of('b', 'b'))->expiry == 300);
    /* An expiry that has passed removes the record. */
    CHECK(put(&s, id_of('a', 'a'), 100, "{}", 100) == 0);
    CHECK(s.n == 1 && get(&s, id_of('a', 'a')) == NULL);
    CHECK(put(&s, id_of('c', 'c'), 50, "{}", 100) == 0 && s.n == 1);
    exo_job_store_free(&s);
    CHECK(exo_job_store_init(&s, 0) == -EINVAL);
}

static void test_bound_and_expiry(void)
{
    exo_job_store_t s;
    REQUIRE(exo_job_store_init(&s, 3) == 0);
    CHECK(put(&s, id_of('1', '1'), 500, "{}", 100) == 0);
    CHECK(put(&s, id_of('2', '2'), 300, "{}", 100) == 0);
    CHECK(put(&s, id_of('3', '3'), 400, "{}", 100) == 0);
    /* Full: the record expiring first (2) goes. */
    CHECK(put(&s, id_of('4', '4'), 600, "{}", 100) == 0);
    CHECK(s.n == 3 && get(&s, id_of('2', '2')) == NULL && get(&s, id_of('4', '4')) != NULL);
    /* A new record that would expire before all of them is not kept. */
    CHECK(put(&s, id_of('5', '5'), 200, "{}", 100) == 0);
    CHECK(s.n == 3 && get(&s, id_of('5', '5')) == NULL);
    /* Replacing never counts against the bound. */
    CHECK(put(&s, id_of('1', '1'), 700, "{\"x\":1}", 100) == 0 && s.n == 3);
    CHECK(exo_job_store_expire(&s, 450) == 1); /* 3 (400) */
    CHECK(s.n == 2 && get(&s, id_of('3', '3')) == NULL);
    CHECK(exo_job_store_expire(&s, 450) == 0);
    exo_job_store_free(&s);
}

static void test_paging(void)
{
    exo_job_store_t s;
    REQUIRE(exo_job_store_init(&s, 1000) == 0);
    /* 40 records of 1000 bytes: 7 fit in one page of EXO_JOB_PAGE_MAX bytes. */
    char blob[1001];
    memset(blob, 'x', 1000);
    blob[1000] = '\0';
    const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 40; i++)
        CHECK(put(&s, id_of(hex[i / 16], hex[i % 16]), 1000, blob, 10) == 0);
    static char page[EXO_JOB_PAGE_MAX];
    char after[EXO_JOB_ID_LEN + 1] = "";
    size_t seen = 0, pages = 0;
    int more = 1;
    while (more) {
        size_t used = exo_job_store_page(&s, after, strlen(after), page, sizeof(page), &more);
        CHECK(used <= sizeof(page));
        pages++;
        for (size_t pos = 0; pos < used;) {
            const char *nl = memchr(page + pos, '\n', used - pos);
            REQUIRE(nl);
            int64_t expiry;
            const char *b;
            size_t blen;
            char id[EXO_JOB_ID_LEN + 1];
            REQUIRE(exo_job_line_parse(page + pos, (size_t)(nl - page) + 1 - pos, id, &expiry, &b,
                                       &blen) == 0);
            CHECK(strcmp(id, s.r[seen].id) == 0 && expiry == 1000 && blen == 1000);
            memcpy(after, id, sizeof(after));
            seen++;
            pos = (size_t)(nl - page) + 1;
        }
        REQUIRE(pages < 100);
    }
    CHECK(seen == 40);
    CHECK(pages == 6);
    /* The largest record fits alone in a page. */
    exo_job_store_free(&s);
    REQUIRE(exo_job_store_init(&s, 10) == 0);
    char *big = malloc(EXO_JOB_MAX_BLOB + 1);
    REQUIRE(big);
    memset(big, 'y', EXO_JOB_MAX_BLOB);
    big[EXO_JOB_MAX_BLOB] = '\0';
    CHECK(put(&s, id_of('f', 'f'), 99999999999, big, 10) == 0);
    CHECK(exo_job_store_page(&s, "", 0, page, sizeof(page), &more) ==
              EXO_JOB_ID_LEN + 1 + 11 + 1 + EXO_JOB_MAX_BLOB + 1 &&
          more == 0);
    /* After the last id: nothing. */
    CHECK(exo_job_store_page(&s, id_of('f', 'f'), EXO_JOB_ID_LEN, page, sizeof(page), &more) == 0);
    free(big);
    exo_job_store_free(&s);
}

static void test_file(void)
{
    char path[160], tmp[170];
    snprintf(path, sizeof(path), "%s/jobs", dir_);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    exo_job_store_t s, t;
    size_t lines, damaged;
    char err[256];
    REQUIRE(exo_job_store_init(&s, 10) == 0);
    CHECK(exo_job_file_load(&s, path, 100, &lines, &damaged, err, sizeof(err)) == -ENOENT);
    CHECK(put(&s, id_of('a', '1'), 500, "{\"state\":\"succeeded\"}", 100) == 0);
    CHECK(put(&s, id_of('a', '2'), 150, "{\"state\":\"running\"}", 100) == 0);
    write_file(tmp, "leftover\n");
    CHECK(exo_job_file_save(&s, path, err, sizeof(err)) == 0);
    CHECK(access(tmp, F_OK) != 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    REQUIRE(exo_job_store_init(&t, 10) == 0);
    /* Loaded at 200: the second record has expired. */
    CHECK(exo_job_file_load(&t, path, 200, &lines, &damaged, err, sizeof(err)) == 0);
    CHECK(lines == 2 && damaged == 0 && t.n == 1);
    CHECK_STR(t.r[0].blob, "{\"state\":\"succeeded\"}");
    exo_job_store_free(&t);

    /* Damaged lines: bad ids, bad expiries, no blob, a control character, a line cut short, a
     * line longer than any good one; the good ones around them load. */
    char *text = malloc(3 * EXO_JOB_LINE_MAX);
    REQUIRE(text);
    int n = snprintf(text, 3 * EXO_JOB_LINE_MAX,
                     "%s 500 {\"ok\":1}\n"
                     "nothex 500 {}\n"
                     "%s 0500 {}\n"
                     "%s 500\n"
                     "%s 500 {\"tab\":\"\t\"}\n"
                     "%s 500 ",
                     id_of('b', '1'), id_of('b', '2'), id_of('b', '3'), id_of('b', '4'),
                     id_of('b', '5'));
    memset(text + n, 'z', EXO_JOB_MAX_BLOB + 10);
    n += EXO_JOB_MAX_BLOB + 10;
    n += snprintf(text + n, (size_t)(3 * EXO_JOB_LINE_MAX - n), "\n%s 500 {\"ok\":2}\n%s 500 {}",
                  id_of('b', '6'), id_of('b', '7'));
    write_file(path, text);
    free(text);
    REQUIRE(exo_job_store_init(&t, 10) == 0);
    CHECK(exo_job_file_load(&t, path, 100, &lines, &damaged, err, sizeof(err)) == 0);
    CHECK(lines == 8 && damaged == 6 && t.n == 2);
    CHECK(get(&t, id_of('b', '1')) != NULL && get(&t, id_of('b', '6')) != NULL);
    exo_job_store_free(&t);

    /* Not a regular file. */
    char sub[170];
    snprintf(sub, sizeof(sub), "%s/adir", dir_);
    mkdir(sub, 0700);
    REQUIRE(exo_job_store_init(&t, 10) == 0);
    CHECK(exo_job_file_load(&t, sub, 100, &lines, &damaged, err, sizeof(err)) == -EINVAL);
    rmdir(sub);
    exo_job_store_free(&t);
    exo_job_store_free(&s);
    unlink(path);
}

int main(void)
{
    if (mkdtemp(dir_) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_checks);
    RUN(test_put_replace_remove);
    RUN(test_bound_and_expiry);
    RUN(test_paging);
    RUN(test_file);
    rmdir(dir_);
    TEST_END();
}
