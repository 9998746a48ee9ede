"""What alpaca-bot knows of llama.cpp that both the engine and the model tools rely on: its
file format (`gguf_file`: a GGUF header read without llama.cpp), loading a model safely on
this machine (`loading`) and the CPU it runs on (`cpu`).

It imports nothing of `bot` but the error tree and the translations, so `bot.engine` and
`bot.models` both build on it and neither imports the other.
"""
