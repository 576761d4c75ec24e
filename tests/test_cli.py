import json
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
