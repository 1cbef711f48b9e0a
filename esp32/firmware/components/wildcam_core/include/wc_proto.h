/* WildCAM wire protocol v1 (esp32/PROTOCOL.md): frames, payloads, CRC32, stream resync.
 * Portable C11, no allocation; the same code runs on the ESP32 and on the host. */
#ifndef WC_PROTO_H
#define WC_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WC_SYNC0 0xA5u
#define WC_SYNC1 0x5Au
#define WC_VERSION 1u
#define WC_HEADER_SIZE 8u
#define WC_CRC_SIZE 4u
#define WC_OVERHEAD (WC_HEADER_SIZE + WC_CRC_SIZE)
#define WC_MAX_PAYLOAD 0xFFFFu
#define WC_NO_CAPTURE 0xFFFFFFFFu
#define WC_NO_QUIET 0xFFFFu
#define WC_UNIT_ID_MAX 32u
#define WC_CHUNK_HEAD 6u                                 /* CAPTURE_CHUNK: capture_id, index */
#define WC_MAX_CHUNK (WC_MAX_PAYLOAD - WC_CHUNK_HEAD)    /* 65529: the most one frame carries */
#define WC_LEGACY_MAX_CHUNK 16384u /* what a HELLO without max_chunk means (PROTOCOL.md §3) */

typedef enum {
    WC_OK = 0,
    WC_ERR_SHORT = -1,     /* buffer ends inside a field / frame */
    WC_ERR_SYNC = -2,      /* frame does not start with A5 5A */
    WC_ERR_VERSION = -3,   /* unknown protocol version */
    WC_ERR_TYPE = -4,      /* unknown frame type */
    WC_ERR_LENGTH = -5,    /* length field above the limit or not matching the buffer */
    WC_ERR_CRC = -6,       /* frame CRC mismatch */
    WC_ERR_FIELD = -7,     /* a field value out of range (unit id, enum, zero size...) */
    WC_ERR_UTF8 = -8,      /* a string field is not UTF-8 */
    WC_ERR_NOSPACE = -9,   /* output buffer too small */
} wc_err_t;

typedef enum {
    WC_HELLO = 0x01,
    WC_TELEMETRY = 0x02,
    WC_CONFIG_REPORT = 0x03,
    WC_CAPTURE_BEGIN = 0x10,
    WC_CAPTURE_CHUNK = 0x11,
    WC_ACK = 0x20,
    WC_NAK = 0x21,
    WC_CONFIG = 0x30,
    WC_CAPTURE_NOW = 0x31,
    WC_SLEEP_NOW = 0x32,
} wc_type_t;

typedef enum {
    WC_NAK_CRC_MISMATCH = 1,
    WC_NAK_TOO_LARGE = 2,
    WC_NAK_TIMEOUT = 3,
    WC_NAK_MALFORMED = 4,
    WC_NAK_NOT_JPEG = 5,
    WC_NAK_STORAGE_FULL = 6,
    WC_NAK_STORAGE_ERROR = 7,
    WC_NAK_UNKNOWN_CAPTURE = 8,
    WC_NAK_BUSY = 9,
} wc_nak_reason_t;

typedef enum { WC_TRIGGER_TIMER = 0, WC_TRIGGER_PIR = 1, WC_TRIGGER_COMMAND = 2, WC_TRIGGER_MANUAL = 3 } wc_trigger_t;
typedef enum { WC_TIME_BOOT_MS = 0, WC_TIME_EPOCH_MS = 1 } wc_time_kind_t;

/* A length-prefixed protocol string; s is always NUL-terminated at s[len]. */
typedef struct {
    uint8_t len;
    char s[256];
} wc_str_t;

typedef struct {
    wc_str_t unit_id, firmware_version, chip;
    uint8_t mac[6];
    uint8_t protocol_version;
    uint16_t max_chunk; /* optional, appended: largest chunk the unit can send; 0 = absent */
} wc_hello_t;

typedef struct {
    wc_str_t unit_id;
    uint16_t battery_mv;
    int16_t temperature_cc;
    int8_t rssi_dbm;
    uint32_t uptime_s;
    uint16_t pending_captures;
} wc_telemetry_t;

/* CONFIG fields; CONFIG_REPORT is unit_id + these. */
typedef struct {
    uint32_t capture_interval_s;
    uint8_t frame_size;
    uint8_t jpeg_quality;
    uint8_t pir_enabled;
    uint16_t sleep_start_min;
    uint16_t sleep_end_min;
    uint64_t station_time_ms;
    uint16_t chunk_size; /* optional, appended: CONFIG the chunk to use, CONFIG_REPORT the one in
                          * use; 0 = absent (CONFIG: keep the unit's own) */
} wc_config_fields_t;

