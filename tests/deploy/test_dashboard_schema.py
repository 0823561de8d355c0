"""memmon's Grafana dashboard checked against Grafana's own dashboard schema.

scripts/grafana_schema.sh installs @grafana/schema (Grafana's generated TypeScript types) with npm, turns its
classic `Dashboard` type into a JSON schema with ts-json-schema-generator, and validates with ajv. No Grafana runs
here: this is the schema Grafana's code is typed against, not Grafana loading the file. The tests skip, saying so,
only where npm is missing; any other failure fails them.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import REPO, npm_tool

SCRIPT = REPO / "scripts" / "grafana_schema.sh"
DASHBOARD = REPO / "deploy" / "helm" / "memmon" / "files" / "memmon-dashboard.json"
DASHBOARD_COPY = REPO / "deploy" / "grafana" / "memmon-dashboard.json"
NO_NPM = "the dashboard schema check needs npm (scripts/grafana_schema.sh installs @grafana/schema with it)"


def run_schema(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    """scripts/grafana_schema.sh with the arguments; skip when npm is missing (exit 3), fail when it hangs."""
    return npm_tool(SCRIPT, *args, skip_reason=NO_NPM, timeout=timeout)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The generated Dashboard schema (installing and generating it the first time)."""
    done = run_schema()
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(Path(done.stdout.strip()).read_text())
    return loaded


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """Validate one file; exit 0 valid, 1 invalid (anything else fails the test)."""
    done = run_schema("validate", str(path))
    assert done.returncode in (0, 1), f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def broken(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the canonical dashboard with one change, written to tmp_path."""
    document = copy.deepcopy(json.loads(DASHBOARD.read_text()))
    change(document)
    path = tmp_path / "broken-dashboard.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def variable(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The templating variable called name."""
    found: dict[str, Any] = next(v for v in document["templating"]["list"] if v["name"] == name)
    return found


def test_schema_is_generated_from_grafanas_dashboard_type(schema: dict[str, Any]) -> None:
    """The cached schema is the Dashboard type's: it requires schemaVersion and defines panels, rows, variables."""
    assert schema["$ref"] == "#/definitions/Dashboard"
    definitions = schema["definitions"]
    assert definitions["Dashboard"]["required"] == ["schemaVersion"]
    assert {"Panel", "RowPanel", "VariableModel", "VariableOption", "GridPos"} <= set(definitions)
    assert definitions["GridPos"]["required"] == ["h", "w", "x", "y"]


@pytest.mark.parametrize("path", [DASHBOARD, DASHBOARD_COPY], ids=["chart", "grafana-copy"])
def test_dashboard_files_pass_grafanas_dashboard_schema(schema: dict[str, Any], path: Path) -> None:
    """The chart's dashboard and the hand-import copy both pass the schema of @grafana/schema's Dashboard type."""
    done = validate(path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip() == f"{path}: valid"


def test_a_grid_position_width_as_a_string_is_rejected_naming_the_path(
    schema: dict[str, Any], tmp_path: Path
) -> None:
    """A panel whose gridPos.w is the string "12" fails, the error naming /panels/0/gridPos/w and the panel."""

    def change(document: dict[str, Any]) -> None:
        document["panels"][0]["gridPos"]["w"] = "12"

    path = broken(tmp_path, change)
    title = json.loads(path.read_text())["panels"][0]["title"]
    done = validate(path)
    assert done.returncode == 1, done.stdout
    assert f'/panels/0/gridPos/w (panel "{title}"): must be number [GridPos]' in done.stdout


def test_a_variable_current_without_text_and_value_is_rejected(
    schema: dict[str, Any], tmp_path: Path
) -> None:
    """A templating variable whose current is {} (the defect the shipped dashboard had) fails on text and value."""
    path = broken(tmp_path, lambda document: variable(document, "job").update(current={}))
    done = validate(path)
    assert done.returncode == 1, done.stdout
    for field in ("text", "value"):
        assert (
            f"/templating/list/1/current (variable \"job\"): must have required property '{field}' [VariableOption]"
            in done.stdout
        )


def test_a_row_is_checked_as_a_row_only(schema: dict[str, Any], tmp_path: Path) -> None:
    """A panel of type "row" is checked against RowPanel alone: a description (the defect the shipped row had) and
    a missing collapsed each give one error naming the row, and no Panel-branch noise."""

    def change(document: dict[str, Any]) -> None:
        row = next(panel for panel in document["panels"] if panel["type"] == "row")
        row["description"] = "rows show no description"
        del row["collapsed"]

    done = validate(broken(tmp_path, change))
    assert done.returncode == 1, done.stdout
    index = next(
        i for i, panel in enumerate(json.loads(DASHBOARD.read_text())["panels"]) if panel["type"] == "row"
    )
    row = f'/panels/{index} (panel "Cluster view")'
    assert done.stdout.splitlines()[1:] == [
        f"  {row}: must have required property 'collapsed' [RowPanel]",
        f"  {row}: must NOT have additional properties 'description' [RowPanel]",
    ]


def test_only_the_query_definition_is_added_to_the_variable_model(
    schema: dict[str, Any], tmp_path: Path
) -> None:
    """The one field added to the generated VariableModel is `definition`, a string: another unknown field, or a
    definition that is not a string, still fails."""
    # Added by scripts/validate_dashboard.mjs only: the cached schema is the generator's output, unchanged.
    assert "definition" not in schema["definitions"]["VariableModel"]["properties"]

    def change(document: dict[str, Any]) -> None:
        variable(document, "job")["definitions"] = "label_values(up, job)"
        variable(document, "instance")["definition"] = 7

    done = validate(broken(tmp_path, change))
    assert done.returncode == 1, done.stdout
    assert (
        "/templating/list/1 (variable \"job\"): must NOT have additional properties 'definitions'"
        in done.stdout
    )
    assert '/templating/list/2/definition (variable "instance"): must be string' in done.stdout
