"""Settings and help: every environment variable documented, parsed, and every CLI command
explained.

``kpi_store/config.py`` declares each environment variable once (``settings_help()``:
variable, default, help). The README's "Configuration" table is generated from it::

    .venv/bin/python tests/test_settings.py      # prints the table to paste into README.md

and the first test fails, showing the table, when the README has fallen behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kpi_store.cli import build_parser  # noqa: E402
from kpi_store.config import Settings, settings_help  # noqa: E402

README = ROOT / "README.md"

# A good and a bad text for each type a setting can have.
GOOD = {bool: [("1", True), ("yes", True), ("off", False), ("0", False)], int: [("7", 7)]}
GOOD |= {float: [("2.5", 2.5), ("3", 3.0)], str: [("some text", "some text")]}
BAD = {bool: "maybe", int: "2.5", float: "ten"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: str) -> str:
    """As a user writes it: booleans as 1 / 0; an empty default as (none)."""
    value = {"True": "1", "False": "0"}.get(value, value)
    return f"`{value}`" if value else "(none)"


def configuration_table() -> str:
    """The README's table of environment variables, from ``settings_help()``."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for variable, default, meaning in settings_help():
        lines.append(f"| `{variable}` | {_default(default)} | {_cell(meaning)} |")
    return "\n".join(lines)


def _fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


# -- documentation ----------------------------------------------------------------------


def test_every_setting_is_declared_once_with_a_default_and_help() -> None:
    rows = settings_help()
    variables = [variable for variable, _, _ in rows]
    assert len(variables) == len(set(variables)) == len(_fields())
    for variable, _default_text, meaning in rows:
        assert variable.startswith("KPI_"), variable
        assert meaning.strip(), f"{variable} has no help text"


def test_the_readme_documents_every_variable_in_the_generated_table() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [v for v, _, _ in settings_help() if f"`{v}`" not in text]
    assert not missing, f"README.md does not mention {missing}"
    assert configuration_table() in text, (
        "README.md's Configuration table is not the one config.py generates; replace it "
        "with the output of `.venv/bin/python tests/test_settings.py`:\n\n" + configuration_table()
    )


# -- parsing ----------------------------------------------------------------------------


def test_unset_or_empty_variables_mean_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({v: "" for v, _, _ in settings_help()}) == Settings()
    assert Settings.from_env({v: "  " for v, _, _ in settings_help()}) == Settings()


def test_the_settings_cover_each_type_a_variable_can_have() -> None:
    assert {type(f.default) for f in _fields()} == {bool, int, float, str}


def _good(item: dataclasses.Field[Any]) -> list[tuple[str, Any]]:
    choices = item.metadata["choices"]
    return [(c, c) for c in choices] if choices else GOOD[type(item.default)]


@pytest.mark.parametrize("item", _fields(), ids=lambda f: f.metadata["env"])
def test_each_variable_is_parsed_to_its_type(item: dataclasses.Field[Any]) -> None:
    variable, kind = item.metadata["env"], type(item.default)
    for raw, expected in _good(item):
        parsed = getattr(Settings.from_env({variable: f" {raw} "}), item.name)
        assert parsed == expected and type(parsed) is kind, (variable, raw, parsed)
        others = {f.name: getattr(Settings(), f.name) for f in _fields() if f is not item}
        assert {n: getattr(Settings.from_env({variable: raw}), n) for n in others} == others


@pytest.mark.parametrize(
    "item",
    [f for f in _fields() if type(f.default) in BAD or f.metadata["choices"]],
    ids=lambda f: f.metadata["env"],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_variable(
    item: dataclasses.Field[Any],
) -> None:
    variable = item.metadata["env"]
    bad = BAD.get(type(item.default), "nonsense")
    with pytest.raises(ValueError) as raised:
        Settings.from_env({variable: bad})
    assert variable in str(raised.value)
    assert bad in str(raised.value)


# -- the command line's help ---------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, Any]]:
    """{name: (help shown in the command list, its parser)}."""
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


COMMANDS = sorted(_subcommands(build_parser()))


def test_the_program_help_lists_every_command_with_its_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kpi_store", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m kpi_store" in done.stdout
    for name, (text, _) in _subcommands(build_parser()).items():
        assert text.strip(), f"command {name!r} has no help in the command list"
        assert name in done.stdout and text in done.stdout.replace("\n", " ").replace("  ", " ")


def test_every_option_of_the_program_has_help() -> None:
    parser = build_parser()
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"option {action.option_strings} of the program has no help"


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_help_describes_it_and_every_argument(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, sub = _subcommands(build_parser())[name]
    assert (sub.description or "").strip(), f"{name} --help has no description"
    undocumented = [
        action.option_strings or [action.dest]
        for action in sub._actions
        if not action.help and action.dest != "help"
    ]
    assert not undocumented, f"{name}: arguments without help: {undocumented}"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([name, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert f"usage: python -m kpi_store {name}" in shown
    assert sub.description.split()[0] in shown


if __name__ == "__main__":
    print(configuration_table())
