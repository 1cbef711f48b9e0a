/* Host tests for the portable core: a minimal runner whose last line is "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mini_json.h"
#include "wc_config.h"
#include "wc_proto.h"
#include "wc_unit.h"

static int g_pass, g_fail, g_cur_failed;
static const char *g_vectors = "../../../test-vectors";

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            g_cur_failed = 1;                                                  \
        }                                                                      \
    } while (0)

static void run(const char *name, void (*fn)(void)) {
    g_cur_failed = 0;
    fn();
    printf("%s %s\n", g_cur_failed ? "FAIL" : "ok  ", name);
    if (g_cur_failed) g_fail++;
    else g_pass++;
}

/* ---------- helpers ---------- */
static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
    size_t n = strlen(hex) / 2;
    if (n > cap) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return 0;
        out[i] = (uint8_t)v;
    }
    return n;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static const char *js(const mj_doc_t *d, const char *prefix, const char *key) {
    char k[96];
    snprintf(k, sizeof(k), "%s%s", prefix, key);
    const mj_pair_t *p = mj_get(d, k);
    return p ? p->val : NULL;
}
static unsigned long long jn(const mj_doc_t *d, const char *prefix, const char *key) {
    const char *v = js(d, prefix, key);
    return v ? strtoull(v, NULL, 10) : 0xDEADull;
}
static long long jsn(const mj_doc_t *d, const char *prefix, const char *key) {
    const char *v = js(d, prefix, key);
    return v ? strtoll(v, NULL, 10) : 0xDEAD;
}

static int type_code(const char *name) {
    static const struct { const char *n; int t; } T[] = {
        {"HELLO", WC_HELLO}, {"TELEMETRY", WC_TELEMETRY}, {"CONFIG_REPORT", WC_CONFIG_REPORT},
        {"CAPTURE_BEGIN", WC_CAPTURE_BEGIN}, {"CAPTURE_CHUNK", WC_CAPTURE_CHUNK}, {"ACK", WC_ACK},
        {"NAK", WC_NAK}, {"CONFIG", WC_CONFIG}, {"CAPTURE_NOW", WC_CAPTURE_NOW}, {"SLEEP_NOW", WC_SLEEP_NOW},
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++)
        if (strcmp(T[i].n, name) == 0) return T[i].t;
    return -1;
}

static void config_from_json(const mj_doc_t *d, const char *p, wc_config_fields_t *c) {
    c->capture_interval_s = (uint32_t)jn(d, p, "capture_interval_s");
    c->frame_size = (uint8_t)jn(d, p, "frame_size");
    c->jpeg_quality = (uint8_t)jn(d, p, "jpeg_quality");
    c->pir_enabled = (uint8_t)jn(d, p, "pir_enabled");
    c->sleep_start_min = (uint16_t)jn(d, p, "sleep_start_min");
    c->sleep_end_min = (uint16_t)jn(d, p, "sleep_end_min");
    c->station_time_ms = (uint64_t)jn(d, p, "station_time_ms");
    c->chunk_size = js(d, p, "chunk_size") ? (uint16_t)jn(d, p, "chunk_size") : 0; /* optional */
}

static uint8_t g_chunk_data[4096];

