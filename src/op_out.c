#include "op_out.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "json.h"
#include "utf8.h"

#define MIN_COL 6

int op_term_width(void)
{
    if (!isatty(STDOUT_FILENO)) return 0;
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}

/* The length of the UTF-8 sequence that starts s (n bytes left), or 0 when it is not a
 * valid one. */
static size_t seq_len(const char *s, size_t n)
{
    unsigned char c = (unsigned char)s[0];
    size_t len = c < 0x80 ? 1 : c >> 5 == 6 ? 2 : c >> 4 == 14 ? 3 : c >> 3 == 30 ? 4 : 0;
    return len && len <= n && utf8_valid(s, len, NULL) ? len : 0;
}

void op_clean(struct buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t len = seq_len(s + i, n - i);
        unsigned char c = (unsigned char)s[i];
        bool control = len == 1 ? c < 0x20 || c == 0x7f
                                : len == 2 && c == 0xc2 && (unsigned char)s[i + 1] <= 0x9f;
        if (!len || control) {
            buf_putc(out, '?'); /* C0, DEL, C1, or a byte that is not UTF-8 */
            i += len ? len : 1;
        } else {
            buf_append(out, s + i, len);
            i += len;
        }
    }
}

/* "2026-12-02T05:42:14.470348+00:00" -> "2026-12-02T05:42:14+00:00" */
static bool drop_fraction(struct buf *out, const char *s, size_t n)
{
    if (n < 20 || s[4] != '-' || s[10] != 'T' || s[19] != '.') return false;
    size_t end = 20;
    while (end < n && s[end] >= '0' && s[end] <= '9')
        end++;
    op_clean(out, s, 19);
    op_clean(out, s + end, n - end);
    return true;
}

void op_json_write(const struct jsonv *v, struct buf *out)
{
    switch (v->type) {
    case JV_NULL:
        buf_puts(out, "null");
        break;
    case JV_BOOL:
        buf_puts(out, v->b ? "true" : "false");
        break;
    case JV_NUMBER:
        if (v->is_int)
            buf_printf(out, "%" PRId64, v->i);
        else
            buf_printf(out, "%.17g", v->num);
        break;
    case JV_STRING:
        json_write_string(out, v->str, v->len);
        break;
    case JV_ARRAY:
    case JV_OBJECT:
        buf_putc(out, v->type == JV_ARRAY ? '[' : '{');
        for (size_t i = 0; i < v->n; i++) {
            if (i) buf_putc(out, ',');
            if (v->type == JV_OBJECT) {
                json_write_string(out, v->keys[i], strlen(v->keys[i]));
                buf_putc(out, ':');
            }
            op_json_write(&v->items[i], out);
        }
        buf_putc(out, v->type == JV_ARRAY ? ']' : '}');
        break;
    }
}

void op_value_text(const struct jsonv *v, struct buf *out)
{
    if (!v || v->type == JV_NULL) {
        buf_putc(out, '-');
    } else if (v->type == JV_STRING) {
        if (!drop_fraction(out, v->str, v->len)) op_clean(out, v->str, v->len);
    } else {
        struct buf j = {0};
        op_json_write(v, &j);
        op_clean(out, j.data, j.len);
        buf_free(&j);
    }
}

const struct jsonv *op_member(const struct jsonv *obj, const char *key)
{
    const char *dot = strchr(key, '.');
    if (!dot) return jsonv_get(obj, key);
    char head[64];
    size_t n = (size_t)(dot - key);
    if (n >= sizeof head) return NULL;
    memcpy(head, key, n);
    head[n] = '\0';
    return op_member(jsonv_get(obj, head), dot + 1);
}

int64_t op_int(const struct jsonv *obj, const char *key)
{
    const struct jsonv *n = op_member(obj, key);
    return n && n->type == JV_NUMBER ? (n->is_int ? n->i : (int64_t)n->num) : 0;
}

/* Columns on a terminal: code points (a close enough measure for tables of ids, names and
 * times). */
static size_t width_of(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) w++;
    return w;
}

