/* Unit tests of the mount table watcher: the subscription table and its limits, start and stop,
 * and (as root, in a private mount namespace of this test process) that mounts produce rounds,
 * that a burst is coalesced and that its last change is reported. */
#include "mountwatch.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static int calls_;
static uint64_t last_gen_;

static void on_round(void *data, uint64_t generation)
{
    calls_++;
    last_gen_ = generation;
}

static void other(void *data, uint64_t generation) {}

static void test_subscriptions(void)
{
    static int slots[EXO_MOUNTWATCH_MAX_SUBSCRIBERS];
    CHECK(exo_mountwatch_subscribe(on_round, NULL) == 0);
    CHECK(exo_mountwatch_subscribe(on_round, NULL) == -EEXIST);
    for (int i = 1; i < EXO_MOUNTWATCH_MAX_SUBSCRIBERS; i++)
        CHECK(exo_mountwatch_subscribe(other, &slots[i]) == 0);
    CHECK(exo_mountwatch_subscribe(other, &slots[0]) == -ENOSPC);
    for (int i = 1; i < EXO_MOUNTWATCH_MAX_SUBSCRIBERS; i++)
        CHECK(exo_mountwatch_unsubscribe(other, &slots[i]) == 0);
    CHECK(exo_mountwatch_unsubscribe(other, &slots[1]) == -ENOENT);
    CHECK(exo_mountwatch_unsubscribe(on_round, NULL) == 0);
}

static void test_start_stop(void)
{
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    CHECK(exo_mountwatch_start(&loop, "/nonexistent/mountinfo") == -ENOENT);
    CHECK(!exo_mountwatch_active());
    REQUIRE(exo_mountwatch_start(&loop, NULL) == 0);
    CHECK(exo_mountwatch_active());
    CHECK(exo_mountwatch_start(&loop, NULL) == -EALREADY);
    exo_mountwatch_stop();
    exo_mountwatch_stop();
    CHECK(!exo_mountwatch_active());
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

static void on_stop_timer(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop for ms milliseconds. */
static void run_for(uv_loop_t *loop, unsigned ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_stop_timer, ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void test_rounds(void)
{
    char dir[] = "/tmp/exo-mountwatch-XXXXXX";
    if (geteuid() != 0 || unshare(CLONE_NEWNS) < 0 ||
        mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 || mkdtemp(dir) == NULL) {
        printf("test_rounds: skipped (needs root and a private mount namespace)\n");
        return;
    }
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE(exo_mountwatch_start(&loop, NULL) == 0);
    REQUIRE(exo_mountwatch_subscribe(on_round, NULL) == 0);
    /* The poll is registered with epoll on the loop's first turn; the kernel reports a change
     * made before that to the registration itself, where it is not seen (see mountwatch.h). */
    run_for(&loop, 10);
    calls_ = 0;
    uint64_t g0 = exo_mountwatch_generation();
    CHECK(mount("exo-test", dir, "tmpfs", 0, "size=64k") == 0);
    run_for(&loop, 50);
    CHECK(calls_ == 1);
    CHECK(last_gen_ == exo_mountwatch_generation() && last_gen_ > g0);
    /* A burst inside the quiet time: no round until it ends, then one with the last change. */
    for (int i = 0; i < 10; i++) {
        CHECK(umount(dir) == 0);
        CHECK(mount("exo-test", dir, "tmpfs", 0, "size=64k") == 0);
        run_for(&loop, 2);
    }
    CHECK(calls_ == 1);
    run_for(&loop, 2 * EXO_MOUNTWATCH_QUIET_MS);
    CHECK(calls_ == 2);
    CHECK(last_gen_ == exo_mountwatch_generation());
    CHECK(umount(dir) == 0);
    rmdir(dir);
    CHECK(exo_mountwatch_unsubscribe(on_round, NULL) == 0);
    exo_mountwatch_stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
    RUN(test_subscriptions);
    RUN(test_start_stop);
    RUN(test_rounds);
    TEST_END();
}
