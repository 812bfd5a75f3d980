"""Reading a recipe: ``path/to/recipe.py[:function]`` -> the function, and the file's SHA-256.

The file is read once, by the command that starts the job; its text travels
with the tasks (a few kB), so worker processes and cluster nodes need no copy
of it. Each process compiles it once (cached by its SHA-256). Only the file
itself is hashed: helpers it imports are not part of the provenance.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cubes.errors import CubeError, SourceNotFoundError
from cubes.store import filesystem, storage_errors

__all__ = ["DEFAULT_FUNCTION", "Recipe", "RecipeError", "load_recipe"]

DEFAULT_FUNCTION = "recipe"

_COMPILED: dict[tuple[str, str], Callable[..., Any]] = {}
_LOCK = threading.Lock()


class RecipeError(CubeError, ValueError):
    """A recipe that cannot be used: it does not load, or returns what cannot be merged."""


@dataclass(frozen=True)
class Recipe:
    """A recipe's source text, where it came from and the function to call."""

    path: str
    text: str
    function: str

    @property
    def sha256(self) -> str:
        """SHA-256 of the file's bytes (its provenance)."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def name(self) -> str:
        """``path:function``, for messages."""
        return f"{self.path}:{self.function}"

    def compiled(self) -> Callable[..., Any]:
        """The function, compiled once per process.

        Raises
        ------
        RecipeError
            The file has a syntax error, raises on import, or lacks the function.
        """
        key = (self.sha256, self.function)
        with _LOCK:
            if key not in _COMPILED:
                _COMPILED[key] = self._compile()
            return _COMPILED[key]

    def _compile(self) -> Callable[..., Any]:
        try:
            code = compile(self.text, self.path, "exec")
        except SyntaxError as exc:
            raise RecipeError(
                f"The recipe {self.path} has a syntax error at line {exc.lineno}: {exc.msg}. "
                "Fix the file and run the command again."
            ) from None
        module = types.ModuleType(f"_cellcubes_recipe_{self.sha256[:12]}")
        module.__file__ = self.path
        sys.modules[module.__name__] = module  # dataclasses and pickling look modules up
        try:
            exec(code, module.__dict__)  # noqa: S102 - running the user's recipe is the point
        except Exception as exc:  # noqa: BLE001 - any error of the user's module
            del sys.modules[module.__name__]
            raise RecipeError(
                f"Importing the recipe {self.path} raised {type(exc).__name__}: {exc}. "
                "Fix the file (or install what it imports) and run the command again."
            ) from exc
        function = module.__dict__.get(self.function)
        if not callable(function):
            defined = sorted(
                name
                for name, value in module.__dict__.items()
                if isinstance(value, types.FunctionType)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            )
            raise RecipeError(
                f"The recipe {self.path} defines no function '{self.function}' (it defines: "
                f"{', '.join(defined) or 'no functions'}). Name one with --recipe "
                f"{self.path}:FUNCTION."
            )
        return function  # type: ignore[no-any-return]


def split_spec(spec: str) -> tuple[str, str]:
    """``"dir/r.py:fn"`` -> ``("dir/r.py", "fn")``; the function defaults to ``recipe``."""
    path, sep, function = spec.rpartition(":")
    if sep and function.isidentifier():
        return path, function
    return spec, DEFAULT_FUNCTION


def load_recipe(spec: str, storage_options: dict[str, Any] | None = None) -> Recipe:
    """Read the recipe ``path[:function]`` (a local path or any fsspec URL) and check it compiles.

    Raises
    ------
    SourceNotFoundError
        No file at the path.
    RecipeError
        The file does not compile or import, or lacks the function.
    """
    path, function = split_spec(spec)
    fs, fs_path = filesystem(path, storage_options)
    with storage_errors(path, storage_options):
        try:
            text = fs.cat_file(fs_path).decode()
        except (FileNotFoundError, IsADirectoryError):
            raise SourceNotFoundError(
                f"No recipe file at {path} (--recipe {spec}). Give the path of a Python file, "
                "optionally followed by :FUNCTION."
            ) from None
    recipe = Recipe(path, text, function)
    recipe.compiled()
    return recipe
