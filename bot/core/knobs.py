"""The table of per-chat knobs: every llama.cpp flag a chat can set, declared once.

Each `Knob` names its chat command, its llama.cpp flag, kind (a number in a range, or one of a
few words), default, help text and whether it shapes sampling, the context window or a thinking
model's thinking. Parsing, config keys and environment
variables, database columns, the chat commands of every front end, the `alpaca-bot chat` flags
and what the engine receives are all derived from `KNOBS`; add a knob here (and a migration for
its column) and it is everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bot.i18n import N_

KnobRole = Literal["sampling", "window", "reasoning"]
KnobKind = Literal["int", "float", "choice"]
"""A whole number or a decimal in [minimum, maximum], or one of the words of `choices`."""
Value = float | int | str


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
    kind: KnobKind
    default: Value
    minimum: float = 0
    maximum: float = 0
    choices: tuple[str, ...] = ()
    """The words a `choice` knob takes (the first words of its command's argument)."""
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
    def python_type(self) -> type[int] | type[float] | type[str]:
        return int if self.kind == "int" else float if self.kind == "float" else str

    @property
    def args(self) -> str:
        """The argument of its command, as /help shows it."""
        return f"[{'|'.join(self.choices)}]" if self.choices else "[VALUE]"

    @property
    def metavar(self) -> str:
        """The value of its `alpaca-bot chat` flag, as --help shows it."""
        return "|".join(self.choices) if self.choices else "N"

    @property
    def menu_line(self) -> str:
        """English, as in the table: translated where it is shown (`_(knob.menu_line)`)."""
        return self.menu or f"{self.help.split(';')[0]} ({self.flag})"

    def range_text(self, maximum: float | None = None) -> str:
        if self.choices:
            return "|".join(self.choices)
        top = self.maximum if maximum is None else maximum
        return f"{format_number(self.minimum)}–{format_number(top)}"

    def format(self, value: Value) -> str:
        if self.kind == "choice":
            return str(value)
        return format_number(float(value)) if self.kind == "float" else str(int(value))

    def toml(self, value: Value) -> str:
        """The value as the config file spells it (a word in quotes)."""
        return f'"{value}"' if self.kind == "choice" else self.format(value)


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
    # A thinking model's thinking (Qwen3, QwQ, DeepSeek-R1's distills): shown or not, and how
    # long it may be; llama.cpp's server has --reasoning-budget too.
    Knob(name="reasoning", command="reasoning", flag="--reasoning", cli_flags=("--reasoning",),
         kind="choice", choices=("hide", "show", "off"), default="hide", role="reasoning",
         config_key="reasoning_display",
         help=N_("a thinking model's thinking: hide shows only that it thinks, show shows it "
                 "above the answer, off asks the model not to think"),
         menu=N_("a thinking model's thinking (hide|show|off)")),
    Knob(name="reasoning_budget", command="reasoning_budget", flag="--reasoning-budget",
         cli_flags=("--reasoning-budget", "--reasoning_budget"), kind="int", minimum=-1,
         maximum=131072, default=1024, role="reasoning",
         help=N_("tokens a thinking model may think before it must answer; -1 means no limit"),
         menu=N_("tokens of thinking before the answer (--reasoning-budget)")),
)

BY_NAME: dict[str, Knob] = {knob.name: knob for knob in KNOBS}
BY_COMMAND: dict[str, Knob] = {knob.command: knob for knob in KNOBS}
SAMPLING: tuple[Knob, ...] = tuple(knob for knob in KNOBS if knob.role == "sampling")


class KnobValues:
    """Immutable values for a set of knobs, the table's defaults for those not given; read as
    attributes (`values.temp`) or by name (`values["temp"]`)."""

    __slots__ = ("_values",)
    knobs: ClassVar[tuple[Knob, ...]] = KNOBS
    _values: dict[str, Value]

    def __init__(self, **values: Value) -> None:
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

    def __getitem__(self, name: str) -> Value:
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

    def as_dict(self) -> dict[str, Value]:
        return dict(self._values)
