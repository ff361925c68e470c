/* Replays inputs through a libFuzzer target without libFuzzer, so that each fuzz driver also
 * runs in ctest as a regression test over its corpus. Arguments are files or directories (whose
 * regular files are replayed in name order, for a reproducible run); with no inputs found, a few
 * built-in ones are used so that the driver itself is still exercised. A failing input
 * crashes or aborts, as under libFuzzer; to find which one, replay the files one at a time. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replayed;
static int failed;

static void replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *data = NULL;

    /* An exactly sized heap copy lets AddressSanitizer catch reads past the end. */
    if (f == NULL || fstat(fileno(f), &st) < 0 ||
        (data = malloc(st.st_size > 0 ? (size_t)st.st_size : 1)) == NULL ||
        fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "cannot read %s\n", path);
        failed++;
    } else {
        LLVMFuzzerTestOneInput(data, (size_t)st.st_size);
        replayed++;
    }
    free(data);
    if (f != NULL) fclose(f);
}

static int not_hidden(const struct dirent *entry)
{
    return entry->d_name[0] != '.';
}

static void replay_path(const char *path)
{
    struct stat st;
    struct dirent **entries;

    if (stat(path, &st) < 0) {
        fprintf(stderr, "%s: not found\n", path);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        replay_file(path);
        return;
    }
    int n = scandir(path, &entries, not_hidden, alphasort);
    for (int i = 0; i < n; i++) {
        char file[4096];
        snprintf(file, sizeof(file), "%s/%s", path, entries[i]->d_name);
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) replay_file(file);
        free(entries[i]);
    }
    if (n >= 0) free(entries);
}

int main(int argc, char **argv)
{
    static const char *const builtin[] = {
        "",
        "{}",
        "[1,2,3]",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":[]}",
        "\"\\ud83d\\ude00\"",
        "[{\"a\":",
        "\xff",
    };

    for (int i = 1; i < argc; i++)
        replay_path(argv[i]);
    if (replayed == 0 && failed == 0) {
        fprintf(stderr, "no inputs found; replaying %zu built-in inputs\n",
                sizeof(builtin) / sizeof(builtin[0]));
        for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
            size_t len = strlen(builtin[i]);
            uint8_t *copy = malloc(len > 0 ? len : 1);
            if (copy == NULL) return 1;
            memcpy(copy, builtin[i], len);
            LLVMFuzzerTestOneInput(copy, len);
            free(copy);
            replayed++;
        }
    }
    printf("%d passed, %d failed\n", replayed, failed);
    return failed ? 1 : 0;
}
