"""Adding a method is a config, a job and one registration: it shows up in ``--help`` with flags made from its
config's field docs, runs from the command line, and gets a form in the window, without touching the CLI or the
window's code (README: "How to add an engine")."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.core.jobs import Artifact, CancelToken, Job, Progress
from engine.methods import METHODS, Method, register


@dataclass
class CountConfig:
    """A trivial method's settings."""

    out: str
    """the JSON file the count is written to"""
    count: int = 3
    """how far to count"""
    loud: bool = False
    """whether to count in capitals"""


def count_job(cfg: CountConfig, cancel: CancelToken | None = None) -> Job:
    """Job: count to ``cfg.count`` and write the numbers."""
    numbers = []
    for k in range(1, cfg.count + 1):
        numbers.append(f"NUMBER {k}" if cfg.loud else f"number {k}")
        yield Progress(k, cfg.count, "counting")
    Path(cfg.out).write_text(json.dumps(numbers))
    yield Artifact(Path(cfg.out), "count")


@pytest.fixture
def counting(monkeypatch):
    method = Method("count", "count to a number and write it down", f"{__name__}:CountConfig",
                    f"{__name__}:count_job", "scene")
    monkeypatch.setitem(METHODS, method.name, method)
    return method


def test_a_registered_method_is_a_command_with_flags_from_its_config(counting, capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "count to a number and write it down" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["count", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--out OUT the JSON file the count is written to" in text
    assert "--count COUNT how far to count (default 3)" in text and "--loud, --no-loud" in text
    assert cli_main(["count", "--out", str(tmp_path / "n.json"), "--count", "2", "--loud"]) == 0
    assert json.loads((tmp_path / "n.json").read_text()) == ["NUMBER 1", "NUMBER 2"]


@pytest.fixture
def counting_heads():
    method = register(Method("count-heads", "count heads and write them down", f"{__name__}:CountConfig",
                             f"{__name__}:count_job", "portrait"))
    yield method
    del METHODS[method.name]


def test_a_portrait_method_is_a_portrait_subcommand(counting_heads, capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "count-heads" not in capsys.readouterr().out  # the top level lists the scene's methods only
    with pytest.raises(SystemExit):
        cli_main(["portrait", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from engine.portrait.cli import TOOLS

    from engine.methods import METHODS

    portrait_methods = [name for name, m in METHODS.items() if m.workspace == "portrait"]
    assert portrait_methods[-1] == "count-heads"  # registered last, by the fixture
    assert "{" + ",".join(portrait_methods + list(TOOLS)) + "}" in text  # the methods, then the tools
    assert "count-heads count heads and write them down" in text
    with pytest.raises(SystemExit):
        cli_main(["portrait", "count-heads", "--help"])
    assert "--count COUNT how far to count (default 3)" in " ".join(capsys.readouterr().out.split())
    assert cli_main(["portrait", "count-heads", "--out", str(tmp_path / "n.json"), "--count", "2"]) == 0
    assert json.loads((tmp_path / "n.json").read_text()) == ["number 1", "number 2"]
    assert capsys.readouterr().out == f"wrote count: {tmp_path / 'n.json'}\n"


def test_a_registered_method_gets_a_form_in_the_window(counting, qtbot, tmp_path):
    pytest.importorskip("PySide6")
    from app.config_form import MethodPanel

    panel = MethodPanel(counting)
    qtbot.addWidget(panel)
    assert set(panel.form.editors) == {"out", "count", "loud"}
    assert panel.form.editors["count"].toolTip() == "how far to count"
    with qtbot.assertNotEmitted(panel.run_requested):
        panel.run_button.click()  # "out" is required
    assert "fill in out" in panel.error_label.text()
    panel.form.editors["out"].setText(str(tmp_path / "n.json"))
    panel.form.editors["count"].setValue(4)
    with qtbot.waitSignal(panel.run_requested) as signal:
        panel.run_button.click()
    assert signal.args[0] == CountConfig(out=str(tmp_path / "n.json"), count=4, loud=False)
