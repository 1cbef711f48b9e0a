/* Unit configuration: defaults, NVS keys (PROTOCOL.md §9), CONFIG from the station, quiet period. */
#ifndef WC_CONFIG_H
#define WC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "wc_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WC_NVS_NAMESPACE "wildcam"

typedef enum { WC_KV_U8, WC_KV_U16, WC_KV_U32, WC_KV_I16, WC_KV_STR } wc_kv_type_t;
typedef enum { WC_TRANSPORT_SERIAL = 0, WC_TRANSPORT_MQTT = 1 } wc_transport_t;

/* Key/value store the core reads and writes (NVS on the ESP32, a dict in the virtual unit).
 * Numbers travel as uint32_t (i16 sign-extended); get returns 0 when found, non-zero otherwise. */
typedef struct {
    int (*get_num)(void *ctx, const char *key, wc_kv_type_t type, uint32_t *val);
    int (*set_num)(void *ctx, const char *key, wc_kv_type_t type, uint32_t val);
    int (*get_str)(void *ctx, const char *key, char *buf, size_t cap);
    int (*set_str)(void *ctx, const char *key, const char *val);
} wc_kv_t;

typedef struct {
    char unit_id[WC_UNIT_ID_MAX + 1];
    char station_id[WC_UNIT_ID_MAX + 1];
    char wifi_ssid[33];  /* 802.11 SSIDs are at most 32 bytes */
    char wifi_pass[65];  /* WPA2 passphrases are at most 63 chars (64 hex) */
    char mqtt_uri[129];
    uint8_t transport;   /* wc_transport_t */
    /* what the station can change with CONFIG */
    uint32_t capture_interval_s;
    uint8_t frame_size, jpeg_quality, pir_enabled;
    uint16_t sleep_start_min, sleep_end_min;
    /* unit-only tuning */
    int16_t tz_offset_min;  /* local time = UTC + this; the quiet period is in local time */
    uint16_t chunk_size;
    uint32_t ack_timeout_ms;
    uint8_t max_attempts;   /* sends of one capture per wake before giving up until the next wake */
    uint32_t linger_ms;     /* stay awake this long after the last activity for station commands */
} wc_config_t;

/* One NVS key: name (<= 15 chars), type, and the limit for strings (bytes, without NUL). */
typedef struct {
    const char *key;
    wc_kv_type_t type;
    size_t max_len;
} wc_key_t;

extern const wc_key_t wc_config_keys[];
extern const size_t wc_config_key_count;
#define WC_KEY_CAPTURE_SEQ "capture_seq" /* u32, next capture id, kept across deep sleep */

void wc_config_defaults(wc_config_t *c);
/* Fill c from the store; keys missing keep their defaults, out-of-range values are refused
 * (counted in *bad when given) and keep the default. Returns WC_ERR_FIELD when unit_id is missing. */
int wc_config_load(wc_config_t *c, const wc_kv_t *kv, void *ctx, int *bad);
/* Apply a CONFIG from the station: validate, copy, persist the station-settable keys. */
int wc_config_apply(wc_config_t *c, const wc_config_fields_t *f, const wc_kv_t *kv, void *ctx);
void wc_config_fields(const wc_config_t *c, wc_config_fields_t *out, uint64_t station_time_ms);
int wc_config_fields_valid(const wc_config_fields_t *f);

/* Quiet period: 1 when minute-of-day m is inside [start, end) (wrapping midnight when start > end). */
int wc_in_quiet(const wc_config_t *c, uint16_t m);
/* Minute of the local day for a Unix time in ms. */
uint16_t wc_local_minute(const wc_config_t *c, uint64_t epoch_ms);
/* Seconds to deep-sleep now: until the quiet period ends, else the capture interval; 0 = no timer
 * (PIR wake only). has_clock = 0 when the unit does not know the time of day. */
uint32_t wc_sleep_seconds(const wc_config_t *c, int has_clock, uint64_t epoch_ms);

#ifdef __cplusplus
}
#endif
#endif
