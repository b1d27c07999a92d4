"""``python -m ragcun.hub``: kept for existing scripts; the code lives in :mod:`ragcun.release.hub`."""

from ragcun.release.hub import (
    MODEL_MARKERS,
    REPORT_SUFFIXES,
    RUN_FILES,
    Release,
    build_release,
    check_repo_id,
    main,
    push,
    resolve_model_dir,
)

__all__ = ["MODEL_MARKERS", "REPORT_SUFFIXES", "RUN_FILES", "Release", "build_release", "check_repo_id", "main", "push",
           "resolve_model_dir"]

if __name__ == "__main__":
    raise SystemExit(main())
