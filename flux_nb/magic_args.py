"""Parsing for ``%%flux`` / ``%flux``: pure functions, no IPython shell needed.

The option parser is IPython's ``magic_arguments`` (argparse), so quoting works as in a shell
(``--lora "my file.safetensors:0.8"``). Everything here turns text into plain values or raises
:class:`MagicUsageError` with one line that says what is wrong; :mod:`flux_nb.magic` prints it.
"""

from __future__ import annotations

import keyword
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from .errors import FluxError
from .params import canonical_field

__all__ = [
    "MagicUsageError",
    "CellOptions",
    "SUBCOMMANDS",
    "split_capture",
    "interpolate",
    "check_no_secret",
    "parse_lora",
    "parse_axis",
    "parse_options",
    "parse_line",
    "usage",
    "help_text",
    "cell_template",
    "escape_prompt",
]

#: Line-magic words that are subcommands rather than the start of a prompt.
SUBCOMMANDS = ("help", "config", "history", "load", "login")


class MagicUsageError(FluxError, ValueError):
    """The magic was called wrongly: printed as one line plus the usage, never a traceback."""


# -- capture and interpolation ------------------------------------------------------------------

_CAPTURE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*<<(.*)$", re.S)


def split_capture(line: str) -> tuple[str | None, str]:
    """``"res << --steps 4"`` -> ``("res", "--steps 4")``; no capture -> ``(None, line)``.

    jupysql's convention: ``name <<`` at the start stores the result in ``name`` quietly.
    """
    match = _CAPTURE.match(line)
    if not match:
        return None, line
    name = match.group(1)
    if keyword.iskeyword(name):
        raise MagicUsageError(f"cannot capture into {name!r}: it is a Python keyword")
    return name, match.group(2)


