"""Fine-tune an embedder to N(0, I): ``python train.py --config recipes/quickstart.yaml`` (also installed as
``ragcun-train``; ``accelerate launch train.py ...`` for several processes). The code is ragcun.training.cli."""

from ragcun.training.cli import main

if __name__ == "__main__":
    main()
