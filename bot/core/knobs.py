"""The table of per-chat knobs: every llama.cpp flag a chat can set, declared once.

Each `Knob` names its chat command, its llama.cpp flag, type, range, default, help text and
whether it shapes sampling or the context window. Parsing, config keys and environment
variables, database columns, the chat commands of every front end, the `alpaca-bot chat` flags
and what the engine receives are all derived from `KNOBS`; add a knob here (and a migration for
its column) and it is everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bot.i18n import N_

KnobRole = Literal["sampling", "window"]


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One per-chat parameter."""

    name: str
    """The parameter's name: its database column and the key the engine reads."""
    command: str
    """The chat command, without the slash."""
    flag: str
    """The llama.cpp flag it mirrors, as shown to users."""
    cli_flags: tuple[str, ...]
    """The `alpaca-bot chat` flags that set it (llama.cpp's spellings)."""
    kind: Literal["int", "float"]
    minimum: float
    maximum: float
    default: float
    help: str
    """Marked `N_`: translated where it is shown."""
    role: KnobRole
    config_key: str = ""
    """The config file key and `ALPACA_BOT_<KEY>` suffix of its default; the name if empty."""
    menu: str = ""
    """The short line of the bot's command menu; derived from the help if empty."""

    @property
    def key(self) -> str:
        return self.config_key or self.name

    @property
    def python_type(self) -> type[int] | type[float]:
        return int if self.kind == "int" else float

    @property
    def menu_line(self) -> str:
        """English, as in the table: translated where it is shown (`_(knob.menu_line)`)."""
        return self.menu or f"{self.help.split(';')[0]} ({self.flag})"

    def range_text(self, maximum: float | None = None) -> str:
        top = self.maximum if maximum is None else maximum
        return f"{format_number(self.minimum)}–{format_number(top)}"

    def format(self, value: float) -> str:
        return format_number(value) if self.kind == "float" else str(int(value))


def format_number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


# The defaults are the Chinese-Alpaca guide's `-c 2048 --temp 0.2 -n 256 --repeat_penalty 1.3`
# with `--top_k 40 --top_p 0.9`, and llama.cpp's own `--min-p 0.05 --repeat-last-n 64`.
KNOBS: tuple[Knob, ...] = (
    Knob(name="temp", command="temp", flag="--temp", cli_flags=("--temp",), kind="float",
         minimum=0.0, maximum=5.0, default=0.2, role="sampling",
         help=N_("sampling temperature; 0 picks the most likely token"),
         menu=N_("temperature (--temp)")),
    Knob(name="n_ctx", command="ctx", flag="-c", cli_flags=("-c", "--ctx-size"), kind="int",
         minimum=128, maximum=131072, default=2048, role="window", config_key="ctx",
         help=N_("context window in tokens"), menu=N_("context window in tokens (-c)")),
    Knob(name="n_predict", command="n", flag="-n", cli_flags=("-n", "--n-predict"), kind="int",
         minimum=1, maximum=8192, default=256, role="window",
         help=N_("maximum reply length in tokens"), menu=N_("reply length in tokens (-n)")),
    Knob(name="top_k", command="top_k", flag="--top_k", cli_flags=("--top_k", "--top-k"),
         kind="int", minimum=0, maximum=1000, default=40, role="sampling",
         help=N_("sample from the k most likely tokens; 0 disables"),
         menu=N_("top-k sampling (--top_k)")),
    Knob(name="top_p", command="top_p", flag="--top_p", cli_flags=("--top_p", "--top-p"),
         kind="float", minimum=0.0, maximum=1.0, default=0.9, role="sampling",
         help=N_("nucleus sampling threshold; 1 disables"), menu=N_("top-p sampling (--top_p)")),
    Knob(name="min_p", command="min_p", flag="--min-p", cli_flags=("--min-p", "--min_p"),
         kind="float", minimum=0.0, maximum=1.0, default=0.05, role="sampling",
         help=N_("drop tokens less likely than this share of the most likely one; 0 disables"),
         menu=N_("min-p sampling (--min-p)")),
    Knob(name="repeat_penalty", command="repeat_penalty", flag="--repeat_penalty",
         cli_flags=("--repeat_penalty", "--repeat-penalty"), kind="float", minimum=0.5,
         maximum=2.5, default=1.3, role="sampling",
         help=N_("penalty for repeating recent tokens; 1 disables"),
         menu=N_("repetition penalty (--repeat_penalty)")),
    Knob(name="repeat_last_n", command="repeat_last_n", flag="--repeat-last-n",
         cli_flags=("--repeat-last-n", "--repeat_last_n"), kind="int", minimum=-1,
         maximum=131072, default=64, role="sampling",
         help=N_("last tokens the repeat penalty looks at; 0 disables, -1 means the whole context"),
         menu=N_("tokens the repetition penalty looks back over (--repeat-last-n)")),
)

BY_NAME: dict[str, Knob] = {knob.name: knob for knob in KNOBS}
BY_COMMAND: dict[str, Knob] = {knob.command: knob for knob in KNOBS}
SAMPLING: tuple[Knob, ...] = tuple(knob for knob in KNOBS if knob.role == "sampling")


class KnobValues:
    """Immutable values for a set of knobs, the table's defaults for those not given; read as
    attributes (`values.temp`) or by name (`values["temp"]`)."""

    __slots__ = ("_values",)
    knobs: ClassVar[tuple[Knob, ...]] = KNOBS
    _values: dict[str, float | int]

    def __init__(self, **values: float | int) -> None:
        names = {knob.name for knob in self.knobs}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"{type(self).__name__} has no {', '.join(sorted(unknown))}")
        merged = {
            knob.name: knob.python_type(values.get(knob.name, knob.default)) for knob in self.knobs
        }
        object.__setattr__(self, "_values", merged)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __getitem__(self, name: str) -> float | int:
        return self._values[name]

    def _key(self) -> tuple[object, ...]:
        return tuple(self.as_dict().items())

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            assert isinstance(other, KnobValues)
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict[str, float | int]:
        return dict(self._values)
