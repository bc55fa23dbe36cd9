"""Compile, check and render template content with EmailEngine's semantics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, overload

from dotpromptz_handlebars import (
    Block,
    ElseNode,
    HelperOptions,
    InlinePartial,
    Mustache,
    Node,
    Partial,
    PartialBlock,
)
from dotpromptz_handlebars._render import compile_template, render_program

from mailgate_common.templates import _js
from mailgate_common.templates._dates import format_date
from mailgate_common.templates._markdown import markdown_to_html

MAX_PART_BYTES = 1024 * 1024
"""Largest template part (subject, text, html, previewText) accepted, in UTF-8 bytes."""
MAX_OUTPUT_BYTES = 5 * 1024 * 1024
"""Largest rendered part, in UTF-8 bytes."""
MAX_RENDER_SECONDS = 2.0
"""Wall-clock bound for rendering one message (all parts)."""
MAX_DATA_READS = 500_000
"""Reads of template data (values, list items) allowed while rendering one message."""
MAX_DEPTH = 64

Part = Literal["subject", "text", "html", "previewText"]
_BUILTIN_BLOCKS = frozenset({"if", "unless", "each", "with"})


@dataclass(frozen=True)
class Content:
    subject: str | None
    text: str | None
    html: str | None
    preview_text: str | None = None


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    text: str | None
    html: str | None


class RenderError(Exception):
    """A template part failed to compile or render; ``part`` names it."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"Failed rendering {part} template: {message}")
        self.part = part
        self.message = message


class _HelperError(ValueError):
    pass


class _LimitError(ValueError):
    pass


# --- data guard: only dict/list data, every read counted against time and read budgets ------------


