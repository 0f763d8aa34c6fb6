/* libFuzzer target: configuration loading (config.c, lua_host.c with the config
 * environment) on arbitrary file contents. Invariants: no crash, no leak; either a config
 * or an error message. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_configure("error", "text");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/eventsink-fuzz-config-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    char *err = NULL;
    struct config *c = config_load(path, &err);
    assert(c || (err && *err));
    config_free(c);
    free(err);
    unlink(path);
    return 0;
}
