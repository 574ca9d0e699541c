"""GLSL programs loaded from the ``shaders`` package (shipped as package data)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import moderngl


@cache
def shader_source(name: str) -> str:
    """Text of ``shaders/<name>``; raises FileNotFoundError naming the file if it is missing."""
    path = resources.files("shaders").joinpath(name)
    if not path.is_file():
        raise FileNotFoundError(f"shader {name!r} is not in the shaders package")
    return path.read_text(encoding="utf-8")


def load_program(ctx: moderngl.Context, vertex: str, fragment: str) -> moderngl.Program:
    """Compile ``vertex`` + ``fragment`` (file names in shaders/) into a program."""
    return ctx.program(vertex_shader=shader_source(vertex), fragment_shader=shader_source(fragment))


def uniform(program: moderngl.Program, name: str) -> moderngl.Uniform:
    """The uniform ``name`` of ``program``; KeyError if the program has none of that name."""
    member = program[name]
    if not isinstance(member, moderngl.Uniform):
        raise KeyError(f"{name!r} is a {type(member).__name__} of the program, not a uniform")
    return member


def set_uniform(program: moderngl.Program, name: str, value) -> None:
    """Set ``name`` if the compiler kept it (unused uniforms are optimised away)."""
    if name in program:
        uniform(program, name).value = value
