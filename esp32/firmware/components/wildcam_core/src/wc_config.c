#include "wc_config.h"

#include <string.h>

/* Keep in step with PROTOCOL.md §9 and agent/esp32/configure.py (NVS_KEYS). */
const wc_key_t wc_config_keys[] = {
    {"unit_id", WC_KV_STR, WC_UNIT_ID_MAX},
    {"station_id", WC_KV_STR, WC_UNIT_ID_MAX},
    {"wifi_ssid", WC_KV_STR, 32},
    {"wifi_pass", WC_KV_STR, 64},
    {"mqtt_uri", WC_KV_STR, 128},
    {"transport", WC_KV_U8, 0},
    {"interval_s", WC_KV_U32, 0},
    {"frame_size", WC_KV_U8, 0},
    {"jpeg_quality", WC_KV_U8, 0},
    {"pir_enabled", WC_KV_U8, 0},
    {"quiet_start", WC_KV_U16, 0},
    {"quiet_end", WC_KV_U16, 0},
    {"tz_offset_min", WC_KV_I16, 0},
    {"chunk_size", WC_KV_U16, 0},
    {"ack_timeout_ms", WC_KV_U32, 0},
    {"max_attempts", WC_KV_U8, 0},
    {"linger_ms", WC_KV_U32, 0},
    {WC_KEY_CAPTURE_SEQ, WC_KV_U32, 0},
};
const size_t wc_config_key_count = sizeof(wc_config_keys) / sizeof(wc_config_keys[0]);

void wc_config_defaults(wc_config_t *c) {
    memset(c, 0, sizeof(*c));
    c->transport = WC_TRANSPORT_SERIAL;
    c->capture_interval_s = 300;
    c->frame_size = 8; /* VGA */
    c->jpeg_quality = 12;
    c->pir_enabled = 1;
    c->sleep_start_min = WC_NO_QUIET;
    c->sleep_end_min = WC_NO_QUIET;
    c->tz_offset_min = 0;
    c->chunk_size = 4096;
    c->ack_timeout_ms = 10000;
    c->max_attempts = 5;
    c->linger_ms = 2000;
}

static int minute_ok(uint32_t v) { return v == WC_NO_QUIET || v < 1440; }

static void load_str(const wc_kv_t *kv, void *ctx, const char *key, char *dst, size_t cap) {
    char tmp[160];
    if (kv->get_str(ctx, key, tmp, sizeof(tmp)) != 0) return;
    tmp[sizeof(tmp) - 1] = '\0';
    if (strlen(tmp) < cap) memcpy(dst, tmp, strlen(tmp) + 1);
}

int wc_config_load(wc_config_t *c, const wc_kv_t *kv, void *ctx, int *bad) {
    uint32_t v;
    int nbad = 0;
    load_str(kv, ctx, "unit_id", c->unit_id, sizeof(c->unit_id));
    load_str(kv, ctx, "station_id", c->station_id, sizeof(c->station_id));
    load_str(kv, ctx, "wifi_ssid", c->wifi_ssid, sizeof(c->wifi_ssid));
    load_str(kv, ctx, "wifi_pass", c->wifi_pass, sizeof(c->wifi_pass));
    load_str(kv, ctx, "mqtt_uri", c->mqtt_uri, sizeof(c->mqtt_uri));
#define LOAD(key, type, field, ctype, ok)           \
    if (kv->get_num(ctx, key, type, &v) == 0) {     \
        if (ok) c->field = (ctype)v; else nbad++;   \
    }
    LOAD("transport", WC_KV_U8, transport, uint8_t, v <= 1)
    LOAD("interval_s", WC_KV_U32, capture_interval_s, uint32_t, 1)
    LOAD("frame_size", WC_KV_U8, frame_size, uint8_t, v <= 0xFF)
    LOAD("jpeg_quality", WC_KV_U8, jpeg_quality, uint8_t, v <= 63)
    LOAD("pir_enabled", WC_KV_U8, pir_enabled, uint8_t, v <= 1)
    LOAD("quiet_start", WC_KV_U16, sleep_start_min, uint16_t, minute_ok(v))
    LOAD("quiet_end", WC_KV_U16, sleep_end_min, uint16_t, minute_ok(v))
    LOAD("tz_offset_min", WC_KV_I16, tz_offset_min, int16_t, ((int32_t)v >= -840 && (int32_t)v <= 840))
    LOAD("chunk_size", WC_KV_U16, chunk_size, uint16_t, (v >= 1 && v <= WC_MAX_CHUNK))
    LOAD("ack_timeout_ms", WC_KV_U32, ack_timeout_ms, uint32_t, (v >= 100))
    LOAD("max_attempts", WC_KV_U8, max_attempts, uint8_t, (v >= 1))
    LOAD("linger_ms", WC_KV_U32, linger_ms, uint32_t, 1)
#undef LOAD
    if (bad) *bad = nbad;
    return wc_unit_id_valid(c->unit_id, strlen(c->unit_id)) ? WC_OK : WC_ERR_FIELD;
}

