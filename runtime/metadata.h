/* The client of the OpenStack metadata service: one fixed URL, fetched over plain HTTP/1.1
 * in the worker's loop, with its answer (or its failure) cached for a while. It is a minimal
 * client on purpose (docs/decisions/0009-metadata-client.md): one GET of one document on the
 * link-local network, no TLS, no redirects, no keep-alive, every size and time bounded.
 *
 * Every function that can fail returns 0 or a negative errno. */
#ifndef EXO_METADATA_H
#define EXO_METADATA_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "url.h"

/* The outcome of a fetch: body and len on success, else err (a one-line message such as
 * "HTTP 404" or "timed out after 2000 ms"). body is only valid during the callback. */
typedef void (*exo_metadata_cb)(void *data, const char *body, size_t len, const char *err);

/* The answer known without waiting: returns 1 with *body and *len set (a cached document, valid
 * until control returns to the loop) or with *err set ("not configured" when [metadata] url is
 * "", or a failure remembered for negative_cache); returns 0 when a fetch is needed. */
int exo_metadata_lookup(const exo_config_t *cfg, const char **body, size_t *len, const char **err);

/* Starts a fetch of cfg's URL, or joins the one in flight, and calls cb(data, ...) once when it
 * ends, always from the loop, never inside this function. Returns 0, or a negative errno
 * (-ENOMEM, -EBUSY with too many waiters, -EINVAL when the URL is not usable), in which case
 * cb is never called. */
int exo_metadata_fetch(uv_loop_t *loop, const exo_config_t *cfg, exo_metadata_cb cb, void *data);

/* Ends the fetch in flight (its waiters get "the agent is stopping") and drops the cache, so
 * that the loop can end. The loop must run afterwards for the handles to close. */
void exo_metadata_shutdown(void);

/* Registers the native module "exo.metadata" (l_metadata.c). */
void exo_metadata_preload(lua_State *L);

#endif
