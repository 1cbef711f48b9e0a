#include "wc_unit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define BUSY_BACKOFF_MS 3000u
#define STORAGE_ERROR_BACKOFF_MS 10000u
#define STORAGE_FULL_BACKOFF_S 60u /* PROTOCOL.md §3: back off at least 60 s */
/* before resending after a NAK: the station may NAK every chunk of a capture it lost the BEGIN of;
 * NAKs for the same capture that arrive in this window are the same answer, not new ones */
#define RESEND_BACKOFF_MS 250u

#define UL(x) ((unsigned long)(x))

static void logf_(wc_unit_t *u, int level, const char *fmt, ...) {
    char msg[128];
    va_list ap;
    if (!u->hal->log) return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    u->hal->log(u->ctx, level, msg);
}

static uint64_t now(wc_unit_t *u) { return u->hal->now_ms(u->ctx); }

static int send_msg(wc_unit_t *u, uint8_t topic, const wc_msg_t *m) {
    size_t n = 0;
    int rc = wc_encode_frame(m, u->seq, u->tx, sizeof(u->tx), &n);
    if (rc != WC_OK) {
        logf_(u, WC_LOG_ERROR, "encode type 0x%02x failed: %s", (unsigned)m->type, wc_err_str(rc));
        return rc;
    }
    u->seq = (uint16_t)(u->seq + 1u);
    return u->hal->send(u->ctx, topic, u->tx, n);
}

int wc_unit_init(wc_unit_t *u, const wc_hal_t *hal, void *ctx, const char *fw, const char *chip,
                 const uint8_t mac[6]) {
    memset(u, 0, sizeof(*u));
    u->hal = hal;
    u->ctx = ctx;
    snprintf(u->firmware_version, sizeof(u->firmware_version), "%s", fw);
    snprintf(u->chip, sizeof(u->chip), "%s", chip);
    memcpy(u->mac, mac, 6);
    wc_stream_init(&u->rx, u->rx_buf, sizeof(u->rx_buf), WC_UNIT_RX_MAX_PAYLOAD);
    wc_unit_set_chunk_buffer(u, u->tx, sizeof(u->tx));
    wc_config_defaults(&u->cfg);
    int bad = 0;
    int rc = wc_config_load(&u->cfg, &hal->kv, ctx, &bad);
    if (bad) logf_(u, WC_LOG_WARN, "%d stored config values out of range, defaults kept", bad);
    u->boot_ms = now(u);
    u->last_activity_ms = u->boot_ms;
    u->state = WC_ST_IDLE;
    return rc;
}

void wc_unit_set_chunk_buffer(wc_unit_t *u, uint8_t *buf, size_t cap) {
    if (!buf || cap < WC_OVERHEAD + WC_CHUNK_HEAD + 1u) {
        buf = u->tx;
        cap = sizeof(u->tx);
    }
    size_t room = cap - WC_OVERHEAD - WC_CHUNK_HEAD;
    u->chunk_buf = buf;
    u->chunk_cap = cap;
    u->max_chunk = (uint16_t)(room < WC_MAX_CHUNK ? room : WC_MAX_CHUNK);
}

uint16_t wc_unit_max_chunk(const wc_unit_t *u) { return u->max_chunk; }

uint16_t wc_unit_chunk_size(const wc_unit_t *u) {
    /* a CONFIG may ask for more than this boot's buffer holds (a retained one, a smaller heap) */
    return u->cfg.chunk_size < u->max_chunk ? u->cfg.chunk_size : u->max_chunk;
}

/* Where chunk data is read to: right behind the frame header in chunk_buf. */
static uint8_t *chunk_data(wc_unit_t *u) { return u->chunk_buf + WC_HEADER_SIZE + WC_CHUNK_HEAD; }

