"""The resolved config as a tree, shown when a job starts and saved in its run directory (``config_tree.log``).

On a terminal the tree is coloured and fits the window; in a log file or pipe it is plain text with one
line per setting, never wrapped or cut.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.syntax import Syntax
from rich.text import Text
from rich.tree import Tree

FILE = "config_tree.log"
PLAIN_WIDTH = 10_000  # not a terminal: wide enough never to wrap a setting


def config_tree(cfg: DictConfig, choices: Mapping[str, str | None]) -> Tree | None:
    """The settings of ``cfg``, resolved: the top-level ones, then a branch per group, labelled with the option
    chosen (``dataset: omniglot``). None if a setting does not resolve (the command's validation names it)."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False, enum_to_str=True)
    except OmegaConfBaseException:
        return None
    tree = Tree("config", guide_style="dim")
    top = {key: value for key, value in values.items() if not isinstance(value, dict)}
    if top:
        tree.add(_yaml(top))
    for key, value in values.items():
        if isinstance(value, dict):
            label = f"[bold]{key}[/]: {choices[key]}" if choices.get(key) else f"[bold]{key}[/]"
            tree.add(label).add(_yaml(value))
    return tree


def show_config(tree: Tree, output_dir: Path, prefix: str = "") -> None:
    """Print ``tree`` on stdout, each line after ``prefix``, and save it as plain text in ``output_dir``."""
    console = Console()
    if not console.is_terminal:
        console.width = PLAIN_WIDTH
    with console.capture() as captured:
        console.print(tree)
    sys.stdout.write(textwrap.indent(captured.get(), prefix))
    sys.stdout.flush()
    with (output_dir / FILE).open("w") as file:
        Console(file=file, width=PLAIN_WIDTH).print(tree)


def _yaml(values: dict) -> Text:
    code = yaml.safe_dump(values, sort_keys=False, allow_unicode=True).rstrip()
    text = Syntax(code, "yaml", theme="ansi_dark", background_color="default").highlight(code)
    text.rstrip()
    text.no_wrap = False  # on a terminal, a long value folds onto the next line
    return text
