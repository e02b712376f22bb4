"""The build-spec language: every op and field, obuilder's own example, errors, printing."""

import hashlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.builds import (
    DEFAULT_SHELL,
    Build,
    Cache,
    Comment,
    Copy,
    Env,
    NamedUser,
    Op,
    Pos,
    Run,
    Secret,
    Shell,
    Spec,
    SpecError,
    UnixUser,
    Workdir,
    canonical_bytes,
    effective_workdirs,
    format_op,
    format_spec,
    parse_spec,
    resolve_workdir,
)
from corral.builds.spec import MAX_BUILD_DEPTH
from corral.errors import InvalidInput

HERE = Path(__file__).parent
EXAMPLE = HERE / "obuilder_example.spec"  # obuilder's example.spec; see the file's header


def only_op(text: str) -> Op:
    (op,) = parse_spec(f"((from base)\n {text})").ops
    return op


# --- every op and field ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ('(comment "hello, world")', Comment("hello, world")),
        ("(comment busybox)", Comment("busybox")),
        ('(comment "")', Comment("")),
        ("(workdir /src)", Workdir("/src")),
        ('(workdir "sub dir")', Workdir("sub dir")),
        ("(shell /bin/bash -c)", Shell(("/bin/bash", "-c"))),
        ('(shell "cmd" "/S" "/C")', Shell(("cmd", "/S", "/C"))),
        ('(env OPTIONS "-O2 -Wall")', Env("OPTIONS", "-O2 -Wall")),
        ('(env EMPTY "")', Env("EMPTY", "")),
        ("(user (uid 1000) (gid 1000))", UnixUser(1000, 1000)),
        ("(user (gid 2) (uid 1))", UnixUser(1, 2)),
        ('(user (uid "0") (gid 4294967294))', UnixUser(0, 4294967294)),
        ("(user (name ContainerAdministrator))", NamedUser("ContainerAdministrator")),
        ('(run (shell "echo hello"))', Run("echo hello")),
        ('(run (shell ""))', Run("")),
        ("(run (network host) (shell make))", Run("make", network=("host",))),
        ("(run (network) (cache) (secrets) (shell make))", Run("make")),
        (
            "(run (cache (opam-archives (target /home/opam/.opam/download-cache)))"
            " (network host) (secrets (password (target /secrets/password)))"
            ' (shell "opam install utop"))',
            Run(
                "opam install utop",
                cache=(Cache("opam-archives", "/home/opam/.opam/download-cache"),),
                network=("host",),
                secrets=(Secret("password", "/secrets/password"),),
            ),
        ),
        (
            "(run (cache (a (target /a)) (b (target /b))) (secrets (s (target /s)) (t (target /t)))"
            " (shell x))",
            Run(
                "x",
                cache=(Cache("a", "/a"), Cache("b", "/b")),
                secrets=(Secret("s", "/s"), Secret("t", "/t")),
            ),
        ),
        (
            "(copy (src .) (dst build/) (exclude .git _build))",
            Copy((".",), "build/", exclude=(".git", "_build")),
        ),
        (
            "(copy (src platform.ml.linux) (dst platform.ml))",
            Copy(("platform.ml.linux",), "platform.ml"),
        ),
        ("(copy (src a b c) (dst /d/) (exclude))", Copy(("a", "b", "c"), "/d/")),
        ("(copy (from context) (src a) (dst b))", Copy(("a",), "b")),
    ],
)
def test_ops(text: str, op: Op) -> None:
    assert only_op(text) == op


RUN_FIELDS = [
    "(cache (c (target /c)))",
    "(network host)",
    "(secrets (s (target /s)))",
    '(shell "make")',
]
COPY_FIELDS = ["(from (build dev))", "(src a b)", "(dst /d/)", "(exclude .git)"]


@pytest.mark.parametrize("order", list(itertools.permutations(RUN_FIELDS)))
def test_run_fields_in_any_order(order: tuple[str, ...]) -> None:
    expected = Run("make", (Cache("c", "/c"),), ("host",), (Secret("s", "/s"),))
    assert only_op(f"(run {' '.join(order)})") == expected


@pytest.mark.parametrize("order", list(itertools.permutations(COPY_FIELDS)))
def test_copy_fields_in_any_order(order: tuple[str, ...]) -> None:
    spec = parse_spec(f"((build dev ((from x))) (from y) (copy {' '.join(order)}))")
    assert spec.ops == (Copy(("a", "b"), "/d/", from_build="dev", exclude=(".git",)),)


