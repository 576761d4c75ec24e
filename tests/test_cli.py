import json
import re
import sys
import textwrap

from typer.testing import CliRunner

from flows.cli import app
from spark_core.config import ACTIONS

runner = CliRunner()


def test_tools_list_shows_every_action():
    result = runner.invoke(app, ["tools", "list"], terminal_width=200)
    assert result.exit_code == 0
    for name in ACTIONS:  # the 8 tools and cot
        assert name in result.output


def test_tools_run_json_is_the_result_object():
    result = runner.invoke(app, ["tools", "run", "symbolic_math", "solve: x^2-5x+6=0", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["status"] == "ok" and payload["output"] == "x = 2, x = 3"
    assert set(payload) == {"status", "output", "error", "latency_ms"}


def test_tools_run_failure_exits_nonzero():
    result = runner.invoke(app, ["tools", "run", "python", "print(1/0)", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["error"] == "ZeroDivisionError: division by zero"
    result = runner.invoke(app, ["tools", "run", "abacus", "1"])
    assert result.exit_code == 2 and "unknown tool 'abacus'" in result.output


def test_config_show_and_bad_override():
    result = runner.invoke(
        app, ["config", "show", "--config", "configs/demo.yaml", "--set", "data.seed=7"]
    )
    assert result.exit_code == 0 and "seed: 7" in result.output
    result = runner.invoke(app, ["config", "show", "--config", "configs/paper-no-diversity.yaml"])
    assert result.exit_code == 0, result.output  # a preset that extends another
    assert "w_diversity: 0.0" in result.output and "run_name: paper-no-diversity" in result.output
    assert "generator:" in result.output and "extends" not in result.output
    result = runner.invoke(
        app, ["ingest", "--config", "configs/demo.yaml", "--set", "rollout.viable_threshold=11"]
    )
    assert result.exit_code == 2
    assert (
        "rollout.viable_threshold" in result.output and "less than or equal to 10" in result.output
    )


def test_third_party_tool_registers_through_an_entry_point(tmp_path, monkeypatch):
    from spark_core.tools.registry import discover

    (tmp_path / "spark_reverse_tool.py").write_text(
        textwrap.dedent("""
        from spark_core.tools.base import Tool
        TOOL = Tool(name="reverse", description="Reverses text.", input_format="any text",
                    run=lambda text: text[::-1], example="abc")
    """)
    )
    info = tmp_path / "spark_reverse_tool-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: spark-reverse-tool\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[spark.tools]\nreverse = spark_reverse_tool:TOOL\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    discover.cache_clear()
    try:
        tools = discover()
        assert tools["reverse"].run("spark") == "kraps"
        assert len(tools) == 9
    finally:
        sys.modules.pop("spark_reverse_tool", None)
        monkeypatch.undo()
        discover.cache_clear()
    assert "reverse" not in discover()


def _rendered(tables) -> str:
    """What a log or an 80-column terminal shows of ``tables``."""
    from io import StringIO

    from rich.console import Console

    out = Console(width=80, file=StringIO(), color_system=None)
    for table in tables:
        out.print(table)
    return out.file.getvalue()


def _words(text: str) -> set[str]:
    return {word for line in text.splitlines() for word in re.split(r"[\s│┃┏┓┗┛━─]+", line)}


def _fits_80_columns_without_cutting_a_word(text: str, tables, cells: list[str]) -> None:
    assert "…" not in text, text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    for line in lines:  # no table wider than the console, cropped at its right edge
        if line.strip()[:1] in set("┏┃┡│└"):
            assert line.rstrip()[-1] in set("┓┃┩│┘"), f"cropped:\n{text}"
    words = _words(text)
    headers = [str(c.header) for t in tables for c in t.columns]
    for word in {w for phrase in [*headers, *cells] for w in phrase.split()}:
        assert word in words, f"{word!r} is cut in:\n{text}"


def test_the_runs_summary_tables_fit_80_columns_without_cutting_a_word():
    """`spark run`'s last tables (synthesis, evaluation) in a log or a narrow terminal: every
    header word, policy and action whole, no ellipsis, at the widest values they can hold."""
    import pyarrow as pa

    from flows.cli import evaluation_tables, synthesis_table
    from spark_core.evaluation.report import OVERALL, SUMMARY_SCHEMA
    from spark_core.synthesis.summary import ACTIONS_SCHEMA, RUN_SCHEMA

    policies = ["base", "base@0.7", "base@1.0", "sft", "ppo", "dpo", "gpt-4o-mini"]
    numbers = {f.name: 1.0 for f in SUMMARY_SCHEMA if pa.types.is_floating(f.type)}
    rows = [  # widest values: 100.0%, 100%–100%, entropies above 1 bit, 10.00 steps
        {**numbers, "policy": p, "seed": -1, "category": OVERALL, "n": 12032, "mean_steps": 10.0}
        for p in policies
    ]
    rows.append({**rows[0], "category": "law"})  # only the overall rows are shown
    rows = pa.Table.from_pylist(rows, SUMMARY_SCHEMA).to_pylist()  # every column of the table
    tables = evaluation_tables(rows)
    text = _rendered(tables)
    _fits_80_columns_without_cutting_a_word(text, tables, policies)
    assert [len(t.rows) for t in tables] == [len(policies)] * 2

    run = {f.name: 1 for f in RUN_SCHEMA} | {"questions": 12032, "steps": 120320}
    actions = [
        {f.name: 1.0 for f in ACTIONS_SCHEMA}
        | {"action": a, "selected": 120320, "repairs_attempted": 9999, "repairs_succeeded": 9999}
        for a in ACTIONS
    ]
    run = pa.Table.from_pylist([run], RUN_SCHEMA).to_pylist()[0]
    actions = pa.Table.from_pylist(actions, ACTIONS_SCHEMA).to_pylist()
    table = synthesis_table(run, actions)
    text = _rendered([table])
    _fits_80_columns_without_cutting_a_word(text, [table], list(ACTIONS))
