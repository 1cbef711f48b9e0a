/* WildCAM wire protocol v1: see esp32/PROTOCOL.md and the twin in agent/protocol.py. */
#include "wc_proto.h"

#include <string.h>

/* ---- CRC32, table-free nibble version: 64 bytes of table keeps IRAM/flash small on the ESP32 ---- */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t wc_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

/* ---- little-endian helpers ---- */
static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)((uint16_t)p[0] | ((uint16_t)p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

int wc_type_known(uint8_t t) {
    switch (t) {
    case WC_HELLO: case WC_TELEMETRY: case WC_CONFIG_REPORT: case WC_CAPTURE_BEGIN:
    case WC_CAPTURE_CHUNK: case WC_ACK: case WC_NAK: case WC_CONFIG: case WC_CAPTURE_NOW:
    case WC_SLEEP_NOW:
        return 1;
    default:
        return 0;
    }
}

/* ^[a-z0-9][a-z0-9_-]{0,31}$ without a regex engine */
int wc_unit_id_valid(const char *s, size_t len) {
    if (len < 1 || len > WC_UNIT_ID_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));
        if (!ok) return 0;
    }
    return 1;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as Python's decoder accepts. */
int wc_utf8_valid(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else return 0;
        if (len - i - 1 < need) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += need + 1;
    }
    return 1;
}

int wc_str_set(wc_str_t *dst, const char *src) {
    size_t n = strlen(src);
    if (n > 255) return WC_ERR_FIELD;
    memcpy(dst->s, src, n);
    dst->s[n] = '\0';
    dst->len = (uint8_t)n;
    return WC_OK;
}

/* ---- payload writer ---- */
typedef struct {
    uint8_t *p;
    size_t cap, len;
    int err;
} writer_t;

static uint8_t *w_take(writer_t *w, size_t n) {
    if (w->err) return NULL;
    if (w->cap - w->len < n) {
        w->err = WC_ERR_NOSPACE;
        return NULL;
    }
    uint8_t *at = w->p + w->len;
    w->len += n;
    return at;
}
static void w_u8(writer_t *w, uint8_t v) { uint8_t *at = w_take(w, 1); if (at) at[0] = v; }
static void w_u16(writer_t *w, uint16_t v) { uint8_t *at = w_take(w, 2); if (at) put16(at, v); }
static void w_u32(writer_t *w, uint32_t v) { uint8_t *at = w_take(w, 4); if (at) put32(at, v); }
static void w_u64(writer_t *w, uint64_t v) { uint8_t *at = w_take(w, 8); if (at) put64(at, v); }
static void w_bytes(writer_t *w, const uint8_t *d, size_t n) {
    uint8_t *at = w_take(w, n);
    if (at && n) memcpy(at, d, n);
}
static void w_str(writer_t *w, const wc_str_t *s) {
    w_u8(w, s->len);
    w_bytes(w, (const uint8_t *)s->s, s->len);
}
static void w_unit_id(writer_t *w, const wc_str_t *s) {
    if (!w->err && !wc_unit_id_valid(s->s, s->len)) w->err = WC_ERR_FIELD;
    w_str(w, s);
}
static void w_config(writer_t *w, const wc_config_fields_t *c) {
    w_u32(w, c->capture_interval_s);
    w_u8(w, c->frame_size);
    w_u8(w, c->jpeg_quality);
    w_u8(w, c->pir_enabled);
    w_u16(w, c->sleep_start_min);
    w_u16(w, c->sleep_end_min);
    w_u64(w, c->station_time_ms);
    if (c->chunk_size) w_u16(w, c->chunk_size); /* optional: absent when 0 */
}

