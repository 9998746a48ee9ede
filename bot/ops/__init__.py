"""Running the bot as a service: start-up and the running model (`runtime`), the health and
metrics endpoints (`health`), systemd's notify protocol (`systemd`) and `alpaca-bot doctor`."""