/* Build a message from a vector's "decoded" fields (prefix like "decoded."). */
static int msg_from_json(const mj_doc_t *d, const char *p, int type, wc_msg_t *m) {
    memset(m, 0, sizeof(*m));
    m->type = (uint8_t)type;
    switch (type) {
    case WC_HELLO: {
        unsigned mac[6];
        wc_str_set(&m->u.hello.unit_id, js(d, p, "unit_id"));
        wc_str_set(&m->u.hello.firmware_version, js(d, p, "firmware_version"));
        wc_str_set(&m->u.hello.chip, js(d, p, "chip"));
        if (sscanf(js(d, p, "mac"), "%x:%x:%x:%x:%x:%x", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6) return -1;
        for (int i = 0; i < 6; i++) m->u.hello.mac[i] = (uint8_t)mac[i];
        m->u.hello.protocol_version = (uint8_t)jn(d, p, "protocol_version");
        m->u.hello.max_chunk = js(d, p, "max_chunk") ? (uint16_t)jn(d, p, "max_chunk") : 0; /* optional */
        return 0;
    }
    case WC_TELEMETRY:
        wc_str_set(&m->u.telemetry.unit_id, js(d, p, "unit_id"));
        m->u.telemetry.battery_mv = (uint16_t)jn(d, p, "battery_mv");
        m->u.telemetry.temperature_cc = (int16_t)jsn(d, p, "temperature_cc");
        m->u.telemetry.rssi_dbm = (int8_t)jsn(d, p, "rssi_dbm");
        m->u.telemetry.uptime_s = (uint32_t)jn(d, p, "uptime_s");
        m->u.telemetry.pending_captures = (uint16_t)jn(d, p, "pending_captures");
        return 0;
    case WC_CONFIG_REPORT:
        wc_str_set(&m->u.config_report.unit_id, js(d, p, "unit_id"));
        config_from_json(d, p, &m->u.config_report.config);
        return 0;
    case WC_CAPTURE_BEGIN:
        wc_str_set(&m->u.begin.unit_id, js(d, p, "unit_id"));
        m->u.begin.capture_id = (uint32_t)jn(d, p, "capture_id");
        m->u.begin.total_size = (uint32_t)jn(d, p, "total_size");
        m->u.begin.image_crc32 = (uint32_t)jn(d, p, "image_crc32");
        m->u.begin.chunk_size = (uint16_t)jn(d, p, "chunk_size");
        m->u.begin.unit_time = (uint64_t)jn(d, p, "unit_time");
        m->u.begin.time_kind = (uint8_t)jn(d, p, "time_kind");
        m->u.begin.trigger = (uint8_t)jn(d, p, "trigger");
        return 0;
    case WC_CAPTURE_CHUNK:
        m->u.chunk.capture_id = (uint32_t)jn(d, p, "capture_id");
        m->u.chunk.index = (uint16_t)jn(d, p, "index");
        m->u.chunk.data_len = (uint16_t)unhex(js(d, p, "data"), g_chunk_data, sizeof(g_chunk_data));
        m->u.chunk.data = g_chunk_data;
        return 0;
    case WC_ACK:
        m->u.ack.capture_id = (uint32_t)jn(d, p, "capture_id");
        m->u.ack.status = (uint8_t)jn(d, p, "status");
        return 0;
    case WC_NAK:
        m->u.nak.capture_id = (uint32_t)jn(d, p, "capture_id");
        m->u.nak.reason = (uint8_t)jn(d, p, "reason");
        wc_str_set(&m->u.nak.detail, js(d, p, "detail"));
        return 0;
    case WC_CONFIG:
        config_from_json(d, p, &m->u.config);
        return 0;
    case WC_CAPTURE_NOW:
        m->u.capture_now.request_id = (uint32_t)jn(d, p, "request_id");
        return 0;
    case WC_SLEEP_NOW:
        m->u.sleep_now.duration_s = (uint32_t)jn(d, p, "duration_s");
        return 0;
    }
    return -1;
}

static int str_eq(const wc_str_t *a, const wc_str_t *b) { return a->len == b->len && memcmp(a->s, b->s, a->len) == 0; }
static int cfg_eq(const wc_config_fields_t *a, const wc_config_fields_t *b) {
    return a->capture_interval_s == b->capture_interval_s && a->frame_size == b->frame_size &&
           a->jpeg_quality == b->jpeg_quality && a->pir_enabled == b->pir_enabled &&
           a->sleep_start_min == b->sleep_start_min && a->sleep_end_min == b->sleep_end_min &&
           a->station_time_ms == b->station_time_ms && a->chunk_size == b->chunk_size;
}

/* Field-by-field equality of two decoded messages. */
static int msg_eq(const wc_msg_t *a, const wc_msg_t *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case WC_HELLO:
        return str_eq(&a->u.hello.unit_id, &b->u.hello.unit_id) && str_eq(&a->u.hello.firmware_version, &b->u.hello.firmware_version) &&
               str_eq(&a->u.hello.chip, &b->u.hello.chip) && memcmp(a->u.hello.mac, b->u.hello.mac, 6) == 0 &&
               a->u.hello.protocol_version == b->u.hello.protocol_version && a->u.hello.max_chunk == b->u.hello.max_chunk;
    case WC_TELEMETRY:
        return str_eq(&a->u.telemetry.unit_id, &b->u.telemetry.unit_id) && a->u.telemetry.battery_mv == b->u.telemetry.battery_mv &&
               a->u.telemetry.temperature_cc == b->u.telemetry.temperature_cc && a->u.telemetry.rssi_dbm == b->u.telemetry.rssi_dbm &&
               a->u.telemetry.uptime_s == b->u.telemetry.uptime_s && a->u.telemetry.pending_captures == b->u.telemetry.pending_captures;
    case WC_CONFIG_REPORT:
        return str_eq(&a->u.config_report.unit_id, &b->u.config_report.unit_id) && cfg_eq(&a->u.config_report.config, &b->u.config_report.config);
    case WC_CAPTURE_BEGIN:
        return str_eq(&a->u.begin.unit_id, &b->u.begin.unit_id) && a->u.begin.capture_id == b->u.begin.capture_id &&
               a->u.begin.total_size == b->u.begin.total_size && a->u.begin.image_crc32 == b->u.begin.image_crc32 &&
               a->u.begin.chunk_size == b->u.begin.chunk_size && a->u.begin.unit_time == b->u.begin.unit_time &&
               a->u.begin.time_kind == b->u.begin.time_kind && a->u.begin.trigger == b->u.begin.trigger;
    case WC_CAPTURE_CHUNK:
        return a->u.chunk.capture_id == b->u.chunk.capture_id && a->u.chunk.index == b->u.chunk.index &&
               a->u.chunk.data_len == b->u.chunk.data_len && memcmp(a->u.chunk.data, b->u.chunk.data, a->u.chunk.data_len) == 0;
    case WC_ACK:
        return a->u.ack.capture_id == b->u.ack.capture_id && a->u.ack.status == b->u.ack.status;
    case WC_NAK:
        return a->u.nak.capture_id == b->u.nak.capture_id && a->u.nak.reason == b->u.nak.reason && str_eq(&a->u.nak.detail, &b->u.nak.detail);
    case WC_CONFIG:
        return cfg_eq(&a->u.config, &b->u.config);
    case WC_CAPTURE_NOW:
        return a->u.capture_now.request_id == b->u.capture_now.request_id;
    case WC_SLEEP_NOW:
        return a->u.sleep_now.duration_s == b->u.sleep_now.duration_s;
    }
    return 0;
}

/* ---------- test vectors ---------- */
static mj_doc_t g_doc;
static int g_vector_files;

static void check_frame_vector(const char *name) {
    int type = type_code(js(&g_doc, "", "type"));
    uint8_t want[8192], got[8192];
    size_t want_n = unhex(js(&g_doc, "", "frame_hex"), want, sizeof(want)), got_n = 0;
    wc_msg_t from_json, decoded;
    int ok = type > 0 && want_n > 0 && msg_from_json(&g_doc, "decoded.", type, &from_json) == 0;
    if (!ok) printf("    %s: unreadable vector\n", name);
    CHECK(ok);
    if (!ok) return;
    /* encode the decoded fields: must equal frame_hex byte for byte */
    int rc = wc_encode_frame(&from_json, (uint16_t)jn(&g_doc, "", "seq"), got, sizeof(got), &got_n);
    CHECK(rc == WC_OK);
    CHECK(got_n == want_n && memcmp(got, want, want_n) == 0);
    if (got_n != want_n || memcmp(got, want, want_n) != 0) printf("    %s: encoding differs\n", name);
    /* decode frame_hex: must give the decoded fields */
    wc_frame_t f;
    CHECK(wc_decode_frame(want, want_n, WC_MAX_PAYLOAD, &f) == WC_OK);
    CHECK(f.type == type && f.seq == (uint16_t)jn(&g_doc, "", "seq"));
    CHECK(wc_decode_payload(f.type, f.payload, f.length, &decoded) == WC_OK);
    CHECK(msg_eq(&decoded, &from_json));
    /* every single flipped bit is caught by the CRC or the header checks */
    for (size_t i = 2; i < want_n; i++) {
        want[i] ^= 0x01;
        CHECK(wc_decode_frame(want, want_n, WC_MAX_PAYLOAD, &f) != WC_OK);
        want[i] ^= 0x01;
    }
}