int wc_encode_payload(const wc_msg_t *m, uint8_t *out, size_t cap, size_t *out_len) {
    writer_t w = {out, cap, 0, 0};
    switch (m->type) {
    case WC_HELLO:
        w_unit_id(&w, &m->u.hello.unit_id);
        w_str(&w, &m->u.hello.firmware_version);
        w_str(&w, &m->u.hello.chip);
        w_bytes(&w, m->u.hello.mac, 6);
        w_u8(&w, m->u.hello.protocol_version);
        if (m->u.hello.max_chunk) w_u16(&w, m->u.hello.max_chunk); /* optional: absent when 0 */
        break;
    case WC_TELEMETRY:
        w_unit_id(&w, &m->u.telemetry.unit_id);
        w_u16(&w, m->u.telemetry.battery_mv);
        w_u16(&w, (uint16_t)m->u.telemetry.temperature_cc);
        w_u8(&w, (uint8_t)m->u.telemetry.rssi_dbm);
        w_u32(&w, m->u.telemetry.uptime_s);
        w_u16(&w, m->u.telemetry.pending_captures);
        break;
    case WC_CONFIG_REPORT:
        w_unit_id(&w, &m->u.config_report.unit_id);
        w_config(&w, &m->u.config_report.config);
        break;
    case WC_CAPTURE_BEGIN:
        w_unit_id(&w, &m->u.begin.unit_id);
        w_u32(&w, m->u.begin.capture_id);
        w_u32(&w, m->u.begin.total_size);
        w_u32(&w, m->u.begin.image_crc32);
        w_u16(&w, m->u.begin.chunk_size);
        w_u64(&w, m->u.begin.unit_time);
        w_u8(&w, m->u.begin.time_kind);
        w_u8(&w, m->u.begin.trigger);
        break;
    case WC_CAPTURE_CHUNK:
        w_u32(&w, m->u.chunk.capture_id);
        w_u16(&w, m->u.chunk.index);
        w_bytes(&w, m->u.chunk.data, m->u.chunk.data_len);
        break;
    case WC_ACK:
        w_u32(&w, m->u.ack.capture_id);
        w_u8(&w, m->u.ack.status);
        break;
    case WC_NAK:
        w_u32(&w, m->u.nak.capture_id);
        w_u8(&w, m->u.nak.reason);
        w_str(&w, &m->u.nak.detail);
        break;
    case WC_CONFIG:
        w_config(&w, &m->u.config);
        break;
    case WC_CAPTURE_NOW:
        w_u32(&w, m->u.capture_now.request_id);
        break;
    case WC_SLEEP_NOW:
        w_u32(&w, m->u.sleep_now.duration_s);
        break;
    default:
        return WC_ERR_TYPE;
    }
    if (w.err) return w.err;
    *out_len = w.len;
    return WC_OK;
}

int wc_encode_frame(const wc_msg_t *m, uint16_t seq, uint8_t *out, size_t cap, size_t *out_len) {
    if (cap < WC_OVERHEAD) return WC_ERR_NOSPACE;
    size_t plen = 0;
    size_t room = cap - WC_OVERHEAD;
    if (room > WC_MAX_PAYLOAD) room = WC_MAX_PAYLOAD; /* the length field is 16 bits */
    int rc = wc_encode_payload(m, out + WC_HEADER_SIZE, room, &plen);
    if (rc != WC_OK) return rc;
    out[0] = WC_SYNC0;
    out[1] = WC_SYNC1;
    out[2] = WC_VERSION;
    out[3] = m->type;
    put16(out + 4, seq);
    put16(out + 6, (uint16_t)plen);
    put32(out + WC_HEADER_SIZE + plen, wc_crc32(0, out + 2, WC_HEADER_SIZE - 2 + plen));
    *out_len = WC_OVERHEAD + plen;
    return WC_OK;
}

int wc_encode_chunk_frame(uint8_t *frame, size_t cap, uint16_t seq, uint32_t capture_id,
                          uint16_t index, size_t data_len, size_t *out_len) {
    size_t plen = WC_CHUNK_HEAD + data_len;
    if (data_len == 0 || plen > WC_MAX_PAYLOAD) return WC_ERR_FIELD;
    if (cap < WC_OVERHEAD + plen) return WC_ERR_NOSPACE;
    frame[0] = WC_SYNC0;
    frame[1] = WC_SYNC1;
    frame[2] = WC_VERSION;
    frame[3] = WC_CAPTURE_CHUNK;
    put16(frame + 4, seq);
    put16(frame + 6, (uint16_t)plen);
    put32(frame + WC_HEADER_SIZE, capture_id);
    put16(frame + WC_HEADER_SIZE + 4, index);
    put32(frame + WC_HEADER_SIZE + plen, wc_crc32(0, frame + 2, WC_HEADER_SIZE - 2 + plen));
    *out_len = WC_OVERHEAD + plen;
    return WC_OK;
}

