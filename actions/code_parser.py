"""Parse the `## Code` block of a reply into typed actions, with `ast` only.

Nothing here executes model output: the block is parsed with `ast.parse`, and only calls to a fixed
table of pyautogui functions, `time.sleep` and the `computer.*` pseudo-functions, with literal
arguments (numbers, strings, booleans, None, lists/tuples of those), become actions. Every other
construct is rejected with a `ReplyError` whose text is written for the model to read. What one
reply may ask for in all is bounded too (`ParseLimits`: actions, key presses, typed characters,
seconds of waiting), and no string argument may hold a lone surrogate (`bad_text`).
"""

from __future__ import annotations

import ast
import math
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from pydantic import ValidationError

from kimi_agent.actions.types import (
    Action,
    AskUser,
    Click,
    Done,
    Drag,
    Hotkey,
    KeyDown,
    KeyUp,
    MouseDown,
    MouseUp,
    Move,
    NormPoint,
    Press,
    Scroll,
    TypeText,
    Wait,
)
from kimi_agent.actions.unicode_rules import describe_char, hidden_characters, unstable_identifiers
from kimi_agent.errors import ReplyError

CoordinateMode = Literal["relative", "absolute", "relative1000"]
_MISSING: Any = object()
MAX_ABS_NUMBER = 1e6  # any numeric argument beyond +-this is refused (no overflow, no huge loops)


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what one reply may ask for."""

    max_calls: int = 20
    max_text_chars: int = 2000
    max_code_chars: int = 20_000
    degenerate_eps: float = 0.002  # both coordinates below this fraction = the (0, 0) failure mode
    computer_wait_s: float = 5.0  # what `computer.wait()` waits
    max_wait_s: float = 120.0  # longest `time.sleep` / `computer.wait` one call may ask for
    # per reply, over all its calls (a list argument or `presses` counts each key, a drag its duration):
    max_actions: int = 50
    max_key_presses: int = 500  # press(..., presses=n) counts n per key; a hotkey counts 1
    max_typed_chars: int = 4000  # all write/typewrite text together
    max_total_wait_s: float = 120.0  # time.sleep + computer.wait + drag durations


@dataclass(slots=True)
class _Ctx:
    mode: CoordinateMode
    shot: tuple[int, int] | None
    allow_corner: bool
    limits: ParseLimits
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# name -> (parameter names in positional order, handler). "*keys" marks a var-positional list.
_Handler = Callable[[_Ctx, str, dict[str, Any]], None]
_SPECS: dict[str, tuple[tuple[str, ...], _Handler]] = {}


def _spec(name: str, *params: str) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        _SPECS[name] = (params, fn)
        return fn

    return register


def parse_code(
    code: str,
    *,
    coordinate_mode: CoordinateMode = "relative",
    screenshot_size: tuple[int, int] | None = None,
    allow_corner: bool = False,
    limits: ParseLimits | None = None,
) -> tuple[list[Action], list[str]]:
    """Turn a pyautogui code block into `(actions, warnings)`; raise `ReplyError` if rejected.

    `screenshot_size` (width, height in pixels of the image the model saw) is needed for the
    `absolute` mode and lets `relative` accept pixel coordinates with a warning.
    `allow_corner` permits the (0, 0) corner when the model said it meant a corner.
    """
    lim = limits or ParseLimits()
    if coordinate_mode == "absolute" and screenshot_size is None:
        raise ValueError("coordinate_mode='absolute' needs screenshot_size")
    if len(code) > lim.max_code_chars:
        raise ReplyError(f"The code block is too long ({len(code)} characters; at most {lim.max_code_chars}).", kind="too_long")
    try:
        with warnings.catch_warnings():  # invalid escapes in string literals warn; not our business
            warnings.simplefilter("ignore")
            tree = ast.parse(code, mode="exec")
    except SyntaxError as e:
        raise ReplyError(f"The code block is not valid Python: {e.msg} (line {e.lineno}).", kind="syntax") from None
    except (ValueError, RecursionError, MemoryError, OverflowError):
        raise ReplyError("The code block is not valid Python.", kind="syntax") from None
    renamed = unstable_identifiers(code)
    if renamed:
        raise ReplyError(
            "Write names in plain ASCII: " + ", ".join(f"{n!r} would run as {unicodedata.normalize('NFKC', n)!r}"
                                                        for n in renamed[:3]) + ".", kind="identifier")
    ctx = _Ctx(coordinate_mode, screenshot_size, allow_corner, lim)
    calls = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            _check_import(stmt)
            continue
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            raise ReplyError(
                f"Only plain function calls are allowed in the code block; line {stmt.lineno} is "
                f"{_describe(stmt)}.", kind="not_a_call")
        calls += 1
        if calls > lim.max_calls:
            raise ReplyError(f"Too many calls in one step (at most {lim.max_calls}).", kind="too_many_calls")
        if ctx.actions and isinstance(ctx.actions[-1], Done):
            raise ReplyError("computer.terminate(...) must be the last call of the block.", kind="after_terminate")
        _handle_call(ctx, stmt.value)
        _check_budget(ctx)
    if not ctx.actions:
        raise ReplyError("The code block contains no action. Give one pyautogui call, computer.wait() or "
                         "computer.terminate(...).", kind="no_action")
    return ctx.actions, ctx.warnings


def _check_budget(ctx: _Ctx) -> None:
    """Raise `ReplyError` naming the per-reply limit the actions so far go over (F10: one reply
    must not keep the executor busy for minutes)."""
    lim, actions = ctx.limits, ctx.actions
    if len(actions) > lim.max_actions:
        raise ReplyError(f"This step asks for {len(actions)} actions; at most {lim.max_actions} per step. "
                         "Do the rest in the next steps.", kind="too_many_actions")
    presses = sum(a.presses if isinstance(a, Press) else 1 for a in actions if isinstance(a, Press | Hotkey))
    if presses > lim.max_key_presses:
        raise ReplyError(f"This step asks for {presses} key presses; at most {lim.max_key_presses} per step. "
                         "Do the rest in the next steps.", kind="too_many_keys")
    typed = sum(len(a.text) for a in actions if isinstance(a, TypeText))
    if typed > lim.max_typed_chars:
        raise ReplyError(f"This step types {typed} characters; at most {lim.max_typed_chars} per step. "
                         "Type the rest in the next steps.", kind="too_long")
    waited = sum(a.seconds if isinstance(a, Wait) else a.duration_s for a in actions if isinstance(a, Wait | Drag))
    if waited > lim.max_total_wait_s:
        raise ReplyError(f"This step waits {waited:g} seconds in all (sleeps and drags); at most "
                         f"{lim.max_total_wait_s:g} per step. Wait again in the next step if needed.",
                         kind="too_long_wait")


def _check_import(stmt: ast.Import | ast.ImportFrom) -> None:
    names = [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module or ""]
    for n in names:
        if n not in {"pyautogui", "time"}:
            raise ReplyError(f"Only pyautogui may be used; importing {n!r} is not allowed.", kind="import")


def _qualname(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return None


def _handle_call(ctx: _Ctx, call: ast.Call) -> None:
    name = _qualname(call.func)
    if name is None or name not in _SPECS:
        shown = name or _describe(call.func)
        raise ReplyError(
            f"Unknown function {shown}. Use pyautogui (click, doubleClick, tripleClick, rightClick, "
            "middleClick, moveTo, dragTo, mouseDown, mouseUp, scroll, hscroll, vscroll, write, press, "
            "hotkey, keyDown, keyUp), computer.wait() or computer.terminate(status=..., answer=...).",
            kind="unknown_function")
    params, handler = _SPECS[name]
    handler(ctx, name, _bind(name, params, call))


def _bind(name: str, params: tuple[str, ...], call: ast.Call) -> dict[str, Any]:
    args: dict[str, Any] = {}
    varargs = params and params[0].startswith("*")
    for i, node in enumerate(call.args):
        if isinstance(node, ast.Starred):
            raise ReplyError(f"{name}: *arguments are not allowed.", kind="non_literal")
        if varargs:
            args.setdefault(params[0][1:], []).append(_literal(name, node, params[0][1:]))
        elif i < len(params):
            args[params[i]] = _literal(name, node, params[i])
        else:
            raise ReplyError(f"{name} takes at most {len(params)} positional arguments.", kind="bad_argument")
    for kw in call.keywords:
        if kw.arg is None:
            raise ReplyError(f"{name}: **arguments are not allowed.", kind="non_literal")
        if kw.arg in args:
            raise ReplyError(f"{name} got argument {kw.arg!r} twice.", kind="bad_argument")
        allowed = {p.lstrip("*") for p in params}
        if kw.arg not in allowed:
            raise ReplyError(f"{name} has no argument {kw.arg!r}.", kind="bad_argument")
        args[kw.arg] = _literal(name, kw.value, kw.arg)
    return args


def _literal(fn: str, node: ast.expr, arg: str, depth: int = 0) -> Any:
    """The value of a literal node; anything that is not a plain literal is refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | type(None)):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
        value: float = node.operand.value  # type: ignore[assignment]
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple) and depth == 0:
        return [_literal(fn, e, arg, depth + 1) for e in node.elts]
    raise ReplyError(f"Argument {arg!r} of {fn} must be a literal value, not {_describe(node)}.", kind="non_literal")


