# What the benchmark scripts share (sourced by bench/run.sh, ws.sh and versions.sh after they
# set `repo` and define `say` and `die`).

# Sets agent_bin: $EXO_AGENT_BIN, or a Release binary built in build-bench/ (the numbers in
# docs/performance.md are of a Release build).
bench_agent_bin() {
    if [ -n "${EXO_AGENT_BIN:-}" ]; then
        agent_bin=$EXO_AGENT_BIN
    else
        say "building a Release binary in build-bench/"
        cmake -S "$repo" -B "$repo/build-bench" -DCMAKE_BUILD_TYPE=Release -DEXO_TESTS=OFF >/dev/null
        cmake --build "$repo/build-bench" -j"$(nproc)" >/dev/null
        agent_bin=$repo/build-bench/exosphere-guest-agent
    fi
    [ -x "$agent_bin" ] || die "no agent binary at $agent_bin"
}