def test_atoms_quoted_or_bare_mean_the_same() -> None:
    bare = parse_spec("((from a) (workdir /x) (env K v) (run (network host) (shell ls)))")
    quoted = parse_spec(
        '(("from" "a") ("workdir" "/x") (env "K" "v") ("run" (network "host") (shell "ls")))'
    )
    assert bare == quoted
    assert canonical_bytes(bare) == canonical_bytes(quoted)


def test_comments_of_both_kinds_and_escapes() -> None:
    text = r"""
    ; a line comment (with an unbalanced paren
    #| a block comment
       #| nested, with (parens and "a string |# that does not end it" |#
       still in the outer comment ) |#
    ((from base) ; trailing comment
     #;(run (shell "commented out with #;"))
     (run (shell "say \"hi\"\\\n\ttab \195\169 \x41 \065"))
     (env JOINED "one \
                  two"))
    """
    spec = parse_spec(text)
    assert spec == Spec("base", (Run('say "hi"\\\n\ttab é A A'), Env("JOINED", "one two")))


def test_top_level_without_the_outer_list() -> None:
    wrapped = '((build dev ((from a))) (from b) (run (shell "x")))'
    assert parse_spec(wrapped[1:-1]) == parse_spec(wrapped)
    assert parse_spec("(from b)") == Spec("b")


def test_ops_and_builds_keep_their_positions() -> None:
    spec = parse_spec('((build dev\n  ((from a)))\n (from b)\n  (run (shell "x")))')
    assert spec.pos == Pos(1, 1)
    assert spec.builds[0].pos == Pos(1, 2)
    assert spec.builds[0].spec.pos == Pos(2, 3)
    assert spec.ops[0].pos == Pos(4, 3)


# --- obuilder's own specs --------------------------------------------------------------------

OPAM_ARCHIVES = (Cache("opam-archives", "/home/opam/.opam/download-cache"),)
HOST = ("host",)
EXAMPLE_SPEC = Spec(
    "debian:11",
    (
        Run(
            "apt-get update && apt-get install -y libsqlite3-0 --no-install-recommends",
            network=HOST,
        ),
        Copy(("/src/_build/default/main.exe",), "/usr/local/bin/obuilder", from_build="dev"),
        Run("obuilder --help"),
    ),
    (
        Build(
            "dev",
            Spec(
                "ocaml/opam@sha256:cff69c5fda1e83f65d5f970ccea7b3d53bb853cfdcb0a5a6c4cbfae8c86752ae",
                (
                    Workdir("/src"),
                    UnixUser(1000, 1000),
                    Run("sudo chown opam /src"),
                    Env("OPAM_HASH", "1443067283649a4e09423a4a9a7b082c70e0227b"),
                    Run("sudo apt-get --allow-releaseinfo-change update", network=HOST),
                    Run(
                        "cd ~/opam-repository"
                        " && (git cat-file -e $OPAM_HASH || git fetch origin master)"
                        " && git reset -q --hard $OPAM_HASH"
                        " && git --no-pager log --no-decorate -n1 --oneline"
                        " && opam update -u",
                        network=HOST,
                    ),
                    Copy(("obuilder-spec.opam", "obuilder.opam"), "./"),
                    Run("opam pin add -yn ."),
                    Run("opam depext -yu obuilder", cache=OPAM_ARCHIVES, network=HOST),
                    Run("opam install --deps-only -t obuilder", cache=OPAM_ARCHIVES, network=HOST),
                    Copy((".",), "/src/", exclude=(".git", "_build", "_opam")),
                    Run("opam exec -- dune build @install @runtest"),
                ),
            ),
        ),
    ),
)  # fmt: skip

