"""gen-vm-image's extra_kwargs: translated into checked meanings, never passed through."""

from __future__ import annotations

import pytest

from corral.image.archfile.extra_kwargs import translate


def test_gen_vm_image_shape_is_translated() -> None:
    extra, problems = translate(
        "e", {"b": "base-image", "F": "qcow2", "o": "cluster_size=2M,preallocation=off"},
        fmt="qcow2", has_input=False,
    )  # fmt: skip
    assert problems == []
    assert (extra.base, extra.base_format) == ("base-image", "qcow2")
    assert extra.options == (("cluster_size", str(2 << 20)), ("preallocation", "off"))


@pytest.mark.parametrize(
    ("o", "problem"),
    [
        ("cluster_size=65536,,backing_file=/etc/shadow", "'' is not name=value"),
        ("data_file=/etc/shadow", "option 'data_file' is not supported"),
        ("backing_file=x", "option 'backing_file' is not supported"),
        ("encrypt.key-secret=sec0", "option 'encrypt.key-secret' is not supported"),
        ("cluster_size", "'cluster_size' is not name=value"),
        ("cluster_size=4M", "option 'cluster_size': '4M' is not a power of two from 512 to 2M"),
        ("preallocation=sparse", "option 'preallocation': 'sparse' is not one of: off, metadata"),
        ("lazy_refcounts=maybe", "option 'lazy_refcounts': 'maybe' is not on or off"),
        ("lazy_refcounts=on,lazy_refcounts=off", "option 'lazy_refcounts' is given twice"),
    ],
)
def test_options_outside_the_allowlist_are_named(o: str, problem: str) -> None:
    _, problems = translate("e", {"o": o}, fmt="qcow2", has_input=False)
    assert problems and problems[0][0] == "e.o"
    assert problems[0][1].startswith(problem), problems


def test_every_value_is_a_single_string() -> None:
    _, problems = translate("e", {"b": ["a"], "o": {"x": "y"}}, fmt="qcow2", has_input=False)
    assert problems == [("e.b", "expected a single value"), ("e.o", "expected a single value")]
    assert translate("e", "b=x", fmt="qcow2", has_input=False)[1] == [
        ("e", "expected a mapping (b, F, o)")
    ]
