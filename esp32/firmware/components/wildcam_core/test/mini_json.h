/* Just enough JSON for the test vectors: flattens objects/arrays into "a.b.0.c" -> scalar text. */
#ifndef MINI_JSON_H
#define MINI_JSON_H
#include <stddef.h>

#define MJ_MAX 128
typedef struct {
    char key[96];
    char val[4096];
    int is_str;
} mj_pair_t;

typedef struct {
    mj_pair_t pairs[MJ_MAX];
    int n;
} mj_doc_t;

int mj_parse(const char *text, mj_doc_t *doc);        /* 0 on success */
const mj_pair_t *mj_get(const mj_doc_t *doc, const char *key);
#endif
