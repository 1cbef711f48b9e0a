/* WildCAM unit: wake, let the portable core work (capture, send, await ACK, retry), sleep.
 * Everything about the protocol and the schedule is in components/wildcam_core; this file only
 * connects the core to the board. */
#include <string.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_sleep.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

#include "board.h"
#include "hal.h"
#include "wc_unit.h"

#ifndef WILDCAM_VERSION
#define WILDCAM_VERSION "1.0.0"
#endif

static const char *TAG = "wildcam";
static wc_unit_t s_unit; /* ~17 KiB: static, not on the task stack */

static void core_log(void *ctx, int level, const char *msg) {
    (void)ctx;
    if (level == WC_LOG_ERROR) ESP_LOGE(TAG, "%s", msg);
    else if (level == WC_LOG_WARN) ESP_LOGW(TAG, "%s", msg);
    else ESP_LOGI(TAG, "%s", msg);
}

static const wc_hal_t HAL = {
    .now_ms = hal_now_ms,
    .epoch_ms = hal_epoch_ms,
    .set_epoch_ms = hal_set_epoch_ms,
    .send = hal_link_send,
    .capture = hal_store_capture,
    .stored_meta = hal_store_meta,
    .stored_read = hal_store_read,
    .stored_delete = hal_store_delete,
    .stored_oldest = hal_store_oldest,
    .stored_count = hal_store_count,
    .battery_mv = hal_battery_mv,
    .temperature_cc = hal_temperature_cc,
    .rssi_dbm = hal_link_rssi,
    .log = core_log,
    .on_message = NULL,
    .kv = {0}, /* set in app_main: hal_nvs_kv is not a constant expression */
};

/* Chunk frames as large as this wake's heap allows, so a capture is fewer packets for the station
 * (PROTOCOL.md §3, HELLO max_chunk). Taken after the camera has its frame buffers. Without PSRAM,
 * at most half the largest internal block: Wi-Fi and esp-mqtt's outbox (a copy of each QoS 1
 * frame until its PUBACK) need the rest. Lives until deep sleep, which resets the heap. */
static void give_chunk_buffer(wc_unit_t *u) {
    const size_t want = WC_MAX_CHUNK + WC_CHUNK_HEAD + WC_OVERHEAD;
    uint32_t caps = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT;
    size_t largest = heap_caps_get_largest_free_block(caps) / 2; /* the outbox copy lives here too */
    if (largest == 0) {
        caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
        largest = heap_caps_get_largest_free_block(caps) / 2;
    }
    size_t cap = largest < want ? largest : want;
    if (cap <= WC_UNIT_TX_CAP) return; /* the core's built-in 16 KiB buffer is as large */
    uint8_t *buf = heap_caps_malloc(cap, caps);
    if (!buf) return;
    wc_unit_set_chunk_buffer(u, buf, cap);
    ESP_LOGI(TAG, "chunks up to %u bytes (%s)", (unsigned)wc_unit_max_chunk(u),
             (caps & MALLOC_CAP_SPIRAM) ? "PSRAM" : "internal RAM");
}

void app_main(void) {
    static wc_hal_t hal;
    hal = HAL;
    hal.kv = hal_nvs_kv;
    uint8_t wake = hal_wake_reason();
    const wc_board_t *board = wc_board();

    if (hal_nvs_open() != ESP_OK) {
        ESP_LOGE(TAG, "no NVS: sleeping an hour (run `fieldstation esp32 configure`)");
        wc_config_t dflt;
        wc_config_defaults(&dflt);
        dflt.pir_enabled = 0;
        hal_deep_sleep(&dflt, 3600);
    }
    if (hal_battery_init() != ESP_OK) ESP_LOGW(TAG, "battery ADC unavailable");

    uint8_t mac[6];
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    if (wc_unit_init(&s_unit, &hal, NULL, WILDCAM_VERSION, board->chip, mac) != WC_OK) {
        ESP_LOGE(TAG, "NVS has no valid unit_id: sleeping an hour (run `fieldstation esp32 configure`)");
        hal_deep_sleep(wc_unit_config(&s_unit), 3600);
    }
    const wc_config_t *cfg = wc_unit_config(&s_unit);
    if (hal_link_start(cfg, cfg->unit_id) != ESP_OK) {
        /* a PIR capture is still taken and kept; it goes out on the next wake with a link */
        ESP_LOGE(TAG, "no link to the station this wake");
    }
    if (hal_camera_init(cfg) != ESP_OK) ESP_LOGE(TAG, "camera unavailable this wake");
    give_chunk_buffer(&s_unit); /* before the wake's HELLO, which advertises it */
    ESP_LOGI(TAG, "%s, unit %s, wake %u", board->name, cfg->unit_id, wake);

    wc_unit_wake(&s_unit, wake);
    for (;;) {
        wc_action_t act;
        wc_unit_poll(&s_unit, &act);
        if (act.kind == WC_ACT_RUN) continue;
        if (act.kind == WC_ACT_WAIT) {
            hal_link_receive(&s_unit, act.wait_ms);
            continue;
        }
        /* WC_ACT_SLEEP */
        if (hal_store_count(NULL) > 0) {
            /* captures still wait for an ACK and live in PSRAM, which deep sleep would lose:
             * light-sleep instead, then wake as the timer would and resend */
            uint32_t s = act.sleep_s && act.sleep_s < 300 ? act.sleep_s : 300;
            hal_light_sleep(cfg, s);
            wc_unit_wake(&s_unit, esp_sleep_get_wakeup_cause() == ESP_SLEEP_WAKEUP_EXT0 ? WC_WAKE_PIR : WC_WAKE_TIMER);
            continue;
        }
        hal_link_stop();
        hal_camera_deinit();
        hal_deep_sleep(cfg, act.sleep_s);
    }
}