typedef struct {
    wc_str_t unit_id;
    uint32_t capture_id, total_size, image_crc32;
    uint16_t chunk_size;
    uint64_t unit_time;
    uint8_t time_kind, trigger;
} wc_capture_begin_t;

typedef struct {
    uint32_t capture_id;
    uint16_t index;
    const uint8_t *data; /* points into the decoded buffer (or the caller's data when encoding) */
    uint16_t data_len;
} wc_capture_chunk_t;

typedef struct {
    uint8_t type; /* wc_type_t */
    union {
        wc_hello_t hello;
        wc_telemetry_t telemetry;
        struct {
            wc_str_t unit_id;
            wc_config_fields_t config;
        } config_report;
        wc_capture_begin_t begin;
        wc_capture_chunk_t chunk;
        struct {
            uint32_t capture_id;
            uint8_t status;
        } ack;
        struct {
            uint32_t capture_id;
            uint8_t reason;
            wc_str_t detail;
        } nak;
        wc_config_fields_t config;
        struct {
            uint32_t request_id;
        } capture_now;
        struct {
            uint32_t duration_s;
        } sleep_now;
    } u;
} wc_msg_t;

/* A frame found in a buffer; payload points into that buffer. */
typedef struct {
    uint8_t type;
    uint16_t seq;
    uint16_t length;
    const uint8_t *payload;
} wc_frame_t;

/* CRC32 (IEEE, zlib-compatible). Start with crc = 0; feed pieces by passing the previous result. */
uint32_t wc_crc32(uint32_t crc, const uint8_t *data, size_t len);

int wc_type_known(uint8_t type);
int wc_unit_id_valid(const char *s, size_t len);
int wc_utf8_valid(const uint8_t *s, size_t len);
/* Copy a C string into a protocol string; WC_ERR_FIELD when longer than 255 bytes. */
int wc_str_set(wc_str_t *dst, const char *src);

/* Encode msg's payload into out; *out_len receives its size. */
int wc_encode_payload(const wc_msg_t *msg, uint8_t *out, size_t cap, size_t *out_len);
/* Encode msg as one whole frame (header, payload, CRC). */
int wc_encode_frame(const wc_msg_t *msg, uint16_t seq, uint8_t *out, size_t cap, size_t *out_len);
/* Finish a CAPTURE_CHUNK frame in place: its data_len bytes are already at
 * frame + WC_HEADER_SIZE + WC_CHUNK_HEAD (read there from storage, so no second chunk-sized buffer). */
int wc_encode_chunk_frame(uint8_t *frame, size_t cap, uint16_t seq, uint32_t capture_id,
                          uint16_t index, size_t data_len, size_t *out_len);
/* Decode a payload of the given type, with the same range checks as agent/protocol.py. */
int wc_decode_payload(uint8_t type, const uint8_t *p, size_t len, wc_msg_t *out);
/* Decode exactly one frame (one MQTT message). */
int wc_decode_frame(const uint8_t *buf, size_t len, size_t max_payload, wc_frame_t *out);

/* Stream decoder for serial: finds frames in a byte stream and resynchronises after noise. */
typedef struct {
    uint8_t *buf;
    size_t cap, len, consumed, max_payload;
    uint32_t noise_bytes, crc_errors;
} wc_stream_t;

/* buf must hold at least max_payload + WC_OVERHEAD bytes so that any acceptable frame fits. */
int wc_stream_init(wc_stream_t *s, uint8_t *buf, size_t cap, size_t max_payload);
/* Append bytes; returns how many were taken (fewer only when the buffer is full: call next). */
size_t wc_stream_feed(wc_stream_t *s, const uint8_t *data, size_t n);
/* 1 and *out filled when a CRC-valid frame is found (valid until the next feed/next), else 0. */
int wc_stream_next(wc_stream_t *s, wc_frame_t *out);
size_t wc_stream_sizeof(void);

/* Chunking: number of chunks and the byte range of chunk i for a capture. */
uint32_t wc_chunk_count(uint32_t total_size, uint16_t chunk_size);
int wc_chunk_range(uint32_t total_size, uint16_t chunk_size, uint32_t index, uint32_t *offset, uint32_t *len);

/* FFI helpers for the host tests and the virtual unit (ctypes): decode a frame and encode it again. */
int wc_reencode_frame(const uint8_t *in, size_t n, size_t max_payload, uint8_t *out, size_t cap, size_t *out_len);
const char *wc_err_str(int err);

#ifdef __cplusplus
}
#endif
#endif
