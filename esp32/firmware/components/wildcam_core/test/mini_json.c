#include "mini_json.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *p;
    mj_doc_t *doc;
    int err;
} mj_t;

static void ws(mj_t *m) {
    while (*m->p == ' ' || *m->p == '\n' || *m->p == '\r' || *m->p == '\t') m->p++;
}

static void parse_value(mj_t *m, const char *path);

static void add(mj_t *m, const char *path, const char *val, size_t n, int is_str) {
    if (m->doc->n >= MJ_MAX || n >= sizeof(m->doc->pairs[0].val) || strlen(path) >= sizeof(m->doc->pairs[0].key)) {
        m->err = 1;
        return;
    }
    mj_pair_t *pr = &m->doc->pairs[m->doc->n++];
    snprintf(pr->key, sizeof(pr->key), "%s", path);
    memcpy(pr->val, val, n);
    pr->val[n] = '\0';
    pr->is_str = is_str;
}

/* Strings in the vectors are ASCII; \" \\ \/ \n and \u00XX are enough. */
static size_t parse_string(mj_t *m, char *out, size_t cap) {
    size_t n = 0;
    if (*m->p != '"') { m->err = 1; return 0; }
    m->p++;
    while (*m->p && *m->p != '"') {
        char c = *m->p++;
        if (c == '\\') {
            char e = *m->p++;
            if (e == 'n') c = '\n';
            else if (e == 't') c = '\t';
            else if (e == 'u') {
                unsigned v = 0;
                if (sscanf(m->p, "%4x", &v) != 1 || v > 0x7F) { m->err = 1; return 0; }
                m->p += 4;
                c = (char)v;
            } else c = e;
        }
        if (n + 1 >= cap) { m->err = 1; return 0; }
        out[n++] = c;
    }
    if (*m->p != '"') { m->err = 1; return 0; }
    m->p++;
    out[n] = '\0';
    return n;
}

static void parse_value(mj_t *m, const char *path) {
    char sub[96];
    ws(m);
    if (*m->p == '{' || *m->p == '[') {
        int obj = *m->p == '{';
        int idx = 0;
        m->p++;
        ws(m);
        if (*m->p == (obj ? '}' : ']')) { m->p++; return; }
        while (!m->err) {
            char key[64];
            ws(m);
            if (obj) {
                parse_string(m, key, sizeof(key));
                ws(m);
                if (*m->p++ != ':') { m->err = 1; return; }
            } else {
                snprintf(key, sizeof(key), "%d", idx++);
            }
            if (path[0]) snprintf(sub, sizeof(sub), "%s.%s", path, key);
            else snprintf(sub, sizeof(sub), "%s", key);
            parse_value(m, sub);
            ws(m);
            if (*m->p == ',') { m->p++; continue; }
            if (*m->p == (obj ? '}' : ']')) { m->p++; return; }
            m->err = 1;
        }
        return;
    }
    if (*m->p == '"') {
        char buf[4096];
        size_t n = parse_string(m, buf, sizeof(buf));
        if (!m->err) add(m, path, buf, n, 1);
        return;
    }
    const char *start = m->p;
    while (*m->p && strchr(",}] \n\r\t", *m->p) == NULL) m->p++;
    if (m->p == start) { m->err = 1; return; }
    add(m, path, start, (size_t)(m->p - start), 0);
}

int mj_parse(const char *text, mj_doc_t *doc) {
    mj_t m = {text, doc, 0};
    doc->n = 0;
    parse_value(&m, "");
    return m.err;
}

const mj_pair_t *mj_get(const mj_doc_t *doc, const char *key) {
    for (int i = 0; i < doc->n; i++)
        if (strcmp(doc->pairs[i].key, key) == 0) return &doc->pairs[i];
    return NULL;
}
