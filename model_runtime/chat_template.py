"""Kimi-VL chat template: messages -> prompt string.

`ChatTemplate` renders the checkpoint's own `chat_template.jinja` (or `tokenizer_config.json`'s
`chat_template`) with jinja2 configured like Hugging Face's `apply_chat_template`, so other
checkpoints' templates are honoured. `render_kimi_vl` is the same template written in Python
(the reference for tests, and the fallback when a checkpoint ships no template).

A template is untrusted input. The official Kimi-VL template (recognised by the sha256 of its exact text)
never reaches jinja: `render_kimi_vl` renders it. Any other template is compiled and rendered in a child
process under OS limits (template_worker.py), which runs jinja2's immutable sandbox extended here so that a
render is also bounded in steps (loop iterations, calls, filters, operators), wall time and the size of
every string, list and integer it builds (`_Budget`); any failure is a `ChatTemplateError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any

from kimi_agent.errors import ConfigError
from kimi_agent.model_runtime.config import (
    MAX_TEXT_BYTES,
    model_file_exists,
    read_json_object,
    read_text_file,
)

IMAGE_PLACEHOLDER = "<|media_start|>image<|media_content|><|media_pad|><|media_end|>"
DEFAULT_SYSTEM = "<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>"
GENERATION_PROMPT = "<|im_assistant|>assistant<|im_middle|>"
_ROLE_MARKERS = {"system": "<|im_system|>", "user": "<|im_user|>", "assistant": "<|im_assistant|>"}
# sha256 of the UTF-8 text of the official Kimi-VL-A3B-Instruct templates, which `render_kimi_vl` renders
# without jinja: `chat_template.jinja` (907 characters) and the `chat_template` string of
# `tokenizer_config.json` (the same text in that snapshot; tests/fixtures/kimi_vl_a3b_instruct holds both).
OFFICIAL_TEMPLATE_SHA256 = frozenset({
    "172c7450a66b9b3644538888ffa24d02047e535e9d1f911564460203fbf7e8e8",  # chat_template.jinja
    "8452948e3156f9044ce66eed4ba8ec260fb9f1780e4cb6029dbb1712c6f7d19c",  # tokenizer_config.json chat_template
})

# Bounds of one render of a checkpoint's template (the real template takes a few steps per message part).
MAX_RENDER_CHARS = 32 << 20      # the prompt (128k tokens of <= 256 bytes), and each string / list built
MAX_RENDER_STEPS = 2_000_000     # loop iterations + calls + filters + operators (+ container items walked)
MAX_RENDER_SECONDS = 5.0
MAX_INT_BITS = 1 << 16           # integers a template computes (10 ** 10 ** 8 would take minutes)
MAX_COUNT_ARG = 100_000          # counts given to filters (slice, batch): jinja's own range bound
MAX_INDENT = 64                  # tojson(indent=...)
# printf widths/precisions of 6+ digits or taken from the arguments ('%*d'), and str.format specs alike
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d{6,})|%[-#0 +]*\d*\.(\*|\d{6,})|\{[^{}]*:[^{}]*(\{|\d{6,})")
# Filters that never turn their arguments into text (the others are sized with `_text_size` first).
_STRUCTURAL_FILTERS = frozenset({"length", "count", "first", "last", "default", "d", "list", "map", "select",
                                 "reject", "selectattr", "rejectattr", "sort", "reverse", "unique", "dictsort",
                                 "items", "attr", "groupby", "min", "max", "random", "abs", "round", "int",
                                 "float", "bool", "batch", "slice", "sum"})


class ChatTemplateError(ConfigError):
    """The checkpoint's chat template does not compile, or failed or went past a bound while rendering
    (the message names the template file)."""


class _Limit(Exception):
    """A render went past one of its bounds (becomes `ChatTemplateError`)."""


class _Budget:
    """Steps and wall time left to the current compile or render."""

    __slots__ = ("deadline", "steps")

    def __init__(self, steps: int, seconds: float) -> None:
        self.steps, self.deadline = steps, time.monotonic() + seconds

    def tick(self, n: int = 1) -> None:
        self.steps -= n
        if self.steps < 0:
            raise _Limit(f"it took more than {MAX_RENDER_STEPS:,} steps (loop iterations, calls, filters)")
        if time.monotonic() > self.deadline:
            raise _Limit(f"it ran longer than {MAX_RENDER_SECONDS:g} s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("chat_template_budget", default=None)


def _tick(n: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick(n)


def is_image_part(part: Mapping[str, Any]) -> bool:
    """The template's test for an image part: `type == "image"` or an `image`/`image_url` key."""
    return part.get("type") == "image" or "image" in part or "image_url" in part