static void check_stream_vector(const char *name) {
    static uint8_t stream[8192];
    size_t n = unhex(js(&g_doc, "", "stream_hex"), stream, sizeof(stream));
    CHECK(n > 0);
    /* feed whole, then one byte at a time: both must find exactly the listed frames */
    for (int mode = 0; mode < 2; mode++) {
        static uint8_t buf[WC_MAX_PAYLOAD + WC_OVERHEAD];
        wc_stream_t s;
        wc_frame_t f;
        int found = 0;
        CHECK(wc_stream_init(&s, buf, sizeof(buf), WC_MAX_PAYLOAD) == WC_OK);
        size_t step = mode == 0 ? n : 1;
        for (size_t off = 0; off < n; off += step) {
            size_t take = n - off < step ? n - off : step;
            CHECK(wc_stream_feed(&s, stream + off, take) == take);
            while (wc_stream_next(&s, &f)) {
                char prefix[32];
                wc_msg_t want, got;
                snprintf(prefix, sizeof(prefix), "frames.%d.", found);
                const char *tname = js(&g_doc, prefix, "type");
                CHECK(tname != NULL);
                if (!tname) return;
                snprintf(prefix, sizeof(prefix), "frames.%d.decoded.", found);
                CHECK(msg_from_json(&g_doc, prefix, type_code(tname), &want) == 0);
                CHECK(f.type == type_code(tname));
                snprintf(prefix, sizeof(prefix), "frames.%d.", found);
                CHECK(f.seq == jn(&g_doc, prefix, "seq"));
                CHECK(wc_decode_payload(f.type, f.payload, f.length, &got) == WC_OK);
                CHECK(msg_eq(&got, &want));
                found++;
            }
        }
        char key[32];
        snprintf(key, sizeof(key), "frames.%d.type", found);
        CHECK(mj_get(&g_doc, key) == NULL); /* no frame missed */
        CHECK(s.crc_errors >= 1);
        CHECK(s.noise_bytes > 0);
        if (found == 0) printf("    %s: no frames found\n", name);
    }
}

static void test_vectors(void) {
    DIR *dir = opendir(g_vectors);
    CHECK(dir != NULL);
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0) continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", g_vectors, e->d_name);
        char *text = read_file(path);
        CHECK(text != NULL);
        if (!text) continue;
        int perr = mj_parse(text, &g_doc);
        CHECK(perr == 0);
        if (perr) { printf("    %s: JSON parse error\n", e->d_name); continue; }
        g_vector_files++;
        if (strncmp(e->d_name, "stream-", 7) == 0) check_stream_vector(e->d_name);
        else check_frame_vector(e->d_name);
    }
    closedir(dir);
    printf("    %d vector files checked\n", g_vector_files);
    CHECK(g_vector_files >= 20);
}

/* ---------- protocol unit tests ---------- */
static void test_crc32_known_value(void) {
    const uint8_t s[] = "123456789";
    CHECK(wc_crc32(0, s, 9) == 0xCBF43926u);
    CHECK(wc_crc32(wc_crc32(0, s, 4), s + 4, 5) == 0xCBF43926u); /* incremental */
    CHECK(wc_crc32(0, s, 0) == 0);
}

static void test_unit_id_rules(void) {
    CHECK(wc_unit_id_valid("a1b2c3d4e5f6", 12));
    CHECK(wc_unit_id_valid("unit-7_x", 8));
    CHECK(!wc_unit_id_valid("-unit", 5));
    CHECK(!wc_unit_id_valid("Unit", 4));
    CHECK(!wc_unit_id_valid("", 0));
    CHECK(!wc_unit_id_valid("abc\n", 4));
    CHECK(wc_unit_id_valid("abcdefghijklmnopqrstuvwxyz012345", 32));
    CHECK(!wc_unit_id_valid("abcdefghijklmnopqrstuvwxyz0123456", 33));
}

static void test_utf8_strict(void) {
    CHECK(wc_utf8_valid((const uint8_t *)"caf\xc3\xa9", 5));
    CHECK(!wc_utf8_valid((const uint8_t *)"\xc0\xaf", 2));          /* overlong */
    CHECK(!wc_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));      /* surrogate */
    CHECK(!wc_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
    CHECK(!wc_utf8_valid((const uint8_t *)"\xe2\x82", 2));          /* truncated */
}

