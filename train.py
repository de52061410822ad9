"""Config-driven training: `python train.py fit --config configs/classification/demo.yaml`.

See `python train.py --help`, `python train.py fit --print_config` and README "Training".
"""

from zoo.tasks.cli import main

if __name__ == "__main__":
    main()