def _describe(node: ast.AST) -> str:
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (ast.Name, "a variable name"), (ast.Call, "a function call"), (ast.Attribute, "an attribute access"),
        (ast.JoinedStr, "an f-string"), ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp), "a comprehension"),
        ((ast.BinOp, ast.BoolOp, ast.Compare, ast.UnaryOp, ast.IfExp), "an expression"),
        (ast.Lambda, "a lambda"), (ast.Subscript, "a subscript"), ((ast.Dict, ast.Set), "a dict or set"),
        ((ast.Assign, ast.AugAssign, ast.AnnAssign), "an assignment"),
        ((ast.For, ast.While, ast.If, ast.With, ast.Try), "a control-flow statement"),
        ((ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef), "a definition"),
    ]
    for types_, text in kinds:
        if isinstance(node, types_):
            return text
    return f"a {type(node).__name__} node"


# ---- argument conversion ---------------------------------------------------------------------


def _number(fn: str, arg: str, v: Any, limit: float = MAX_ABS_NUMBER) -> float:
    """`v` as a float; a bool, non-number, NaN/inf or anything beyond +-`limit` is a `ReplyError`.

    Ints are compared before any conversion, so a 400-digit literal cannot raise `OverflowError`.
    """
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ReplyError(f"Argument {arg!r} of {fn} must be a number, got {_short(v)}.", kind="bad_argument")
    if isinstance(v, float) and not math.isfinite(v):
        raise ReplyError(f"Argument {arg!r} of {fn} must be a finite number, got {v!r}.", kind="not_finite")
    if not -limit <= v <= limit:
        raise ReplyError(f"Argument {arg!r} of {fn} is out of range: {_short(v)} (at most {limit:g} in size).",
                         kind="out_of_range")
    return float(v)


