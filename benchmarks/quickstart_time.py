"""Wall time of the offline quickstart (encode → train the head → isotropy check → save), the README's main command.

Target: at most 3 minutes on 2 CPU cores. Runs `python train.py --config recipes/quickstart.yaml`
in a fresh process, into a temporary output folder, and prints the time and the printed summary.

    python benchmarks/quickstart_time.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        # an empty embedding cache: the time a first-time user waits, base encoding included
        command = [sys.executable, "train.py", "--config", "recipes/quickstart.yaml", "--output_dir",
                   str(Path(workdir) / "quickstart"), "--disable_tqdm", "true",
                   "--embedding_cache_dir", str(Path(workdir) / "embeddings")]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"quickstart failed:\n{result.stderr[-3000:]}")
    summary = result.stdout[result.stdout.find("\nTrained "):].strip()
    print(summary)
    print(f"\nquickstart wall time: {elapsed:.1f} s on {os.cpu_count()} CPU cores (target: <= 180 s)")


if __name__ == "__main__":
    main()
