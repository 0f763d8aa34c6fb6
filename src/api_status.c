/* GET /: the built-in status page (web/status.html, compiled into the binary). It is one
 * self-contained file — no CDN, no external fonts — that reads the API from the browser
 * (with the same token, which it asks for when the API requires one). The page itself is
 * served without a token: it holds no data. */
#include <string.h>

#include "assets.h"
#include "http.h"

static void h_status_page(struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    const struct asset *a = asset_find("web/status.html");
    if (!a) {
        http_error(rs, 404, "not_found", "the status page is not in this build");
        return;
    }
    buf_reset(&rs->body);
    buf_append(&rs->body, a->data, a->len);
    rs->content_type = "text/html; charset=utf-8";
    /* the page's own <meta> policy pins its inline script and style by hash; framing can
     * only be refused by a header */
    rs->csp = "frame-ancestors 'none'";
}

const struct http_route api_status_routes[] = {
    {"GET", "/", true, h_status_page, NULL, NULL},
    {NULL, NULL, false, NULL, NULL, NULL},
};
