#!/usr/bin/env bash
# README command 2: installs what is missing, builds, and runs every test:
#   format check, a Release build (-Werror), C unit tests + busted specs + fuzz corpus replay (ctest), end-to-end tests
#   against the real daemon with real clients (curl, openssl, Node), the client contract tests
#   (recorded exchanges of every API version, @open-rpc/test-coverage, a generated TypeScript
#   client), browser tests (Chromium
#   headless, directly and through nginx as Exosphere's proxy), then the same C tests and
#   end-to-end tests again on an AddressSanitizer + UndefinedBehaviorSanitizer build, and the
#   unit tests under valgrind.
# The last line is "N passed, N failed" over every test of every stage.
# Environment: EXO_TEST_QUICK=1 skips the sanitizer and valgrind stages (for quick local runs).
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
logs=$top/build-logs
mkdir -p "$logs"
total_pass=0
total_fail=0
failed_stages=()

note() { printf '\n=== %s\n' "$*"; }

# Adds a stage's counts: stage NAME PASSED FAILED
count() {
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
    [ "$3" -eq 0 ] || failed_stages+=("$1")
    printf -- '--- %s: %d passed, %d failed\n' "$1" "$2" "$3"
}

# ctest's summary: "97% tests passed, 1 tests failed out of 33"
count_ctest() {
    local name=$1 log=$2 line t f
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
    if [ -z "$line" ]; then count "$name" 0 1; return; fi
    f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    t=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    count "$name" $((t - f)) "$f"
}

# node --test (TAP): "# pass N" and "# fail N"
count_node() {
    local name=$1 log=$2 rc=$3 p f
    p=$(grep -E '^# pass [0-9]+' "$log" | tail -1 | awk '{print $3}')
    f=$(grep -E '^# fail [0-9]+' "$log" | tail -1 | awk '{print $3}')
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    count "$name" "$p" "$f"
}

# Any runner's plain summary: "N passed, N failed"
count_plain() {
    local name=$1 log=$2 rc=$3 line p f
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    p=$(awk '{print $1}' <<<"$line"); f=$(awk '{print $3}' <<<"$line")
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    count "$name" "$p" "$f"
}

note "dependencies"
scripts/deps.sh test || { echo "cannot install dependencies"; echo "0 passed, 1 failed"; exit 1; }
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) >"$logs/npm.log" 2>&1 ||
    { cat "$logs/npm.log"; echo "0 passed, 1 failed"; exit 1; }
# The browser tests have their own package (playwright-core), so the e2e stage needs no browser.
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) >>"$logs/npm.log" 2>&1 ||
    { cat "$logs/npm.log"; echo "0 passed, 1 failed"; exit 1; }
# The client contract tools (@open-rpc/test-coverage) and the typed TypeScript client
# (typescript, json-schema-to-typescript) have packages of their own too.
for p in tests/contract tests/client-ts; do
    (cd "$p" && npm ci --no-audit --no-fund --loglevel=error) >>"$logs/npm.log" 2>&1 ||
        { cat "$logs/npm.log"; echo "0 passed, 1 failed"; exit 1; }
done