def _short(v: Any, max_chars: int = 40) -> str:
    """`repr(v)` cut to `max_chars` (a huge int or string is never echoed whole)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10**30:
        return "a number with more than 30 digits"
    text = repr(v)
    return text if len(text) <= max_chars else text[:max_chars] + "..."


def _int(fn: str, arg: str, v: Any) -> int:
    x = _number(fn, arg, v)
    if x != int(x):
        raise ReplyError(f"Argument {arg!r} of {fn} must be a whole number, got {_short(v)}.", kind="bad_argument")
    return int(x)


def _str(fn: str, arg: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ReplyError(f"Argument {arg!r} of {fn} must be a string, got {_short(v)}.", kind="bad_argument")
    _check_encodable(fn, arg, v)
    return v


def _check_encodable(fn: str, arg: str, text: str) -> None:
    """Refuse a string UTF-8 cannot hold (a lone surrogate such as '\\udcff', written as an escape
    in a plain-ASCII reply): no record, terminal or environment could carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ReplyError(f"Argument {arg!r} of {fn} holds U+{ord(text[e.start]):04X} at position {e.start}, a lone "
                         "surrogate, which is not a character; write the text without it.", kind="bad_text") from None


def _point(ctx: _Ctx, fn: str, a: dict[str, Any], *, required: bool) -> NormPoint | None:
    x, y = a.get("x", _MISSING), a.get("y", _MISSING)
    if isinstance(x, list) and y in (_MISSING, None):  # pyautogui.click((x, y))
        if len(x) != 2:
            raise ReplyError(f"{fn}: a point needs exactly two numbers, got {_short(x)}.", kind="bad_argument")
        x, y = x
    if x in (_MISSING, None) and y in (_MISSING, None):
        if required:
            raise ReplyError(f"{fn} needs a point: give x and y.", kind="missing_point")
        return None
    if x in (_MISSING, None) or y in (_MISSING, None):
        raise ReplyError(f"{fn}: give both x and y, not just one.", kind="missing_point")
    return _to_norm(ctx, fn, _number(fn, "x", x), _number(fn, "y", y))


