"""S-expressions with positions: the reader and writers under the build-spec language.

DESIGN.md picked `sexpdata`; this small reader replaces it because every mistake in a spec must
be reported at its line and column, and sexpdata keeps no positions. It reads what obuilder
reads (OCaml's sexplib):

- `(` and `)` lists; bare atoms run until whitespace, `(`, `)`, `"` or `;`;
- `;` line comments, `#| ... |#` block comments (nestable; a `"|#"` inside a string inside a
  block comment does not end it) and `#;` which comments out the next S-expression;
- double-quoted strings with sexplib's escapes: `\\"`, `\\\\`, `\\'`, `\\n`, `\\t`, `\\b`,
  `\\r`, `\\ ` (space), `\\DDD` (decimal byte, at most 255), `\\xHH` (hex byte), and a
  backslash before a newline, which drops the newline and the next line's leading blanks. Any
  other backslash is kept as written. Escapes produce bytes (sexplib writes non-ASCII text as
  `\\DDD` bytes), so a string is decoded as UTF-8 once its escapes are applied.

Positions are 1-based line and column (a column counts characters). Atoms and lists compare
equal by value alone: positions and quoting are carried along for messages and printing only.

The writers render a tree on one line (strings quoted with escapes wherever the tree asks for
it or a bare atom would not read back) and as canonical S-expression bytes (`len:bytes` atoms,
no whitespace: the same tree always gives the same bytes, whatever the human rendering).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.errors import InvalidInput


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """A 1-based line and column in the source text."""

    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


START = Pos(1, 1)


@dataclass(frozen=True, slots=True)
class Atom:
    """A string; `quoted` says the source quoted it, or that a writer should."""

    value: str
    pos: Pos | None = field(default=None, compare=False, repr=False)
    quoted: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SList:
    """A parenthesised list; `pos` is where its `(` is."""

    items: tuple[Sexp, ...]
    pos: Pos | None = field(default=None, compare=False, repr=False)


Sexp = Atom | SList


class SpecError(InvalidInput):
    """A mistake in a build spec, reported as `LINE:COL: reason`."""

    def __init__(self, pos: Pos, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{pos}: {reason}", hint=hint)
        self.pos = pos
        self.reason = reason


# --- reading -------------------------------------------------------------------------------

_BLANKS = " \t\f\r\n"
_DELIMITERS = _BLANKS + '();"'
_SIMPLE_ESCAPES = {
    "\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "b": "\b", "r": "\r", " ": " "
}  # fmt: skip


def _is_digit(ch: str) -> bool:
    return ch != "" and ch in "0123456789"


def _is_hex(ch: str) -> bool:
    return ch != "" and ch in "0123456789abcdefABCDEF"


@dataclass
class _Frame:
    pos: Pos | None  # None for the top level
    items: list[Sexp] = field(default_factory=list)
    skips: list[Pos] = field(default_factory=list)  # pending `#;`, each drops the next datum


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.line_start = 0

    def pos(self, i: int | None = None) -> Pos:
        i = self.i if i is None else i
        return Pos(self.line, i - self.line_start + 1)

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def advance(self) -> str:
        ch = self.text[self.i]
        self.i += 1
        if ch == "\n":
            self.line += 1
            self.line_start = self.i
        return ch

    def read_all(self) -> tuple[Sexp, ...]:
        # An explicit stack, so deep nesting cannot exhaust Python's recursion limit.
        stack = [_Frame(None)]
        while True:
            ch = self.peek()
            if ch == "":
                break
            if ch in _BLANKS:
                self.advance()
            elif ch == ";":
                while self.peek() not in ("", "\n"):
                    self.advance()
            elif ch == "(":
                stack.append(_Frame(self.pos()))
                self.advance()
            elif ch == ")":
                if len(stack) == 1:
                    raise SpecError(
                        self.pos(), "unexpected ')'", hint="there are more ')' than '('"
                    )
                frame = stack.pop()
                self._no_pending_skip(frame)
                self.advance()
                self._add(stack[-1], SList(tuple(frame.items), frame.pos))
            elif ch == '"':
                start = self.pos()
                self._add(stack[-1], Atom(self.string(), start, quoted=True))
            elif ch == "#" and self.peek(1) == "|":
                self.block_comment()
            elif ch == "#" and self.peek(1) == ";":
                stack[-1].skips.append(self.pos())
                self.advance()
                self.advance()
            elif ch == "|" and self.peek(1) == "#":
                raise SpecError(self.pos(), "'|#' outside a block comment")
            else:
                start = self.pos()
                self._add(stack[-1], Atom(self.bare_atom(start), start))
        if len(stack) > 1:
            pos = stack[-1].pos or START
            raise SpecError(pos, "'(' is never closed", hint="there are more '(' than ')'")
        self._no_pending_skip(stack[0])
        return tuple(stack[0].items)

    @staticmethod
    def _add(frame: _Frame, node: Sexp) -> None:
        if frame.skips:
            frame.skips.pop()
        else:
            frame.items.append(node)

    @staticmethod
    def _no_pending_skip(frame: _Frame) -> None:
        if frame.skips:
            raise SpecError(frame.skips[0], "'#;' comments out nothing: no S-expression follows")

    def bare_atom(self, start: Pos) -> str:
        begin = self.i
        while self.peek() not in ("", *_DELIMITERS):
            self.advance()
        value = self.text[begin : self.i]
        if "#|" in value or "|#" in value:
            raise SpecError(
                start,
                f"comment marker inside the atom {value!r}",
                hint="quote it: write it as a string",
            )
        return value

    def string(self) -> str:
        """Read a quoted string starting at the current `"`; return its decoded text."""
        start = self.pos()
        self.advance()
        out = bytearray()
        while True:
            ch = self.peek()
            if ch == "":
                raise SpecError(start, "string is never closed", hint="a '\"' is missing")
            if ch == '"':
                self.advance()
                break
            if ch != "\\":
                out += self.advance().encode()
                continue
            escape = self.pos()
            self.advance()
            ch = self.peek()
            if ch == "":
                raise SpecError(start, "string is never closed", hint="a '\"' is missing")
            if ch == "\n" or (ch == "\r" and self.peek(1) == "\n"):
                # A line continuation: the newline and the next line's indentation vanish.
                if ch == "\r":
                    self.advance()
                self.advance()
                while self.peek() in (" ", "\t"):
                    self.advance()
            elif ch in _SIMPLE_ESCAPES:
                self.advance()
                out += _SIMPLE_ESCAPES[ch].encode()
            elif _is_digit(ch) and _is_digit(self.peek(1)) and _is_digit(self.peek(2)):
                digits = ch + self.peek(1) + self.peek(2)
                if int(digits) > 255:
                    raise SpecError(escape, f"escape '\\{digits}' is above 255")
                for _ in range(3):
                    self.advance()
                out.append(int(digits))
            elif ch == "x" and _is_hex(self.peek(1)) and _is_hex(self.peek(2)):
                out.append(int(self.peek(1) + self.peek(2), 16))
                for _ in range(3):
                    self.advance()
            else:
                out += b"\\"  # sexplib keeps an unknown escape as written
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(
                start, "string is not valid UTF-8", hint="check its \\DDD and \\xHH escapes"
            ) from exc

    def block_comment(self) -> None:
        opened = [self.pos()]
        self.advance()
        self.advance()
        while opened:
            ch = self.peek()
            if ch == "":
                raise SpecError(opened[-1], "block comment '#|' is never closed")
            if ch == '"':
                self.string()  # a string inside a comment can hold '|#'
            elif ch == "#" and self.peek(1) == "|":
                opened.append(self.pos())
                self.advance()
                self.advance()
            elif ch == "|" and self.peek(1) == "#":
                opened.pop()
                self.advance()
                self.advance()
            else:
                self.advance()


def read(text: str) -> tuple[Sexp, ...]:
    """Every top-level S-expression in `text`, with positions; raise SpecError on bad syntax."""
    return _Reader(text).read_all()


# --- writing -------------------------------------------------------------------------------

_BARE_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('()";\\#|')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b"}


def is_bare(value: str) -> bool:
    """Whether `value` reads back unchanged as a bare atom (kept to plain printable ASCII)."""
    return bool(value) and all(ch in _BARE_SAFE for ch in value)


def quote(value: str) -> str:
    """`value` as a quoted string that sexplib and `read` both read back unchanged.

    Printable text (non-ASCII included) is kept as is; other characters become the `\\DDD`
    escapes of their UTF-8 bytes, so the result is always one line.
    """
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\{byte:03d}" for byte in ch.encode("utf-8"))
    out.append('"')
    return "".join(out)


def atom_text(atom: Atom) -> str:
    return quote(atom.value) if atom.quoted or not is_bare(atom.value) else atom.value


def render(node: Sexp) -> str:
    """`node` on one line."""
    if isinstance(node, Atom):
        return atom_text(node)
    return "(" + " ".join(render(item) for item in node.items) + ")"


def to_canonical(node: Sexp) -> bytes:
    """The canonical S-expression bytes of `node`: `(`, `)` and `LEN:UTF-8` atoms, no spaces."""
    if isinstance(node, Atom):
        data = node.value.encode("utf-8")
        return str(len(data)).encode() + b":" + data
    return b"(" + b"".join(to_canonical(item) for item in node.items) + b")"
