"""ESP32 units: the virtual unit, flashing and configuring tools."""