void wc_unit_send_hello(wc_unit_t *u) {
    wc_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = WC_HELLO;
    wc_str_set(&m.u.hello.unit_id, u->cfg.unit_id);
    wc_str_set(&m.u.hello.firmware_version, u->firmware_version);
    wc_str_set(&m.u.hello.chip, u->chip);
    memcpy(m.u.hello.mac, u->mac, 6);
    m.u.hello.protocol_version = WC_VERSION;
    m.u.hello.max_chunk = u->max_chunk;
    send_msg(u, WC_TOPIC_HELLO, &m);
}

void wc_unit_send_config_report(wc_unit_t *u) {
    wc_msg_t m;
    uint64_t epoch = 0;
    memset(&m, 0, sizeof(m));
    m.type = WC_CONFIG_REPORT;
    wc_str_set(&m.u.config_report.unit_id, u->cfg.unit_id);
    if (u->hal->epoch_ms(u->ctx, &epoch) != 0) epoch = 0;
    wc_config_fields(&u->cfg, &m.u.config_report.config, epoch);
    m.u.config_report.config.chunk_size = wc_unit_chunk_size(u); /* the one actually in use */
    send_msg(u, WC_TOPIC_HELLO, &m);
}

void wc_unit_send_telemetry(wc_unit_t *u) {
    wc_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = WC_TELEMETRY;
    wc_str_set(&m.u.telemetry.unit_id, u->cfg.unit_id);
    m.u.telemetry.battery_mv = u->hal->battery_mv(u->ctx);
    m.u.telemetry.temperature_cc = u->hal->temperature_cc(u->ctx);
    m.u.telemetry.rssi_dbm = u->hal->rssi_dbm(u->ctx);
    m.u.telemetry.uptime_s = (uint32_t)((now(u) - u->boot_ms) / 1000u);
    m.u.telemetry.pending_captures = u->hal->stored_count(u->ctx);
    send_msg(u, WC_TOPIC_TELEMETRY, &m);
}

static int has_clock(wc_unit_t *u, uint64_t *epoch) { return u->hal->epoch_ms(u->ctx, epoch) == 0; }

int wc_unit_capture(wc_unit_t *u, uint8_t trigger) {
    uint32_t id = 0;
    if (u->hal->kv.get_num(u->ctx, WC_KEY_CAPTURE_SEQ, WC_KV_U32, &id) != 0 || id == WC_NO_CAPTURE) id = 0;
    /* persist the next id before using this one: a reset mid-capture must not reuse it */
    u->hal->kv.set_num(u->ctx, WC_KEY_CAPTURE_SEQ, WC_KV_U32, id + 1u == WC_NO_CAPTURE ? 0u : id + 1u);
    wc_capture_meta_t meta;
    memset(&meta, 0, sizeof(meta));
    meta.capture_id = id;
    meta.trigger = trigger;
    uint64_t epoch;
    if (has_clock(u, &epoch)) {
        meta.unit_time = epoch;
        meta.time_kind = WC_TIME_EPOCH_MS;
    } else {
        meta.unit_time = now(u) - u->boot_ms;
        meta.time_kind = WC_TIME_BOOT_MS;
    }
    int rc = u->hal->capture(u->ctx, &u->cfg, &meta);
    u->last_activity_ms = now(u);
    if (rc != 0 || meta.size == 0) {
        u->stats.capture_errors++;
        logf_(u, WC_LOG_ERROR, "capture %lu failed (%d)", UL(id), rc);
        return rc ? rc : -1;
    }
    u->stats.captures++;
    logf_(u, WC_LOG_INFO, "capture %lu stored, %lu bytes", UL(id), UL(meta.size));
    return 0;
}