EXAMPLE_CANONICAL = """\
((build dev
   ((from ocaml/opam@sha256:cff69c5fda1e83f65d5f970ccea7b3d53bb853cfdcb0a5a6c4cbfae8c86752ae)
    (workdir "/src")
    (user (uid 1000) (gid 1000))
    (run (shell "sudo chown opam /src"))
    (env OPAM_HASH "1443067283649a4e09423a4a9a7b082c70e0227b")
    (run (network host) (shell "sudo apt-get --allow-releaseinfo-change update"))
    (run (network host) (shell "cd ~/opam-repository && (git cat-file -e $OPAM_HASH || git fetch origin master) && git reset -q --hard $OPAM_HASH && git --no-pager log --no-decorate -n1 --oneline && opam update -u"))
    (copy (src "obuilder-spec.opam" "obuilder.opam") (dst "./"))
    (run (shell "opam pin add -yn ."))
    (run (cache (opam-archives (target "/home/opam/.opam/download-cache"))) (network host) (shell "opam depext -yu obuilder"))
    (run (cache (opam-archives (target "/home/opam/.opam/download-cache"))) (network host) (shell "opam install --deps-only -t obuilder"))
    (copy (src ".") (dst "/src/") (exclude ".git" "_build" "_opam"))
    (run (shell "opam exec -- dune build @install @runtest"))))
 (from debian:11)
 (run (network host) (shell "apt-get update && apt-get install -y libsqlite3-0 --no-install-recommends"))
 (copy (from (build dev)) (src "/src/_build/default/main.exe") (dst "/usr/local/bin/obuilder"))
 (run (shell "obuilder --help")))
"""  # noqa: E501


def test_obuilder_example_spec() -> None:
    text = EXAMPLE.read_text()
    spec = parse_spec(text)
    assert spec == EXAMPLE_SPEC
    lines = text.splitlines()
    assert spec.builds[0].pos == Pos(lines.index("((build dev") + 1, 2)
    assert spec.builds[0].spec.ops[0].pos == Pos(lines.index("\t (workdir /src)") + 1, 3)
    assert spec.ops[1].pos == Pos(lines.index(" (copy (from (build dev))") + 1, 2)


def test_obuilder_example_prints_canonically() -> None:
    spec = parse_spec(EXAMPLE.read_text())
    assert format_spec(spec) == EXAMPLE_CANONICAL
    assert parse_spec(EXAMPLE_CANONICAL) == spec


# From obuilder's README ("Multi-stage builds") and test/test1.spec.
README_MULTI_STAGE = """
((build dev
        ((from ocaml/opam:alpine-3.12-ocaml-4.11)
         (user (uid 1000) (gid 1000))
         (workdir /home/opam)
         (run (shell "echo 'print_endline {|Hello, world!|}' > main.ml"))
         (run (shell "opam exec -- ocamlopt -ccopt -static -o hello main.ml"))))
 (from alpine:3.12)
 (shell /bin/sh -c)
 (copy (from (build dev))
       (src /home/opam/hello)
       (dst /usr/local/bin/hello))
 (run (shell "hello")))
"""
TEST1_SPEC = """
((from busybox@sha256:d366a4665ab44f0648d7a00ae3fae139d55e32f9712c67accd604bb55df9d05a)
 (comment busybox)
 (shell /bin/sh -c)
 (env TEST /test)
 (run (shell "mkdir /test && chown 1:1 /test"))
 (user (uid 1) (gid 1))
 (run (shell "whoami"))
 (copy
  (src test-file test-dir test-link)
  (dst /test/))
 (workdir /test)
 (run (shell "ls -lR $TEST")))
"""


def test_obuilder_readme_multi_stage_example() -> None:
    spec = parse_spec(README_MULTI_STAGE)
    (dev,) = spec.builds
    assert dev.name == "dev"
    assert dev.spec.ops[2] == Run("echo 'print_endline {|Hello, world!|}' > main.ml")
    assert spec.ops == (
        Shell(("/bin/sh", "-c")),
        Copy(("/home/opam/hello",), "/usr/local/bin/hello", from_build="dev"),
        Run("hello"),
    )


def test_obuilder_test1_spec() -> None:
    spec = parse_spec(TEST1_SPEC)
    assert spec.base.startswith("busybox@sha256:d366")
    assert [type(op).__name__ for op in spec.ops] == [
        "Comment", "Shell", "Env", "Run", "UnixUser", "Run", "Copy", "Workdir", "Run",
    ]  # fmt: skip
    assert spec.ops[6] == Copy(("test-file", "test-dir", "test-link"), "/test/")


# --- build scopes ----------------------------------------------------------------------------


def test_child_builds_see_earlier_siblings_and_outer_builds() -> None:
    spec = parse_spec(
        """
        ((build a ((from x)))
         (build b ((from y) (copy (from (build a)) (src /o) (dst /i))))
         (build c ((build d ((from z) (copy (from (build b)) (src /o) (dst /i))))
                   (from w)
                   (copy (from (build d)) (src /o) (dst /i))))
         (from v)
         (copy (from (build c)) (src /o) (dst /i)))
        """
    )
    assert [b.name for b in spec.builds] == ["a", "b", "c"]
    assert spec.builds[2].spec.builds[0].spec.ops[0].from_build == "b"


