"""The error tree of alpaca-bot. Core code raises these; the edges (CLI, handlers) render them.

    AlpacaBotError
     ├── UserError            a text a user may see as it is (bad argument, input too long, ...)
     │    ├── InvalidParameter    a setting value outside its range
     │    ├── InputTooLong        a message that cannot fit the context window or the input limit
     │    └── EngineBusy          the generation queue is full ("busy, try again")
     ├── ConfigError          the operator's configuration is wrong (missing token, bad URL, ...)
     ├── ModelError           the model file is missing, unreadable or not a usable GGUF
     │    └── BackendError        an inference server refused a request (remote engine)
     │         └── BackendDown        it is unreachable, timed out or failed (5xx): try another
     ├── ConversionError      a checkpoint cannot be converted (sizes disagree, unsafe pickle, ...)
     └── QuantizeError        quantization failed or was refused (disk, input type, ...)
          └── QuantizeCancelled   stopped on request (`/quantize cancel`, Ctrl+C)
"""

from __future__ import annotations


class AlpacaBotError(Exception):
    """Base of every error alpaca-bot raises on purpose."""


class UserError(AlpacaBotError):
    """An error whose message is written for the person who caused it."""


class InvalidParameter(UserError):
    """A parameter value outside its allowed range or of the wrong type."""


class InputTooLong(UserError):
    """A message too long for the configured input limit or the context window."""


class ConfigError(AlpacaBotError):
    """The operator's configuration cannot be used."""


class ModelError(AlpacaBotError):
    """The model file is missing, unreadable or not a usable GGUF."""


class ConversionError(AlpacaBotError):
    """A checkpoint cannot be converted to GGUF."""


class QuantizeError(AlpacaBotError):
    """Quantization failed or was refused."""


class QuantizeCancelled(QuantizeError):
    """A quantization or a measurement of its output was stopped on request."""


class EngineBusy(UserError):
    """The generation queue is full."""


class BackendError(ModelError):
    """An inference server refused a request (a 4xx answer, or an error in its stream)."""


class BackendDown(BackendError):
    """An inference server could not be reached, went silent or failed (5xx): another server
    should take the request over, and this one is checked until it is healthy again."""
