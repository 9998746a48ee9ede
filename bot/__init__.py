"""alpaca-bot: a self-hosted Telegram chatbot running a quantized LLaMA-family model on the CPU."""

__version__ = "0.1.0"
