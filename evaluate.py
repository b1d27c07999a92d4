"""Evaluate models side by side: ``python evaluate.py --model ... --data ...`` (also installed as
``ragcun-evaluate``; ``--help`` lists every option). The code is ragcun.evaluation.cli."""

from ragcun.evaluation.cli import main

if __name__ == "__main__":
    main()
