"""Quantizing models from the bot and the command line: `/quantize` and `/quantize auto` as
background jobs recorded in the database (`jobs`, `auto_job`), what a chat reads of them
(`texts`) and the terminal face of `alpaca-bot quantize --auto` (`console`).

The model tools it drives (llama.cpp's quantizer, perplexity, the auto run's plan and report)
are `bot.models`'; the `/quantize` command is a line of the command table (`bot.chat.commands`)
and the chart's "Switch to …" button a piece of the Telegram front (`bot.telegram`).
"""