/* Send BEGIN and every chunk of the current capture, then wait for the ACK. */
static void send_current(wc_unit_t *u) {
    wc_msg_t m;
    memset(&m, 0, sizeof(m));
    u->attempts++;
    m.type = WC_CAPTURE_BEGIN;
    wc_str_set(&m.u.begin.unit_id, u->cfg.unit_id);
    m.u.begin.capture_id = u->cur.capture_id;
    m.u.begin.total_size = u->cur.size;
    m.u.begin.image_crc32 = u->cur_crc;
    uint16_t chunk = wc_unit_chunk_size(u);
    m.u.begin.chunk_size = chunk;
    m.u.begin.unit_time = u->cur.unit_time;
    m.u.begin.time_kind = u->cur.time_kind;
    m.u.begin.trigger = u->cur.trigger;
    int rc = send_msg(u, WC_TOPIC_CAPTURE, &m);
    uint32_t n = wc_chunk_count(u->cur.size, chunk);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        uint32_t off, len;
        size_t frame_len = 0;
        wc_chunk_range(u->cur.size, chunk, i, &off, &len);
        if (u->hal->stored_read(u->ctx, u->cur.capture_id, off, chunk_data(u), len) != 0) {
            rc = -1;
            break;
        }
        rc = wc_encode_chunk_frame(u->chunk_buf, u->chunk_cap, u->seq, u->cur.capture_id,
                                   (uint16_t)i, len, &frame_len);
        if (rc != WC_OK) break;
        u->seq = (uint16_t)(u->seq + 1u);
        rc = u->hal->send(u->ctx, WC_TOPIC_CAPTURE, u->chunk_buf, frame_len);
    }
    if (rc != 0) logf_(u, WC_LOG_WARN, "send of capture %lu broke off (%d)", UL(u->cur.capture_id), rc);
    else u->stats.sent++;
    /* on a broken link the ACK timeout handles the retry */
    u->state = WC_ST_AWAIT_ACK;
    u->deadline_ms = now(u) + u->cfg.ack_timeout_ms;
    u->last_activity_ms = now(u);
}

/* Start sending the oldest pending capture; 0 when one was started. */
static int start_next(wc_unit_t *u) {
    uint32_t id;
    for (;;) {
        if (u->hal->stored_oldest(u->ctx, &id) != 0) return -1;
        if (u->hal->stored_meta(u->ctx, id, &u->cur) == 0 && u->cur.size > 0) break;
        /* unreadable entry: drop it rather than loop on it forever */
        u->hal->stored_delete(u->ctx, id);
        u->stats.dropped++;
    }
    if (wc_chunk_count(u->cur.size, wc_unit_chunk_size(u)) > 65536u) {
        /* chunk indexes are 16 bits: such a capture cannot be sent at this chunk size */
        logf_(u, WC_LOG_ERROR, "capture %lu needs more than 65536 chunks of %u bytes, dropped",
              UL(u->cur.capture_id), (unsigned)wc_unit_chunk_size(u));
        u->hal->stored_delete(u->ctx, u->cur.capture_id);
        u->stats.dropped++;
        return start_next(u);
    }
    /* CRC over the stored bytes, read in pieces so no second full-size buffer is needed */
    uint32_t crc = 0;
    uint32_t piece = u->max_chunk;
    for (uint32_t off = 0; off < u->cur.size; off += piece) {
        uint32_t left = u->cur.size - off;
        uint32_t n = left < piece ? left : piece;
        if (u->hal->stored_read(u->ctx, u->cur.capture_id, off, chunk_data(u), n) != 0) {
            u->hal->stored_delete(u->ctx, u->cur.capture_id);
            u->stats.dropped++;
            return start_next(u);
        }
        crc = wc_crc32(crc, chunk_data(u), n);
    }
    u->cur_crc = crc;
    u->attempts = 0;
    send_current(u);
    return 0;
}

void wc_unit_wake(wc_unit_t *u, uint8_t wake) {
    wc_unit_send_hello(u);
    wc_unit_send_config_report(u);
    wc_unit_send_telemetry(u);
    uint64_t epoch = 0;
    int quiet = has_clock(u, &epoch) && wc_in_quiet(&u->cfg, wc_local_minute(&u->cfg, epoch));
    if (wake == WC_WAKE_TIMER && !quiet && u->cfg.capture_interval_s) wc_unit_capture(u, WC_TRIGGER_TIMER);
    if (wake == WC_WAKE_PIR && !quiet && u->cfg.pir_enabled) wc_unit_capture(u, WC_TRIGGER_PIR);
    if (u->state == WC_ST_IDLE) start_next(u);
}

