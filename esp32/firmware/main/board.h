/* Board table: the pins each supported camera board wires, chosen by Kconfig. */
#pragma once

#include <stdbool.h>

#include "driver/gpio.h"

typedef struct {
    const char *name;
    const char *chip; /* as sent in HELLO */
    /* camera (esp32-camera camera_config_t pins; -1 = not connected) */
    int pwdn, reset, xclk, sccb_sda, sccb_scl;
    int d7, d6, d5, d4, d3, d2, d1, d0, vsync, href, pclk;
    int xclk_hz;
    /* PIR output (must be an RTC GPIO: it wakes the chip from deep sleep, active high) */
    gpio_num_t pir;
    /* battery through a divider into the ADC; mv = adc_mv * divider */
    gpio_num_t battery_adc;
    int battery_divider;
    bool battery_on_adc2; /* ADC2 cannot be read while Wi-Fi runs: read it before Wi-Fi starts */
    bool usb_serial_jtag; /* station link on the native USB port instead of UART0 */
} wc_board_t;

const wc_board_t *wc_board(void);
