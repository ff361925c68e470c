/* Fuzz target for the monitor protocol's decoder (privsep.c), the first code in the root
 * monitor that touches what a possibly compromised worker sends. Any input must be refused or
 * decoded without reading outside it; a decoded message must encode back to the same bytes
 * (the framing has exactly one spelling). A disagreement calls abort(). The fields of a decoded
 * message also go through the job record checks (jobstore.c), and the input through the job
 * file's line parser, which must never accept what the checks refuse. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobstore.h"
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
    int64_t expiry;
    if (exo_job_put_check(m.f, m.n, 1000000, 86400, &expiry) == NULL &&
        (expiry > 1000000 + 86400 || exo_job_id_check(m.f[0].p, m.f[0].len) != NULL ||
         exo_job_blob_check(m.f[2].p, m.f[2].len) != NULL))
        abort();
    char id[EXO_JOB_ID_LEN + 1];
    const char *blob;
    size_t blob_len;
    if (exo_job_line_parse((const char *)data, size, id, &expiry, &blob, &blob_len) == 0 &&
        (exo_job_id_check(id, strlen(id)) != NULL || exo_job_blob_check(blob, blob_len) != NULL))
        abort();
    return 0;
}
