"""The timekeeping service: time capture, validation against master data, approval."""
