/* Clock, battery ADC, NVS key/value store, wake reason and sleep. */
#include <string.h>
#include <sys/time.h>

#include "driver/rtc_io.h"
#include "esp_adc/adc_cali.h"
#include "esp_adc/adc_cali_scheme.h"
#include "esp_adc/adc_oneshot.h"
#include "esp_log.h"
#include "esp_sleep.h"
#include "esp_timer.h"
#include "nvs.h"
#include "nvs_flash.h"

#include "board.h"
#include "hal.h"

static const char *TAG = "wc_power";
static nvs_handle_t s_nvs;
static adc_oneshot_unit_handle_t s_adc;
static adc_cali_handle_t s_cali;
static adc_channel_t s_channel;
static uint16_t s_battery_mv; /* read once per wake, before Wi-Fi (ADC2 on the ESP32-CAM) */

/* ---- clock: the RTC keeps counting through deep sleep, so a time set once stays valid ---- */
uint64_t hal_now_ms(void *ctx) {
    (void)ctx;
    return (uint64_t)(esp_timer_get_time() / 1000);
}

int hal_epoch_ms(void *ctx, uint64_t *out) {
    (void)ctx;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec < 1700000000) return -1; /* never set since power-on */
    *out = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
    return 0;
}

void hal_set_epoch_ms(void *ctx, uint64_t ms) {
    (void)ctx;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000u), .tv_usec = (suseconds_t)((ms % 1000u) * 1000u)};
    settimeofday(&tv, NULL);
}

/* ---- battery ---- */
esp_err_t hal_battery_init(void) {
    const wc_board_t *b = wc_board();
    adc_unit_t unit;
    esp_err_t err = adc_oneshot_io_to_channel(b->battery_adc, &unit, &s_channel);
    if (err != ESP_OK) return err;
    adc_oneshot_unit_init_cfg_t init = {.unit_id = unit};
    if ((err = adc_oneshot_new_unit(&init, &s_adc)) != ESP_OK) return err;
    adc_oneshot_chan_cfg_t ch = {.atten = ADC_ATTEN_DB_12, .bitwidth = ADC_BITWIDTH_DEFAULT};
    if ((err = adc_oneshot_config_channel(s_adc, s_channel, &ch)) != ESP_OK) return err;
#if ADC_CALI_SCHEME_CURVE_FITTING_SUPPORTED
    adc_cali_curve_fitting_config_t cc = {.unit_id = unit, .chan = s_channel, .atten = ADC_ATTEN_DB_12,
                                          .bitwidth = ADC_BITWIDTH_DEFAULT};
    err = adc_cali_create_scheme_curve_fitting(&cc, &s_cali);
#elif ADC_CALI_SCHEME_LINE_FITTING_SUPPORTED
    adc_cali_line_fitting_config_t lc = {.unit_id = unit, .atten = ADC_ATTEN_DB_12, .bitwidth = ADC_BITWIDTH_DEFAULT};
    err = adc_cali_create_scheme_line_fitting(&lc, &s_cali);
#endif
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "no ADC calibration (%s): battery readings are raw estimates", esp_err_to_name(err));
        s_cali = NULL;
    }
    /* average a few samples: the divider is high-impedance and the first reading is noisy */
    int sum = 0, n = 0;
    for (int i = 0; i < 8; i++) {
        int raw = 0, mv = 0;
        if (adc_oneshot_read(s_adc, s_channel, &raw) != ESP_OK) continue;
        if (s_cali) adc_cali_raw_to_voltage(s_cali, raw, &mv);
        else mv = raw * 3100 / 4095;
        sum += mv;
        n++;
    }
    s_battery_mv = n ? (uint16_t)(sum / n * b->battery_divider) : 0;
    return ESP_OK;
}

uint16_t hal_battery_mv(void *ctx) {
    (void)ctx;
    return s_battery_mv;
}

int16_t hal_temperature_cc(void *ctx) {
    (void)ctx;
    return INT16_MIN; /* no sensor on these boards: -32768 per PROTOCOL.md */
}

