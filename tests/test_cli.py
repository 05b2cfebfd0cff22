from typer.testing import CliRunner

from tumorchar import __version__
from tumorchar.cli import app


def test_version_flag():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
