"""julia/FlashJIT without Julia (none can be installed on these machines):
its source parses (tree-sitter's Julia grammar) and every C entry point it
looks up is exported by the libflashjit.so that the Python package ships.
The struct layouts it mirrors are checked by the julia-abi-layout ctest."""

import ctypes
import os
import re

import pytest

import flashjit

SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "julia", "FlashJIT", "src",
                      "FlashJIT.jl")


def test_the_julia_source_parses():
    tsj = pytest.importorskip("tree_sitter_julia", reason="tree-sitter-julia is not installed")
    from tree_sitter import Language, Parser

    tree = Parser(Language(tsj.language())).parse(open(SOURCE, "rb").read())
    errors = []

    def walk(node):
        if node.type == "ERROR" or node.is_missing:
            errors.append(f"line {node.start_point[0] + 1}: {node.text[:60]!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    assert not errors, "FlashJIT.jl does not parse:\n" + "\n".join(errors)


def test_every_entry_point_it_looks_up_is_exported():
    names = re.findall(r"sym\(:(flashjit_\w+)\)", open(SOURCE).read())
    assert {"flashjit_attention_backward", "flashjit_backward_workspace_size",
            "flashjit_backward_args_init"} <= set(names)
    library = ctypes.CDLL(flashjit.library_path())
    missing = [n for n in names if not hasattr(library, n)]
    assert not missing, f"libflashjit.so does not export {missing}"