static void go_sleep(wc_unit_t *u, uint32_t seconds) {
    u->state = WC_ST_SLEEP;
    u->sleep_s = seconds;
}

static void schedule_sleep(wc_unit_t *u) {
    uint64_t epoch = 0;
    int clk = has_clock(u, &epoch);
    go_sleep(u, wc_sleep_seconds(&u->cfg, clk, epoch));
}

static void on_nak(wc_unit_t *u, uint32_t id, uint8_t reason) {
    u->stats.naks++;
    if (u->state != WC_ST_AWAIT_ACK || id != u->cur.capture_id) {
        logf_(u, WC_LOG_INFO, "NAK %u for capture %lu not in flight, ignored", (unsigned)reason, UL(id));
        return;
    }
    switch (reason) {
    case WC_NAK_NOT_JPEG:
        u->hal->stored_delete(u->ctx, id);
        u->stats.dropped++;
        u->state = WC_ST_IDLE;
        break;
    case WC_NAK_TOO_LARGE:
        u->hal->stored_delete(u->ctx, id);
        u->stats.dropped++;
        if (u->cfg.frame_size > 0) {
            u->cfg.frame_size--; /* smaller frames from now on, as the station asked */
            u->hal->kv.set_num(u->ctx, "frame_size", WC_KV_U8, u->cfg.frame_size);
        }
        u->state = WC_ST_IDLE;
        break;
    case WC_NAK_STORAGE_FULL:
        go_sleep(u, STORAGE_FULL_BACKOFF_S); /* keep it; the station needs time */
        break;
    case WC_NAK_STORAGE_ERROR:
        u->state = WC_ST_BACKOFF;
        u->deadline_ms = now(u) + STORAGE_ERROR_BACKOFF_MS;
        break;
    case WC_NAK_BUSY:
        u->state = WC_ST_BACKOFF;
        u->deadline_ms = now(u) + BUSY_BACKOFF_MS;
        break;
    default: /* crc_mismatch, timeout, malformed, unknown_capture: resend the whole capture */
        u->state = WC_ST_BACKOFF;
        u->deadline_ms = now(u) + RESEND_BACKOFF_MS;
        break;
    }
    u->last_activity_ms = now(u);
}

void wc_unit_handle(wc_unit_t *u, const wc_msg_t *m) {
    u->last_activity_ms = now(u);
    switch (m->type) {
    case WC_ACK: {
        uint32_t id = m->u.ack.capture_id;
        wc_capture_meta_t meta;
        if (u->hal->stored_meta(u->ctx, id, &meta) == 0) {
            u->hal->stored_delete(u->ctx, id); /* the station holds it durably now */
            u->stats.acks++;
        }
        if (u->state == WC_ST_AWAIT_ACK && id == u->cur.capture_id) u->state = WC_ST_IDLE;
        break;
    }
    case WC_NAK:
        on_nak(u, m->u.nak.capture_id, m->u.nak.reason);
        break;
    case WC_CONFIG:
        if (wc_config_apply(&u->cfg, &m->u.config, &u->hal->kv, u->ctx) != WC_OK)
            logf_(u, WC_LOG_ERROR, "CONFIG not stored");
        if (m->u.config.station_time_ms) u->hal->set_epoch_ms(u->ctx, m->u.config.station_time_ms);
        wc_unit_send_config_report(u);
        break;
    case WC_CAPTURE_NOW:
        wc_unit_capture(u, WC_TRIGGER_COMMAND);
        break;
    case WC_SLEEP_NOW:
        if (m->u.sleep_now.duration_s) go_sleep(u, m->u.sleep_now.duration_s);
        else schedule_sleep(u);
        break;
    default: /* a unit -> station type echoed back at us: not ours to act on */
        u->stats.bad_frames++;
        break;
    }
}

