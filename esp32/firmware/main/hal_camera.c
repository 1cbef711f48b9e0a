/* Camera through the esp32-camera component: init per wake, one JPEG per capture. */
#include "esp_camera.h"
#include "esp_log.h"

#include "board.h"
#include "hal.h"

static const char *TAG = "wc_camera";
static bool s_ready;

esp_err_t hal_camera_init(const wc_config_t *cfg) {
    const wc_board_t *b = wc_board();
    camera_config_t c = {
        .pin_pwdn = b->pwdn,
        .pin_reset = b->reset,
        .pin_xclk = b->xclk,
        .pin_sccb_sda = b->sccb_sda,
        .pin_sccb_scl = b->sccb_scl,
        .pin_d7 = b->d7, .pin_d6 = b->d6, .pin_d5 = b->d5, .pin_d4 = b->d4,
        .pin_d3 = b->d3, .pin_d2 = b->d2, .pin_d1 = b->d1, .pin_d0 = b->d0,
        .pin_vsync = b->vsync,
        .pin_href = b->href,
        .pin_pclk = b->pclk,
        .xclk_freq_hz = b->xclk_hz,
        .ledc_timer = LEDC_TIMER_0,
        .ledc_channel = LEDC_CHANNEL_0,
        .pixel_format = PIXFORMAT_JPEG,
        .frame_size = (framesize_t)cfg->frame_size,
        .jpeg_quality = cfg->jpeg_quality,
        .fb_count = 1,
        .fb_location = CAMERA_FB_IN_PSRAM,
        .grab_mode = CAMERA_GRAB_LATEST, /* a PIR wake wants the frame of now, not a stale one */
    };
    esp_err_t err = esp_camera_init(&c);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_camera_init: %s", esp_err_to_name(err));
        return err;
    }
    s_ready = true;
    return ESP_OK;
}

void hal_camera_deinit(void) {
    if (s_ready) esp_camera_deinit();
    s_ready = false;
}

/* Called from hal_store_capture: take one JPEG and hand the frame buffer to the caller. */
camera_fb_t *hal_camera_grab(const wc_config_t *cfg);
camera_fb_t *hal_camera_grab(const wc_config_t *cfg) {
    if (!s_ready && hal_camera_init(cfg) != ESP_OK) return NULL;
    sensor_t *s = esp_camera_sensor_get();
    if (s) {
        /* the station may have changed these with CONFIG since init */
        s->set_framesize(s, (framesize_t)cfg->frame_size);
        s->set_quality(s, cfg->jpeg_quality);
    }
    camera_fb_t *fb = esp_camera_fb_get();
    if (!fb) ESP_LOGE(TAG, "esp_camera_fb_get returned no frame");
    else if (fb->format != PIXFORMAT_JPEG) {
        esp_camera_fb_return(fb);
        return NULL;
    }
    return fb;
}
