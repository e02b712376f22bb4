"""The S-expression reader and writers: syntax, comments, escapes, positions, errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.builds.sexp import (
    Atom,
    Pos,
    SList,
    SpecError,
    is_bare,
    quote,
    read,
    render,
    to_canonical,
)
from corral.errors import InvalidInput


def A(value: str) -> Atom:
    return Atom(value)


def L(*items: Atom | SList) -> SList:
    return SList(tuple(items))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("  \n\t ", ()),
        ("a", (A("a"),)),
        ("a b", (A("a"), A("b"))),
        ("()", (L(),)),
        ("(a (b c) ())", (L(A("a"), L(A("b"), A("c")), L()),)),
        ("((from x))(run)", (L(L(A("from"), A("x"))), L(A("run")))),
        ('"a b"c', (A("a b"), A("c"))),
        ("a(b)c", (A("a"), L(A("b")), A("c"))),
        ("ocaml/opam@sha256:cf ./ ~x", (A("ocaml/opam@sha256:cf"), A("./"), A("~x"))),
        ("# | #x |x", (A("#"), A("|"), A("#x"), A("|x"))),
        ("é ü→", (A("é"), A("ü→"))),
        ("\f(a)\r\n", (L(A("a")),)),
    ],
)
def test_reads(text: str, expected: tuple) -> None:
    assert read(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a ; comment (\nb", (A("a"), A("b"))),
        ("a;b\nc", (A("a"), A("c"))),
        ('(a ; ) " unbalanced\n b)', (L(A("a"), A("b")),)),
        ("a #| block ( \n comment |# b", (A("a"), A("b"))),
        ("a #| outer #| inner |# still outer |# b", (A("a"), A("b"))),
        ("#|#|#||#|#|#a", (A("a"),)),
        ('#| "a string |# inside" |# a', (A("a"),)),
        ("#| ; |# a", (A("a"),)),
        ("#|x|##|y|#a", (A("a"),)),
        ("a #; b c", (A("a"), A("c"))),
        ("a #;(b (c)) d", (A("a"), A("d"))),
        ("(#; #; a b c)", (L(A("c")),)),
        ("#; ; comment\n a b", (A("b"),)),
        ('(x #;"skipped" y)', (L(A("x"), A("y")),)),
    ],
)
def test_comments(text: str, expected: tuple) -> None:
    assert read(text) == expected


@pytest.mark.parametrize(
    ("source", "value"),
    [
        (r'"plain"', "plain"),
        (r'""', ""),
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"\n\t\r\b"', "\n\t\r\b"),
        (r'"it\'s"', "it's"),
        (r'"a\ b"', "a b"),
        (r'"\065\066"', "AB"),
        (r'"\195\169"', "é"),  # sexplib writes non-ASCII text as decimal bytes
        (r'"\x41\xc3\xa9"', "Aé"),
        (r'"\000"', "\0"),
        (r'"\q\0\12\x4"', "\\q\\0\\12\\x4"),  # not escapes: kept as written, as sexplib does
        ('"raw\nnewline"', "raw\nnewline"),
        ('"joined \\\n\t    here"', "joined here"),
        ('"joined \\\r\n  here"', "joined here"),
        ('"é → ✓"', "é → ✓"),
        ('"semi;colon (paren) #|not a comment|#"', "semi;colon (paren) #|not a comment|#"),
    ],
)
def test_string_escapes(source: str, value: str) -> None:
    (atom,) = read(source)
    assert isinstance(atom, Atom)
    assert atom.value == value
    assert atom.quoted


def test_positions_of_every_atom_and_list() -> None:
    text = '(a\n  (bb "c\nd" e)\n\t#| x\n|# f)'
    (top,) = read(text)
    assert top.pos == Pos(1, 1)
    a, inner, f = top.items
    assert a.pos == Pos(1, 2)
    assert inner.pos == Pos(2, 3)
    bb, c, e = inner.items
    assert (bb.pos, c.pos, e.pos) == (Pos(2, 4), Pos(2, 7), Pos(3, 4))
    assert f.pos == Pos(5, 4)


def test_positions_after_line_continuation_and_crlf() -> None:
    (s, after) = read('"a\\\n   b"\r\n  x')
    assert s.value == "ab"
    assert after.pos == Pos(3, 3)


def test_quoting_is_remembered_but_not_compared() -> None:
    (bare, quoted) = read('x "x"')
    assert bare == quoted
    assert (bare.quoted, quoted.quoted) == (False, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (")", "1:1: unexpected ')'"),
        ("(a)\n  b)", "2:4: unexpected ')'"),
        ("(a", "1:1: '(' is never closed"),
        ("(a\n (b (c)\n", "2:2: '(' is never closed"),
        ('(a "bc\n d)', "1:4: string is never closed"),
        ('"ab\\', "1:1: string is never closed"),
        ("#| a", "1:1: block comment '#|' is never closed"),
        ("#| a\n #| b |#", "1:1: block comment '#|' is never closed"),
        ("#| a\n #| b", "2:2: block comment '#|' is never closed"),
        ('#| "|#', "1:4: string is never closed"),
        ("a |# b", "1:3: '|#' outside a block comment"),
        ("(x a#|b)", "1:4: comment marker inside the atom 'a#|b'"),
        ("x|#", "1:1: comment marker inside the atom 'x|#'"),
        ('(a\n "x\\256")', "2:4: escape '\\256' is above 255"),
        ('"\\255"', "1:1: string is not valid UTF-8"),
        ("(a #;)", "1:4: '#;' comments out nothing: no S-expression follows"),
        ("a #;", "1:3: '#;' comments out nothing: no S-expression follows"),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        read(text)
    assert str(info.value) == message
    assert isinstance(info.value, InvalidInput)
    assert info.value.message == message
    assert info.value.reason == message.split(": ", 1)[1]


def test_deep_nesting_does_not_recurse() -> None:
    depth = 20_000
    (node,) = read("(" * depth + "x" + ")" * depth)
    for _ in range(depth):
        assert isinstance(node, SList)
        (node,) = node.items
    assert node == A("x")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("a\nb\tc\rd\be", '"a\\nb\\tc\\rd\\be"'),
        ("é ✓", '"é ✓"'),
        ("\0\x7f", '"\\000\\127"'),
        ("\u2028", '"\\226\\128\\168"'),  # a line separator stays on the line
    ],
)
def test_quote(value: str, text: str) -> None:
    assert quote(value) == text


@pytest.mark.parametrize(
    ("value", "bare"),
    [
        ("host", True),
        ("ocaml/opam@sha256:cf", True),
        ("debian:12", True),
        ("a-b_c.d+e=f", True),
        ("", False),
        ("a b", False),
        ("a;b", False),
        ("(a)", False),
        ('a"', False),
        ("a#b", False),
        ("a|b", False),
        ("a\\b", False),
        ("é", False),
    ],
)
def test_is_bare(value: str, bare: bool) -> None:
    assert is_bare(value) is bare


def test_render_quotes_where_asked_or_needed() -> None:
    tree = L(A("run"), L(A("shell"), Atom("ls", quoted=True)), A("two words"), A(""))
    assert render(tree) == '(run (shell "ls") "two words" "")'


def test_canonical_bytes() -> None:
    tree = L(A("run"), L(A("shell"), A("é ls")), L())
    assert to_canonical(tree) == b"(3:run(5:shell5:\xc3\xa9 ls)())"


# --- properties ----------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=40)
atoms = st.builds(Atom, texts, quoted=st.booleans())
trees = st.recursive(atoms, lambda kids: st.lists(kids, max_size=5).map(lambda x: SList(tuple(x))))


@given(texts)
def test_quote_round_trips(value: str) -> None:
    assert read(quote(value)) == (Atom(value),)
    assert "\n" not in quote(value)


@given(trees)
def test_render_round_trips(tree: Atom | SList) -> None:
    assert read(render(tree)) == (tree,)


@given(st.text(alphabet=st.sampled_from("abc(); \"#|\\\n\t'x\u00e9"), max_size=30))
def test_any_text_reads_or_fails_cleanly(text: str) -> None:
    try:
        read(text)
    except SpecError as exc:
        assert "\n" not in str(exc)


@given(trees, trees)
def test_canonical_bytes_tell_trees_apart(a: Atom | SList, b: Atom | SList) -> None:
    assert (to_canonical(a) == to_canonical(b)) == (a == b)