def test_a_nested_name_may_be_reused_outside_its_parent() -> None:
    spec = parse_spec(
        "((build a ((build tmp ((from x))) (from y))) (build tmp ((from z))) (from w))"
    )
    assert [b.name for b in spec.builds] == ["a", "tmp"]


# --- errors, each at its exact position ------------------------------------------------------

# From obuilder's QEMU sandbox notes (seeds/003): one ')' short, as the stray inner (run ...)
# swallows one.
SEED_QEMU_EXAMPLE = """\
(
 (from windows-server-2022-amd64-ocaml-4.14.2)
 (run
  (run (cache (opam-archives (target "c:\\\\Users\\\\opam\\\\AppData\\\\local\\\\opam\\\\download-cache")))
  (shell "opam install tar")
 )
)
"""  # noqa: E501


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # syntax
        ("", "1:1: empty spec"),
        ("; only a comment\n", "1:1: empty spec"),
        ("((from a)\n (run (shell x))", "1:1: '(' is never closed"),
        ("((from a)\n (run (shell x)))))", "2:18: unexpected ')'"),
        ('((from a)\n (run (shell "x)))\n', "2:14: string is never closed"),
        ("((from a) #| (run\n #| nested |#\n", "1:11: block comment '#|' is never closed"),
        ("((from a)) (run (shell x))", "1:12: text after the end of the spec"),
        # from and build placement
        ("()", "1:1: missing (from BASE)"),
        ("((build dev ((from a))))", "1:1: missing (from BASE)"),
        (
            "((build dev ((from a)))\n (run (shell x)))",
            "2:2: missing (from BASE): expected it here, got (run ...)",
        ),
        (
            "((form a) (run (shell x)))",
            "1:2: missing (from BASE): expected it here, got (form ...); did you mean 'from'?",
        ),
        ("from a", "1:1: missing (from BASE): expected it here, got 'from'"),
        ("((run (shell x))\n (from a))", "1:2: (run ...) comes before (from ...)"),
        (
            "((biuld dev ((from a))) (from b))",
            "1:2: (biuld ...) comes before (from ...); did you mean 'build'?",
        ),
        ("((from a)\n (build dev ((from b))))", "2:2: (build ...) must come before (from ...)"),
        (
            "((from a) (from b))",
            "1:11: a spec has one (from ...); use (build NAME SPEC) for another stage",
        ),
        ("((from a b))", "1:2: from takes one value, got 2"),
        ("((from (a)))", "1:8: from must be a string, got (a ...)"),
        ('((from ""))', "1:8: from must not be empty"),
        # builds
        (
            "((build dev) (from a))",
            "1:2: build takes a name and a spec: (build NAME ((from BASE) OP...))",
        ),
        ("((build dev x) (from a))", "1:13: build 'dev' needs a spec ((from BASE) OP...), got 'x'"),
        ("((build (dev) ((from x))) (from a))", "1:9: build name must be a string, got (dev ...)"),
        (
            "((build a ((from x)))\n (build a ((from y)))\n (from z))",
            "2:9: duplicate build 'a' (first declared at 1:9)",
        ),
        (
            "((build a ((build a ((from x))) (from y))) (from z))",
            "1:19: duplicate build 'a' (first declared at 1:9)",
        ),
        (
            "((build a ((build b ((from x))) (from y)))\n (build b ((from w)))\n"
            " (build a ((from v)))\n (from z))",
            "3:9: duplicate build 'a' (first declared at 1:9)",
        ),
        (
            "((build dev ((from a))) (from b)\n (copy (from (build dve)) (src x) (dst y)))",
            "2:21: unknown build 'dve'; did you mean 'dev'?",
        ),
        (
            "((from b) (copy (from (build dev)) (src x) (dst y)))",
            "1:30: unknown build 'dev': no (build ...) is declared here",
        ),
        (
            "((build b ((from x) (copy (from (build a)) (src /) (dst /))))\n (build a ((from y)))\n"
            " (from z))",
            "1:40: unknown build 'a': no (build ...) is declared here",
        ),
        (
            "((build a ((from x) (copy (from (build a)) (src /) (dst /)))) (from z))",
            "1:40: unknown build 'a': no (build ...) is declared here",
        ),
        (
            "((build a ((build inner ((from x))) (from y)))\n (from z)\n"
            " (copy (from (build inner)) (src /) (dst /)))",
            "3:21: unknown build 'inner'",
        ),
        # ops
        ("((from a) (rnu (shell x)))", "1:12: unknown op 'rnu'; did you mean 'run'?"),
        ("((from a) (frobnicate))", "1:12: unknown op 'frobnicate'"),
        ("((from a) run)", "1:11: expected an op like (run ...), got 'run'"),
        ("((from a) ())", "1:11: expected an op like (run ...), got ()"),
        ("((from a) ((run)))", "1:11: expected an op like (run ...), got a list"),
        ("((from a) (comment))", "1:11: comment takes one value, got 0"),
        ("((from a) (comment a b))", "1:11: comment takes one value, got 2"),
        ("((from a) (workdir (x)))", "1:20: workdir must be a string, got (x ...)"),
        ('((from a) (workdir ""))', "1:20: workdir must not be empty"),
        ('((from a) (workdir "/a\\000b"))', "1:20: workdir contains a NUL character"),
        ("((from a) (shell))", "1:11: shell needs at least one argument, e.g. (shell /bin/sh -c)"),
        ("((from a) (shell /bin/sh (-c)))", "1:26: shell argument must be a string, got (-c ...)"),
        ("((from a) (env K))", "1:11: env takes 2 values, got 1"),
        ('((from a) (env K=V "x"))', "1:16: env name 'K=V' contains '='"),
        ('((from a) (env "" "x"))', "1:16: env name must not be empty"),
        # user
        ("((from a) (user))", "1:11: user needs (uid N) (gid N) or (name NAME)"),
        ("((from a) (user (uid 1)))", "1:11: missing field 'gid' in user"),
        ("((from a) (user (gid 1)))", "1:11: missing field 'uid' in user"),
        (
            "((from a) (user (uid x) (gid 1)))",
            "1:22: uid must be an integer from 0 to 4294967294, got 'x'",
        ),
        (
            "((from a) (user (uid 1) (gid -1)))",
            "1:30: gid must be an integer from 0 to 4294967294, got '-1'",
        ),
        (
            "((from a) (user (uid 1.5) (gid 1)))",
            "1:22: uid must be an integer from 0 to 4294967294, got '1.5'",
        ),
        (
            "((from a) (user (uid 4294967295) (gid 1)))",
            "1:22: uid must be an integer from 0 to 4294967294, got '4294967295'",
        ),
        ("((from a) (user (uid (1)) (gid 1)))", "1:22: uid must be a string, got (1 ...)"),
        ("((from a) (user (uid 1 2) (gid 1)))", "1:17: uid takes one value, got 2"),
        (
            "((from a) (user (uid 1) (gid 1) (name x)))",
            "1:11: user takes either (uid N) (gid N) or (name NAME), not both",
        ),
        (
            "((from a) (user (uid 1) (uid 2)))",
            "1:25: duplicate field 'uid' in user (first at 1:17)",
        ),
        (
            "((from a) (user (id 1) (gid 1)))",
            "1:18: unknown field 'id' in user; did you mean 'uid'?",
        ),
        # run
        (
            '((from a)\n (run\n   (shel "x")))',
            "3:5: unknown field 'shel' in run; did you mean 'shell'?",
        ),
        ("((from a) (run (network host)))", "1:11: missing field 'shell' in run"),
        (
            "((from a) (run (shell x) (shell y)))",
            "1:26: duplicate field 'shell' in run (first at 1:16)",
        ),
        ("((from a) (run (shell x y)))", "1:16: run shell takes one value, got 2"),
        ("((from a) (run (shell (x))))", "1:23: run shell must be a string, got (x ...)"),
        (
            "((from a) (run x))",
            "1:16: expected a field (cache | network | secrets | shell ...) in run, got 'x'",
        ),
        (
            "((from a) (run (network (host)) (shell x)))",
            "1:25: network must be a string, got (host ...)",
        ),
        (
            "((from a) (run (cache c) (shell x)))",
            "1:23: expected (ID (target PATH)) in cache, got 'c'",
        ),
        ("((from a) (run (cache (c)) (shell x)))", "1:23: missing field 'target' in cache 'c'"),
        (
            "((from a) (run (cache (c (targte /c))) (shell x)))",
            "1:27: unknown field 'targte' in cache 'c'; did you mean 'target'?",
        ),
        (
            "((from a) (run (cache (c (target /c) (target /d))) (shell x)))",
            "1:38: duplicate field 'target' in cache 'c' (first at 1:26)",
        ),
        (
            "((from a) (run (cache (c (target /c)) (c (target /d))) (shell x)))",
            "1:39: duplicate cache 'c' in run (first at 1:23)",
        ),
        (
            "((from a) (run (secrets (s (target /c)) (s (target /d))) (shell x)))",
            "1:41: duplicate secret 's' in run (first at 1:25)",
        ),
        (
            '((from a) (run (secrets ("" (target /c))) (shell x)))',
            "1:26: secret id must not be empty",
        ),
        ("((from a) (run (cache (c (target))) (shell x)))", "1:26: target takes one value, got 0"),
        # a cache id names a file in the build store: a name, never a path (issue 11, finding 4)
        (
            "((from a)\n (run (cache (../../instances/web1/disk (target /mnt)))\n  (shell x)))",
            "2:15: cache id '../../instances/web1/disk' is not a name: use letters, digits"
            " and . _ - (starting with a letter or digit, at most 128)",
        ),
        (
            '((from a) (run (cache ("/var/lib/corral/x" (target /mnt))) (shell x)))',
            "1:24: cache id '/var/lib/corral/x' is not a name: use letters, digits"
            " and . _ - (starting with a letter or digit, at most 128)",
        ),
        (
            '((from a) (run (cache (".hidden" (target /mnt))) (shell x)))',
            "1:24: cache id '.hidden' is not a name: use letters, digits"
            " and . _ - (starting with a letter or digit, at most 128)",
        ),
        (
            '((from a) (run (cache ("c\\n" (target /mnt))) (shell x)))',
            "1:24: cache id 'c\\n' is not a name: use letters, digits"
            " and . _ - (starting with a letter or digit, at most 128)",
        ),
        (
            f"((from a) (run (cache ({'c' * 129} (target /mnt))) (shell x)))",
            f"1:24: cache id '{'c' * 129}' is not a name: use letters, digits"
            " and . _ - (starting with a letter or digit, at most 128)",
        ),
        (SEED_QEMU_EXAMPLE, "1:1: '(' is never closed"),
        # copy
        ("((from a) (copy (dst /x)))", "1:11: missing field 'src' in copy"),
        ("((from a) (copy (src x)))", "1:11: missing field 'dst' in copy"),
        ("((from a) (copy (src) (dst /x)))", "1:17: src needs at least one path"),
        ("((from a) (copy (src x) (dst)))", "1:25: dst takes one value, got 0"),
        ("((from a) (copy (src x) (dst /a /b)))", "1:25: dst takes one value, got 2"),
        ("((from a) (copy (src (x)) (dst /a)))", "1:22: src must be a string, got (x ...)"),
        (
            "((from a) (copy (src x) (dst /a) (src y)))",
            "1:34: duplicate field 'src' in copy (first at 1:17)",
        ),
        (
            "((from a) (copy (source x) (dst /a)))",
            "1:18: unknown field 'source' in copy; did you mean 'src'?",
        ),
        (
            "((from a) (copy (from elsewhere) (src x) (dst y)))",
            "1:23: copy from takes context or (build NAME), got 'elsewhere'",
        ),
        (
            "((from a) (copy (from (image x)) (src x) (dst y)))",
            "1:23: copy from takes context or (build NAME), got (image ...)",
        ),
        ("((from a) (copy (from (build)) (src x) (dst y)))", "1:23: build takes one value, got 0"),
        (
            "((from a) (copy (from context context) (src x) (dst y)))",
            "1:17: copy from takes one value, got 2",
        ),
        ('((from a) (copy (src x) (dst y) (exclude "")))', "1:42: exclude must not be empty"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value) == message
    assert isinstance(info.value, InvalidInput)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("((from a) (frobnicate))", "the ops are comment, workdir, shell, env, user, run, copy"),
        ('((from a) (run (shel "x")))', "run takes the fields cache, network, secrets, shell"),
        ("((run (shell x)) (from a))", "only (build ...) items may come before (from BASE)"),
        ("()", "a spec looks like ((from BASE) OP...)"),
        (
            "((build dev ((from a))) (build web ((from a))) (from b)\n"
            " (copy (from (build x)) (src x) (dst y)))",
            "the builds declared here are dev, web",
        ),
    ],
)
def test_error_hints(text: str, hint: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert info.value.hint == hint


def test_deeply_nested_lists_fail_without_recursing() -> None:
    with pytest.raises(
        SpecError, match=r"^1:2: missing \(from BASE\): expected it here, got a list"
    ):
        parse_spec("(" * 50_000 + ")" * 50_000)


def test_builds_nested_too_deep() -> None:
    text = "(from base)"
    for depth in range(MAX_BUILD_DEPTH + 1):
        text = f"(build b{depth} ({text})) (from base)"
    text = f"({text})"
    deepest = text.index("(build b0 ") + 1
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value) == f"1:{deepest}: builds are nested more than {MAX_BUILD_DEPTH} deep"


