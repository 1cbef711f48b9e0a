"""The power manager: battery and solar sources, states with hysteresis, policy, runway.

`PowerWorker` publishes a `PowerState`; the uploader, inference and model sync subscribe to it.
"""
