"""GitHub Actions workflow commands: escaping and the exact annotation lines."""

from __future__ import annotations

from runner.cli import gha


def test_data_escapes_percent_cr_and_lf() -> None:
    assert gha.escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"


def test_property_also_escapes_colon_and_comma() -> None:
    assert gha.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_command_lines_are_exact() -> None:
    line = gha.command("error", "bad: x, y\n2", file="w,1.yaml", line=3, col=7)
    assert line == "::error file=w%2C1.yaml,line=3,col=7::bad: x, y%0A2"
    assert (
        gha.command("group", "t[a=1] (failed, attempt 2)") == "::group::t[a=1] (failed, attempt 2)"
    )
    assert gha.command("error", "m", title="deploy:prod") == "::error title=deploy%3Aprod::m"