int wc_config_fields_valid(const wc_config_fields_t *f) {
    return f->jpeg_quality <= 63 && f->pir_enabled <= 1 && minute_ok(f->sleep_start_min) &&
           minute_ok(f->sleep_end_min) && f->chunk_size <= WC_MAX_CHUNK;
}

int wc_config_apply(wc_config_t *c, const wc_config_fields_t *f, const wc_kv_t *kv, void *ctx) {
    if (!wc_config_fields_valid(f)) return WC_ERR_FIELD;
    c->capture_interval_s = f->capture_interval_s;
    c->frame_size = f->frame_size;
    c->jpeg_quality = f->jpeg_quality;
    c->pir_enabled = f->pir_enabled;
    c->sleep_start_min = f->sleep_start_min;
    c->sleep_end_min = f->sleep_end_min;
    /* persist so the next deep-sleep wake (a reboot on the ESP32) keeps it */
    int rc = 0;
    rc |= kv->set_num(ctx, "interval_s", WC_KV_U32, c->capture_interval_s);
    rc |= kv->set_num(ctx, "frame_size", WC_KV_U8, c->frame_size);
    rc |= kv->set_num(ctx, "jpeg_quality", WC_KV_U8, c->jpeg_quality);
    rc |= kv->set_num(ctx, "pir_enabled", WC_KV_U8, c->pir_enabled);
    rc |= kv->set_num(ctx, "quiet_start", WC_KV_U16, c->sleep_start_min);
    rc |= kv->set_num(ctx, "quiet_end", WC_KV_U16, c->sleep_end_min);
    if (f->chunk_size) { /* negotiated by the station: kept, so the next wake starts with it */
        c->chunk_size = f->chunk_size;
        rc |= kv->set_num(ctx, "chunk_size", WC_KV_U16, c->chunk_size);
    }
    return rc ? WC_ERR_NOSPACE : WC_OK;
}

void wc_config_fields(const wc_config_t *c, wc_config_fields_t *out, uint64_t station_time_ms) {
    out->capture_interval_s = c->capture_interval_s;
    out->frame_size = c->frame_size;
    out->jpeg_quality = c->jpeg_quality;
    out->pir_enabled = c->pir_enabled;
    out->sleep_start_min = c->sleep_start_min;
    out->sleep_end_min = c->sleep_end_min;
    out->station_time_ms = station_time_ms;
    out->chunk_size = c->chunk_size;
}

int wc_in_quiet(const wc_config_t *c, uint16_t m) {
    uint16_t s = c->sleep_start_min, e = c->sleep_end_min;
    if (s == WC_NO_QUIET || e == WC_NO_QUIET || s == e) return 0;
    if (s < e) return m >= s && m < e;
    return m >= s || m < e; /* wraps midnight, e.g. 20:00-06:00 */
}

uint16_t wc_local_minute(const wc_config_t *c, uint64_t epoch_ms) {
    int64_t min = (int64_t)(epoch_ms / 60000u) + c->tz_offset_min;
    int64_t m = min % 1440;
    if (m < 0) m += 1440;
    return (uint16_t)m;
}

uint32_t wc_sleep_seconds(const wc_config_t *c, int has_clock, uint64_t epoch_ms) {
    if (has_clock) {
        uint16_t m = wc_local_minute(c, epoch_ms);
        if (wc_in_quiet(c, m)) {
            uint32_t mins = (uint32_t)((c->sleep_end_min + 1440 - m) % 1440);
            uint32_t secs_into_min = (uint32_t)((epoch_ms / 1000u) % 60u);
            uint32_t s = mins * 60u - secs_into_min;
            return s ? s : 1u;
        }
    }
    if (c->capture_interval_s) return c->capture_interval_s;
    /* PIR only; with PIR off too, still check in hourly so the station can reconfigure the unit */
    return c->pir_enabled ? 0u : 3600u;
}