/* ---- payload reader ---- */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
    int err;
} reader_t;

static const uint8_t *r_take(reader_t *r, size_t n) {
    if (r->err || r->len - r->pos < n) {
        if (!r->err) r->err = WC_ERR_SHORT;
        return NULL;
    }
    const uint8_t *at = r->p + r->pos;
    r->pos += n;
    return at;
}
static uint8_t r_u8(reader_t *r) { const uint8_t *a = r_take(r, 1); return a ? a[0] : 0; }
static uint16_t r_u16(reader_t *r) { const uint8_t *a = r_take(r, 2); return a ? get16(a) : 0; }
static uint32_t r_u32(reader_t *r) { const uint8_t *a = r_take(r, 4); return a ? get32(a) : 0; }
static uint64_t r_u64(reader_t *r) { const uint8_t *a = r_take(r, 8); return a ? get64(a) : 0; }
static void r_str(reader_t *r, wc_str_t *s) {
    uint8_t n = r_u8(r);
    const uint8_t *a = r_take(r, n);
    s->len = 0;
    s->s[0] = '\0';
    if (!a) return;
    if (!wc_utf8_valid(a, n)) {
        r->err = WC_ERR_UTF8;
        return;
    }
    memcpy(s->s, a, n);
    s->s[n] = '\0';
    s->len = n;
}
static void r_unit_id(reader_t *r, wc_str_t *s) {
    r_str(r, s);
    if (!r->err && !wc_unit_id_valid(s->s, s->len)) r->err = WC_ERR_FIELD;
}
static void r_config(reader_t *r, wc_config_fields_t *c) {
    c->capture_interval_s = r_u32(r);
    c->frame_size = r_u8(r);
    c->jpeg_quality = r_u8(r);
    c->pir_enabled = r_u8(r);
    c->sleep_start_min = r_u16(r);
    c->sleep_end_min = r_u16(r);
    c->station_time_ms = r_u64(r);
    if (!r->err && r->pos < r->len) { /* optional, appended: older senders end here */
        c->chunk_size = r_u16(r);
        if (!r->err && (c->chunk_size == 0 || c->chunk_size > WC_MAX_CHUNK)) r->err = WC_ERR_FIELD;
    }
    if (r->err) return;
    if (c->jpeg_quality > 63 || c->pir_enabled > 1) r->err = WC_ERR_FIELD;
    if ((c->sleep_start_min != WC_NO_QUIET && c->sleep_start_min >= 1440) ||
        (c->sleep_end_min != WC_NO_QUIET && c->sleep_end_min >= 1440))
        r->err = WC_ERR_FIELD;
}

