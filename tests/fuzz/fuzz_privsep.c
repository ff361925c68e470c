/* Fuzz target for the monitor protocol's decoder (privsep.c), the first code in the root
 * monitor that touches what a possibly compromised worker sends. Any input must be refused or
 * decoded without reading outside it; a decoded message must encode back to the same bytes
 * (the framing has exactly one spelling). A disagreement calls abort(). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "privsep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    exo_priv_msg_t m;
    const char *why = NULL;
    if (exo_priv_decode(data, size, &m, &why) != 0) {
        if (why == NULL || m.n != 0) abort();
        return 0;
    }
    for (size_t i = 0; i < m.n; i++) {
        const uint8_t *p = (const uint8_t *)m.f[i].p;
        if (p < data || p + m.f[i].len > data + size) abort();
    }
    static uint8_t again[EXO_PRIV_MAX_MESSAGE];
    int n = exo_priv_encode(again, sizeof(again), m.op, m.seq, m.f, m.n);
    if (n < 0 || (size_t)n != size || memcmp(again, data, size) != 0) {
        fprintf(stderr, "fuzz_privsep: a decoded message does not encode to the same bytes\n");
        abort();
    }
    return 0;
}
