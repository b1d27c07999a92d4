"""``python -m ragcun.hub``: kept for existing scripts; the code lives in :mod:`ragcun.release.hub`."""

from ragcun.release.hub import build_release, main, push

__all__ = ["build_release", "main", "push"]

if __name__ == "__main__":
    raise SystemExit(main())
