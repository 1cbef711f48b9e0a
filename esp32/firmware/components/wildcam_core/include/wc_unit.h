/* The unit's capture -> send -> await ACK -> retry / sleep state machine, driven by events and polls.
 * It never blocks and never sleeps itself: wc_unit_poll() says what the caller should do next. */
#ifndef WC_UNIT_H
#define WC_UNIT_H

#include <stddef.h>
#include <stdint.h>

#include "wc_config.h"
#include "wc_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WC_UNIT_RX_MAX_PAYLOAD 512u /* the station only sends small frames to units */
/* the built-in frame buffer: chunks up to 16 KiB; wc_unit_set_chunk_buffer gives room for more */
#define WC_UNIT_TX_CAP (WC_OVERHEAD + WC_CHUNK_HEAD + WC_LEGACY_MAX_CHUNK)

typedef enum { WC_TOPIC_HELLO = 0, WC_TOPIC_TELEMETRY = 1, WC_TOPIC_CAPTURE = 2 } wc_topic_t;
typedef enum { WC_WAKE_POWER_ON = 0, WC_WAKE_TIMER = 1, WC_WAKE_PIR = 2 } wc_wake_t;
typedef enum { WC_LOG_ERROR = 0, WC_LOG_WARN = 1, WC_LOG_INFO = 2 } wc_log_level_t;

typedef struct {
    uint32_t capture_id;
    uint32_t size;
    uint64_t unit_time;
    uint8_t time_kind;
    uint8_t trigger;
} wc_capture_meta_t;

typedef struct {
    uint64_t (*now_ms)(void *ctx);                    /* monotonic milliseconds */
    int (*epoch_ms)(void *ctx, uint64_t *out);        /* 0 and *out when the wall clock is known */
    void (*set_epoch_ms)(void *ctx, uint64_t ms);
    int (*send)(void *ctx, uint8_t topic, const uint8_t *frame, size_t len); /* 0 = sent */
    /* take a JPEG and keep it with meta (meta->size is filled); 0 = stored */
    int (*capture)(void *ctx, const wc_config_t *cfg, wc_capture_meta_t *meta);
    int (*stored_meta)(void *ctx, uint32_t capture_id, wc_capture_meta_t *meta); /* 0 = found */
    int (*stored_read)(void *ctx, uint32_t capture_id, uint32_t offset, uint8_t *buf, uint32_t n);
    void (*stored_delete)(void *ctx, uint32_t capture_id);
    int (*stored_oldest)(void *ctx, uint32_t *capture_id); /* 0 = one is pending */
    uint16_t (*stored_count)(void *ctx);
    uint16_t (*battery_mv)(void *ctx);
    int16_t (*temperature_cc)(void *ctx);
    int8_t (*rssi_dbm)(void *ctx);
    void (*log)(void *ctx, int level, const char *msg);
    /* optional (may be NULL): every station message the core accepted, before it acts on it */
    void (*on_message)(void *ctx, uint8_t type, const uint8_t *payload, size_t len);
    wc_kv_t kv;
} wc_hal_t;

typedef enum { WC_ST_IDLE = 0, WC_ST_AWAIT_ACK = 1, WC_ST_BACKOFF = 2, WC_ST_SLEEP = 3 } wc_state_t;
typedef enum { WC_ACT_RUN = 0, WC_ACT_WAIT = 1, WC_ACT_SLEEP = 2 } wc_action_kind_t;

typedef struct {
    uint8_t kind;      /* wc_action_kind_t */
    uint32_t wait_ms;  /* WAIT: wait for input at most this long, then poll again */
    uint32_t sleep_s;  /* SLEEP: deep sleep this long; 0 = until PIR */
} wc_action_t;

typedef struct {
    uint32_t frames_in, bad_frames, captures, sent, acks, naks, timeouts, dropped, capture_errors;
} wc_stats_t;

typedef struct {
    const wc_hal_t *hal;
    void *ctx;
    wc_config_t cfg;
    wc_stats_t stats;
    char firmware_version[32];
    char chip[16];
    uint8_t mac[6];
    uint16_t seq;
    uint8_t state;
    wc_capture_meta_t cur;
    uint32_t cur_crc;
    uint8_t attempts;
    uint64_t boot_ms, deadline_ms, last_activity_ms;
    uint32_t sleep_s;
    wc_stream_t rx;
    uint8_t rx_buf[WC_UNIT_RX_MAX_PAYLOAD + WC_OVERHEAD];
    uint8_t tx[WC_UNIT_TX_CAP];
    uint8_t *chunk_buf; /* chunk frames are built here in place: tx, or the caller's larger one */
    size_t chunk_cap;
    uint16_t max_chunk; /* what HELLO advertises: the largest chunk chunk_buf holds */
} wc_unit_t;

/* Load the configuration through hal->kv; WC_ERR_FIELD when the unit has no valid unit_id. */
int wc_unit_init(wc_unit_t *u, const wc_hal_t *hal, void *ctx, const char *firmware_version,
                 const char *chip, const uint8_t mac[6]);
/* Build chunk frames in buf (e.g. PSRAM, sized from the free heap) instead of the built-in 16 KiB
 * buffer; the unit then advertises the larger max_chunk in HELLO. Call before wc_unit_wake. */
void wc_unit_set_chunk_buffer(wc_unit_t *u, uint8_t *buf, size_t cap);
/* The chunk size captures go out with: the negotiated (or configured) one, within max_chunk. */
uint16_t wc_unit_chunk_size(const wc_unit_t *u);
uint16_t wc_unit_max_chunk(const wc_unit_t *u);
/* After boot or deep-sleep wake: announce (HELLO, CONFIG_REPORT, TELEMETRY), capture when the wake
 * asks for it and the quiet period allows, then send whatever is pending. */
void wc_unit_wake(wc_unit_t *u, uint8_t wake);
/* Serial bytes from the station (any split, any noise). */
void wc_unit_input(wc_unit_t *u, const uint8_t *data, size_t n);
/* One whole frame (one MQTT message). */
void wc_unit_message(wc_unit_t *u, const uint8_t *data, size_t n);
void wc_unit_handle(wc_unit_t *u, const wc_msg_t *m);
/* Take a capture now with the given trigger and queue it. 0 = stored. */
int wc_unit_capture(wc_unit_t *u, uint8_t trigger);
/* Advance timers and sends; fills *act with what to do next. */
void wc_unit_poll(wc_unit_t *u, wc_action_t *act);

/* Send HELLO, CONFIG_REPORT or TELEMETRY now (wc_unit_wake sends all three). */
void wc_unit_send_hello(wc_unit_t *u);
void wc_unit_send_config_report(wc_unit_t *u);
void wc_unit_send_telemetry(wc_unit_t *u);

size_t wc_unit_sizeof(void);
/* sizeof of the public structs, so FFI users (the virtual unit) can check their layouts:
 * 0 wc_unit_t, 1 wc_hal_t, 2 wc_config_t, 3 wc_capture_meta_t, 4 wc_stats_t, 5 wc_action_t */
size_t wc_sizeof(int what);
const wc_config_t *wc_unit_config(const wc_unit_t *u);
const wc_stats_t *wc_unit_stats(const wc_unit_t *u);
int wc_unit_state(const wc_unit_t *u);

#ifdef __cplusplus
}
#endif
#endif