# --- printing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "text"),
    [
        (Comment('say "hi"'), '(comment "say \\"hi\\"")'),
        (Workdir("src"), '(workdir "src")'),
        (Shell(DEFAULT_SHELL), '(shell "/bin/bash" "-c")'),
        (Env("PATH", "/bin:/usr/bin"), '(env PATH "/bin:/usr/bin")'),
        (Env("odd name", "x"), '(env "odd name" "x")'),
        (UnixUser(1000, 100), "(user (uid 1000) (gid 100))"),
        (NamedUser("ContainerAdministrator"), "(user (name ContainerAdministrator))"),
        (Run("make\nmake install"), '(run (shell "make\\nmake install"))'),
        (
            Run("x", secrets=(Secret("s", "/s"),), network=("host",), cache=(Cache("c", "/c"),)),
            '(run (cache (c (target "/c"))) (network host) (secrets (s (target "/s")))'
            ' (shell "x"))',
        ),
        (Copy(("a", "b"), "/d/"), '(copy (src "a" "b") (dst "/d/"))'),
        (
            Copy(("a",), "d", from_build="dev", exclude=(".git",)),
            '(copy (from (build dev)) (src "a") (dst "d") (exclude ".git"))',
        ),
    ],
)
def test_format_op(op: Op, text: str) -> None:
    assert format_op(op) == text
    assert parse_spec(f"((build dev ((from x))) (from y) {text})").ops == (op,)