def _to_norm(ctx: _Ctx, fn: str, x: float, y: float) -> NormPoint:
    if ctx.mode == "relative":
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            if ctx.shot is not None and 0 <= x <= ctx.shot[0] and 0 <= y <= ctx.shot[1]:
                ctx.warnings.append(f"{fn}({x:g}, {y:g}) read as screenshot pixels; relative [0, 1] coordinates were expected")
                nx, ny = x / ctx.shot[0], y / ctx.shot[1]
            else:
                raise ReplyError(
                    f"{fn}({x:g}, {y:g}) is outside the screen: coordinates are fractions of the "
                    "screenshot, between 0 and 1.", kind="off_screen")
        else:
            nx, ny = x, y
    elif ctx.mode == "relative1000":
        if not (0 <= x <= 1000 and 0 <= y <= 1000):
            raise ReplyError(f"{fn}({x:g}, {y:g}) is outside the screen: coordinates run from 0 to 1000.", kind="off_screen")
        nx, ny = x / 1000, y / 1000
    else:
        assert ctx.shot is not None
        w, h = ctx.shot
        if not (0 <= x <= w and 0 <= y <= h):
            raise ReplyError(f"{fn}({x:g}, {y:g}) is outside the {w}x{h} screenshot.", kind="off_screen")
        nx, ny = x / w, y / h
    eps = ctx.limits.degenerate_eps
    if nx <= eps and ny <= eps and not ctx.allow_corner:
        raise ReplyError(
            f"{fn}({x:g}, {y:g}) points at the top-left corner, which is almost never the target. "
            "Look at the screenshot again and give the target's position.", kind="degenerate")
    return NormPoint(x=nx, y=ny)


def _button(fn: str, a: dict[str, Any], default: str = "left") -> str:
    b = a.get("button", default)
    b = _str(fn, "button", b).lower() if b is not None else default
    b = {"primary": "left", "secondary": "right"}.get(b, b)
    if b not in ("left", "middle", "right"):
        raise ReplyError(f"{fn}: button must be 'left', 'middle' or 'right', got {_short(b)}.", kind="bad_argument")
    return b


def _add(ctx: _Ctx, fn: str, make: Callable[[], Action]) -> None:
    try:
        ctx.actions.append(make())
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ReplyError(f"{fn}: {where + ': ' if where else ''}{err['msg']}.", kind="bad_argument") from None
    except ValueError as e:  # key normalization
        raise ReplyError(f"{fn}: {e}.", kind="bad_argument") from None