def render_kimi_vl(messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False) -> str:
    """Kimi-VL's chat template in Python; output identical to rendering `chat_template.jinja`.

    A default system turn is prepended when the first message is not a system message. Roles
    other than system/user/assistant get no marker (just `role<|im_middle|>`). List content
    concatenates text parts and one image placeholder per image part.
    """
    out: list[str] = []
    for i, message in enumerate(messages):
        role = message["role"]
        if i == 0 and role != "system":
            out.append(DEFAULT_SYSTEM)
        out += [_ROLE_MARKERS.get(role, ""), str(role), "<|im_middle|>"]
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            for part in content:
                if is_image_part(part):
                    out.append(IMAGE_PLACEHOLDER)
                elif "text" in part:
                    out.append(str(part["text"]))
        out.append("<|im_end|>")
    if add_generation_prompt:
        out.append(GENERATION_PROMPT)
    return "".join(out)



def _text_size(value: Any) -> int:
    """An upper estimate of `len(str(value))` that stops once past `MAX_RENDER_CHARS` (containers repeat
    what they reference: a list of ten references to a 1 MB string prints as 10 MB). Items walked are steps."""
    from jinja2.utils import Namespace

    total, walked, stack = 0, 0, [value]
    while stack and total <= MAX_RENDER_CHARS:
        v = stack.pop()
        walked += 1
        if isinstance(v, str):
            total += len(v) + 2
        elif isinstance(v, list | tuple | set | frozenset):
            total += 2 + 2 * len(v)
            stack.extend(v)
        elif isinstance(v, dict):
            total += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, Namespace):
            stack.append(object.__getattribute__(v, "_Namespace__attrs"))
        elif isinstance(v, int) and not isinstance(v, bool):
            total += v.bit_length() // 3 + 2
        else:
            total += 16
    _tick(walked // 16)
    return total


def _check_size(value: Any, what: str) -> Any:
    """`value`, unless it is a string, container or integer past the render bounds."""
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_RENDER_CHARS:
        raise _Limit(f"{what} built a value of {len(value):,} items or characters (bound {MAX_RENDER_CHARS:,})")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _Limit(f"{what} built an integer of {value.bit_length():,} bits (bound {MAX_INT_BITS:,})")
    return value


def _check_text(value: Any, what: str) -> None:
    if _text_size(value) > MAX_RENDER_CHARS:
        raise _Limit(f"{what} would build more than {MAX_RENDER_CHARS:,} characters of text")


def _check_format(fmt: str, what: str) -> None:
    if _FORMAT_WIDTH.search(fmt):
        raise _Limit(f"{what}: format widths of 6+ digits, or taken from the arguments, are refused")


def _replace_size(s: str, old: Any, new: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(s)
    hits = s.count(old) if old else len(s) + 1
    return len(s) + hits * max(0, len(new) - len(old))


def _join_size(sep: str, items: list[Any]) -> int:
    return len(sep) * len(items) + _text_size(items)


def _materialize(iterable: Any) -> list[Any]:
    """`list(iterable)`, counted, refused past `MAX_RENDER_CHARS` items."""
    if isinstance(iterable, str | list | tuple | dict):
        return list(iterable)
    items: list[Any] = []
    for item in iterable:
        items.append(item)
        _tick()
        if len(items) > MAX_RENDER_CHARS:
            raise _Limit(f"an iterable of more than {MAX_RENDER_CHARS:,} items")
    return items


def _estimate_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, tuple[Any, ...]]:
    """(estimated result size, the args to call with) for the str methods that can amplify their input."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format / format_map
    owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
    if not isinstance(owner, str):
        return 0, args
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(first, int):
        return max(len(owner), first), args
    if name == "expandtabs":
        size = kwargs.get("tabsize", first if isinstance(first, int) else 8)
        return len(owner) * max(1, size if isinstance(size, int) else 8), args
    if name == "replace" and len(args) >= 2:
        return _replace_size(owner, args[0], args[1]), args
    if name == "join" and args:
        items = _materialize(first)
        return _join_size(owner, items), (items, *args[1:])
    if name in ("format", "format_map"):
        _check_format(owner, "str.format")
        return len(owner) + _text_size(args) + _text_size(kwargs), args
    if name == "translate":
        table = first if isinstance(first, dict) else {}
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        return len(owner) * max(1, longest), args
    return 0, args


def _filter_size(name: str, value: Any, rest: list[Any], kwargs: dict[str, Any]) -> int:
    """Estimated result size of the jinja filters that can amplify their input (0 for the others)."""
    arg = rest[0] if rest else None
    text = value if isinstance(value, str) else ""
    if name == "center":
        width = kwargs.get("width", 80 if arg is None else arg)
        return max(len(text), width) if isinstance(width, int) else 0
    if name == "indent":
        width = kwargs.get("width", 4 if arg is None else arg)
        per_line = width if isinstance(width, int) else len(str(width))
        return len(text) + (text.count("\n") + 1) * max(0, per_line)
    if name == "wordwrap":
        width = kwargs.get("width", 79 if arg is None else arg)
        wrap = kwargs.get("wrapstring", rest[2] if len(rest) > 2 else None) or "\n"
        lines = len(text) // max(1, width if isinstance(width, int) else 1) + text.count("\n") + 1
        return len(text) + lines * len(str(wrap))
    if name == "replace" and len(rest) >= 2:
        return _replace_size(text, rest[0], rest[1])
    if name == "join" and value is not None:
        return _join_size(str(kwargs.get("d", "" if arg is None else arg)), _materialize(value))
    if name == "format":
        _check_format(text, "filter 'format'")
        return len(text) + _text_size(rest) + _text_size(kwargs)
    if name == "tojson":
        indent = kwargs.get("indent", arg)
        if indent is not None and not (isinstance(indent, int) and not isinstance(indent, bool)
                                       and 0 <= indent <= MAX_INDENT):
            raise _Limit(f"filter 'tojson': indent must be an integer in [0, {MAX_INDENT}], got {indent!r}")
        return _text_size(value) * (1 + (indent or 0))
    if name in ("slice", "batch"):
        count = kwargs.get("slices" if name == "slice" else "linecount", arg)
        if isinstance(count, int) and count > MAX_COUNT_ARG:
            raise _Limit(f"filter '{name}': {count:,} is over this runtime's bound of {MAX_COUNT_ARG:,}")
    if name == "sum" and value is not None:
        items = _materialize(value)
        if not all(isinstance(x, int | float) for x in items):
            return _text_size(items)
    return 0


def _filter_guard(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The jinja filter `func`, counted as a step, with amplifying arguments refused and its result sized."""
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    @wraps(func)  # keeps jinja's pass_context / pass_eval_context marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        values = [a for a in args if not isinstance(a, Context | EvalContext)]
        if name not in _STRUCTURAL_FILTERS:
            _check_text(values, f"filter '{name}'")
            _check_text(kwargs, f"filter '{name}'")
        size = _filter_size(name, values[0] if values else None, values[1:], kwargs)
        if size > MAX_RENDER_CHARS:
            raise _Limit(f"filter '{name}' would build about {size:,} characters (bound {MAX_RENDER_CHARS:,})")
        return _check_size(func(*args, **kwargs), f"filter '{name}'")

    return guarded


def _counted(iterable: Any) -> Iterator[Any]:
    """What every `{% for %}` of a template iterates: each item is a step."""
    for item in iterable:
        _tick()
        yield item


def _concat(pieces: list[Any]) -> str:
    """The `~` operator, sized before it is built."""
    _tick()
    _check_text(pieces, "'~'")
    return "".join(map(str, pieces))


@lru_cache(maxsize=1)
def _environment() -> Any:
    """A jinja2 environment configured like transformers' (immutable sandbox, trim_blocks, lstrip_blocks,
    loop controls, `tojson`, `raise_exception`), in which every render is bounded (see `_Budget`)."""
    from jinja2 import TemplateError, nodes
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.visitor import NodeTransformer

    class Bound(NodeTransformer):
        """Routes every for-loop's iterable and every `~` through the counting filters."""

        def visit_For(self, node: nodes.For) -> nodes.Node:
            self.generic_visit(node)
            node.iter = nodes.Filter(node.iter, "kimi_counted", [], [], None, None, lineno=node.lineno)
            return node

        def visit_AssignBlock(self, node: nodes.AssignBlock) -> nodes.Node:
            self.generic_visit(node)  # the captured text is sized before any filter of the block sees it
            sized = nodes.Filter(None, "kimi_captured", [], [], None, None, lineno=node.lineno)
            if node.filter is None:
                node.filter = sized
            else:
                innermost = node.filter
                while innermost.node is not None and isinstance(innermost.node, nodes.Filter):
                    innermost = innermost.node
                if innermost.node is None:
                    innermost.node = sized
            return node

        def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
            self.generic_visit(node)
            return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "kimi_concat", [], [], None, None,
                                lineno=node.lineno)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"+", "*", "**", "%"})

        def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
            return Bound().visit(super()._parse(source, name, filename))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _tick()
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
            if operator == "**" and ints and abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
                raise _Limit(f"'**' would build an integer of about {right * left.bit_length():,} bits")
            if operator == "*" and ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _Limit(f"'*' would build an integer of more than {MAX_INT_BITS:,} bits")
            if operator == "*" and not ints:
                seq, n = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_RENDER_CHARS:
                    raise _Limit(f"'*' would build {len(seq) * n:,} items or characters (bound "
                                 f"{MAX_RENDER_CHARS:,})")
            if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple) \
                    and len(left) + len(right) > MAX_RENDER_CHARS:
                raise _Limit(f"'+' would build {len(left) + len(right):,} items or characters")
            if operator == "%" and isinstance(left, str):
                _check_format(left, "'%'")
                _check_text(right, "'%'")
            return _check_size(super().call_binop(context, operator, left, right), f"'{operator}'")

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            _tick()
            what = f"{getattr(__obj, '__name__', 'a call')}()"
            size, args = _estimate_call(__obj, args, kwargs)
            if size > MAX_RENDER_CHARS:
                raise _Limit(f"{what} would build about {size:,} characters (bound {MAX_RENDER_CHARS:,})")
            return _check_size(super().call(__context, __obj, *args, **kwargs), what)

    def finalize(value: Any) -> Any:
        _tick()
        if not isinstance(value, str):
            _check_text(value, "an output")
        return _check_size(value, "an output")

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], optimized=False,
                         finalize=finalize)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.filters = {name: _filter_guard(name, f) for name, f in env.filters.items()}
    env.filters["kimi_counted"] = _counted
    env.filters["kimi_concat"] = _concat
    env.filters["kimi_captured"] = lambda text: _check_size(text, "a {% set %} block")
    env.globals.pop("lipsum", None)  # lipsum(n, max=...) builds n x max words
    env.globals["raise_exception"] = raise_exception
    return env


