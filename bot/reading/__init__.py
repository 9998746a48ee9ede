"""Reading what people send besides their words: the text of a replied or forwarded message,
text in images (offline OCR), and documents (text files, PDF, Word) split into passages that a
question retrieves within a token budget. Pure parts (decoding, passages, BM25, the budget,
the prompt's frames) beside the readers that touch bytes (`extraction`, `ocr`); the chat layer
(`bot.chat.reading`) decides what becomes a question's context."""