class _Budget:
    __slots__ = ("deadline", "reads")

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.reads = 0

    def tick(self) -> None:
        self.reads += 1
        if self.reads > MAX_DATA_READS:
            raise _LimitError(f"template reads more than {MAX_DATA_READS} values")
        if self.reads & 63 == 0 and time.monotonic() > self.deadline:
            raise _LimitError(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")


class _Map(Mapping[str, Any]):
    __slots__ = ("_mg_budget", "_mg_data")

    def __init__(self, data: Mapping[Any, Any], budget: _Budget) -> None:
        self._mg_data = data
        self._mg_budget = budget

    def __getitem__(self, key: str) -> Any:
        self._mg_budget.tick()
        return _wrap(self._mg_data[key], self._mg_budget)

    def __contains__(self, key: object) -> bool:
        return key in self._mg_data

    def __iter__(self) -> Iterator[str]:
        return iter(self._mg_data)

    def __len__(self) -> int:
        return len(self._mg_data)


class _Seq(Sequence[Any]):
    __slots__ = ("_mg_budget", "_mg_data")

    def __init__(self, data: Sequence[Any], budget: _Budget) -> None:
        self._mg_data = data
        self._mg_budget = budget

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return _Seq(self._mg_data[index], self._mg_budget)
        self._mg_budget.tick()
        return _wrap(self._mg_data[index], self._mg_budget)

    def __len__(self) -> int:
        return len(self._mg_data)


def _wrap(value: Any, budget: _Budget) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        return _js.js_number(value)
    if isinstance(value, Mapping):
        if any(not isinstance(key, str) for key in value):
            value = {str(key): item for key, item in value.items()}
        return _Map(value, budget)
    if isinstance(value, (list, tuple)):
        return _Seq(value, budget)
    return str(value)


# --- helpers (@postalsys/templates, SendGrid-compatible) ------------------------------------------


def _need_block(name: str, options: HelperOptions) -> None:
    if not options.is_block:
        raise _HelperError(f"{name} is a block helper: use {{{{#{name} …}}}}…{{{{/{name}}}}}")


def _format_date(args: list[Any], options: HelperOptions) -> Any:
    if len(args) < 2:
        raise _HelperError('formatDate needs a timestamp and a format, e.g. {{formatDate ts "YYYY-MM-DD"}}')
    timestamp, fmt = args[0], args[1]
    if fmt is not None and not isinstance(fmt, str):
        raise _HelperError("formatDate: the format must be a string")
    tz = args[2] if len(args) > 2 else None
    return format_date(timestamp, fmt, tz)


def _insert(args: list[Any], options: HelperOptions) -> Any:
    if len(args) < 2:
        raise _HelperError('insert needs a value and an option, e.g. {{insert name "default=Friend"}}')
    value, opts = args[0], args[1]
    if not isinstance(opts, str):
        opts = _js.to_primitive(opts) if opts is not None else ""
        opts = opts if isinstance(opts, str) else str(opts)
    key, sep, rest = opts.partition("=")
    if sep:
        key, fallback = key.lower().strip(), rest.strip()
    else:
        key, fallback = "", opts.strip()
    if _js.truthy(value):
        return value
    return fallback if key in ("default", "") else ""


def _length(args: list[Any], options: HelperOptions) -> Any:
    value = args[0] if args else None
    if not _js.truthy(value):
        return 0
    if isinstance(value, Mapping):
        return value["length"] if "length" in value else 0
    if _js.is_list(value):
        return len(value)
    raise _HelperError("length takes a list (or an object with a length key)")


def _compare(name: str, test: Callable[[Any, Any], bool]) -> Callable[[list[Any], HelperOptions], Any]:
    def helper(args: list[Any], options: HelperOptions) -> Any:
        _need_block(name, options)
        compare = args[0] if args else None
        base = args[1] if len(args) > 1 else None
        return options.fn() if test(compare, base) else options.inverse()

    return helper


def _numbers(test: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    def check(compare: Any, base: Any) -> bool:
        if _js.is_nan(base) or _js.is_nan(compare):
            return False
        return test(_js.to_number(compare), _js.to_number(base))

    return check


def _and(args: list[Any], options: HelperOptions) -> Any:
    _need_block("and", options)
    if args and all(_js.truthy(arg) for arg in args):
        return options.fn()
    return options.inverse()


def _or(args: list[Any], options: HelperOptions) -> Any:
    _need_block("or", options)
    return options.fn() if any(_js.truthy(arg) for arg in args) else options.inverse()


def _lookup(args: list[Any], options: HelperOptions) -> Any:
    collection, key = [*args, None, None][:2]
    if isinstance(collection, Mapping):
        return collection[str(key)] if str(key) in collection else None
    if _js.is_list(collection):
        try:
            index = int(key)
        except (TypeError, ValueError):
            return None
        return collection[index] if 0 <= index < len(collection) else None
    return None


def _log(args: list[Any], options: HelperOptions) -> Any:
    return ""


HELPERS: dict[str, Callable[[list[Any], HelperOptions], Any]] = {
    "formatDate": _format_date,
    "insert": _insert,
    "length": _length,
    "greaterThan": _compare("greaterThan", _numbers(lambda a, b: a > b)),
    "lessThan": _compare("lessThan", _numbers(lambda a, b: a < b)),
    "equals": _compare("equals", lambda a, b: _js.loose_equals(b, a)),
    "notEquals": _compare("notEquals", lambda a, b: not _js.loose_equals(b, a)),
    "and": _and,
    "or": _or,
    "lookup": _lookup,
    "log": _log,
}


# --- compile and static checks --------------------------------------------------------------------


def _walk(nodes: Sequence[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if isinstance(node, Block):
            yield from _walk(node.body)
            yield from _walk(node.inverse)
        elif isinstance(node, ElseNode):
            yield from _walk(node.body)


def _subexpressions(tokens: Sequence[str]) -> Iterator[str]:
    for token in tokens:
        if token.startswith("(") and token.endswith(")"):
            inner = token[1:-1].strip()
            from dotpromptz_handlebars._render import _call

            call = _call(inner)
            yield call["name"]
            yield from _subexpressions([*call["args"], *call["hash"].values()])


def _check_nodes(nodes: Sequence[Node]) -> None:
    for node in _walk(nodes):
        if isinstance(node, (Partial, PartialBlock, InlinePartial)):
            raise ValueError("partials are not supported")
        if isinstance(node, (Mustache, Block)):
            call = node.call
            name = call["name"]
            called = bool(call["args"] or call["hash"] or call.get("literal"))
            if isinstance(node, Block) and name in _BUILTIN_BLOCKS:
                called = False
            if called and name not in HELPERS and name not in _BUILTIN_BLOCKS:
                raise ValueError(f'Missing helper: "{name}"')
            for sub in _subexpressions([*call["args"], *call["hash"].values()]):
                if sub not in HELPERS:
                    raise ValueError(f'Missing helper: "{sub}"')


@lru_cache(maxsize=256)
def _compile(source: str) -> list[Node]:
    nodes = compile_template(source, max_depth=MAX_DEPTH)
    _check_nodes(nodes)
    return nodes


def _parts(content: Content) -> list[tuple[Part, str]]:
    parts: list[tuple[Part, str]] = []
    for part, source in (
        ("subject", content.subject),
        ("text", content.text),
        ("html", content.html),
        ("previewText", content.preview_text),
    ):
        if source is not None:
            parts.append((part, source))  # type: ignore[arg-type]
    return parts


def _compiled(part: str, source: str) -> list[Node]:
    if len(source.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
        raise RenderError(part, f"template is larger than {MAX_PART_BYTES} bytes")
    try:
        return _compile(source)
    except RecursionError as exc:
        raise RenderError(part, f"template nests too deeply ({exc})") from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise RenderError(part, str(exc) or type(exc).__name__) from None


def check(content: Content) -> None:
    """Compile every part; RenderError names the first part that does not compile."""
    for part, source in _parts(content):
        _compiled(part, source)


def _render_part(part: str, source: str, escape: bool, data: Any, budget: _Budget) -> str:
    program = _compiled(part, source)
    try:
        out = render_program(
            program,
            data,
            data=None,
            helpers=dict(HELPERS),
            partials={},
            escape_html=escape,
            strict=False,
            max_depth=MAX_DEPTH,
        )
    except _LimitError as exc:
        raise RenderError(part, str(exc)) from None
    except RecursionError as exc:
        raise RenderError(part, f"template nests too deeply ({exc})") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise RenderError(part, str(exc) or type(exc).__name__) from None
    if len(out) > MAX_OUTPUT_BYTES or len(out.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_BYTES:
        raise RenderError(part, f"rendered output is larger than {MAX_OUTPUT_BYTES} bytes")
    return out


def render(content: Content, format: Literal["html", "markdown"], context: dict[str, Any]) -> Rendered:
    """Render subject and text without escaping, html escaped (markdown: escaped, then Markdown).

    previewText is rendered (and checked) like text; EmailEngine does not use its output for the
    message, so it is not returned.
    """
    budget = _Budget()
    data = _wrap(context, budget)
    out: dict[str, str | None] = {"subject": None, "text": None, "html": None}
    for part, source in _parts(content):
        if part == "html":
            html = _render_part(part, source, True, data, budget)
            if format == "markdown":
                html = markdown_to_html(html)
            out["html"] = html
        else:
            rendered = _render_part(part, source, False, data, budget)
            if part != "previewText":
                out[part] = rendered
    return Rendered(subject=out["subject"], text=out["text"], html=out["html"])


# --- suggested model --------------------------------------------------------------------------------


def _path_tokens(node: Node) -> Iterator[tuple[str, Block | None]]:
    """(path, block) for each data path a node reads; block is set when the node opens a scope."""
    if isinstance(node, Mustache):
        call = node.call
        if not call["args"] and not call["hash"] and call["name"] not in HELPERS and not call.get("literal"):
            yield call["name"], None
        for token in [*call["args"], *call["hash"].values()]:
            yield token, None
    elif isinstance(node, Block):
        call = node.call
        name = call["name"]
        if name in ("each", "with") and len(call["args"]) == 1:
            yield call["args"][0], node
            for token in call["hash"].values():
                yield token, None
            return
        if name not in HELPERS and name not in _BUILTIN_BLOCKS and not call["args"] and not call["hash"]:
            yield name, node
            return
        for token in [*call["args"], *call["hash"].values()]:
            yield token, None


def _is_path(token: str) -> bool:
    if not token or token[0] in "\"'@(-0123456789" or token in ("true", "false", "null", "undefined"):
        return False
    return token not in (".", "this")


def _split(token: str) -> tuple[int, list[str]] | None:
    """(scopes to climb, path parts) for a data path; None for what is not one."""
    from dotpromptz_handlebars._render import _parts as hb_parts

    try:
        parts = hb_parts(token)
    except ValueError:
        return None
    climb = 0
    while parts and parts[0] == "..":
        climb += 1
        parts = parts[1:]
    if parts and parts[0] == "this":
        parts = parts[1:]
    if ".." in parts:
        return None
    parts = [p for p in parts if p not in (".", "this")]
    return (climb, parts) if parts else None


def _slot(model: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """Walk or create dicts along parts[:-1]; return the dict that holds parts[-1]."""
    current = model
    for part in parts[:-1]:
        nxt = current.get(part)
        if isinstance(nxt, list):
            nxt = nxt[0] if nxt and isinstance(nxt[0], dict) else None
            if nxt is None:
                current[part] = [{}]
                nxt = current[part][0]
        elif not isinstance(nxt, dict):
            nxt = {}
            current[part] = nxt
        current = nxt
    return current


def _collect(nodes: Sequence[Node], scopes: list[dict[str, Any]]) -> None:
    for node in nodes:
        if isinstance(node, ElseNode):
            _collect(node.body, scopes)
            continue
        for token, block in _path_tokens(node):
            if token.startswith("(") and token.endswith(")"):
                from dotpromptz_handlebars._render import _call

                sub = _call(token[1:-1].strip())
                _collect([Mustache({**sub, "name": "log"}, raw=False)], scopes)
                continue
            target = scopes
            if token.startswith("@root."):
                token, target = token[len("@root.") :], scopes[:1]
            if not _is_path(token):
                continue
            split = _split(token)
            if split is None or split[0] >= len(target):
                continue
            climb, parts = split
            holder = _slot(target[-1 - climb], parts)
            leaf = parts[-1]
            if block is None:
                holder.setdefault(leaf, "")
                continue
            is_each = block.call["name"] == "each"
            if is_each:
                existing = holder.get(leaf)
                if not (isinstance(existing, list) and existing and isinstance(existing[0], dict)):
                    holder[leaf] = [{}]
                inner = holder[leaf][0]
            else:
                existing = holder.get(leaf)
                if not isinstance(existing, dict):
                    holder[leaf] = {}
                inner = holder[leaf]
            _collect(block.body, [*scopes, inner])
            _collect(block.inverse, scopes)
        if isinstance(node, Block) and not _opens_scope(node):
            _collect(node.body, scopes)
            _collect(node.inverse, scopes)


def _opens_scope(node: Block) -> bool:
    call = node.call
    name = call["name"]
    if name in ("each", "with") and len(call["args"]) == 1:
        return True
    return name not in HELPERS and name not in _BUILTIN_BLOCKS and not call["args"] and not call["hash"]


def _prune(model: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(model.items()):
        if isinstance(value, list) and value and isinstance(value[0], dict):
            if not value[0]:
                model[key] = []
            else:
                _prune(value[0])
        elif isinstance(value, dict):
            _prune(value)
    return model


def variables(content: Content) -> dict[str, Any]:
    """A suggested render context from the paths the template reads.

    Leaves are "", lists read with {{#each}} are one-element lists of the item's model (or [] when
    the items are printed whole), e.g. {"params": {"firstName": "", "items": [{"name": ""}]}}.
    Parts that do not compile are skipped (check() reports them).
    """
    model: dict[str, Any] = {}
    for part, source in _parts(content):
        try:
            nodes = _compiled(part, source)
        except RenderError:
            continue
        _collect(nodes, [model])
    return _prune(model)


__all__ = ["Content", "RenderError", "Rendered", "check", "render", "variables"]