@contextmanager
def _bounded(where: str, doing: str) -> Iterator[None]:
    """Run a compile or render of the template `where` under a fresh budget; every failure becomes a
    `ChatTemplateError` naming it."""
    from jinja2 import TemplateSyntaxError

    token = _BUDGET.set(_Budget(MAX_RENDER_STEPS, MAX_RENDER_SECONDS))
    try:
        yield
    except _Limit as e:
        raise ChatTemplateError(f"chat template {where} went past a bound: {e}") from None
    except TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template {where} {doing}: {e.message} (line {e.lineno})") from None
    except RecursionError:
        raise ChatTemplateError(f"chat template {where} {doing}: it nests or recurses too deeply") from None
    except MemoryError:
        raise ChatTemplateError(f"chat template {where} {doing}: out of memory") from None
    except SyntaxError as e:  # Python's own compile limits on jinja's generated code (IndentationError too)
        raise ChatTemplateError(f"chat template {where} {doing}: {type(e).__name__}: {e.msg}") from None
    except Exception as e:  # only template code ran: raise_exception(...), undefined values, sandbox
        # refusals, 1/0, ... all become the one typed error
        raise ChatTemplateError(f"chat template {where} {doing}: {type(e).__name__}: {e}") from None
    finally:
        _BUDGET.reset(token)


