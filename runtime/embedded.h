/* The runtime's own Lua modules (the files of sandbox/), compiled into the binary. */
#ifndef EXO_EMBEDDED_H
#define EXO_EMBEDDED_H

#include <stddef.h>

typedef struct exo_embedded_s {
    const char *name; /* module name, e.g. "sandbox.schema" */
    const char *source;
    size_t len;
} exo_embedded_t;

/* Terminated by an entry whose name is NULL. */
extern const exo_embedded_t exo_embedded_lua[];

#endif
