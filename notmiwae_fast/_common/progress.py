"""Progress bars when tqdm is installed (an optional dependency), nothing otherwise."""

from __future__ import annotations


class _NoBar:
    """What progress_bar gives when bars are off: update and close do nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def progress(iterable, enabled: bool, **kwargs):
    """``iterable`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed."""
    tqdm = _tqdm() if enabled else None
    return tqdm(iterable, **kwargs) if tqdm is not None else iterable


def progress_bar(total: int, enabled: bool, desc: str):
    """A bar advanced by hand (``update(n)``, ``close()``); a silent one when off."""
    tqdm = _tqdm() if enabled else None
    return tqdm(total=total, desc=desc) if tqdm is not None else _NoBar()