/* Trailing bytes after the known fields are ignored on purpose (PROTOCOL.md §7). */
int wc_decode_payload(uint8_t type, const uint8_t *p, size_t len, wc_msg_t *m) {
    reader_t r = {p, len, 0, 0};
    memset(m, 0, sizeof(*m));
    m->type = type;
    switch (type) {
    case WC_HELLO: {
        r_unit_id(&r, &m->u.hello.unit_id);
        r_str(&r, &m->u.hello.firmware_version);
        r_str(&r, &m->u.hello.chip);
        const uint8_t *mac = r_take(&r, 6);
        if (mac) memcpy(m->u.hello.mac, mac, 6);
        m->u.hello.protocol_version = r_u8(&r);
        if (!r.err && r.pos < r.len) { /* optional, appended: older units end here */
            m->u.hello.max_chunk = r_u16(&r);
            if (!r.err && m->u.hello.max_chunk == 0) r.err = WC_ERR_FIELD;
        }
        break;
    }
    case WC_TELEMETRY:
        r_unit_id(&r, &m->u.telemetry.unit_id);
        m->u.telemetry.battery_mv = r_u16(&r);
        m->u.telemetry.temperature_cc = (int16_t)r_u16(&r);
        m->u.telemetry.rssi_dbm = (int8_t)r_u8(&r);
        m->u.telemetry.uptime_s = r_u32(&r);
        m->u.telemetry.pending_captures = r_u16(&r);
        break;
    case WC_CONFIG_REPORT:
        r_unit_id(&r, &m->u.config_report.unit_id);
        r_config(&r, &m->u.config_report.config);
        break;
    case WC_CAPTURE_BEGIN: {
        wc_capture_begin_t *b = &m->u.begin;
        r_unit_id(&r, &b->unit_id);
        b->capture_id = r_u32(&r);
        b->total_size = r_u32(&r);
        b->image_crc32 = r_u32(&r);
        b->chunk_size = r_u16(&r);
        b->unit_time = r_u64(&r);
        b->time_kind = r_u8(&r);
        b->trigger = r_u8(&r);
        if (!r.err && (b->total_size == 0 || b->chunk_size == 0 || b->capture_id == WC_NO_CAPTURE ||
                       b->time_kind > 1 || b->trigger > 3))
            r.err = WC_ERR_FIELD;
        break;
    }
    case WC_CAPTURE_CHUNK:
        m->u.chunk.capture_id = r_u32(&r);
        m->u.chunk.index = r_u16(&r);
        if (!r.err) {
            m->u.chunk.data = p + r.pos;
            m->u.chunk.data_len = (uint16_t)(len - r.pos); /* len <= 65535 for any frame payload */
            if (len - r.pos == 0 || len - r.pos > WC_MAX_PAYLOAD) r.err = WC_ERR_FIELD;
        }
        break;
    case WC_ACK:
        m->u.ack.capture_id = r_u32(&r);
        m->u.ack.status = r_u8(&r);
        if (!r.err && m->u.ack.status > 1) r.err = WC_ERR_FIELD;
        break;
    case WC_NAK:
        m->u.nak.capture_id = r_u32(&r);
        m->u.nak.reason = r_u8(&r);
        if (!r.err && (m->u.nak.reason < 1 || m->u.nak.reason > 9)) r.err = WC_ERR_FIELD;
        r_str(&r, &m->u.nak.detail);
        break;
    case WC_CONFIG:
        r_config(&r, &m->u.config);
        break;
    case WC_CAPTURE_NOW:
        m->u.capture_now.request_id = r_u32(&r);
        break;
    case WC_SLEEP_NOW:
        m->u.sleep_now.duration_s = r_u32(&r);
        break;
    default:
        return WC_ERR_TYPE;
    }
    return r.err;
}

/* Header checks shared by the one-frame and the stream decoder. */
static int header_ok(const uint8_t *b, size_t max_payload) {
    if (b[2] != WC_VERSION) return WC_ERR_VERSION;
    if (!wc_type_known(b[3])) return WC_ERR_TYPE;
    if (get16(b + 6) > max_payload) return WC_ERR_LENGTH;
    return WC_OK;
}

int wc_decode_frame(const uint8_t *buf, size_t len, size_t max_payload, wc_frame_t *out) {
    if (len < WC_OVERHEAD) return WC_ERR_SHORT;
    if (buf[0] != WC_SYNC0 || buf[1] != WC_SYNC1) return WC_ERR_SYNC;
    int rc = header_ok(buf, max_payload);
    if (rc != WC_OK) return rc;
    uint16_t plen = get16(buf + 6);
    if (len != (size_t)WC_OVERHEAD + plen) return WC_ERR_LENGTH;
    if (get32(buf + WC_HEADER_SIZE + plen) != wc_crc32(0, buf + 2, WC_HEADER_SIZE - 2 + (size_t)plen))
        return WC_ERR_CRC;
    out->type = buf[3];
    out->seq = get16(buf + 4);
    out->length = plen;
    out->payload = buf + WC_HEADER_SIZE;
    return WC_OK;
}

/* ---- stream decoder ---- */
size_t wc_stream_sizeof(void) { return sizeof(wc_stream_t); }

int wc_stream_init(wc_stream_t *s, uint8_t *buf, size_t cap, size_t max_payload) {
    if (max_payload > WC_MAX_PAYLOAD) max_payload = WC_MAX_PAYLOAD;
    if (cap < max_payload + WC_OVERHEAD) return WC_ERR_NOSPACE;
    memset(s, 0, sizeof(*s));
    s->buf = buf;
    s->cap = cap;
    s->max_payload = max_payload;
    return WC_OK;
}