static void handle_frame(wc_unit_t *u, const wc_frame_t *f) {
    wc_msg_t m;
    u->stats.frames_in++;
    if (wc_decode_payload(f->type, f->payload, f->length, &m) != WC_OK) {
        u->stats.bad_frames++;
        return;
    }
    if (u->hal->on_message) u->hal->on_message(u->ctx, f->type, f->payload, f->length);
    wc_unit_handle(u, &m);
}

void wc_unit_input(wc_unit_t *u, const uint8_t *data, size_t n) {
    wc_frame_t f;
    while (n) {
        size_t took = wc_stream_feed(&u->rx, data, n);
        data += took;
        n -= took;
        while (wc_stream_next(&u->rx, &f)) handle_frame(u, &f);
    }
}

void wc_unit_message(wc_unit_t *u, const uint8_t *data, size_t n) {
    wc_frame_t f;
    if (wc_decode_frame(data, n, WC_UNIT_RX_MAX_PAYLOAD, &f) != WC_OK) {
        u->stats.bad_frames++;
        return;
    }
    handle_frame(u, &f);
}

void wc_unit_poll(wc_unit_t *u, wc_action_t *act) {
    uint64_t t = now(u);
    memset(act, 0, sizeof(*act));
    switch (u->state) {
    case WC_ST_AWAIT_ACK:
        if (t >= u->deadline_ms) {
            u->stats.timeouts++;
            u->state = WC_ST_BACKOFF;
            u->deadline_ms = t;
            act->kind = WC_ACT_RUN;
            return;
        }
        act->kind = WC_ACT_WAIT;
        act->wait_ms = (uint32_t)(u->deadline_ms - t);
        return;
    case WC_ST_BACKOFF:
        if (t < u->deadline_ms) {
            act->kind = WC_ACT_WAIT;
            act->wait_ms = (uint32_t)(u->deadline_ms - t);
            return;
        }
        if (u->attempts >= u->cfg.max_attempts) {
            /* keep it for the next wake rather than drain the battery on a dead link */
            logf_(u, WC_LOG_WARN, "capture %lu unacknowledged after %u sends, sleeping", UL(u->cur.capture_id), (unsigned)u->attempts);
            schedule_sleep(u);
        } else {
            send_current(u);
        }
        act->kind = WC_ACT_RUN;
        return;
    case WC_ST_SLEEP:
        act->kind = WC_ACT_SLEEP;
        act->sleep_s = u->sleep_s;
        u->state = WC_ST_IDLE; /* after the caller's sleep, the next wake starts from idle */
        u->last_activity_ms = t;
        return;
    default:
        if (start_next(u) == 0) {
            act->kind = WC_ACT_RUN;
            return;
        }
        if (t - u->last_activity_ms >= u->cfg.linger_ms) {
            schedule_sleep(u);
            act->kind = WC_ACT_RUN;
            return;
        }
        act->kind = WC_ACT_WAIT;
        act->wait_ms = (uint32_t)(u->cfg.linger_ms - (t - u->last_activity_ms));
        return;
    }
}

size_t wc_unit_sizeof(void) { return sizeof(wc_unit_t); }
size_t wc_sizeof(int what) {
    switch (what) {
    case 0: return sizeof(wc_unit_t);
    case 1: return sizeof(wc_hal_t);
    case 2: return sizeof(wc_config_t);
    case 3: return sizeof(wc_capture_meta_t);
    case 4: return sizeof(wc_stats_t);
    case 5: return sizeof(wc_action_t);
    default: return 0;
    }
}
const wc_config_t *wc_unit_config(const wc_unit_t *u) { return &u->cfg; }
const wc_stats_t *wc_unit_stats(const wc_unit_t *u) { return &u->stats; }
int wc_unit_state(const wc_unit_t *u) { return u->state; }
