/* Runs the PackageKit client (runtime/pkgop_pk.c) as a package operation's tool process would,
 * with the status lines on stdout and the log lines on stderr, for recording the fixtures of
 * tests/lua/fixtures/packages/packagekit/ on a machine (or container) with PackageKit:
 *   exo_pkrun ACTION LOCK_TIMEOUT_S [NAME...]
 * Exits with the client's exit status (0 or 1), 2 for bad arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkgop.h"

int main(int argc, char **argv)
{
    static exo_pkg_cmd_t cmd;
    exo_priv_field_t names[EXO_PKG_NAMES_MAX];
    if (argc < 3 || argc - 3 > EXO_PKG_NAMES_MAX) {
        fprintf(stderr, "usage: exo_pkrun ACTION LOCK_TIMEOUT_S [NAME...]\n");
        return 2;
    }
    int a = exo_pkg_action_parse(argv[1], strlen(argv[1]));
    for (int i = 3; i < argc; i++)
        names[i - 3] = (exo_priv_field_t){argv[i], strlen(argv[i])};
    if (a < 0 ||
        exo_pkg_cmd_build(&cmd, EXO_PKG_PACKAGEKIT, (exo_pkg_action_t)a,
                          (uint32_t)strtoul(argv[2], NULL, 10), names, (size_t)(argc - 3)) < 0) {
        fprintf(stderr, "exo_pkrun: bad action or names\n");
        return 2;
    }
    return exo_pk_run(&cmd, 2, 1);
}