static void stream_drop(wc_stream_t *s, size_t n) {
    memmove(s->buf, s->buf + n, s->len - n);
    s->len -= n;
}

size_t wc_stream_feed(wc_stream_t *s, const uint8_t *data, size_t n) {
    if (s->consumed) {
        stream_drop(s, s->consumed);
        s->consumed = 0;
    }
    size_t room = s->cap - s->len;
    if (n > room) n = room;
    if (n) memcpy(s->buf + s->len, data, n);
    s->len += n;
    return n;
}

int wc_stream_next(wc_stream_t *s, wc_frame_t *out) {
    if (s->consumed) {
        stream_drop(s, s->consumed);
        s->consumed = 0;
    }
    for (;;) {
        size_t start = 0;
        while (start + 1 < s->len && !(s->buf[start] == WC_SYNC0 && s->buf[start + 1] == WC_SYNC1)) start++;
        if (start + 1 >= s->len) {
            /* no sync: keep a trailing A5, it may be the first half of a sync split across reads */
            size_t keep = (s->len && s->buf[s->len - 1] == WC_SYNC0) ? 1 : 0;
            s->noise_bytes += (uint32_t)(s->len - keep);
            stream_drop(s, s->len - keep);
            return 0;
        }
        if (start) {
            s->noise_bytes += (uint32_t)start;
            stream_drop(s, start);
        }
        if (s->len < WC_HEADER_SIZE) return 0;
        if (header_ok(s->buf, s->max_payload) != WC_OK) {
            s->noise_bytes++;
            stream_drop(s, 1);
            continue;
        }
        size_t plen = get16(s->buf + 6);
        size_t end = WC_HEADER_SIZE + plen + WC_CRC_SIZE;
        if (s->len < end) return 0;
        if (get32(s->buf + WC_HEADER_SIZE + plen) != wc_crc32(0, s->buf + 2, WC_HEADER_SIZE - 2 + plen)) {
            s->crc_errors++;
            s->noise_bytes++;
            stream_drop(s, 1);
            continue;
        }
        out->type = s->buf[3];
        out->seq = get16(s->buf + 4);
        out->length = (uint16_t)plen;
        out->payload = s->buf + WC_HEADER_SIZE;
        s->consumed = end;
        return 1;
    }
}

/* ---- chunking ---- */
uint32_t wc_chunk_count(uint32_t total_size, uint16_t chunk_size) {
    if (chunk_size == 0) return 0;
    return (uint32_t)(((uint64_t)total_size + chunk_size - 1u) / chunk_size);
}

int wc_chunk_range(uint32_t total_size, uint16_t chunk_size, uint32_t index, uint32_t *offset, uint32_t *len) {
    if (index >= wc_chunk_count(total_size, chunk_size)) return WC_ERR_FIELD;
    uint64_t off = (uint64_t)index * chunk_size;
    uint64_t left = total_size - off;
    *offset = (uint32_t)off;
    *len = (uint32_t)(left < chunk_size ? left : chunk_size);
    return WC_OK;
}

int wc_reencode_frame(const uint8_t *in, size_t n, size_t max_payload, uint8_t *out, size_t cap, size_t *out_len) {
    wc_frame_t f;
    wc_msg_t m;
    int rc = wc_decode_frame(in, n, max_payload, &f);
    if (rc != WC_OK) return rc;
    rc = wc_decode_payload(f.type, f.payload, f.length, &m);
    if (rc != WC_OK) return rc;
    return wc_encode_frame(&m, f.seq, out, cap, out_len);
}

const char *wc_err_str(int err) {
    switch (err) {
    case WC_OK: return "ok";
    case WC_ERR_SHORT: return "buffer ends inside a field";
    case WC_ERR_SYNC: return "no sync bytes A5 5A";
    case WC_ERR_VERSION: return "unsupported protocol version";
    case WC_ERR_TYPE: return "unknown frame type";
    case WC_ERR_LENGTH: return "length field out of range";
    case WC_ERR_CRC: return "CRC mismatch";
    case WC_ERR_FIELD: return "field value out of range";
    case WC_ERR_UTF8: return "string is not UTF-8";
    case WC_ERR_NOSPACE: return "output buffer too small";
    default: return "unknown error";
    }
}
