/* The thin hardware layer the portable core (wildcam_core) runs on. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "wc_config.h"
#include "wc_unit.h"

/* hal_camera.c */
esp_err_t hal_camera_init(const wc_config_t *cfg);
void hal_camera_deinit(void);

/* hal_store.c: captures in PSRAM until the station ACKs them */
int hal_store_capture(void *ctx, const wc_config_t *cfg, wc_capture_meta_t *meta);
int hal_store_meta(void *ctx, uint32_t id, wc_capture_meta_t *meta);
int hal_store_read(void *ctx, uint32_t id, uint32_t off, uint8_t *buf, uint32_t n);
void hal_store_delete(void *ctx, uint32_t id);
int hal_store_oldest(void *ctx, uint32_t *id);
uint16_t hal_store_count(void *ctx);

/* hal_link.c: the station link (serial or MQTT) */
esp_err_t hal_link_start(const wc_config_t *cfg, const char *unit_id);
int hal_link_send(void *ctx, uint8_t topic, const uint8_t *frame, size_t len);
/* Wait up to wait_ms for station bytes and hand them to the core. */
void hal_link_receive(wc_unit_t *unit, uint32_t wait_ms);
int8_t hal_link_rssi(void *ctx);
void hal_link_stop(void);

/* hal_power.c: clock, battery, NVS, sleep */
uint64_t hal_now_ms(void *ctx);
int hal_epoch_ms(void *ctx, uint64_t *out);
void hal_set_epoch_ms(void *ctx, uint64_t ms);
esp_err_t hal_battery_init(void);
uint16_t hal_battery_mv(void *ctx);
int16_t hal_temperature_cc(void *ctx);
extern const wc_kv_t hal_nvs_kv;
esp_err_t hal_nvs_open(void);
uint8_t hal_wake_reason(void);
/* Deep sleep (does not return); 0 s = PIR only. */
void hal_deep_sleep(const wc_config_t *cfg, uint32_t seconds);
/* Light sleep keeps PSRAM (and the captures in it); returns after seconds or a PIR edge. */
void hal_light_sleep(const wc_config_t *cfg, uint32_t seconds);