def compile_sandboxed(source: str, where: str = "chat_template") -> Any:
    """Compile a template the way transformers does (sandboxed, trim_blocks, lstrip_blocks), bounded. Runs in
    the renderer process (template_worker.py), and in tests."""
    with _bounded(where, "does not compile"):
        return _environment().from_string(source)


def render_sandboxed(template: Any, where: str, messages: Sequence[Mapping[str, Any]], *,
                     add_generation_prompt: bool, special_tokens: Mapping[str, str]) -> str:
    """Render a `compile_sandboxed` template within `MAX_RENDER_STEPS`, `MAX_RENDER_SECONDS` and
    `MAX_RENDER_CHARS`, in this process (the renderer process's side of `ChatTemplate.render`)."""
    out: list[str] = []
    size = 0
    with _bounded(where, "failed to render"):
        for piece in template.generate(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                       **special_tokens):
            size += len(piece)
            if size > MAX_RENDER_CHARS:
                raise _Limit(f"the prompt is longer than {MAX_RENDER_CHARS:,} characters")
            out.append(piece)
    return "".join(out)


def is_official_template(source: str) -> bool:
    """Whether `source` is exactly the text of an official Kimi-VL template (`OFFICIAL_TEMPLATE_SHA256`)."""
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest() in OFFICIAL_TEMPLATE_SHA256