def test_format_spec_layout() -> None:
    spec = Spec(
        "debian-12",
        (Copy(("/out",), "/in", from_build="b"), Run("true")),
        (Build("a", Spec("x")), Build("b", Spec("y", (Comment("c"),), (Build("c", Spec("z")),)))),
    )
    assert format_spec(spec) == (
        "((build a\n"
        "   ((from x)))\n"
        " (build b\n"
        "   ((build c\n"
        "      ((from z)))\n"
        "    (from y)\n"
        '    (comment "c")))\n'
        " (from debian-12)\n"
        ' (copy (from (build b)) (src "/out") (dst "/in"))\n'
        ' (run (shell "true")))\n'
    )
    assert format_spec(Spec("a b")) == '((from "a b"))\n'


def test_canonical_bytes_are_stable() -> None:
    op = only_op('(run (shell "make") (network host) (cache (c (target /c))))')
    assert canonical_bytes(op) == (
        b"(3:run(5:cache(1:c(6:target2:/c)))(7:network4:host)(5:shell4:make))"
    )
    assert canonical_bytes(Spec("a", (Comment("\u00e9"),))) == b"((4:from1:a)(7:comment2:\xc3\xa9))"


def test_the_example_s_canonical_bytes_and_text_are_pinned() -> None:
    """Every op and field of obuilder's example, as bytes and as text: fixed once, kept."""
    spec = parse_spec(EXAMPLE.read_text())
    assert hashlib.sha256(canonical_bytes(spec)).hexdigest() == (
        "e86f968f0271642073517ef0e3f0809197240ddef656f1697a2953e392934291"
    )
    assert hashlib.sha256(format_spec(spec).encode()).hexdigest() == (
        "e8e153b3687a15b0a6aada445a93d0507f84ef7ee9b21d92cfad638adac9ec7c"
    )


