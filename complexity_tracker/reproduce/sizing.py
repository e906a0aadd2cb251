"""Sizings of the reproduction: the study configs of ``studies/paper/`` as written (``full``), or
shrunk (fewer epochs, seeds and grid cells) for ``--quick`` and for tests (``tiny``).

A shrunk study gets its own name (``<name>-quick``), so the sizings never mix trials in one storage.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ComplexityTrackerError
from ..studies import StudyConfig, load_study_config, parse_study_config

#: The study configs the reproduction runs (``studies/paper/<stem>.toml`` of the repository).
PAPER_STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies" / "paper"
STUDY_STEMS = (
    "phenomenon1_stacked",
    "phenomenon2_residual",
    "phenomenon3_stochastic",
    "ceiling",
    "complexity_loss",
    "robustness",
)


class SizingError(ComplexityTrackerError, ValueError):
    """An unknown sizing or a missing study config."""


@dataclass(frozen=True)
class Sizing:
    """How to shrink the paper studies: ``run`` / ``search`` values replacing the config's, per study
    stem (``"*"`` applies to every study, a stem's own entries win)."""

    name: str
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def document(self, stem: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """``document`` (a parsed study config) with this sizing's overrides and name suffix."""
        if not self.overrides:
            return {table: dict(values) for table, values in document.items()}
        sized = {table: dict(values) for table, values in document.items()}
        for scope in ("*", stem):
            for table, values in self.overrides.get(scope, {}).items():
                sized.setdefault(table, {}).update(values)
        sized["study"]["name"] = f"{document['study']['name']}-{self.name}"
        return sized


FULL = Sizing("full")
QUICK = Sizing(
    "quick",
    {
        "*": {"run": {"epochs": 15}, "search": {"seed": [0, 1]}},
        "phenomenon1_stacked": {"run": {"epochs": 20}},
        "phenomenon2_residual": {"search": {"depth": [4], "seed": [0, 1]}},
        "ceiling": {"run": {"n_train": 2000, "probe_per_class": 100}, "search": {"seed": [0]}},
        "complexity_loss": {"run": {"measure_every": 15}},
        "robustness": {"run": {"epochs": 15}, "search": {"seed": [0]}},
    },
)
TINY = Sizing(
    "tiny",
    {
        "*": {
            "run": {"epochs": 3, "n_train": 300, "n_test": 200, "probe_per_class": 8, "measure_every": 1},
            "search": {"seed": [0, 1]},
        },
        "phenomenon1_stacked": {"search": {"model": ["mlp_mnist"], "seed": [0, 1]}},
        "phenomenon2_residual": {"search": {"depth": [2], "seed": [0, 1]}},
        "phenomenon3_stochastic": {"search": {"model": ["vae_mlp"], "seed": [0]}},
        "ceiling": {"run": {"width": 16}, "search": {"depth": [1, 2], "task_order": [1, 2], "seed": [0]}},
        "complexity_loss": {"search": {"log10_lam": {"choices": [-2.0, -1.0], "include_zero": True}, "seed": [0]}},
        "robustness": {"search": {"model": ["mlp_mnist"], "adversarial_training": [False, True], "seed": [0]}},
    },
)
SIZINGS = {sizing.name: sizing for sizing in (FULL, QUICK, TINY)}


def get_sizing(name: str) -> Sizing:
    try:
        return SIZINGS[name]
    except KeyError:
        raise SizingError(f"unknown sizing {name!r}; choose from {', '.join(SIZINGS)}") from None


def sized_study(stem: str, sizing: Sizing, state_dir: Path, studies_dir: Path = PAPER_STUDIES_DIR
                ) -> tuple[StudyConfig, Path]:
    """The study config of ``studies_dir/<stem>.toml`` under ``sizing`` and the file holding it
    (the original for ``full``; a written copy under ``state_dir`` otherwise, which worker
    processes read)."""
    path = studies_dir / f"{stem}.toml"
    if not path.is_file():
        raise SizingError(f"study config {path} is missing; the reproduction needs {', '.join(STUDY_STEMS)}")
    if not sizing.overrides:
        return load_study_config(path), path
    with path.open("rb") as handle:
        document = sizing.document(stem, tomllib.load(handle))
    sized_path = state_dir / "studies" / f"{stem}-{sizing.name}.toml"
    sized_path.parent.mkdir(parents=True, exist_ok=True)
    sized_path.write_text(f"# {path.name} shrunk to the {sizing.name!r} sizing\n{dump_toml(document)}")
    return parse_study_config(document), sized_path


def dump_toml(document: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of a document of tables holding strings, numbers, booleans, lists and inline tables."""
    lines = []
    for table, values in document.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SizingError(f"TOML cannot hold {value!r}")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise SizingError(f"cannot write {type(value).__name__} {value!r} as TOML")
