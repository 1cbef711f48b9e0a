/* The station link: UART0 or USB Serial/JTAG (serial units), or Wi-Fi + esp-mqtt (MQTT units).
 * The core is not thread-safe: MQTT messages are queued here and handed to it from app_main. */
#include <stdio.h>
#include <string.h>

#include "driver/uart.h"
#include "driver/usb_serial_jtag.h"
#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "freertos/queue.h"
#include "mqtt_client.h"
#include "sdkconfig.h"

#include "board.h"
#include "hal.h"

static const char *TAG = "wc_link";
static const char *UP_TOPICS[] = {"hello", "telemetry", "capture"}; /* wc_topic_t order */

#define RX_FRAME_MAX (WC_UNIT_RX_MAX_PAYLOAD + WC_OVERHEAD)
#define WIFI_CONNECTED BIT0
#define MQTT_READY BIT1

typedef struct {
    uint16_t len;
    uint8_t data[RX_FRAME_MAX];
} rx_msg_t;

static uint8_t s_transport;
static bool s_usb;
static esp_mqtt_client_handle_t s_mqtt;
static QueueHandle_t s_rx;
static EventGroupHandle_t s_events;
static char s_prefix[96]; /* wildcam/<station>/<unit>/ */

/* ---- serial ---- */
static esp_err_t serial_start(void) {
    s_usb = wc_board()->usb_serial_jtag;
    if (s_usb) {
        usb_serial_jtag_driver_config_t c = {.rx_buffer_size = 1024, .tx_buffer_size = 4096};
        return usb_serial_jtag_driver_install(&c);
    }
    uart_config_t c = {
        .baud_rate = CONFIG_WILDCAM_UART_BAUD,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT,
    };
    esp_err_t err = uart_driver_install(UART_NUM_0, 2048, 8192, 0, NULL, 0);
    if (err == ESP_OK) err = uart_param_config(UART_NUM_0, &c);
    return err;
}

/* ---- MQTT ---- */
static void on_wifi(void *arg, esp_event_base_t base, int32_t id, void *data) {
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) esp_wifi_connect();
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        xEventGroupClearBits(s_events, WIFI_CONNECTED);
        esp_wifi_connect();
    }
    if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) xEventGroupSetBits(s_events, WIFI_CONNECTED);
}

static void on_mqtt(void *arg, esp_event_base_t base, int32_t id, void *data) {
    (void)arg;
    (void)base;
    esp_mqtt_event_handle_t ev = data;
    char topic[128];
    switch ((esp_mqtt_event_id_t)id) {
    case MQTT_EVENT_CONNECTED:
        snprintf(topic, sizeof(topic), "%sack", s_prefix);
        esp_mqtt_client_subscribe(s_mqtt, topic, 1);
        snprintf(topic, sizeof(topic), "%scmd", s_prefix);
        esp_mqtt_client_subscribe(s_mqtt, topic, 1);
        break;
    case MQTT_EVENT_SUBSCRIBED:
        xEventGroupSetBits(s_events, MQTT_READY);
        break;
    case MQTT_EVENT_DISCONNECTED:
        xEventGroupClearBits(s_events, MQTT_READY);
        break;
    case MQTT_EVENT_DATA: {
        /* one message = one frame; anything bigger than a station frame can be is dropped whole */
        if (ev->current_data_offset != 0 || ev->total_data_len > (int)RX_FRAME_MAX) {
            ESP_LOGW(TAG, "dropping a %d-byte MQTT message", ev->total_data_len);
            break;
        }
        rx_msg_t m = {.len = (uint16_t)ev->data_len};
        memcpy(m.data, ev->data, (size_t)ev->data_len);
        if (xQueueSend(s_rx, &m, 0) != pdTRUE) ESP_LOGW(TAG, "rx queue full: message dropped");
        break;
    }
    default:
        break;
    }
}

