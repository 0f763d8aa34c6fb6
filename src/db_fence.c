#include "db_fence.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fence_sql.h"
#include "db_watchdog.h"

struct fence_part {
    const char *topic;
    int32_t partition;
    const struct batch_item *last; /* the record at the batch's highest offset */
    int64_t next;                  /* the stored position when read, -1: none */
    int64_t version;               /* and its version, -1: no row */
    bool moved;                    /* another batch committed between read and advance */
    int64_t below;                 /* then: its position, which this batch's rows may share */
};

void fence_free(struct fence *f)
{
    free(f->parts);
    for (size_t i = 0; i < sizeof f->cols / sizeof f->cols[0]; i++)
        pgarray_free(&f->cols[i]);
    buf_free(&f->scratch);
    memset(f, 0, sizeof *f);
}

static int part_cmp(const void *a, const void *b)
{
    const struct fence_part *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

static struct fence_part *find(struct fence *f, const char *topic, int32_t partition)
{
    struct fence_part key = {.topic = topic, .partition = partition};
    return bsearch(&key, f->parts, f->n, sizeof *f->parts, part_cmp);
}

/* The batch's partitions, sorted, each with its highest record. */
static void collect(struct fence *f, const struct batch_item *items, size_t n)
{
    f->n = 0;
    for (size_t i = 0; i < n; i++) {
        const struct record *r = items[i].rec;
        struct fence_part *p = NULL;
        for (size_t k = 0; k < f->n && !p; k++)
            if (f->parts[k].partition == r->partition && strcmp(f->parts[k].topic, r->topic) == 0)
                p = &f->parts[k];
        if (!p) {
            if (f->n == f->cap) {
                f->cap = f->cap ? 2 * f->cap : 16;
                f->parts = xrealloc(f->parts, f->cap * sizeof *f->parts);
            }
            p = &f->parts[f->n++];
            *p = (struct fence_part){.topic = r->topic, .partition = r->partition};
        }
        if (!p->last || r->offset > p->last->rec->offset) p->last = &items[i];
    }
    qsort(f->parts, f->n, sizeof *f->parts, part_cmp);
}

static void reset_cols(struct fence *f)
{
    for (size_t i = 0; i < sizeof f->cols / sizeof f->cols[0]; i++)
        pgarray_reset(&f->cols[i]);
}

static void put_key(struct fence *f, struct pgarray *a, const struct record *r)
{
    if (!r->key) {
        pgarray_str(a, NULL, 0);
        return;
    }
    buf_reset(&f->scratch);
    record_text(&f->scratch, r->key, r->key_len);
    pgarray_str(a, f->scratch.data ? f->scratch.data : "", f->scratch.len);
}

static PGresult *exec(struct fence *f, PGconn *conn, const char *sql, int nparams)
{
    const char *params[5];
    for (int c = 0; c < nparams; c++)
        params[c] = pgarray_text(&f->cols[c]);
    db_watchdog_progress();
    return PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

static int64_t int_or(PGresult *res, int row, int col, int64_t none)
{
    return PQgetisnull(res, row, col) ? none : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

bool fence_read(struct fence *f, PGconn *conn, struct batch_item *items, size_t n, bool lookup_all,
                char **err)
{
    collect(f, items, n);
    reset_cols(f);
    for (size_t k = 0; k < f->n; k++) {
        pgarray_cstr(&f->cols[0], f->parts[k].topic);
        pgarray_int(&f->cols[1], f->parts[k].partition);
    }
    PGresult *res = exec(f, conn, SQL_FENCE_READ, 2);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && (size_t)PQntuples(res) == f->n;
    if (!ok) *err = db_error_text(conn, res, "reading sink_offsets");
    for (int i = 0; ok && i < PQntuples(res); i++) {
        struct fence_part *p = &f->parts[int_or(res, i, 0, 1) - 1];
        p->next = int_or(res, i, 1, -1);
        p->version = int_or(res, i, 2, -1);
    }
    PQclear(res);
    if (!ok) return false;
    for (size_t i = 0; i < n; i++) {
        const struct fence_part *p = find(f, items[i].rec->topic, items[i].rec->partition);
        /* no row yet: nothing says what is stored, so everything is looked up */
        items[i].maybe_stored = lookup_all || p->version < 0 || items[i].rec->offset < p->next;
    }
    return true;
}

static bool advance(struct fence *f, PGconn *conn, char **err)
{
    reset_cols(f);
    for (size_t k = 0; k < f->n; k++) {
        const struct record *r = f->parts[k].last->rec;
        pgarray_cstr(&f->cols[0], r->topic);
        pgarray_int(&f->cols[1], r->partition);
        pgarray_int(&f->cols[2], r->offset);
        put_key(f, &f->cols[3], r);
        pgarray_int_or_null(&f->cols[4], r->timestamp_ms > 0 ? r->timestamp_ms : 0);
    }
    PGresult *res = exec(f, conn, SQL_FENCE_ADVANCE, 5);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) *err = db_error_text(conn, res, "moving sink_offsets");
    for (int i = 0; ok && i < PQntuples(res); i++) {
        struct fence_part *p =
            find(f, PQgetvalue(res, i, 0), (int32_t)strtol(PQgetvalue(res, i, 1), NULL, 10));
        if (!p) continue;
        int64_t version = int_or(res, i, 2, 0);
        /* a new row is version 1; else it moved by one: this batch's */
        p->moved = p->version < 0 ? version != 1 : version != p->version + 1;
        p->below = int_or(res, i, 3, -1);
    }
    PQclear(res);
    return ok;
}

int fence_close(struct fence *f, PGconn *conn, const struct batch_item *items, size_t n, char **err)
{
    if (!advance(f, conn, err)) return -1;
    reset_cols(f);
    size_t nchecked = 0;
    for (size_t i = 0; i < n; i++) {
        const struct record *r = items[i].rec;
        const struct fence_part *p = find(f, r->topic, r->partition);
        if (!p || !p->moved || r->offset >= p->below) continue;
        pgarray_cstr(&f->cols[0], r->topic);
        pgarray_int(&f->cols[1], r->partition);
        pgarray_int(&f->cols[2], r->offset);
        put_key(f, &f->cols[3], r);
        pgarray_int_or_null(&f->cols[4], r->timestamp_ms > 0 ? r->timestamp_ms : 0);
        nchecked++;
    }
    if (!nchecked) return 0;
    PGresult *res = exec(f, conn, SQL_FENCE_CHECK, 5);
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? PQgetvalue(res, 0, 0)[0] == 't' : -1;
    if (rc < 0) *err = db_error_text(conn, res, "checking the batch against sink_offsets");
    PQclear(res);
    return rc;
}