def _keys_arg(fn: str, v: Any) -> list[str]:
    items = v if isinstance(v, list) else [v]
    flat = [k for item in items for k in (item if isinstance(item, list) else [item])]
    if not flat:
        raise ReplyError(f"{fn} needs at least one key.", kind="bad_argument")
    return [_str(fn, "key", k) for k in flat]


# ---- handlers --------------------------------------------------------------------------------

@_spec("pyautogui.click", "x", "y", "clicks", "interval", "button", "duration", "tween", "logScreenshot", "_pause")
def _click(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    clicks = _int(fn, "clicks", a.get("clicks", 1))
    point, button = _point(ctx, fn, a, required=False), _button(fn, a)
    _add(ctx, fn, lambda: Click(point=point, button=button, clicks=clicks))


def _fixed_click(clicks: int, button: str | None) -> _Handler:
    def handler(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
        point, b = _point(ctx, fn, a, required=False), button or _button(fn, a)
        _add(ctx, fn, lambda: Click(point=point, button=b, clicks=clicks))

    return handler


_spec("pyautogui.doubleClick", "x", "y", "interval", "button", "duration", "tween")(_fixed_click(2, None))
_spec("pyautogui.tripleClick", "x", "y", "interval", "button", "duration", "tween")(_fixed_click(3, None))
_spec("pyautogui.rightClick", "x", "y", "duration", "tween")(_fixed_click(1, "right"))
_spec("pyautogui.middleClick", "x", "y", "duration", "tween")(_fixed_click(1, "middle"))
_spec("computer.triple_click", "x", "y")(_fixed_click(3, None))


@_spec("pyautogui.moveTo", "x", "y", "duration", "tween")
def _move(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    point = _point(ctx, fn, a, required=True)
    _add(ctx, fn, lambda: Move(point=point))


@_spec("pyautogui.dragTo", "x", "y", "duration", "tween", "button", "mouseDownUp")
def _drag(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    end = _point(ctx, fn, a, required=True)
    duration = _number(fn, "duration", a.get("duration") or 0.5)
    start = None
    if ctx.actions and isinstance(ctx.actions[-1], Move):  # moveTo(a); dragTo(b) is one drag a -> b
        start = ctx.actions.pop().point
    button = _button(fn, a)
    _add(ctx, fn, lambda: Drag(start=start, end=end, button=button, duration_s=duration))


@_spec("pyautogui.mouseDown", "x", "y", "button", "duration", "tween")
def _mouse_down(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    point, button = _point(ctx, fn, a, required=False), _button(fn, a)
    _add(ctx, fn, lambda: MouseDown(point=point, button=button))


@_spec("pyautogui.mouseUp", "x", "y", "button", "duration", "tween")
def _mouse_up(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    point, button = _point(ctx, fn, a, required=False), _button(fn, a)
    _add(ctx, fn, lambda: MouseUp(point=point, button=button))


def _scroll_handler(axis: Literal["v", "h"]) -> _Handler:
    def handler(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
        if "clicks" not in a:
            raise ReplyError(f"{fn} needs the number of clicks (positive = up/right).", kind="bad_argument")
        clicks = round(_number(fn, "clicks", a["clicks"]))
        if clicks == 0:
            raise ReplyError(f"{fn}(0) does nothing; give a non-zero number of clicks.", kind="bad_argument")
        positive, negative = ("up", "down") if axis == "v" else ("right", "left")
        direction = positive if clicks > 0 else negative
        point = _point(ctx, fn, a, required=False)
        _add(ctx, fn, lambda: Scroll(point=point, direction=direction, amount=abs(clicks)))

    return handler


_spec("pyautogui.scroll", "clicks", "x", "y")(_scroll_handler("v"))
_spec("pyautogui.vscroll", "clicks", "x", "y")(_scroll_handler("v"))
_spec("pyautogui.hscroll", "clicks", "x", "y")(_scroll_handler("h"))


def _write(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    msg = a.get("message", _MISSING)
    if isinstance(msg, list):  # typewrite(['a', 'enter']) presses keys
        for k in _keys_arg(fn, msg):
            _add(ctx, fn, partial(Press, key=k))
        return
    if msg is _MISSING:
        raise ReplyError(f"{fn} needs the text to type.", kind="bad_argument")
    text = _str(fn, "message", msg)
    if len(text) > ctx.limits.max_text_chars:
        raise ReplyError(f"{fn}: the text is too long ({len(text)} characters; at most "
                         f"{ctx.limits.max_text_chars}).", kind="too_long")
    hidden = hidden_characters(text)
    if hidden:
        shown = ", ".join(f"{describe_char(ch)} at position {i}" for i, ch in hidden[:3])
        raise ReplyError(f"{fn}: the text holds invisible or control characters ({shown}); type it without "
                         "them.", kind="hidden_text")
    _add(ctx, fn, lambda: TypeText(text=text))


_spec("pyautogui.write", "message", "interval", "logScreenshot", "_pause")(_write)
_spec("pyautogui.typewrite", "message", "interval", "logScreenshot", "_pause")(_write)


@_spec("pyautogui.press", "keys", "presses", "interval", "logScreenshot", "_pause")
def _press(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    presses = _int(fn, "presses", a.get("presses", 1))
    for k in _keys_arg(fn, a.get("keys", [])):
        _add(ctx, fn, partial(Press, key=k, presses=presses))


@_spec("pyautogui.hotkey", "*keys", "interval", "logScreenshot", "_pause")
def _hotkey(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    keys = _keys_arg(fn, a.get("keys", []))
    _add(ctx, fn, lambda: Hotkey(keys=tuple(keys)))


@_spec("pyautogui.keyDown", "key", "logScreenshot", "_pause")
def _key_down(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    key = _str(fn, "key", a.get("key"))
    _add(ctx, fn, lambda: KeyDown(key=key))


@_spec("pyautogui.keyUp", "key", "logScreenshot", "_pause")
def _key_up(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    key = _str(fn, "key", a.get("key"))
    _add(ctx, fn, lambda: KeyUp(key=key))


@_spec("time.sleep", "seconds")
def _sleep(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    seconds = _seconds(ctx, fn, a.get("seconds"))
    _add(ctx, fn, lambda: Wait(seconds=seconds))


def _seconds(ctx: _Ctx, fn: str, raw: Any) -> float:
    seconds = _number(fn, "seconds", raw)
    if not 0 <= seconds <= ctx.limits.max_wait_s:
        raise ReplyError(f"{fn}: wait between 0 and {ctx.limits.max_wait_s:g} seconds, not {seconds:g}.",
                         kind="out_of_range")
    return seconds


@_spec("computer.wait", "seconds")
def _computer_wait(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    raw = a.get("seconds")
    seconds = ctx.limits.computer_wait_s if raw is None else _seconds(ctx, fn, raw)
    _add(ctx, fn, lambda: Wait(seconds=seconds))


_STATUS = {"success": "success", "succeeded": "success", "done": "success", "failure": "failure",
           "fail": "failure", "failed": "failure", "infeasible": "failure"}


@_spec("computer.terminate", "status", "answer")
def _terminate(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    raw = a.get("status")
    status = _STATUS.get(_str(fn, "status", raw).strip().lower()) if raw is not None else None
    if status is None:
        raise ReplyError("computer.terminate needs status='success' or status='failure'.", kind="bad_argument")
    answer = a.get("answer")
    answer = None if answer is None else _str(fn, "answer", answer) if isinstance(answer, str) else str(answer)
    _add(ctx, fn, lambda: Done(status=status, answer=answer))


def _ask(ctx: _Ctx, fn: str, a: dict[str, Any]) -> None:
    question = _str(fn, "question", a.get("question", ""))
    _add(ctx, fn, lambda: AskUser(question=question))


_spec("computer.ask_user", "question")(_ask)
_spec("computer.call_user", "question")(_ask)

SUPPORTED_FUNCTIONS: frozenset[str] = frozenset(_SPECS)