note "format (clang-format --dry-run)"
if clang-format --dry-run --Werror runtime/*.[ch] tests/unit/*.[ch] tests/fuzz/*.c tests/tools/*.c \
        >"$logs/format.log" 2>&1; then
    count format 1 0
else
    head -40 "$logs/format.log"
    count format 0 1
fi

note "release build (-O3 as bench/ builds it; its own warnings, such as format truncation, are errors too)"
if cmake -S . -B build-release -DEXO_WERROR=ON -DEXO_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >"$logs/cmake-release.log" 2>&1 &&
        cmake --build build-release -j"$(nproc)" >>"$logs/cmake-release.log" 2>&1; then
    count build-release 1 0
else
    grep -E 'error|warning' "$logs/cmake-release.log" | head -20
    count build-release 0 1
fi

note "build (warnings are errors)"
if cmake -S . -B build -DEXO_WERROR=ON -DEXO_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$logs/cmake.log" 2>&1 &&
        cmake --build build -j"$(nproc)" >>"$logs/cmake.log" 2>&1; then
    count build 1 0
    note "ctest: unit, lua, fuzz replay"
    (cd build && ctest --output-on-failure -j2) >"$logs/ctest.log" 2>&1
    tail -25 "$logs/ctest.log"
    count_ctest ctest "$logs/ctest.log"
    note "end-to-end"
    EXO_AGENT_BIN=$top/build/exosphere-guest-agent \
        node --test --test-reporter=tap tests/e2e/ >"$logs/e2e.log" 2>&1
    rc=$?
    grep -E '^not ok|^# (pass|fail)' "$logs/e2e.log" | head -40
    [ $rc -eq 0 ] || grep -B2 -A30 '^not ok' "$logs/e2e.log" | head -120
    count_node e2e "$logs/e2e.log" $rc
    note "client contract: recorded exchanges of every API version, the OpenRPC reference tools, examples extraction"
    (cd tests/contract && EXO_AGENT_BIN=$top/build/exosphere-guest-agent \
        node --test --test-reporter=tap lib.test.mjs extract-examples.test.mjs replay.test.mjs reference.test.mjs) \
        >"$logs/contract.log" 2>&1
    rc=$?
    grep -E '^ *not ok|^# (pass|fail)' "$logs/contract.log" | head -40
    [ $rc -eq 0 ] || grep -B2 -A30 '^ *not ok' "$logs/contract.log" | head -120
    count_node contract "$logs/contract.log" $rc
    note "typed client: TypeScript generated from each version's OpenRPC document, compiled (tsc --strict), run against the agent"
    EXO_AGENT_BIN=$top/build/exosphere-guest-agent \
        node --test --test-reporter=tap tests/client-ts/client.test.mjs >"$logs/client-ts.log" 2>&1
    rc=$?
    grep -E '^ *not ok|^# (pass|fail)' "$logs/client-ts.log" | head -40
    [ $rc -eq 0 ] || grep -B2 -A30 '^ *not ok' "$logs/client-ts.log" | head -120
    count_node client-ts "$logs/client-ts.log" $rc
    note "browser: Chromium headless, directly (CORS) and through nginx as Exosphere's proxy"
    EXO_AGENT_BIN=$top/build/exosphere-guest-agent \
        node --test --test-reporter=tap --test-concurrency=1 tests/browser/ >"$logs/browser.log" 2>&1
    rc=$?
    grep -E '^ *not ok|^# (pass|fail|skip)' "$logs/browser.log" | head -40
    [ $rc -eq 0 ] || grep -B2 -A30 '^ *not ok' "$logs/browser.log" | head -120
    count_node browser "$logs/browser.log" $rc
else
    tail -40 "$logs/cmake.log"
    count build 0 1
fi

if [ "${EXO_TEST_QUICK:-0}" != 1 ]; then
    note "packaging: .deb and .rpm for bullseye, bookworm and trixie; lintian, rpmlint, signed repositories"
    tests/packaging/run.sh >"$logs/packaging.log" 2>&1
    rc=$?
    grep -E '^not ok|^# glibc: ' "$logs/packaging.log" | head -40
    count_plain packaging "$logs/packaging.log" $rc

    note "systemd containers: install, upgrade, restart, reboot and purge on bullseye, bookworm and trixie"
    node --test --test-reporter=tap --test-concurrency=1 tests/system/ >"$logs/system.log" 2>&1
    rc=$?
    grep -E '^not ok|^# (pass|fail|skip)|took' "$logs/system.log" | head -40
    [ $rc -eq 0 ] || grep -B2 -A30 '^not ok' "$logs/system.log" | head -120
    count_node system "$logs/system.log" $rc

    note "compatibility: OpenSSL 1.1.1 and Lua 5.4 of Debian 11, in a cached chroot"
    tests/compat/openssl11.sh >"$logs/compat.log" 2>&1
    rc=$?
    grep -E '^(ok|not ok) ' "$logs/compat.log"
    count_plain compat-openssl11 "$logs/compat.log" $rc

    note "sanitizers: build with ASan + UBSan"
    if cmake -S . -B build-asan -DEXO_WERROR=ON -DEXO_TESTS=ON -DEXO_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
            >"$logs/cmake-asan.log" 2>&1 &&
            cmake --build build-asan -j"$(nproc)" >>"$logs/cmake-asan.log" 2>&1; then
        count build-asan 1 0
        (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2 -L 'unit|fuzz') \
            >"$logs/ctest-asan.log" 2>&1
        tail -8 "$logs/ctest-asan.log"
        count_ctest ctest-asan "$logs/ctest-asan.log"
        EXO_AGENT_BIN=$top/build-asan/exosphere-guest-agent EXO_SANITIZED=1 \
            node --test --test-reporter=tap tests/e2e/ >"$logs/e2e-asan.log" 2>&1
        rc=$?
        grep -E '^not ok|^# (pass|fail)' "$logs/e2e-asan.log" | head -40
        [ $rc -eq 0 ] || grep -B2 -A30 '^not ok' "$logs/e2e-asan.log" | head -120
        count_node e2e-asan "$logs/e2e-asan.log" $rc
    else
        tail -40 "$logs/cmake-asan.log"
        count build-asan 0 1
    fi

    note "valgrind: unit tests"
    vp=0; vf=0
    for t in build/test_*; do
        [ -x "$t" ] || continue
        # test_pam runs under pam_wrapper, preloaded; the suppression is Linux-PAM's own leak.
        pre=; supp=
        if [ "$(basename "$t")" = test_pam ]; then
            pre=$(pkg-config --libs pam_wrapper); supp=--suppressions=tests/unit/pam/valgrind.supp
        fi
        if env ${pre:+LD_PRELOAD=$pre} valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
                --error-exitcode=99 $supp "$t" >"$logs/valgrind-$(basename "$t").log" 2>&1; then
            vp=$((vp + 1))
        else
            vf=$((vf + 1)); echo "valgrind: $(basename "$t") failed"; tail -30 "$logs/valgrind-$(basename "$t").log"
        fi
    done
    count valgrind "$vp" "$vf"
fi

# The login tests' accounts have published passwords (one is in sudo): none outlives the run.
if [ "$(id -u)" -eq 0 ]; then
    for u in exo-admin exo-user exo-locked exo-expired exo-pwexpired; do
        if id "$u" >/dev/null 2>&1; then userdel -r "$u" >/dev/null 2>&1 || true; fi
    done
fi

echo
[ ${#failed_stages[@]} -eq 0 ] || echo "failed stages: ${failed_stages[*]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