class ChatTemplate:
    """A checkpoint's chat template. `source=None` means the built-in Kimi-VL template.

    `where` names the template in errors (its file). The official template and `source=None` render with
    `render_kimi_vl` in this process; any other template compiles and renders in a child process
    (`TemplateWorker`, started here) and is refused here with `ChatTemplateError` if it does not compile or
    cannot render a one-message conversation within the render bounds. `close()` stops the child.
    """

    def __init__(self, source: str | None = None, *, special_tokens: Mapping[str, str] | None = None,
                 where: str = "chat_template") -> None:
        from kimi_agent.model_runtime.template_worker import TemplateWorker

        self.source = source
        self.where = where
        self.special_tokens = dict(special_tokens or {})
        #: True when `render` uses `render_kimi_vl` (no jinja, no child process).
        self.is_official = source is None or is_official_template(source)
        self._worker: TemplateWorker | None = None
        if source is not None and not self.is_official:
            self._worker = TemplateWorker(source, where=where, special_tokens=self.special_tokens)
            try:
                self.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
            except BaseException:
                self._worker.close()
                raise

    @classmethod
    def from_dir(cls, path: str | Path) -> ChatTemplate:
        """`chat_template.jinja` in `path`, else `chat_template` in `tokenizer_config.json`, else
        the built-in template. `bos_token`/`eos_token`/... of tokenizer_config are passed to it."""
        path = Path(path)
        cfg_file = path / "tokenizer_config.json"
        cfg: dict[str, Any] = read_json_object(cfg_file) if model_file_exists(cfg_file) else {}
        specials = {k: v for k, v in cfg.items() if k.endswith("_token") and isinstance(v, str)}
        specials |= {k: v["content"] for k, v in cfg.items()  # transformers' {"content": ...} form
                     if k.endswith("_token") and isinstance(v, dict) and isinstance(v.get("content"), str)}
        jinja_file = path / "chat_template.jinja"
        if model_file_exists(jinja_file):
            return cls(read_text_file(jinja_file, max_bytes=MAX_TEXT_BYTES), special_tokens=specials,
                       where=str(jinja_file))
        source = cfg.get("chat_template")
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"{cfg_file}: key 'chat_template' must be a string.")
        if source is not None and len(source) > MAX_TEXT_BYTES:
            raise ConfigError(f"{cfg_file}: key 'chat_template' holds {len(source):,} characters, over this "
                              f"runtime's bound of {MAX_TEXT_BYTES:,}")
        return cls(source, special_tokens=specials, where=f"{cfg_file} (key 'chat_template')")

    @property
    def renderer_pid(self) -> int | None:
        """The process id of this template's renderer process while one runs (None on the fast path)."""
        return self._worker.pid if self._worker is not None else None

    def close(self) -> None:
        """Stop the renderer process, if any (also done when the template is garbage-collected)."""
        if self._worker is not None:
            self._worker.close()

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False) -> str:
        """The prompt text for `messages` (no BOS; the Kimi-VL template emits none). A checkpoint's template
        renders in its child process within the render bounds; a failure, a crash of the child or a bound
        reached raises `ChatTemplateError` naming the template."""
        if self._worker is None:
            return render_kimi_vl(messages, add_generation_prompt=add_generation_prompt)
        return self._worker.render(messages, add_generation_prompt=add_generation_prompt)