def test_canonical_bytes_ignore_spelling_layout_and_positions() -> None:
    a = parse_spec("((from a)\n  (copy (from context) (dst /d) (src x) (exclude))\n)")
    b = parse_spec('(from "a") ; unwrapped\n(copy (src "x") (dst "/d"))')
    assert a.ops[0].pos != b.ops[0].pos
    assert canonical_bytes(a) == canonical_bytes(b)
    assert canonical_bytes(a.ops[0]) == canonical_bytes(b.ops[0])


# --- workdirs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "path", "result"),
    [
        ("/", "/src", "/src"),
        ("/", "src", "/src"),
        ("/src", "sub", "/src/sub"),
        ("/src/", "sub", "/src/sub"),
        ("/src", "/other", "/other"),
        ("/src", "../up", "/src/../up"),  # kept as written, as obuilder does
    ],
)
def test_resolve_workdir(current: str, path: str, result: str) -> None:
    assert resolve_workdir(current, path) == result


def test_effective_workdirs() -> None:
    ops = parse_spec(
        "((from a) (run (shell x)) (workdir /src) (run (shell y)) (workdir sub)"
        " (copy (src a) (dst b)) (comment c) (workdir /abs) (run (shell z)))"
    ).ops
    assert effective_workdirs(ops) == (
        "/", "/", "/src", "/src", "/src/sub", "/src/sub", "/src/sub", "/abs",
    )  # fmt: skip
    assert effective_workdirs(ops[:2], start="/home") == ("/home", "/home")
    assert effective_workdirs(()) == ()