# ``\{{`` is a literal ``{{``; else {{ name }} or {{ name.attr }}; a single brace pair is a prompt
# variant and is left alone. One pass, so an escaped pair is never read as a variable.
_VARIABLE = re.compile(r"\\\{\{|\{\{\s*([^{}]*?)\s*\}\}")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    r"""Replace each ``{{ name }}`` (or ``{{ name.attr }}``) with ``str()`` of that notebook variable.

    Only names and attribute lookups are allowed, nothing is evaluated. ``\{{`` stands for a
    literal ``{{`` (``\{{ x }}`` gives ``{{ x }}``). Single braces (``a {red|blue} car``) are left
    for prompt variants. An unknown name raises :class:`MagicUsageError` naming it.
    """

    def substitute(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr is None:  # the escape
            return "{{"
        if not _DOTTED.match(expr):
            raise MagicUsageError(
                f"{{{{ {expr} }}}}: only a variable name (or name.attribute) can go inside {{{{ }}}} "
                "(write \\{{ for a literal {{)"
            )
        head, *attrs = expr.split(".")
        if head not in namespace:
            raise MagicUsageError(f"unknown variable {head!r} in {{{{ {expr} }}}}: define it in the notebook first")
        value = namespace[head]
        for attr in attrs:
            try:
                value = getattr(value, attr)
            except AttributeError:
                raise MagicUsageError(f"{{{{ {expr} }}}}: {type(value).__name__} has no attribute {attr!r}") from None
        return str(value)

    return _VARIABLE.sub(substitute, text)


def escape_prompt(prompt: str) -> str:
    r"""The cell-body text the magic reads back as ``prompt``: every ``{{`` written as ``\{{``."""
    return prompt.replace("{{", "\\{{")


# -- secrets ------------------------------------------------------------------------------------

# Anything that passes a key on the line would be saved in the notebook: refuse it.
_SECRET = re.compile(
    r"(?:^|\s)--?(?:fal[-_]?)?(?:api[-_]?)?(?:key|token|secret)(?:[-_](?:id|secret))?(?:[=\s]|$)"
    r"|\bFAL_KEY(?:_ID|_SECRET)?\s*=|\bFLUX_NB_TOKEN\s*=",
    re.I,
)


def check_no_secret(line: str) -> None:
    """Refuse a line that passes an API key (it would be stored in the notebook)."""
    if _SECRET.search(line):
        raise MagicUsageError(
            "API keys are not accepted as options (the cell would save them in the notebook); "
            "run %flux login, or set FAL_KEY in the environment before starting Jupyter"
        )


# -- values -------------------------------------------------------------------------------------


def parse_lora(text: str) -> dict[str, Any]:
    """``PATH[:SCALE]`` -> ``{"path", "scale"}``. Split on the last ``:`` only when a number follows.

    So ``https://host/x.safetensors`` keeps its ``:`` and ``C:\\lora.safetensors:0.7`` works.
    """
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return {"path": path, "scale": float(tail)}
        except ValueError:
            pass
    return {"path": text, "scale": 1.0}


def parse_axis(option: str, words: list[str]) -> tuple[str, str]:
    """``["guidance=2-6", "[5]"]`` -> ``("guidance", "2-6 [5]")`` (argparse splits values on spaces)."""
    text = " ".join(words).strip()
    name, sep, values = text.partition("=")
    name, values = name.strip(), values.strip()
    if not sep or not name or not values:
        raise MagicUsageError(f"{option} {text!r}: write AXIS=VALUES, e.g. {option} guidance=2,3.5,5 or {option} steps=10-40 [4]")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        raise MagicUsageError(f"{option} {text!r}: {name!r} is not a field name")
    return name, values


# -- the option parser --------------------------------------------------------------------------

_DOC = r"""Generate images with Flux LoRA (fal-ai/flux-lora). The cell body is the prompt.

    %%flux [name <<] [options]   then the prompt on the following lines; {{ var }} inserts a
                                 notebook variable (\{{ is a literal {{), {red|blue} makes prompt
                                 variants (in sweeps).
    %flux [options] PROMPT       one-line generation. Sweep values must be one word here: quote
                                 them if they hold spaces, e.g. -x "guidance=2-6 [5]".
    %flux help | config | history [N] [SEARCH] | load PATH | login
                                 a line starting with one of these words is that command; for a
                                 prompt that starts with one, put -- first: %flux -- history of rome
                                 (everything after -- is the prompt).
    Sweeps over more cells than FluxMagics.max_cells (256) are refused: add --max-cells N.
    """


def _arguments(axis_nargs: str | None) -> list[Any]:
    """The options of both magics; sweep axes take ``axis_nargs`` words (see :data:`_cell_parser`)."""
    axis_hint = "quote values holding spaces" if axis_nargs is None else "values may hold spaces"
    return [
        argument("words", nargs="*", help="cell magic: nothing (the cell is the prompt); line magic: a prompt or a subcommand"),
        argument("--size", "--image-size", dest="image_size", metavar="SIZE",
                 help="preset (square_hd, square, portrait_4_3, portrait_16_9, landscape_4_3, landscape_16_9) or WIDTHxHEIGHT"),
        argument("--steps", dest="num_inference_steps", type=int, metavar="N", help="inference steps, 1-50"),
        argument("-g", "--guidance", dest="guidance_scale", type=float, metavar="G", help="guidance (CFG) scale, 0-35"),
        argument("-n", "--num-images", dest="num_images", type=int, metavar="N", help="images per request, 1-4"),
        argument("-s", "--seed", type=int, metavar="SEED", help="seed (the same seed and settings give the same images)"),
        argument("--lora", dest="loras", action="append", metavar="PATH[:SCALE]",
                 help="a LoRA (URL, local file or repo id) with optional scale; repeat for several"),
        argument("--format", dest="output_format", metavar="FMT", help="jpeg or png"),
        argument("--no-safety", dest="enable_safety_checker", action="store_const", const=False, help="turn the safety checker off"),
        argument("--safety", dest="enable_safety_checker", action="store_const", const=True, help="turn the safety checker on"),
        argument("--sync", dest="sync_mode", action="store_const", const=True, help="ask for images inline (sync_mode)"),
        argument("--acceleration", metavar="MODE", help="none or regular"),
        argument("--save", metavar="DIR", help="also save images with metadata (and request JSON) into DIR"),
        argument("--no-cache", dest="cache", action="store_false",
                 help="always ask the server, even for a seeded request done before"),
        argument("-x", dest="x", nargs=axis_nargs, metavar="AXIS=VALUES",
                 help=f"sweep: first axis, e.g. -x guidance=2-6 [5] ({axis_hint})"),
        argument("-y", dest="y", nargs=axis_nargs, metavar="AXIS=VALUES", help="sweep: second axis"),
        argument("-z", dest="z", nargs=axis_nargs, metavar="AXIS=VALUES", help="sweep: third axis (one grid per value)"),
        argument("--dry-run", action="store_true", help="sweep: show the plan and its cost, send nothing"),
        argument("--vary-seed", action="store_true", help="sweep: a different seed in every cell"),
        argument("--concurrency", type=int, metavar="N", help="sweep: requests in flight at once"),
        argument("--max-cells", type=int, metavar="N",
                 help="sweep: refuse sweeps of more cells than N (default FluxMagics.max_cells, 256)"),
    ]


def _parser(axis_nargs: str | None) -> Any:
    def flux(line: str) -> None:
        pass

    flux.__doc__ = _DOC
    # magic_arguments builds the parser from the decorators in reverse order of application.
    for decorator in reversed(_arguments(axis_nargs)):
        flux = decorator(flux)
    return magic_arguments()(flux).parser


# In a cell, the body is the prompt, so an axis takes every word up to the next option
# (-x guidance=2-6 [5]). On a %flux line the prompt follows the options, so an axis is one word.
_cell_parser = _parser("+")
_line_parser = _parser(None)


#: The request fields an option sets (dest names equal fal's field names).
FIELD_DESTS = (
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "num_images",
    "seed",
    "loras",
    "output_format",
    "enable_safety_checker",
    "sync_mode",
    "acceleration",
)


@dataclass
class CellOptions:
    """The parsed options of one ``%%flux`` / ``%flux`` call."""

    fields: dict[str, Any] = field(default_factory=dict)  # request fields given on the line
    axes: dict[str, str] = field(default_factory=dict)  # sweep axis -> VALUES text, in x, y, z order
    words: list[str] = field(default_factory=list)  # positional words (line magic prompt/subcommand)
    save: str | None = None
    cache: bool = True
    dry_run: bool = False
    vary_seed: bool = False
    concurrency: int | None = None
    max_cells: int | None = None

    @property
    def is_sweep(self) -> bool:
        return bool(self.axes) or self.dry_run


# A word that only makes sense as the tail of an axis value ("[5]", "(+2)"): on a %flux line it
# means the value had spaces and was not quoted.
_GRAMMAR_TAIL = re.compile(r"^(\[\s*\d+\s*\]|\(\s*[+-]?[\d.]+\s*\))$")


def parse_options(line: str, *, line_magic: bool = False) -> CellOptions:
    """Parse a magic's option line. Raises :class:`MagicUsageError` with argparse's one-line reason.

    ``line_magic=True`` parses a ``%flux`` line: there the prompt follows the options, so each
    sweep axis value is one word (quoted if it holds spaces) and ``--`` ends the options.
    """
    check_no_secret(line)
    parser = _line_parser if line_magic else _cell_parser
    try:
        # POSIX shell quoting (IPython's own arg_split keeps the quote characters in values).
        args = parser.parse_args(shlex.split(line, posix=True))
    except UsageError as exc:
        # argparse's message is already one line: "argument --steps: invalid int value: 'x'"
        raise MagicUsageError(str(exc).strip().splitlines()[-1]) from None
    except ValueError as exc:  # unbalanced quotes from the tokenizer
        raise MagicUsageError(f"cannot read the options: {exc}") from None
    opts = CellOptions(words=list(args.words), save=args.save, cache=args.cache, dry_run=args.dry_run,
                       vary_seed=args.vary_seed, concurrency=args.concurrency, max_cells=args.max_cells)
    for dest in FIELD_DESTS:
        value = getattr(args, dest)
        if value is not None:
            opts.fields[dest] = value
    if "loras" in opts.fields:
        opts.fields["loras"] = [parse_lora(text) for text in opts.fields["loras"]]
    seen: dict[str, str] = {}
    for option in ("x", "y", "z"):
        words = getattr(args, option)
        if not words:
            continue
        name, values = parse_axis(f"-{option}", [words] if isinstance(words, str) else words)
        canonical = canonical_field(name)
        if canonical in seen:
            raise MagicUsageError(f"-{option} {name}: that axis is already -{seen[canonical]}")
        if canonical in opts.fields:
            raise MagicUsageError(f"-{option} {name}: {canonical} is swept, so it cannot also be set by an option")
        seen[canonical] = option
        opts.axes[name] = values
    if line_magic and opts.axes and opts.words and _GRAMMAR_TAIL.match(opts.words[0]):
        raise MagicUsageError(
            f"{opts.words[0]!r} reads as the start of the prompt: on a %flux line, quote sweep values "
            f"that hold spaces, e.g. -x \"guidance=2-6 [5]\""
        )
    if opts.concurrency is not None and opts.concurrency < 1:
        raise MagicUsageError(f"--concurrency {opts.concurrency}: must be at least 1")
    if opts.max_cells is not None and opts.max_cells < 1:
        raise MagicUsageError(f"--max-cells {opts.max_cells}: must be at least 1")
    return opts


def parse_line(line: str) -> tuple[str | None, list[str], CellOptions]:
    """Parse a ``%flux`` line: ``(subcommand or None, its arguments, options)``.

    ``%flux history 5 fox`` -> ``("history", ["5", "fox"], ...)``; anything else is a prompt
    with options. A first word in :data:`SUBCOMMANDS` makes a subcommand; ``%flux -- history of
    rome`` is the prompt "history of rome" (``--`` ends the options).
    """
    try:
        head = shlex.split(line, posix=True)[:1]
    except ValueError as exc:
        raise MagicUsageError(f"cannot read the line: {exc}") from None
    if head and head[0] in SUBCOMMANDS:
        rest = line.strip()[len(head[0]):]
        if head[0] in ("help", "config", "login"):
            extra = rest.strip()
            if extra:
                raise MagicUsageError(f"%flux {head[0]} takes no arguments (got {extra!r})")
            return head[0], [], CellOptions()
        try:
            words = shlex.split(rest, posix=True)
        except ValueError as exc:
            raise MagicUsageError(f"cannot read the line: {exc}") from None
        return head[0], words, CellOptions()
    return None, [], parse_options(line, line_magic=True)


def usage() -> str:
    """The one usage line printed after an error."""
    return (
        "usage: %%flux [name <<] [--size SIZE] [--steps N] [-g G] [-n N] [-s SEED] [--lora PATH[:SCALE]] "
        "[--format jpeg|png] [--no-safety] [--save DIR] [-x AXIS=VALUES ...] [--dry-run]   (%flux help for more)"
    )


def help_text() -> str:
    """The full help: what the magics do, the subcommands, then every option."""
    return _cell_parser.format_help()


def cell_template(request: Any, *, capture: str | None = None) -> str:
    r"""The ``%%flux`` cell that reproduces ``request`` (a :class:`~flux_nb.params.FluxRequest`).

    Every field that a ``%config FluxMagics`` default could change is written out (size, steps,
    guidance, images, format, safety), so the cell gives the same request whatever the defaults;
    ``sync_mode`` and ``acceleration`` (which have no default setting) only when not fal's default.
    A ``{{`` in the prompt is written ``\{{`` so it is not read as a notebook variable. The magic
    and the panel's "copy as code" both use this.
    """
    from .metadata import format_number

    parts = ["%%flux"]
    if capture:
        parts.append(f"{capture} <<")
    parts += ["--size", shlex.quote(request.size_label)]
    parts += ["--steps", str(request.num_inference_steps)]
    parts += ["-g", format_number(request.guidance_scale)]
    parts += ["-n", str(request.num_images)]
    if request.seed is not None:
        parts += ["-s", str(request.seed)]
    for lora in request.loras:
        parts += ["--lora", shlex.quote(f"{lora.path}:{format_number(lora.scale)}")]
    parts += ["--format", request.output_format]
    parts.append("--safety" if request.enable_safety_checker else "--no-safety")
    if request.sync_mode:
        parts.append("--sync")
    if request.acceleration != "none":
        parts += ["--acceleration", request.acceleration]
    return " ".join(parts) + "\n" + escape_prompt(request.prompt)