static void test_decode_rejects_short_and_bad_fields(void) {
    wc_msg_t m;
    const uint8_t ack_bad_status[] = {42, 0, 0, 0, 2};
    CHECK(wc_decode_payload(WC_ACK, ack_bad_status, 5, &m) == WC_ERR_FIELD);
    CHECK(wc_decode_payload(WC_ACK, ack_bad_status, 4, &m) == WC_ERR_SHORT);
    const uint8_t nak_bad_reason[] = {1, 0, 0, 0, 0, 0};
    CHECK(wc_decode_payload(WC_NAK, nak_bad_reason, 6, &m) == WC_ERR_FIELD);
    const uint8_t chunk_empty[] = {1, 0, 0, 0, 0, 0};
    CHECK(wc_decode_payload(WC_CAPTURE_CHUNK, chunk_empty, 6, &m) == WC_ERR_FIELD);
    const uint8_t cfg_quality[] = {0, 0, 0, 0, 5, 64, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(wc_decode_payload(WC_CONFIG, cfg_quality, sizeof(cfg_quality), &m) == WC_ERR_FIELD);
    const uint8_t trailing[] = {7, 0, 0, 0, 0xAA, 0xBB}; /* newer minor revision appended a field */
    CHECK(wc_decode_payload(WC_CAPTURE_NOW, trailing, 6, &m) == WC_OK && m.u.capture_now.request_id == 7);
    CHECK(wc_decode_payload(0x7F, trailing, 6, &m) == WC_ERR_TYPE);
}

static void test_encode_refuses_bad_unit_id_and_small_buffer(void) {
    wc_msg_t m;
    uint8_t out[64];
    size_t n;
    memset(&m, 0, sizeof(m));
    m.type = WC_TELEMETRY;
    wc_str_set(&m.u.telemetry.unit_id, "Bad Id");
    CHECK(wc_encode_frame(&m, 1, out, sizeof(out), &n) == WC_ERR_FIELD);
    wc_str_set(&m.u.telemetry.unit_id, "ok");
    CHECK(wc_encode_frame(&m, 1, out, 15, &n) == WC_ERR_NOSPACE);
    CHECK(wc_encode_frame(&m, 1, out, sizeof(out), &n) == WC_OK && n == WC_OVERHEAD + 3 + 11);
}

static void test_frame_decoder_errors(void) {
    uint8_t f[] = {0xA5, 0x5A, 1, 0x31, 0, 0, 4, 0, 7, 0, 0, 0, 0, 0, 0, 0};
    uint32_t crc = wc_crc32(0, f + 2, 10);
    for (int i = 0; i < 4; i++) f[12 + i] = (uint8_t)(crc >> (8 * i));
    wc_frame_t fr;
    CHECK(wc_decode_frame(f, sizeof(f), WC_MAX_PAYLOAD, &fr) == WC_OK);
    CHECK(wc_decode_frame(f, sizeof(f) - 1, WC_MAX_PAYLOAD, &fr) == WC_ERR_LENGTH);
    CHECK(wc_decode_frame(f, 5, WC_MAX_PAYLOAD, &fr) == WC_ERR_SHORT);
    CHECK(wc_decode_frame(f, sizeof(f), 3, &fr) == WC_ERR_LENGTH);
    f[2] = 2;
    CHECK(wc_decode_frame(f, sizeof(f), WC_MAX_PAYLOAD, &fr) == WC_ERR_VERSION);
    f[2] = 1;
    f[3] = 0x99;
    CHECK(wc_decode_frame(f, sizeof(f), WC_MAX_PAYLOAD, &fr) == WC_ERR_TYPE);
    f[3] = 0x31;
    f[0] = 0;
    CHECK(wc_decode_frame(f, sizeof(f), WC_MAX_PAYLOAD, &fr) == WC_ERR_SYNC);
}

static void test_stream_rejects_oversized_length_as_noise(void) {
    static uint8_t buf[64 + WC_OVERHEAD];
    wc_stream_t s;
    wc_frame_t f;
    CHECK(wc_stream_init(&s, buf, sizeof(buf), 64) == WC_OK);
    CHECK(wc_stream_init(&s, buf, 10, 64) == WC_ERR_NOSPACE);
    CHECK(wc_stream_init(&s, buf, sizeof(buf), 64) == WC_OK);
    const uint8_t liar[] = {0xA5, 0x5A, 1, 0x11, 0, 0, 0xFF, 0xFF, 1, 2, 3}; /* claims 65535 bytes */
    CHECK(wc_stream_feed(&s, liar, sizeof(liar)) == sizeof(liar));
    CHECK(wc_stream_next(&s, &f) == 0);
    CHECK(s.noise_bytes == sizeof(liar));
    /* a full buffer never overflows: feed reports what it took */
    uint8_t junk[200];
    memset(junk, 0x11, sizeof(junk));
    size_t took = wc_stream_feed(&s, junk, sizeof(junk));
    CHECK(took <= sizeof(buf));
    CHECK(wc_stream_next(&s, &f) == 0 && s.len == 0);
}

static void test_chunk_ranges(void) {
    uint32_t off, len;
    CHECK(wc_chunk_count(22, 16) == 2);
    CHECK(wc_chunk_count(32, 16) == 2);
    CHECK(wc_chunk_count(0xFFFFFFFFu, 1) == 0xFFFFFFFFu);
    CHECK(wc_chunk_count(5, 0) == 0);
    CHECK(wc_chunk_range(22, 16, 1, &off, &len) == WC_OK && off == 16 && len == 6);
    CHECK(wc_chunk_range(22, 16, 2, &off, &len) == WC_ERR_FIELD);
}

/* ---------- config ---------- */
static void test_quiet_period_wraps_midnight(void) {
    wc_config_t c;
    wc_config_defaults(&c);
    c.sleep_start_min = 1200;
    c.sleep_end_min = 360;
    CHECK(wc_in_quiet(&c, 1200) && wc_in_quiet(&c, 0) && wc_in_quiet(&c, 359));
    CHECK(!wc_in_quiet(&c, 360) && !wc_in_quiet(&c, 720) && !wc_in_quiet(&c, 1199));
    c.sleep_start_min = 60;
    c.sleep_end_min = 120;
    CHECK(wc_in_quiet(&c, 60) && !wc_in_quiet(&c, 120) && !wc_in_quiet(&c, 30));
    c.sleep_start_min = WC_NO_QUIET;
    CHECK(!wc_in_quiet(&c, 90));
}

static void test_sleep_seconds(void) {
    wc_config_t c;
    wc_config_defaults(&c);
    c.capture_interval_s = 600;
    c.sleep_start_min = 1200;
    c.sleep_end_min = 360;
    const uint64_t midnight = 1764115200000ull; /* 2025-11-26 00:00 UTC */
    CHECK(wc_sleep_seconds(&c, 1, midnight + 12ull * 3600000u) == 600);   /* noon: interval */
    CHECK(wc_sleep_seconds(&c, 1, midnight + 5ull * 3600000u) == 3600);   /* 05:00: until 06:00 */
    CHECK(wc_sleep_seconds(&c, 0, midnight + 5ull * 3600000u) == 600);    /* no clock: interval */
    c.tz_offset_min = 120;                                               /* 03:00 UTC = 05:00 local */
    CHECK(wc_sleep_seconds(&c, 1, midnight + 3ull * 3600000u) == 3600);
    c.capture_interval_s = 0;
    CHECK(wc_sleep_seconds(&c, 1, midnight + 10ull * 3600000u) == 0);     /* PIR only */
    c.pir_enabled = 0;
    CHECK(wc_sleep_seconds(&c, 1, midnight + 10ull * 3600000u) == 3600);  /* still checks in */
}

/* ---------- the state machine against a fake HAL ---------- */
typedef struct {
    uint64_t t;
    int clock_known;
    uint64_t epoch_base;
    /* kv */
    char unit_id[40];
    uint32_t nums[32];
    int has_num[32];
    /* storage: up to 4 captures */
    wc_capture_meta_t meta[4];
    uint8_t jpeg[4][64];
    int used[4];
    /* outbox */
    uint8_t sent_types[256];
    int nsent;
    uint16_t hello_max_chunk, begin_chunk, report_chunk; /* from the last HELLO, BEGIN, REPORT */
    int fail_send;
    int fail_capture;
} fake_t;

static int key_index(const char *key) {
    for (size_t i = 0; i < wc_config_key_count; i++)
        if (strcmp(wc_config_keys[i].key, key) == 0) return (int)i;
    return -1;
}
static uint64_t f_now(void *c) { return ((fake_t *)c)->t; }
static int f_epoch(void *c, uint64_t *o) {
    fake_t *f = c;
    if (!f->clock_known) return -1;
    *o = f->epoch_base + f->t;
    return 0;
}
static void f_set_epoch(void *c, uint64_t ms) {
    fake_t *f = c;
    f->clock_known = 1;
    f->epoch_base = ms - f->t;
}
static int f_send(void *c, uint8_t topic, const uint8_t *fr, size_t n) {
    fake_t *f = c;
    (void)topic;
    wc_frame_t d;
    if (wc_decode_frame(fr, n, WC_MAX_PAYLOAD, &d) != WC_OK) return -100; /* unit sent garbage */
    if (f->fail_send) return -1;
    if (f->nsent < 256) f->sent_types[f->nsent++] = d.type;
    wc_msg_t m;
    if (wc_decode_payload(d.type, d.payload, d.length, &m) != WC_OK) return -101;
    if (d.type == WC_HELLO) f->hello_max_chunk = m.u.hello.max_chunk;
    if (d.type == WC_CAPTURE_BEGIN) f->begin_chunk = m.u.begin.chunk_size;
    if (d.type == WC_CONFIG_REPORT) f->report_chunk = m.u.config_report.config.chunk_size;
    return 0;
}
static const uint8_t JPEG[] = {0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0xFF, 0xD9};
static int f_capture(void *c, const wc_config_t *cfg, wc_capture_meta_t *m) {
    fake_t *f = c;
    (void)cfg;
    if (f->fail_capture) return -1;
    for (int i = 0; i < 4; i++)
        if (!f->used[i]) {
            f->used[i] = 1;
            m->size = sizeof(JPEG);
            f->meta[i] = *m;
            memcpy(f->jpeg[i], JPEG, sizeof(JPEG));
            return 0;
        }
    return -2;
}
static int slot_of(fake_t *f, uint32_t id) {
    for (int i = 0; i < 4; i++)
        if (f->used[i] && f->meta[i].capture_id == id) return i;
    return -1;
}
static int f_meta(void *c, uint32_t id, wc_capture_meta_t *m) {
    int s = slot_of(c, id);
    if (s < 0) return -1;
    *m = ((fake_t *)c)->meta[s];
    return 0;
}
static int f_read(void *c, uint32_t id, uint32_t off, uint8_t *buf, uint32_t n) {
    fake_t *f = c;
    int s = slot_of(f, id);
    if (s < 0 || off + n > f->meta[s].size) return -1;
    memcpy(buf, f->jpeg[s] + off, n);
    return 0;
}
static void f_delete(void *c, uint32_t id) {
    int s = slot_of(c, id);
    if (s >= 0) ((fake_t *)c)->used[s] = 0;
}
static int f_oldest(void *c, uint32_t *id) {
    fake_t *f = c;
    int best = -1;
    for (int i = 0; i < 4; i++)
        if (f->used[i] && (best < 0 || f->meta[i].capture_id < f->meta[best].capture_id)) best = i;
    if (best < 0) return -1;
    *id = f->meta[best].capture_id;
    return 0;
}
static uint16_t f_count(void *c) {
    fake_t *f = c;
    return (uint16_t)(f->used[0] + f->used[1] + f->used[2] + f->used[3]);
}
static uint16_t f_batt(void *c) { (void)c; return 3900; }
static int16_t f_temp(void *c) { (void)c; return -32768; }
static int8_t f_rssi(void *c) { (void)c; return 0; }
static int f_get_num(void *c, const char *key, wc_kv_type_t t, uint32_t *v) {
    fake_t *f = c;
    int i = key_index(key);
    (void)t;
    if (i < 0 || !f->has_num[i]) return -1;
    *v = f->nums[i];
    return 0;
}
static int f_set_num(void *c, const char *key, wc_kv_type_t t, uint32_t v) {
    fake_t *f = c;
    int i = key_index(key);
    (void)t;
    if (i < 0) return -1;
    f->nums[i] = v;
    f->has_num[i] = 1;
    return 0;
}
static int f_get_str(void *c, const char *key, char *buf, size_t cap) {
    fake_t *f = c;
    if (strcmp(key, "unit_id") != 0 || !f->unit_id[0]) return -1;
    snprintf(buf, cap, "%s", f->unit_id);
    return 0;
}
static int f_set_str(void *c, const char *key, const char *v) { (void)c; (void)key; (void)v; return -1; }

static const wc_hal_t FAKE_HAL = {f_now, f_epoch, f_set_epoch, f_send, f_capture, f_meta, f_read, f_delete,
                                  f_oldest, f_count, f_batt, f_temp, f_rssi, NULL, NULL,
                                  {f_get_num, f_set_num, f_get_str, f_set_str}};
static const uint8_t MAC[6] = {0x24, 0x0a, 0xc4, 1, 2, 3};
static wc_unit_t g_unit;
static fake_t g_fake;

static wc_unit_t *fresh_unit(void) {
    memset(&g_fake, 0, sizeof(g_fake));
    snprintf(g_fake.unit_id, sizeof(g_fake.unit_id), "unit-1");
    g_fake.t = 1000;
    f_set_num(&g_fake, "chunk_size", WC_KV_U16, 64); /* smallest allowed: JPEG fits one chunk */
    if (wc_unit_init(&g_unit, &FAKE_HAL, &g_fake, "1.0.0", "esp32", MAC) != WC_OK) return NULL;
    return &g_unit;
}

static void feed_msg(wc_unit_t *u, wc_msg_t *m) {
    uint8_t buf[256];
    size_t n;
    if (wc_encode_frame(m, 9, buf, sizeof(buf), &n) == WC_OK) wc_unit_input(u, buf, n);
}
static void ack(wc_unit_t *u, uint32_t id) {
    wc_msg_t m = {.type = WC_ACK};
    m.u.ack.capture_id = id;
    feed_msg(u, &m);
}
static void nak(wc_unit_t *u, uint32_t id, uint8_t reason) {
    wc_msg_t m = {.type = WC_NAK};
    m.u.nak.capture_id = id;
    m.u.nak.reason = reason;
    feed_msg(u, &m);
}
static int count_sent(uint8_t type) {
    int n = 0;
    for (int i = 0; i < g_fake.nsent; i++) n += g_fake.sent_types[i] == type;
    return n;
}

static void test_unit_without_id_refuses_to_start(void) {
    memset(&g_fake, 0, sizeof(g_fake));
    CHECK(wc_unit_init(&g_unit, &FAKE_HAL, &g_fake, "1.0.0", "esp32", MAC) == WC_ERR_FIELD);
}

static void test_wake_announces_captures_sends_and_sleeps_after_ack(void) {
    wc_unit_t *u = fresh_unit();
    wc_action_t a;
    CHECK(u != NULL);
    if (!u) return;
    wc_unit_wake(u, WC_WAKE_TIMER);
    CHECK(g_fake.sent_types[0] == WC_HELLO && g_fake.sent_types[1] == WC_CONFIG_REPORT && g_fake.sent_types[2] == WC_TELEMETRY);
    CHECK(count_sent(WC_CAPTURE_BEGIN) == 1 && count_sent(WC_CAPTURE_CHUNK) == 1);
    CHECK(wc_unit_state(u) == WC_ST_AWAIT_ACK && f_count(&g_fake) == 1);
    ack(u, 0);
    CHECK(f_count(&g_fake) == 0 && wc_unit_stats(u)->acks == 1);
    wc_unit_poll(u, &a);
    CHECK(a.kind == WC_ACT_WAIT); /* lingers for station commands */
    g_fake.t += 5000;
    wc_unit_poll(u, &a);
    wc_unit_poll(u, &a);
    CHECK(a.kind == WC_ACT_SLEEP && a.sleep_s == 300);
    CHECK(g_fake.nums[key_index(WC_KEY_CAPTURE_SEQ)] == 1);
}

static void test_nak_crc_resends_whole_capture(void) {
    wc_unit_t *u = fresh_unit();
    wc_action_t a;
    if (!u) { CHECK(0); return; }
    wc_unit_wake(u, WC_WAKE_PIR);
    nak(u, 0, WC_NAK_CRC_MISMATCH);
    nak(u, 0, WC_NAK_UNKNOWN_CAPTURE); /* the same answer for another chunk: not a second resend */
    wc_unit_poll(u, &a);
    CHECK(a.kind == WC_ACT_WAIT && count_sent(WC_CAPTURE_BEGIN) == 1);
    g_fake.t += 250;
    wc_unit_poll(u, &a);
    CHECK(count_sent(WC_CAPTURE_BEGIN) == 2 && count_sent(WC_CAPTURE_CHUNK) == 2);
    CHECK(f_count(&g_fake) == 1); /* kept until ACK */
}

static void test_ack_timeout_retries_then_sleeps_keeping_capture(void) {
    wc_unit_t *u = fresh_unit();
    wc_action_t a;
    if (!u) { CHECK(0); return; }
    wc_unit_wake(u, WC_WAKE_TIMER);
    for (int i = 0; i < 20 && wc_unit_state(u) != WC_ST_SLEEP; i++) {
        g_fake.t += 10001;
        wc_unit_poll(u, &a);
    }
    CHECK(count_sent(WC_CAPTURE_BEGIN) == 5); /* max_attempts default */
    wc_unit_poll(u, &a);
    CHECK(a.kind == WC_ACT_SLEEP);
    CHECK(f_count(&g_fake) == 1 && wc_unit_stats(u)->timeouts == 5);
}

static void test_nak_not_jpeg_drops_and_too_large_lowers_frame_size(void) {
    wc_unit_t *u = fresh_unit();
    if (!u) { CHECK(0); return; }
    wc_unit_wake(u, WC_WAKE_TIMER);
    nak(u, 0, WC_NAK_NOT_JPEG);
    CHECK(f_count(&g_fake) == 0 && wc_unit_stats(u)->dropped == 1);
    wc_unit_capture(u, WC_TRIGGER_MANUAL);
    wc_action_t a;
    wc_unit_poll(u, &a);
    uint8_t before = wc_unit_config(u)->frame_size;
    nak(u, 1, WC_NAK_TOO_LARGE);
    CHECK(f_count(&g_fake) == 0 && wc_unit_config(u)->frame_size == before - 1);
    CHECK(g_fake.nums[key_index("frame_size")] == (uint32_t)(before - 1));
}

static void test_nak_storage_full_sleeps_at_least_60s(void) {
    wc_unit_t *u = fresh_unit();
    wc_action_t a;
    if (!u) { CHECK(0); return; }
    wc_unit_wake(u, WC_WAKE_TIMER);
    nak(u, 0, WC_NAK_STORAGE_FULL);
    wc_unit_poll(u, &a);
    CHECK(a.kind == WC_ACT_SLEEP && a.sleep_s >= 60 && f_count(&g_fake) == 1);
}

static void test_config_applied_persisted_and_reported(void) {
    wc_unit_t *u = fresh_unit();
    if (!u) { CHECK(0); return; }
    wc_msg_t m = {.type = WC_CONFIG};
    m.u.config.capture_interval_s = 900;
    m.u.config.frame_size = 5;
    m.u.config.jpeg_quality = 20;
    m.u.config.pir_enabled = 0;
    m.u.config.sleep_start_min = 1200;
    m.u.config.sleep_end_min = 360;
    m.u.config.station_time_ms = 1764115200000ull + 12ull * 3600000u;
    feed_msg(u, &m);
    CHECK(wc_unit_config(u)->capture_interval_s == 900 && wc_unit_config(u)->jpeg_quality == 20);
    CHECK(g_fake.nums[key_index("interval_s")] == 900 && g_fake.nums[key_index("quiet_start")] == 1200);
    CHECK(count_sent(WC_CONFIG_REPORT) == 1 && g_fake.clock_known);
    /* reloading from the store (a deep-sleep wake) gives the same config */
    wc_unit_init(&g_unit, &FAKE_HAL, &g_fake, "1.0.0", "esp32", MAC);
    CHECK(wc_unit_config(&g_unit)->capture_interval_s == 900 && wc_unit_config(&g_unit)->pir_enabled == 0);
}

static void test_quiet_period_suppresses_timer_capture(void) {
    wc_unit_t *u = fresh_unit();
    if (!u) { CHECK(0); return; }
    g_fake.clock_known = 1;
    g_fake.epoch_base = 1764115200000ull + 22ull * 3600000u; /* 22:00 */
    f_set_num(&g_fake, "quiet_start", WC_KV_U16, 1200);
    f_set_num(&g_fake, "quiet_end", WC_KV_U16, 360);
    wc_unit_init(u, &FAKE_HAL, &g_fake, "1.0.0", "esp32", MAC);
    wc_unit_wake(u, WC_WAKE_TIMER);
    CHECK(count_sent(WC_CAPTURE_BEGIN) == 0 && f_count(&g_fake) == 0);
    wc_msg_t m = {.type = WC_CAPTURE_NOW}; /* the station overrides the quiet period */
    feed_msg(u, &m);
    CHECK(f_count(&g_fake) == 1);
}

static void test_sleep_now_and_garbage_input(void) {
    wc_unit_t *u = fresh_unit();
    wc_action_t a;
    if (!u) { CHECK(0); return; }
    uint8_t junk[300];
    for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (uint8_t)(i * 37u + 0xA5u);
    wc_unit_input(u, junk, sizeof(junk));
    wc_msg_t echo = {.type = WC_TELEMETRY}; /* a type a unit must not act on */
    wc_str_set(&echo.u.telemetry.unit_id, "x");
    feed_msg(u, &echo);
    CHECK(wc_unit_stats(u)->bad_frames >= 1 && wc_unit_state(u) == WC_ST_IDLE);
    wc_msg_t m = {.type = WC_SLEEP_NOW};
    m.u.sleep_now.duration_s = 42;
    feed_msg(u, &m);
    wc_unit_poll(u, &a);
    CHECK(a.kind == WC_ACT_SLEEP && a.sleep_s == 42);
}

static void test_optional_fields_absent_present_and_bad(void) {
    wc_msg_t m;
    uint8_t buf[128];
    size_t n;
    /* a HELLO from an older unit ends at protocol_version: max_chunk 0 = absent */
    const uint8_t old_hello[] = {1, 'u', 0, 0, 1, 2, 3, 4, 5, 6, 1};
    CHECK(wc_decode_payload(WC_HELLO, old_hello, sizeof(old_hello), &m) == WC_OK && m.u.hello.max_chunk == 0);
    const uint8_t new_hello[] = {1, 'u', 0, 0, 1, 2, 3, 4, 5, 6, 1, 0xE8, 0xFD};
    CHECK(wc_decode_payload(WC_HELLO, new_hello, sizeof(new_hello), &m) == WC_OK && m.u.hello.max_chunk == 65000);
    const uint8_t zero_hello[] = {1, 'u', 0, 0, 1, 2, 3, 4, 5, 6, 1, 0, 0};
    CHECK(wc_decode_payload(WC_HELLO, zero_hello, sizeof(zero_hello), &m) == WC_ERR_FIELD);
    CHECK(wc_decode_payload(WC_HELLO, new_hello, sizeof(new_hello) - 1, &m) == WC_ERR_SHORT);
    /* CONFIG: chunk_size absent keeps 0, present 1 … 65529, 0 or more is refused */
    uint8_t cfg[21] = {60, 0, 0, 0, 5, 12, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(wc_decode_payload(WC_CONFIG, cfg, 19, &m) == WC_OK && m.u.config.chunk_size == 0);
    cfg[19] = 0x79; cfg[20] = 0xFF; /* 65401 */
    CHECK(wc_decode_payload(WC_CONFIG, cfg, 21, &m) == WC_OK && m.u.config.chunk_size == 65401);
    cfg[19] = 0xFA; /* 65530: more than a frame can carry */
    CHECK(wc_decode_payload(WC_CONFIG, cfg, 21, &m) == WC_ERR_FIELD);
    cfg[19] = 0; cfg[20] = 0;
    CHECK(wc_decode_payload(WC_CONFIG, cfg, 21, &m) == WC_ERR_FIELD);
    /* encoding omits a 0 (absent) optional field: the payload is the older one, byte for byte */
    memset(&m, 0, sizeof(m));
    m.type = WC_CONFIG;
    m.u.config.capture_interval_s = 60;
    CHECK(wc_encode_payload(&m, buf, sizeof(buf), &n) == WC_OK && n == 19);
    m.u.config.chunk_size = 32768;
    CHECK(wc_encode_payload(&m, buf, sizeof(buf), &n) == WC_OK && n == 21 && buf[19] == 0 && buf[20] == 0x80);
}

static void test_chunk_frame_in_place_equals_encoder(void) {
    static uint8_t a[WC_OVERHEAD + WC_CHUNK_HEAD + 300], b[sizeof(a)];
    uint8_t data[300];
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)(i * 7u);
    wc_msg_t m = {.type = WC_CAPTURE_CHUNK};
    m.u.chunk.capture_id = 77;
    m.u.chunk.index = 3;
    m.u.chunk.data = data;
    m.u.chunk.data_len = sizeof(data);
    CHECK(wc_encode_frame(&m, 500, a, sizeof(a), &na) == WC_OK);
    memcpy(b + WC_HEADER_SIZE + WC_CHUNK_HEAD, data, sizeof(data));
    CHECK(wc_encode_chunk_frame(b, sizeof(b), 500, 77, 3, sizeof(data), &nb) == WC_OK);
    CHECK(na == nb && memcmp(a, b, na) == 0);
    CHECK(wc_encode_chunk_frame(b, sizeof(b) - 1, 500, 77, 3, sizeof(data), &nb) == WC_ERR_NOSPACE);
    CHECK(wc_encode_chunk_frame(b, sizeof(b), 500, 77, 3, 0, &nb) == WC_ERR_FIELD);
}

static void test_hello_advertises_max_chunk_and_config_sets_chunk(void) {
    wc_unit_t *u = fresh_unit();
    if (!u) { CHECK(0); return; }
    wc_unit_wake(u, WC_WAKE_POWER_ON);
    CHECK(g_fake.hello_max_chunk == WC_LEGACY_MAX_CHUNK && g_fake.report_chunk == 64);
    /* the station negotiates 8 bytes: the 22-byte JPEG goes out in 3 chunks, and it is kept */
    wc_msg_t m = {.type = WC_CONFIG};
    m.u.config.capture_interval_s = 300;
    m.u.config.frame_size = 8;
    m.u.config.jpeg_quality = 12;
    m.u.config.pir_enabled = 1;
    m.u.config.sleep_start_min = m.u.config.sleep_end_min = WC_NO_QUIET;
    m.u.config.chunk_size = 8;
    feed_msg(u, &m);
    CHECK(wc_unit_chunk_size(u) == 8 && g_fake.report_chunk == 8);
    CHECK(g_fake.nums[key_index("chunk_size")] == 8);
    g_fake.nsent = 0;
    CHECK(wc_unit_capture(u, WC_TRIGGER_MANUAL) == 0);
    wc_action_t a;
    wc_unit_poll(u, &a);
    CHECK(g_fake.begin_chunk == 8 && count_sent(WC_CAPTURE_CHUNK) == 3);
    /* a CONFIG without chunk_size (an older station) leaves it alone */
    m.u.config.chunk_size = 0;
    feed_msg(u, &m);
    CHECK(wc_unit_chunk_size(u) == 8);
    /* the next wake (a reboot on the ESP32) starts with the negotiated size */
    wc_unit_init(&g_unit, &FAKE_HAL, &g_fake, "1.0.0", "esp32", MAC);
    CHECK(wc_unit_chunk_size(&g_unit) == 8);
}

static void test_larger_buffer_raises_max_chunk_and_caps_config(void) {
    static uint8_t big[40000];
    wc_unit_t *u = fresh_unit();
    if (!u) { CHECK(0); return; }
    wc_unit_set_chunk_buffer(u, big, sizeof(big));
    CHECK(wc_unit_max_chunk(u) == sizeof(big) - WC_OVERHEAD - WC_CHUNK_HEAD);
    wc_unit_send_hello(u);
    CHECK(g_fake.hello_max_chunk == sizeof(big) - WC_OVERHEAD - WC_CHUNK_HEAD);
    wc_msg_t m = {.type = WC_CONFIG};
    m.u.config.sleep_start_min = m.u.config.sleep_end_min = WC_NO_QUIET;
    m.u.config.chunk_size = 60000; /* e.g. a retained CONFIG from a boot with more heap */
    feed_msg(u, &m);
    CHECK(wc_unit_chunk_size(u) == wc_unit_max_chunk(u) && g_fake.report_chunk == wc_unit_max_chunk(u));
    CHECK(wc_unit_capture(u, WC_TRIGGER_MANUAL) == 0);
    wc_action_t a;
    wc_unit_poll(u, &a);
    CHECK(g_fake.begin_chunk == wc_unit_max_chunk(u) && count_sent(WC_CAPTURE_CHUNK) == 1);
    ack(u, 0);
    CHECK(f_count(&g_fake) == 0);
    /* no buffer, or one too small for a chunk: back to the built-in one */
    wc_unit_set_chunk_buffer(u, NULL, 0);
    CHECK(wc_unit_max_chunk(u) == WC_LEGACY_MAX_CHUNK);
}

static void test_stored_config_out_of_range_keeps_defaults(void) {
    memset(&g_fake, 0, sizeof(g_fake));
    snprintf(g_fake.unit_id, sizeof(g_fake.unit_id), "unit-1");
    f_set_num(&g_fake, "jpeg_quality", WC_KV_U8, 99);
    f_set_num(&g_fake, "quiet_start", WC_KV_U16, 5000);
    CHECK(wc_unit_init(&g_unit, &FAKE_HAL, &g_fake, "1.0.0", "esp32", MAC) == WC_OK);
    CHECK(wc_unit_config(&g_unit)->jpeg_quality == 12 && wc_unit_config(&g_unit)->sleep_start_min == WC_NO_QUIET);
}

int main(int argc, char **argv) {
    if (argc > 1) g_vectors = argv[1];
    run("vectors", test_vectors);
    run("crc32_known_value", test_crc32_known_value);
    run("unit_id_rules", test_unit_id_rules);
    run("utf8_strict", test_utf8_strict);
    run("decode_rejects_short_and_bad_fields", test_decode_rejects_short_and_bad_fields);
    run("encode_refuses_bad_unit_id_and_small_buffer", test_encode_refuses_bad_unit_id_and_small_buffer);
    run("frame_decoder_errors", test_frame_decoder_errors);
    run("stream_rejects_oversized_length_as_noise", test_stream_rejects_oversized_length_as_noise);
    run("chunk_ranges", test_chunk_ranges);
    run("quiet_period_wraps_midnight", test_quiet_period_wraps_midnight);
    run("sleep_seconds", test_sleep_seconds);
    run("unit_without_id_refuses_to_start", test_unit_without_id_refuses_to_start);
    run("wake_announces_captures_sends_and_sleeps_after_ack", test_wake_announces_captures_sends_and_sleeps_after_ack);
    run("nak_crc_resends_whole_capture", test_nak_crc_resends_whole_capture);
    run("ack_timeout_retries_then_sleeps_keeping_capture", test_ack_timeout_retries_then_sleeps_keeping_capture);
    run("nak_not_jpeg_drops_and_too_large_lowers_frame_size", test_nak_not_jpeg_drops_and_too_large_lowers_frame_size);
    run("nak_storage_full_sleeps_at_least_60s", test_nak_storage_full_sleeps_at_least_60s);
    run("config_applied_persisted_and_reported", test_config_applied_persisted_and_reported);
    run("quiet_period_suppresses_timer_capture", test_quiet_period_suppresses_timer_capture);
    run("sleep_now_and_garbage_input", test_sleep_now_and_garbage_input);
    run("stored_config_out_of_range_keeps_defaults", test_stored_config_out_of_range_keeps_defaults);
    run("optional_fields_absent_present_and_bad", test_optional_fields_absent_present_and_bad);
    run("chunk_frame_in_place_equals_encoder", test_chunk_frame_in_place_equals_encoder);
    run("hello_advertises_max_chunk_and_config_sets_chunk", test_hello_advertises_max_chunk_and_config_sets_chunk);
    run("larger_buffer_raises_max_chunk_and_caps_config", test_larger_buffer_raises_max_chunk_and_caps_config);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
