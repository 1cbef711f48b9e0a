#include "board.h"

#include "sdkconfig.h"

#if CONFIG_WILDCAM_BOARD_AI_THINKER
/* AI-Thinker ESP32-CAM (OV2640). Free pins are few: PIR on GPIO13 (RTC_GPIO14; the SD slot must
 * then run in 1-bit mode), battery divider on GPIO14 (ADC2_CH6: no ADC1 pin is left free). */
static const wc_board_t BOARD = {
    .name = "AI-Thinker ESP32-CAM", .chip = "esp32",
    .pwdn = 32, .reset = -1, .xclk = 0, .sccb_sda = 26, .sccb_scl = 27,
    .d7 = 35, .d6 = 34, .d5 = 39, .d4 = 36, .d3 = 21, .d2 = 19, .d1 = 18, .d0 = 5,
    .vsync = 25, .href = 23, .pclk = 22, .xclk_hz = 20000000,
    .pir = GPIO_NUM_13, .battery_adc = GPIO_NUM_14, .battery_divider = 2, .battery_on_adc2 = true,
    .usb_serial_jtag = false,
};
#elif CONFIG_WILDCAM_BOARD_ESP32S3_EYE
/* ESP32-S3-EYE and Freenove ESP32-S3-WROOM CAM share the camera pins (OV2640/OV3660).
 * PIR on GPIO14, battery divider on GPIO1 (ADC1_CH0). */
static const wc_board_t BOARD = {
    .name = "ESP32-S3-EYE / Freenove S3 CAM", .chip = "esp32s3",
    .pwdn = -1, .reset = -1, .xclk = 15, .sccb_sda = 4, .sccb_scl = 5,
    .d7 = 16, .d6 = 17, .d5 = 18, .d4 = 12, .d3 = 10, .d2 = 8, .d1 = 9, .d0 = 11,
    .vsync = 6, .href = 7, .pclk = 13, .xclk_hz = 20000000,
    .pir = GPIO_NUM_14, .battery_adc = GPIO_NUM_1, .battery_divider = 2, .battery_on_adc2 = false,
    .usb_serial_jtag = true,
};
#else
#error "choose a board in menuconfig: WildCAM unit -> Camera board"
#endif

const wc_board_t *wc_board(void) { return &BOARD; }
