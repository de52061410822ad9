"""Train an mmsegmentation 1.x / mmdetection 3.x config with the zoo's backbones registered.

    python tools/mm_train.py CONFIG [--work-dir DIR] [--cfg-options k=v ...] [--resume] [--amp]

The arguments of mmseg's and mmdet's own `tools/train.py`: the work directory defaults to
./work_dirs/<config name>; `--resume` continues from the latest checkpoint in it (or from
`--cfg-options load_from=PATH`); `--amp` trains with automatic mixed precision. Needs the `mm`
extra (`make test-mm`). Before anything is built, the dataset folders and the backbone's
ImageNet checkpoint are checked, and a missing one is named with the layout expected.
Multi-GPU: `torchrun --nproc-per-node N tools/mm_train.py CONFIG --launcher pytorch`.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root, for zoo


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options mm's train.py and test.py share (tools/mm_test.py uses them too)."""
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="config file path")
    parser.add_argument("--work-dir", help="the dir to save logs, models and metrics")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings in the config, key=value (e.g. train_cfg.max_iters=2)",
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm", "mpi"],
        default="none",
        help="job launcher",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    return parser


def load_config(args: argparse.Namespace):
    """The config with the zoo registered, --cfg-options merged and the work_dir resolved."""
    from mmengine.config import Config

    import zoo.integrations.mm  # noqa: F401  (registers the backbones before the config builds)

    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg, loaders: list[str], pretrained: bool):
    """The Runner, after checking the data folders (and the ImageNet checkpoint); None after
    printing the error when one is missing."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from zoo.errors import ConfigError
    from zoo.integrations.mm import check_config_paths

    try:
        check_config_paths(cfg, loaders, pretrained=pretrained)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    return Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("Train a segmentor or detector (OpenMMLab)")
    parser.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="resume from the latest checkpoint in the work_dir automatically",
    )
    parser.add_argument(
        "--amp", action="store_true", default=False, help="enable automatic-mixed-precision"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print("AMP training is already enabled in your config.")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if args.resume:
        cfg.resume = True
    loaders = ["train_dataloader"] + (["val_dataloader"] if cfg.get("val_cfg") else [])
    runner = build_runner(cfg, loaders, pretrained=not cfg.get("load_from"))
    if runner is None:
        return 2
    runner.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