# --- properties ------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
nonempty = text.filter(bool)
words = st.from_regex(r"[a-z][a-z0-9_.-]{0,7}", fullmatch=True)
names = st.one_of(words, nonempty)  # identifiers, plain or needing quotes
env_names = names.filter(lambda s: "=" not in s)
ids = st.integers(0, 2**32 - 2)
short = {"max_size": 3}


cache_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,7}", fullmatch=True)


def mounts(kind: type[Cache] | type[Secret]) -> st.SearchStrategy:
    idents = cache_names if kind is Cache else names
    entries = st.lists(st.tuples(idents, nonempty), unique_by=lambda e: e[0], **short)
    return entries.map(lambda es: tuple(kind(i, t) for i, t in es))


def ops(scope: tuple[str, ...]) -> st.SearchStrategy[Op]:
    sources = st.one_of(st.none(), st.sampled_from(scope)) if scope else st.none()
    return st.one_of(
        st.builds(Comment, text),
        st.builds(Workdir, nonempty),
        st.builds(Shell, st.lists(text, min_size=1, **short).map(tuple)),
        st.builds(Env, env_names, text),
        st.builds(UnixUser, ids, ids),
        st.builds(NamedUser, names),
        st.builds(
            Run,
            text,
            cache=mounts(Cache),
            network=st.lists(names, **short).map(tuple),
            secrets=mounts(Secret),
        ),
        st.builds(
            Copy,
            st.lists(nonempty, min_size=1, **short).map(tuple),
            nonempty,
            from_build=sources,
            exclude=st.lists(nonempty, **short).map(tuple),
        ),
    )


@st.composite
def specs(
    draw: st.DrawFn, scope: tuple[str, ...] = (), taken: tuple[str, ...] = (), depth: int = 0
) -> Spec:
    """A valid spec: copies name only visible builds, no name is declared twice in a scope."""
    fresh = names.filter(lambda n: n not in taken)
    own = draw(st.lists(fresh, unique=True, max_size=2 if depth < 2 else 0))
    builds: list[Build] = []
    for name in own:
        earlier = tuple(b.name for b in builds)
        child = draw(specs(scope + earlier, taken + earlier + (name,), depth + 1))
        builds.append(Build(name, child))
    visible = scope + tuple(own)
    return Spec(draw(names), tuple(draw(st.lists(ops(visible), max_size=5))), tuple(builds))


@given(specs())
@settings(max_examples=200)
def test_print_then_parse_round_trips(spec: Spec) -> None:
    printed = format_spec(spec)
    assert parse_spec(printed) == spec
    assert format_spec(parse_spec(printed)) == printed
    assert parse_spec(printed[1:-2]) == spec  # the same forms without the outer list
    assert canonical_bytes(parse_spec(printed)) == canonical_bytes(spec)


@given(ops(("dev",)))
def test_each_op_prints_on_one_line_and_reads_back(op: Op) -> None:
    line = format_op(op)
    assert "\n" not in line
    (parsed,) = parse_spec(f"((build dev ((from x))) (from y) {line})").ops
    assert parsed == op


@given(specs(), specs())
def test_canonical_bytes_tell_specs_apart(a: Spec, b: Spec) -> None:
    assert (canonical_bytes(a) == canonical_bytes(b)) == (a == b)


@given(specs(), st.data())
def test_damaged_specs_fail_with_a_position(spec: Spec, data: st.DataObject) -> None:
    printed = format_spec(spec)
    cut = data.draw(st.integers(0, len(printed) - 1))
    insert = data.draw(st.sampled_from(["", "(", ")", '"', "#|", "x", " (run) "]))
    try:
        parse_spec(printed[:cut] + insert + printed[cut + 1 :])
    except SpecError as exc:
        line, col, _ = str(exc).split(":", 2)
        assert int(line) >= 1
        assert int(col) >= 1
        assert "\n" not in str(exc)
