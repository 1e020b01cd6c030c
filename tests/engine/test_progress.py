"""Progress bars: live on a terminal, plain rate-limited lines in a log file."""
import contextlib
import io

from tqdm import tqdm

from gpunit.engine.progress import PlainLineProgress, logging_above, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_each_refresh_is_one_plain_line():
    out = io.StringIO()
    with progress_bar(total=50, desc="work", unit="img", file=out, mininterval=0) as bar:
        for _ in range(50):
            bar.update(1)
    text = out.getvalue()
    assert isinstance(bar, PlainLineProgress)
    assert "\r" not in text and "\x1b" not in text  # no carriage returns or cursor moves in a log
    lines = text.splitlines()
    assert len(lines) > 2 and all(line.startswith("work") for line in lines)
    assert "50/50" in lines[-1]


def test_off_a_terminal_lines_are_rate_limited():
    out = io.StringIO()
    with progress_bar(total=10_000, desc="many", file=out) as bar:  # default interval: tens of seconds
        for _ in range(10_000):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert 1 <= len(lines) <= 3 and "10000/10000" in lines[-1]  # the start and the end, not 10,000 redraws


def test_a_transient_bar_leaves_nothing_behind_but_its_lines():
    out = io.StringIO()
    for _ in progress_bar(range(3), desc="inner", leave=False, file=out, mininterval=0):
        pass
    assert out.getvalue().strip("\n") == out.getvalue().rstrip("\n") and "\r" not in out.getvalue()
    assert all(line.strip() for line in out.getvalue().splitlines())


def test_on_a_terminal_the_live_bar_is_kept():
    out = FakeTerminal()
    with progress_bar(total=5, desc="live", file=out) as bar:
        bar.update(5)
        assert not isinstance(logging_above(bar), contextlib.nullcontext)  # log lines go above the live bar
    assert type(bar) is tqdm and "\r" in out.getvalue()


def test_disabled_bar_writes_nothing():
    out = io.StringIO()
    with progress_bar(total=5, file=out, disable=True) as bar:
        bar.update(5)
    assert isinstance(logging_above(bar), contextlib.nullcontext)
    assert out.getvalue() == ""
