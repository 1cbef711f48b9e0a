/* Captures kept in PSRAM until the station's ACK (PSRAM survives light sleep, not deep sleep:
 * app_main light-sleeps while any capture is pending). */
#include <string.h>

#include "esp_camera.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "sdkconfig.h"

#include "hal.h"

static const char *TAG = "wc_store";

typedef struct {
    bool used;
    wc_capture_meta_t meta;
    uint8_t *data;
} slot_t;

static slot_t s_slots[CONFIG_WILDCAM_MAX_PENDING];

camera_fb_t *hal_camera_grab(const wc_config_t *cfg);

static slot_t *find(uint32_t id) {
    for (int i = 0; i < CONFIG_WILDCAM_MAX_PENDING; i++)
        if (s_slots[i].used && s_slots[i].meta.capture_id == id) return &s_slots[i];
    return NULL;
}

int hal_store_capture(void *ctx, const wc_config_t *cfg, wc_capture_meta_t *meta) {
    (void)ctx;
    slot_t *free_slot = NULL;
    for (int i = 0; i < CONFIG_WILDCAM_MAX_PENDING && !free_slot; i++)
        if (!s_slots[i].used) free_slot = &s_slots[i];
    if (!free_slot) {
        ESP_LOGW(TAG, "%d captures already wait for an ACK: not taking another", CONFIG_WILDCAM_MAX_PENDING);
        return -2;
    }
    camera_fb_t *fb = hal_camera_grab(cfg);
    if (!fb) return -1;
    uint8_t *copy = heap_caps_malloc(fb->len, MALLOC_CAP_SPIRAM);
    if (!copy) {
        esp_camera_fb_return(fb);
        ESP_LOGE(TAG, "no PSRAM for a %u-byte JPEG", (unsigned)fb->len);
        return -3;
    }
    memcpy(copy, fb->buf, fb->len);
    meta->size = (uint32_t)fb->len;
    esp_camera_fb_return(fb);
    free_slot->data = copy;
    free_slot->meta = *meta;
    free_slot->used = true;
    return 0;
}

int hal_store_meta(void *ctx, uint32_t id, wc_capture_meta_t *meta) {
    (void)ctx;
    slot_t *s = find(id);
    if (!s) return -1;
    *meta = s->meta;
    return 0;
}

int hal_store_read(void *ctx, uint32_t id, uint32_t off, uint8_t *buf, uint32_t n) {
    (void)ctx;
    slot_t *s = find(id);
    if (!s || off > s->meta.size || n > s->meta.size - off) return -1;
    memcpy(buf, s->data + off, n);
    return 0;
}

void hal_store_delete(void *ctx, uint32_t id) {
    (void)ctx;
    slot_t *s = find(id);
    if (!s) return;
    heap_caps_free(s->data);
    memset(s, 0, sizeof(*s));
}

int hal_store_oldest(void *ctx, uint32_t *id) {
    (void)ctx;
    slot_t *best = NULL;
    for (int i = 0; i < CONFIG_WILDCAM_MAX_PENDING; i++)
        if (s_slots[i].used && (!best || s_slots[i].meta.capture_id < best->meta.capture_id)) best = &s_slots[i];
    if (!best) return -1;
    *id = best->meta.capture_id;
    return 0;
}

uint16_t hal_store_count(void *ctx) {
    (void)ctx;
    uint16_t n = 0;
    for (int i = 0; i < CONFIG_WILDCAM_MAX_PENDING; i++) n += s_slots[i].used;
    return n;
}
