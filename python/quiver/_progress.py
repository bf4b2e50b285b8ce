"""A progress bar on a terminal only: tqdm when it is installed, else a plain one-line bar."""

import sys
import time


class _PlainBar:
    def __init__(self, total, unit):
        self.total, self.unit, self.done = total, unit, 0
        self.started = time.monotonic()

    def update(self, n):
        self.done += n
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(
            f"\r{'#' * filled}{'.' * (width - filled)} {self.done}/{self.total} {self.unit} "
            f"{rate:,.0f} {self.unit}/s"
        )
        sys.stderr.flush()

    def set_total(self, total):
        self.total = total

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


class _TqdmBar:
    def __init__(self, tqdm, total, unit):
        self.bar = tqdm(total=total, unit=unit, file=sys.stderr)

    def update(self, n):
        self.bar.update(n)

    def set_total(self, total):
        self.bar.total = total
        self.bar.refresh()

    def close(self):
        self.bar.close()


def bar(total, unit, wanted):
    """A bar when ``wanted`` and standard error is a terminal; else ``None``."""
    if not wanted or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainBar(total, unit)
    return _TqdmBar(tqdm, total, unit)