/* Prints s in w columns, cut with "…" when longer. */
static void put_cell(FILE *out, const char *s, size_t w, bool right, bool last)
{
    size_t have = width_of(s);
    if (have > w) {
        size_t cols = 0;
        const char *p = s;
        while (*p && cols < w - 1) {
            p++;
            while (((unsigned char)*p & 0xc0) == 0x80)
                p++;
            cols++;
        }
        fwrite(s, 1, (size_t)(p - s), out);
        fputs("…", out);
        return;
    }
    if (right) fprintf(out, "%*s", (int)(w - have), "");
    fputs(s, out);
    if (!right && !last) fprintf(out, "%*s", (int)(w - have), "");
}

/* Shrinks the widest columns until the line fits in term (when term > 0); when even the
 * narrowest columns do not fit, the last ones are left out. Returns how many are shown. */
static size_t fit(size_t *w, size_t ncols, int term)
{
    if (term <= 0) return ncols;
    size_t need = 0, shown = 0;
    for (; shown < ncols; shown++) {
        size_t cw = w[shown] < MIN_COL ? w[shown] : MIN_COL;
        if (need + cw + (shown ? 2 : 0) > (size_t)term && shown) break;
        need += cw + (shown ? 2 : 0);
    }
    ncols = shown;
    for (;;) {
        size_t total = 0, widest = 0;
        for (size_t c = 0; c < ncols; c++) {
            total += w[c] + (c ? 2 : 0);
            if (w[c] > w[widest]) widest = c;
        }
        if (total <= (size_t)term || w[widest] <= MIN_COL) return ncols;
        w[widest]--;
    }
}

void op_table(FILE *out, const struct jsonv *rows, const struct op_col *cols, size_t ncols)
{
    size_t nrows = rows && rows->type == JV_ARRAY ? rows->n : 0;
    char **cell = xcalloc(nrows * ncols + 1, sizeof *cell);
    size_t *w = xcalloc(ncols, sizeof *w);
    for (size_t c = 0; c < ncols; c++)
        w[c] = width_of(cols[c].head);
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncols; c++) {
            struct buf t = {0};
            op_value_text(op_member(&rows->items[r], cols[c].key), &t);
            cell[r * ncols + c] = xstrdup(buf_cstr(&t));
            buf_free(&t);
            size_t cw = width_of(cell[r * ncols + c]);
            if (cw > w[c]) w[c] = cw;
        }
    size_t shown = fit(w, ncols, op_term_width());
    for (size_t c = 0; c < shown; c++) {
        if (c) fputs("  ", out);
        put_cell(out, cols[c].head, w[c], cols[c].right, c + 1 == shown);
    }
    fputc('\n', out);
    for (size_t r = 0; r < nrows; r++) {
        for (size_t c = 0; c < ncols; c++) {
            if (c < shown) {
                if (c) fputs("  ", out);
                put_cell(out, cell[r * ncols + c], w[c], cols[c].right, c + 1 == shown);
            }
            free(cell[r * ncols + c]);
        }
        fputc('\n', out);
    }
    if (shown < ncols)
        fprintf(stderr,
                "(%zu column(s) left out to fit the terminal: from \"%s\" on; --json "
                "has everything)\n",
                ncols - shown, cols[shown].head);
    free(cell);
    free(w);
}

void op_fields(FILE *out, const struct jsonv *obj)
{
    if (!obj || obj->type != JV_OBJECT) return;
    size_t kw = 0;
    for (size_t i = 0; i < obj->n; i++)
        if (strlen(obj->keys[i]) > kw) kw = strlen(obj->keys[i]);
    for (size_t i = 0; i < obj->n; i++) {
        struct buf k = {0}, t = {0};
        op_clean(&k, obj->keys[i], strlen(obj->keys[i]));
        op_value_text(&obj->items[i], &t);
        fprintf(out, "%-*s  %s\n", (int)kw, buf_cstr(&k), buf_cstr(&t));
        buf_free(&k);
        buf_free(&t);
    }
}
