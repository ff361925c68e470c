/* A minimal unit-test harness: each test file is one executable registered with ctest.
 * CHECK records a failure and goes on; REQUIRE stops the current test. The program ends
 * with "N passed, N failed" and exits non-zero on any failure. */
#ifndef EXO_TEST_H
#define EXO_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failures_;
static int test_passed_;
static int test_failed_;
static const char *test_name_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, test_name_,       \
                    #cond);                                                                        \
            test_failures_++;                                                                      \
        }                                                                                          \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: requirement failed: %s\n", __FILE__, __LINE__, test_name_, \
                    #cond);                                                                        \
            test_failures_++;                                                                      \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: %s: \"%s\" != \"%s\"\n", __FILE__, __LINE__, test_name_,       \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
            test_failures_++;                                                                      \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int before_ = test_failures_;                                                              \
        test_name_ = #fn;                                                                          \
        fn();                                                                                      \
        if (test_failures_ == before_)                                                             \
            test_passed_++;                                                                        \
        else                                                                                       \
            test_failed_++;                                                                        \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("%d passed, %d failed\n", test_passed_, test_failed_);                              \
        return test_failed_ ? 1 : 0;                                                               \
    } while (0)

#endif