/* ---- NVS (PROTOCOL.md §9) ---- */
esp_err_t hal_nvs_open(void) {
    esp_err_t err = nvs_flash_init();
    if (err != ESP_OK) {
        /* never erase: the partition holds the unit's identity; `fieldstation esp32 configure` fixes it */
        ESP_LOGE(TAG, "nvs_flash_init: %s", esp_err_to_name(err));
        return err;
    }
    return nvs_open(WC_NVS_NAMESPACE, NVS_READWRITE, &s_nvs);
}

static int kv_get_num(void *ctx, const char *key, wc_kv_type_t t, uint32_t *v) {
    (void)ctx;
    esp_err_t err = ESP_FAIL;
    switch (t) {
    case WC_KV_U8: { uint8_t x; if ((err = nvs_get_u8(s_nvs, key, &x)) == ESP_OK) *v = x; break; }
    case WC_KV_U16: { uint16_t x; if ((err = nvs_get_u16(s_nvs, key, &x)) == ESP_OK) *v = x; break; }
    case WC_KV_U32: { uint32_t x; if ((err = nvs_get_u32(s_nvs, key, &x)) == ESP_OK) *v = x; break; }
    case WC_KV_I16: { int16_t x; if ((err = nvs_get_i16(s_nvs, key, &x)) == ESP_OK) *v = (uint32_t)(int32_t)x; break; }
    default: break;
    }
    return err == ESP_OK ? 0 : -1;
}

static int kv_set_num(void *ctx, const char *key, wc_kv_type_t t, uint32_t v) {
    (void)ctx;
    esp_err_t err = ESP_FAIL;
    switch (t) {
    case WC_KV_U8: err = nvs_set_u8(s_nvs, key, (uint8_t)v); break;
    case WC_KV_U16: err = nvs_set_u16(s_nvs, key, (uint16_t)v); break;
    case WC_KV_U32: err = nvs_set_u32(s_nvs, key, v); break;
    case WC_KV_I16: err = nvs_set_i16(s_nvs, key, (int16_t)(int32_t)v); break;
    default: break;
    }
    if (err == ESP_OK) err = nvs_commit(s_nvs);
    return err == ESP_OK ? 0 : -1;
}

static int kv_get_str(void *ctx, const char *key, char *buf, size_t cap) {
    (void)ctx;
    size_t len = cap;
    return nvs_get_str(s_nvs, key, buf, &len) == ESP_OK ? 0 : -1;
}

static int kv_set_str(void *ctx, const char *key, const char *val) {
    (void)ctx;
    esp_err_t err = nvs_set_str(s_nvs, key, val);
    if (err == ESP_OK) err = nvs_commit(s_nvs);
    return err == ESP_OK ? 0 : -1;
}

const wc_kv_t hal_nvs_kv = {kv_get_num, kv_set_num, kv_get_str, kv_set_str};

/* ---- wake and sleep ---- */
uint8_t hal_wake_reason(void) {
    switch (esp_sleep_get_wakeup_cause()) {
    case ESP_SLEEP_WAKEUP_EXT0: return WC_WAKE_PIR;
    case ESP_SLEEP_WAKEUP_TIMER: return WC_WAKE_TIMER;
    default: return WC_WAKE_POWER_ON;
    }
}

static void arm_wakeups(const wc_config_t *cfg, uint32_t seconds) {
    const wc_board_t *b = wc_board();
    if (seconds) esp_sleep_enable_timer_wakeup((uint64_t)seconds * 1000000u);
    if (cfg->pir_enabled) {
        /* the PIR output idles low and goes high on motion */
        rtc_gpio_pullup_dis(b->pir);
        rtc_gpio_pulldown_en(b->pir);
        esp_sleep_enable_ext0_wakeup(b->pir, 1);
    }
}

void hal_deep_sleep(const wc_config_t *cfg, uint32_t seconds) {
    ESP_LOGI(TAG, "deep sleep %lu s%s", (unsigned long)seconds, cfg->pir_enabled ? " or PIR" : "");
    arm_wakeups(cfg, seconds);
    esp_deep_sleep_start();
}

void hal_light_sleep(const wc_config_t *cfg, uint32_t seconds) {
    arm_wakeups(cfg, seconds);
    esp_light_sleep_start();
    esp_sleep_disable_wakeup_source(ESP_SLEEP_WAKEUP_ALL);
}