static esp_err_t mqtt_start(const wc_config_t *cfg, const char *unit_id) {
    s_events = xEventGroupCreate();
    s_rx = xQueueCreate(8, sizeof(rx_msg_t));
    snprintf(s_prefix, sizeof(s_prefix), "wildcam/%s/%s/", cfg->station_id, unit_id);
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_wifi, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_wifi, NULL));
    wifi_config_t wc = {0};
    snprintf((char *)wc.sta.ssid, sizeof(wc.sta.ssid), "%s", cfg->wifi_ssid);
    snprintf((char *)wc.sta.password, sizeof(wc.sta.password), "%s", cfg->wifi_pass);
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &wc));
    ESP_ERROR_CHECK(esp_wifi_start());
    if (!(xEventGroupWaitBits(s_events, WIFI_CONNECTED, pdFALSE, pdTRUE, pdMS_TO_TICKS(15000)) & WIFI_CONNECTED)) {
        ESP_LOGE(TAG, "no Wi-Fi '%s' within 15 s", cfg->wifi_ssid);
        return ESP_ERR_TIMEOUT;
    }
    char client_id[48];
    snprintf(client_id, sizeof(client_id), "wildcam-unit-%s", unit_id);
    esp_mqtt_client_config_t mc = {
        .broker.address.uri = cfg->mqtt_uri,
        .credentials.client_id = client_id,
        /* persistent session: ACKs and commands published while we slept are delivered now */
        .session.disable_clean_session = true,
        .session.keepalive = 30,
    };
    s_mqtt = esp_mqtt_client_init(&mc);
    if (!s_mqtt) return ESP_FAIL;
    esp_mqtt_client_register_event(s_mqtt, ESP_EVENT_ANY_ID, on_mqtt, NULL);
    ESP_ERROR_CHECK(esp_mqtt_client_start(s_mqtt));
    if (!(xEventGroupWaitBits(s_events, MQTT_READY, pdFALSE, pdTRUE, pdMS_TO_TICKS(15000)) & MQTT_READY)) {
        ESP_LOGE(TAG, "no MQTT session at %s within 15 s", cfg->mqtt_uri);
        return ESP_ERR_TIMEOUT;
    }
    return ESP_OK;
}

esp_err_t hal_link_start(const wc_config_t *cfg, const char *unit_id) {
    s_transport = cfg->transport;
    return s_transport == WC_TRANSPORT_MQTT ? mqtt_start(cfg, unit_id) : serial_start();
}

int hal_link_send(void *ctx, uint8_t topic, const uint8_t *frame, size_t len) {
    (void)ctx;
    if (s_transport == WC_TRANSPORT_MQTT) {
        char t[128];
        snprintf(t, sizeof(t), "%s%s", s_prefix, UP_TOPICS[topic < 3 ? topic : 0]);
        return esp_mqtt_client_publish(s_mqtt, t, (const char *)frame, (int)len, 1, 0) < 0 ? -1 : 0;
    }
    if (s_usb) {
        /* if no host reads the USB port, writes time out: the ACK timeout then retries */
        int n = usb_serial_jtag_write_bytes(frame, len, pdMS_TO_TICKS(1000));
        return n == (int)len ? 0 : -1;
    }
    return uart_write_bytes(UART_NUM_0, frame, len) == (int)len ? 0 : -1;
}

void hal_link_receive(wc_unit_t *unit, uint32_t wait_ms) {
    TickType_t ticks = pdMS_TO_TICKS(wait_ms > 100 ? 100 : wait_ms);
    if (s_transport == WC_TRANSPORT_MQTT) {
        rx_msg_t m;
        if (xQueueReceive(s_rx, &m, ticks) == pdTRUE) wc_unit_message(unit, m.data, m.len);
        return;
    }
    uint8_t buf[256];
    int n = s_usb ? usb_serial_jtag_read_bytes(buf, sizeof(buf), ticks)
                  : uart_read_bytes(UART_NUM_0, buf, sizeof(buf), ticks);
    if (n > 0) wc_unit_input(unit, buf, (size_t)n);
}

int8_t hal_link_rssi(void *ctx) {
    (void)ctx;
    wifi_ap_record_t ap;
    if (s_transport != WC_TRANSPORT_MQTT || esp_wifi_sta_get_ap_info(&ap) != ESP_OK) return 0;
    return ap.rssi;
}

void hal_link_stop(void) {
    if (s_transport == WC_TRANSPORT_MQTT && s_mqtt) {
        esp_mqtt_client_stop(s_mqtt);
        esp_wifi_stop();
    } else if (!s_usb) {
        uart_wait_tx_done(UART_NUM_0, pdMS_TO_TICKS(500)); /* let the last frame leave */
    }
}
